"""Cases: small, exactly reproducible calls of an op.

A :class:`CaseSpec` is a handful of sizes, options and a seed; ``build()``
draws every array from the seed, so a failing case is reproduced anywhere by
the one line that constructs its spec (see :meth:`CaseSpec.repro`). The
hypothesis strategies (:mod:`rnnspec.conformance.strategies`) draw specs, not
arrays, which keeps shrinking fast and the reports short.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

import numpy as np
from hypothesis import assume

from rnnspec import init_params
from rnnspec.backend import Backend
from rnnspec.ops import OPS
from rnnspec.shapes import evaluate
from rnnspec.tree import tree_map

from .frameworks import bfloat16_maker, round_to_bfloat16

__all__ = ["CLEAR_EPSILON", "TIE_EPSILON", "Case", "CaseSpec", "Clock", "Decisions", "in_float64"]

#: How a case places the op's discrete decisions (:attr:`CaseSpec.decisions`).
Decisions = Literal["drawn", "ties", "clear"]
#: How a case draws the timestamps of an op with a clock (:attr:`CaseSpec.clock`).
Clock = Literal["regular", "irregular", "ties"]
#: The clock's grid: timestamps, their gaps and first values are multiples of an eighth.
_CLOCK_GRID = 0.125

#: Bias entries that ``bias`` does not shift: the skip gate's and ACT's halting unit, drawn around their thresholds.
_DECISION_BIASES = ("b_gate", "b_halt")
#: The values of the skip gate's initial state in a ``ties`` case: exact in every float format, so
#: ``u~ = cum + min(p, 1 - cum)`` lands on 0.5, and ``p`` on ``1 - cum``, in any correct arithmetic.
_TIE_PROBS = (0.25, 0.5, 0.75, 1.0)
_TIE_CUMS = (0.0, 0.25, 0.5)
#: ACT's epsilon in a ``"ties"`` case (its record's hint): with ``w_halt = 0`` and ``b_halt = 0`` every
#: halting unit is sigmoid(0) = 1/2, so the first halting sum is exactly ``1 - epsilon``.
TIE_EPSILON: float = (OPS["act"].hints.tie_options or {})["epsilon"]
#: ACT's epsilon in a ``"clear"`` case: halting units near 0.3 sum to 0.9 and 1.2 around ``1 - epsilon``.
CLEAR_EPSILON: float = OPS["act"].hints.clear_options["epsilon"]
#: The skip gate's biases in a ``"clear"`` case: ``du~`` near 0.37 skips every other step (``u~`` near
#: 0.37, then 0.74), near 0.7 updates at every step.
_CLEAR_GATE_BIASES = (-0.53, 0.85)


@dataclass(frozen=True)
class CaseSpec:
    """Everything that determines a case; ``build()`` makes the arrays.

    Attributes
    ----------
    op
        The op's name.
    dtype
        The dtype of every floating array of the call.
    batch, time, input_size, hidden_size, num_layers
        The sizes (primitives use ``batch``, ``time``, ``hidden_size``).
    lengths
        Each row's length, or ``None`` for full rows.
    initial_state
        Whether the call passes a random initial state (``initial`` for primitives).
    reverse
        The ``reverse`` option.
    options
        The op's keyword options, as ``(name, value)`` pairs.
    window, zoneout
        For an op whose params use a size its init options fix (qrnn's convolution width K): that
        size; for an op with optional array options (qrnn's zoneout mask): whether they are passed
        (required ones always are).
    masks
        For an op with dropout masks (``dropout_mask``, ``recurrent_mask``): whether they are passed, one
        array each, zeros at 30% and the scale 1.25 elsewhere (a backend whose op lacks them skips the case).
    scale
        Multiplies the weights: large values drive gates into saturation.
    seed
        Seeds every array.
    recurrent_bound
        The range ``[-bound, bound]`` of IndRNN's ``u`` (indrnn, indrnn_recurrence) and of
        ``linear_recurrence``'s ``a``: above 1 the recurrence grows.
    bias
        Added to every bias of the cells (not to ``b_gate`` or ``b_halt``): a shift of a few units
        saturates the gates, and LSTM's cell ``c`` then grows past 10 over tens of steps.
    decisions
        How the arrays place the op's discrete decisions: ``"drawn"``, at random like every other
        array; ``"ties"``, exactly on their thresholds in any correct arithmetic: the skip gate's
        ``u~`` on 0.5 and ``update_prob`` on ``1 - cum`` (``w_gate = 0``, ``b_gate = 0``, an initial
        gate state of quarters), ACT's first halting sum on ``1 - epsilon`` (``w_halt = 0``,
        ``b_halt = 0``, ``epsilon = 0.5``), a relu's pre-activation on 0 (zero biases, and every even
        row with zero input and zero initial ``h``); ``"clear"``, at least about 0.03 from their
        thresholds at every step however long the sequence (a small ``w_gate`` with ``du~`` near 0.37
        or 0.7, an initial gate state that updates; a small ``w_halt`` with halting units near 0.3 and
        ``epsilon = 0.01``), where drawn decisions would come within rounding of a threshold somewhere
        in thousands of steps.
    clock
        For an op with a clock (its hints' ``clock``, Phased LSTM's ``timestamps``): how its timestamps
        are drawn, every one a multiple of an eighth from a first value in ``[-4, 4]``:
        ``"regular"``, one gap in ``(0, 2]`` per row; ``"irregular"``, a gap in ``(0, 2]`` per step;
        ``"ties"``, a gap in ``[0, 2]`` per step, half of them 0 (events at the same time). The
        params of its hints' ``grid_params`` are drawn from their exact values, so that the phases
        are exact in any arithmetic and land on the gate's breakpoints.
    nan_at
        ``(row, step, feature)`` of ``x`` (a primitive: of its first array) set to ``poison``.
    poison
        The value put at ``nan_at``: ``"nan"``, ``"inf"`` or ``"-inf"``.
    """

    op: str
    dtype: str = "float64"
    batch: int = 2
    time: int = 4
    input_size: int = 3
    hidden_size: int = 4
    num_layers: int = 1
    lengths: tuple[int, ...] | None = None
    initial_state: bool = False
    reverse: bool = False
    options: tuple[tuple[str, Any], ...] = ()
    window: int = 1
    zoneout: bool = False
    masks: bool = False
    scale: float = 1.0
    seed: int = 0
    recurrent_bound: float = 1.0
    bias: float = 0.0
    decisions: Decisions = "drawn"
    clock: Clock = "regular"
    nan_at: tuple[int, int, int] | None = None
    poison: Literal["nan", "inf", "-inf"] = "nan"

    def __repr__(self) -> str:
        # The fields that differ from their defaults (and the op): a repro line that stays short.
        shown = [f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.name == "op" or self._changed(f.name)]
        return f"CaseSpec({', '.join(shown)})"

    def _changed(self, name: str) -> bool:
        default = next(f.default for f in fields(self) if f.name == name)
        return bool(getattr(self, name) != default)

    def build(self) -> Case:
        """Draw the case's arrays (float64 first, then cast to ``dtype``)."""
        hints = OPS[self.op].hints
        if hints.decision is not None and self.decisions != "drawn":
            # The options the decisions' placement assumes (ACT's epsilon); max_steps may vary.
            wanted = hints.clear_options if self.decisions == "clear" else dict(hints.tie_options or {})
            options = dict(self.options)
            for name in hints.clear_options:
                if options.get(name) != wanted.get(name):
                    need = f"{name}={wanted.get(name)}"
                    raise ValueError(f"a {self.decisions!r} case of {self.op} needs the option {need}: {self}")
        rng = np.random.default_rng(self.seed)
        if OPS[self.op].kind == "primitive":
            args, kwargs = self._primitive(rng)
        else:
            args, kwargs = self._sequence(rng)
        if self.decisions == "ties" and self._relu():
            args, kwargs = self._relu_ties(args, kwargs)
        if self.nan_at is not None:
            first = args[0].copy()
            first[self.nan_at] = float(self.poison)
            args = (first, *args[1:])
        # NumPy has no bfloat16: such cases hold float32 arrays of bfloat16 values (the reference computes
        # on exactly the backend's inputs), which Case.call_args turns into the backend's bfloat16 arrays.
        bfloat16 = self.dtype == "bfloat16"
        cast = np.dtype("float32" if bfloat16 else self.dtype)

        def to_dtype(a: Any) -> Any:
            if not (isinstance(a, np.ndarray) and a.dtype.kind == "f"):
                return a
            return round_to_bfloat16(a.astype(cast)) if bfloat16 else a.astype(cast)

        return Case(self, tree_map(to_dtype, args), {k: tree_map(to_dtype, v) for k, v in kwargs.items()})

    def with_(self, **changes: Any) -> CaseSpec:
        """A copy with some fields changed."""
        return replace(self, **changes)

    @property
    def steps(self) -> int:
        """Cell applications along the longest path, for the tolerance policy."""
        inner_steps = OPS[self.op].hints.inner_steps
        inner = (
            1 if inner_steps is None else dict(self.options).get(inner_steps, OPS[self.op].option(inner_steps).default)
        )
        return max(self.time, 1) * self.num_layers * inner

    def repro(self, backend: str, *, call: str = "run") -> str:
        """A snippet that reruns this case on ``backend`` (through ``case.<call>``) and on the reference."""
        return (
            "import rnnspec\n"
            "from rnnspec.conformance.cases import CaseSpec\n"
            f"case = {self!r}.build()\n"
            f"got = case.{call}(rnnspec.get_backend({backend!r}))\n"
            "want = case.run(rnnspec.get_backend('numpy'))\n"
        )

    # -- array drawing -----------------------------------------------------------

    def _lengths(self) -> np.ndarray | None:
        return None if self.lengths is None else np.asarray(self.lengths, dtype=np.int64)

    def _primitive(self, rng: np.random.Generator) -> tuple[tuple[Any, ...], dict[str, Any]]:
        spec = OPS[self.op]
        dims = {"B": self.batch, "T": self.time, "H": self.hidden_size}
        # The optional argument (h_0) first, then the others in order: recurrent weights within the bound.
        initial = rng.standard_normal((self.batch, self.hidden_size)) if self.initial_state else None
        bound = self.recurrent_bound
        drawn: list[Any] = []
        for p in spec.params:
            shape = tuple(evaluate(e, dims) for e in p.shape)
            if not p.required:
                drawn.append(initial)
            elif p.name in spec.hints.recurrent:
                drawn.append(rng.uniform(-bound, bound, shape))
            else:
                drawn.append(rng.standard_normal(shape) * (self.scale if p.name in spec.hints.scaled else 1.0))
        args = tuple(drawn)
        kwargs = {k: v for k, v in self.options}
        kwargs.update(lengths=self._lengths(), reverse=self.reverse)
        return args, kwargs

    def _params(self, rng: np.random.Generator) -> list[dict[str, np.ndarray]]:
        spec = OPS[self.op]
        hints = spec.hints
        options = dict(self.options)
        sizes = {"input_size": self.input_size, "hidden_size": self.hidden_size, "seed": int(rng.integers(2**31))}
        init_sizes = {name: self.window for name in spec.init_sizes.values()}
        if hints.decision == "skip_gate":
            params = init_params(self.op, num_layers=self.num_layers, dtype="float64", **sizes, **options)
            top = params[-1]
            # A gate that sometimes skips: weights and bias spread around the threshold.
            top["w_gate"] = rng.standard_normal(top["w_gate"].shape) * self.scale
            top["b_gate"] = rng.uniform(-1.0, 1.0, top["b_gate"].shape)
            if self.decisions == "ties":  # du~ = sigmoid(0) = 1/2 at every update
                top["w_gate"], top["b_gate"] = np.zeros_like(top["w_gate"]), np.zeros_like(top["b_gate"])
            elif self.decisions == "clear":  # du~ within about 0.03 of sigmoid(b_gate)
                top["w_gate"] = top["w_gate"] * 0.02 / (self.hidden_size * self.scale)
                top["b_gate"] = np.full_like(top["b_gate"], rng.choice(_CLEAR_GATE_BIASES))
            for k, layer in enumerate(params):  # the trainable initial state (h0, c0), drawn
                for p in spec.layer_params(top=k == self.num_layers - 1, options=options):
                    if not p.required:
                        layer[p.name] = rng.standard_normal(self.hidden_size) * 0.5
        elif hints.drawn_params:
            params = [self._drawn_layer(rng, k) for k in range(self.num_layers)]
        else:
            params = init_params(self.op, num_layers=self.num_layers, dtype="float64", **sizes, **options, **init_sizes)
            if hints.decision == "halting":
                params[0]["b_halt"] = rng.uniform(-2.0, 1.0, (1,))
        for layer in params:
            for name in layer:
                if name.startswith("w_") or name == "w":
                    layer[name] = layer[name] * self.scale
                elif (name.startswith("b_") or name == "b") and name not in _DECISION_BIASES:
                    layer[name] = layer[name] + self.bias
        for layer in params:  # exact values (Phased LSTM's tau, s, r_on), entry by entry
            for name, values in hints.grid_params.items():
                if name in layer:
                    layer[name] = rng.choice(np.asarray(values, dtype=np.float64), layer[name].shape)
        halting = hints.decision == "halting"
        if halting and self.decisions == "ties":  # every halting unit is sigmoid(0) = 1/2
            params[0]["w_halt"], params[0]["b_halt"] = np.zeros_like(params[0]["w_halt"]), np.zeros((1,))
        elif halting and self.decisions == "clear":  # halting units within about 0.02 of 0.3
            params[0]["w_halt"] = params[0]["w_halt"] * 0.01 / (self.hidden_size * self.scale)
            params[0]["b_halt"] = np.full((1,), np.log(0.3 / 0.7))
        return params

    def _drawn_layer(self, rng: np.random.Generator, k: int) -> dict[str, np.ndarray]:
        """Layer ``k``'s params drawn in the record's order: weights of fan-in scale, biases near 0.1,
        recurrent weights within the bound."""
        spec = OPS[self.op]
        options = dict(self.options)
        dims = {
            **spec.fixed_dims(options),
            "I": self.input_size if k == 0 else self.hidden_size,
            "H": self.hidden_size,
            "K": self.window,
        }
        layer = {}
        for p in spec.layer_params(top=k == self.num_layers - 1, options=options):
            if not p.required:
                continue
            shape = tuple(evaluate(e, dims) for e in p.shape)
            if p.name in spec.hints.recurrent:
                layer[p.name] = rng.uniform(-self.recurrent_bound, self.recurrent_bound, shape)
            elif len(shape) >= 2:
                layer[p.name] = rng.standard_normal(shape) / np.sqrt(int(np.prod(shape[1:])))
            else:
                layer[p.name] = rng.standard_normal(shape) * 0.1
        return layer

    def _sequence(self, rng: np.random.Generator) -> tuple[tuple[Any, ...], dict[str, Any]]:
        spec = OPS[self.op]
        options = dict(self.options)
        x = rng.standard_normal((self.batch, self.time, self.input_size))
        params = self._params(rng)
        kwargs: dict[str, Any] = dict(options)
        kwargs.update(lengths=self._lengths(), reverse=self.reverse)
        if self.initial_state:
            state = []
            for k in range(self.num_layers):
                dims = {"H": self.hidden_size, "I": self.input_size if k == 0 else self.hidden_size, "K": self.window}
                entries = {}
                for s in spec.layer_state(top=k == self.num_layers - 1, options=options):
                    shape = (self.batch, *(evaluate(e, dims) for e in s.shape))
                    if spec.hints.decision == "skip_gate" and s.layers == "top":  # the gate's state
                        entries[s.name] = self._gate_state(rng, s.name, shape)
                    else:
                        entries[s.name] = rng.standard_normal(shape) * 0.5
                state.append(entries)
            kwargs["initial_state"] = tuple(state)
        dims = {"B": self.batch, "T": self.time, "H": self.hidden_size}
        for opt in spec.array_options:
            shape = tuple(evaluate(e, dims) for e in opt.shape)
            if opt.name == spec.hints.clock:
                kwargs[opt.name] = self._timestamps(rng)
            elif opt.dropout:
                if self.masks:  # dropout at rate 0.3 (an exact scale in every float format stands for 1 / 0.7)
                    kwargs[opt.name] = np.where(rng.random(shape) < 0.3, 0.0, 1.25)
            elif self.zoneout or opt.required:
                if opt.values is None:
                    kwargs[opt.name] = rng.standard_normal(shape)
                else:  # the interval's low end (a zoneout mask's 0) at 50%, its high end at 25%, between at 25%
                    low, high = opt.values[0], opt.values[-1]
                    draw, between = rng.random(shape), low + (high - low) * rng.random(shape)
                    kwargs[opt.name] = np.where(draw < 0.25, high, np.where(draw < 0.5, between, low))
        return (x, params), kwargs

    def _timestamps(self, rng: np.random.Generator) -> np.ndarray:
        """The clock's ``(batch, time)`` timestamps, on the grid of eighths (see :attr:`clock`)."""
        shape = (self.batch, self.time)
        eighths = round(1.0 / _CLOCK_GRID)
        first = rng.integers(-4 * eighths, 4 * eighths + 1, (self.batch, 1))
        if self.clock == "regular":
            gaps = np.broadcast_to(rng.integers(1, 2 * eighths + 1, (self.batch, 1)), shape)
        elif self.clock == "irregular":
            gaps = rng.integers(1, 2 * eighths + 1, shape)
        else:
            gaps = rng.integers(0, 2 * eighths + 1, shape) * (rng.random(shape) < 0.5)
        steps = first + np.cumsum(gaps, axis=1) - gaps[:, :1]
        return np.asarray(steps * _CLOCK_GRID, dtype=np.float64)

    def _gate_state(self, rng: np.random.Generator, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """A drawn initial skip-gate entry; quarters for ties; one whose first step updates for clear."""
        if self.decisions == "ties":
            return rng.choice(_TIE_PROBS if name == "update_prob" else _TIE_CUMS, shape)
        if self.decisions == "clear":  # u~_1 >= 0.6
            return rng.uniform(0.6, 1.0, shape) if name == "update_prob" else rng.uniform(0.0, 0.1, shape)
        return rng.uniform(0.0, 1.0, shape) if name == "update_prob" else rng.uniform(0.0, 0.45, shape)

    def _relu(self) -> bool:
        relu = OPS[self.op].hints.relu
        return relu is not None and dict(self.options).get(relu[0]) == relu[1]

    def _relu_ties(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Zero biases, and zero input and initial ``h`` on every even row: there every relu's
        pre-activation is exactly 0 at every step, in any arithmetic."""
        even = slice(0, None, 2)

        def zero_rows(a: np.ndarray) -> np.ndarray:
            out = a.copy()
            out[even] = 0.0
            return out

        first = zero_rows(args[0])
        if OPS[self.op].kind == "primitive":
            initial = None if args[2] is None else zero_rows(args[2])
            return (first, args[1], initial), kwargs
        params = [{k: np.zeros_like(v) if k in ("b_ih", "b_hh") else v for k, v in p.items()} for p in args[1]]
        for p in params:
            if "h0" in p:  # the trainable initial h, used without initial_state: every row starts there
                p["h0"] = np.zeros_like(p["h0"])
        if kwargs.get("initial_state") is not None:
            kwargs = dict(kwargs)
            kwargs["initial_state"] = tuple(
                {k: zero_rows(v) if k == "h" else v for k, v in s.items()} for s in kwargs["initial_state"]
            )
        return (first, params), kwargs


def in_float64(tree: Any) -> Any:
    """``tree`` with every floating NumPy array in float64 (exact: every dtype's values are float64 values)."""
    return tree_map(lambda a: a.astype(np.float64) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a, tree)


@dataclass
class Case:
    """A built case: the call's NumPy arguments and its spec."""

    spec: CaseSpec
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)

    def call_args(self, backend: Backend) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The call's arguments as ``backend``'s arrays (lengths stay NumPy integers); bfloat16 for a
        bfloat16 case on a backend other than NumPy's (see :func:`.frameworks.bfloat16_maker`).

        A drawn case passing a keyword the backend's op lacks (a dropout mask its op predates) is not
        applicable to it: hypothesis draws another."""
        if OPS[self.spec.op].kind == "sequence":
            lacking = [k for k in backend.lacking(self.spec.op) if self.kwargs.get(k) is not None]
            if lacking:  # only drawn cases pass masks: this runs inside a property-based test
                assume(False)
        convert = self.converter(backend)
        args = tree_map(convert, self.args)
        kwargs = {k: v if k == "lengths" else tree_map(convert, v) for k, v in self.kwargs.items()}
        return args, kwargs

    def converter(self, backend: Backend) -> Callable[[Any], Any]:
        """The function turning one NumPy leaf of this case into ``backend``'s array."""
        if self.spec.dtype == "bfloat16" and backend.implementation.framework != "numpy":
            make = bfloat16_maker(backend)
            if make is None:
                framework = backend.implementation.framework
                raise NotImplementedError(f"the conformance suite cannot make bfloat16 arrays of {framework!r}")
            return make

        def convert(value: Any) -> Any:
            return backend.from_numpy(value) if isinstance(value, np.ndarray) else value

        return convert

    def in_float64(self) -> Case:
        """The same call with every floating array in float64: exact for every dtype (half-precision
        values are float64 values), so the reference's answer to it is the unrounded one."""
        return Case(self.spec, in_float64(self.args), {k: in_float64(v) for k, v in self.kwargs.items()})

    def run(self, backend: Backend) -> Any:
        """Call the op on ``backend``; the result comes back as NumPy."""
        args, kwargs = self.call_args(backend)
        return backend.to_numpy(getattr(backend, self.spec.op)(*args, **kwargs))

    def run_compiled(self, backend: Backend) -> Any:
        """Call the op under ``backend``'s compiler; the result comes back as NumPy."""
        args, kwargs = self.call_args(backend)
        return backend.to_numpy(backend.compiled(self.spec.op)(*args, **kwargs))

    def vjp(self, backend: Backend, cotangents: Mapping[str, Any]) -> Any:
        """The backend's reverse mode at this case, as NumPy."""
        args, kwargs = self.call_args(backend)
        cotangents = tree_map(self.converter(backend), cotangents)
        return backend.to_numpy(backend.vjp(self.spec.op, cotangents, *args, **kwargs))

    def cotangents(self, result: Any, seed: int) -> dict[str, Any]:
        """Random cotangents for every field of ``result`` (NumPy, the case's dtype)."""
        rng = np.random.default_rng(seed)

        def draw(a: np.ndarray) -> np.ndarray:
            drawn = rng.standard_normal(a.shape).astype(a.dtype)
            return round_to_bfloat16(drawn) if self.spec.dtype == "bfloat16" else drawn

        if OPS[self.spec.op].kind == "primitive":
            return {"h": draw(result)}
        return {name: tree_map(draw, value) for name, value in result._asdict().items()}
