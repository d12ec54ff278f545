"""The record types that describe one op of the spec."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ..results import ACTResult, SequenceResult, SkipResult
from ..shapes import symbols

__all__ = ["FLOAT_DTYPES", "CaseHints", "InitScheme", "OpSpec", "OptionSpec", "ParamSpec", "StateSpec"]

#: The result types of the sequence ops (:mod:`rnnspec.results`).
ResultType = type[SequenceResult] | type[SkipResult] | type[ACTResult]

#: Floating dtypes an op may accept, by name. float32 and float64 are required of
#: every backend; float16 and bfloat16 are optional and follow the dtype policy.
FLOAT_DTYPES: tuple[str, ...] = ("float16", "bfloat16", "float32", "float64")
#: The dtypes every backend must support.
REQUIRED_DTYPES: tuple[str, ...] = ("float32", "float64")


@dataclass(frozen=True)
class ParamSpec:
    """One named parameter array of a layer.

    ``shape`` is symbolic (see :mod:`rnnspec.shapes`). ``layers`` says which
    layers of a stack carry it; ``required=False`` marks an optional entry.
    """

    name: str
    shape: tuple[str, ...]
    description: str
    required: bool = True
    layers: Literal["all", "top"] = "all"
    #: The layers' constructor flag (default True) that says whether they train it, such as Phased LSTM's
    #: ``trainable_ratio_on`` (TF1's); None: always trained. The op differentiates every param whatever it says.
    trainable: str | None = None


@dataclass(frozen=True)
class StateSpec:
    """One named entry of a layer's state, of shape ``(batch,) + shape``.

    ``layers="top"`` marks an entry only the top layer's state carries. ``start`` is the value
    it starts from when the caller passes no initial state (and the params hold no learnt
    ``<name>0``): zero, or Skip RNN's ``update_prob`` of one (the first step always updates).
    """

    name: str
    shape: tuple[str, ...]
    description: str
    layers: Literal["all", "top"] = "all"
    start: float = 0.0


@dataclass(frozen=True)
class OptionSpec:
    """A keyword option of an op, with its default and allowed values."""

    name: str
    default: Any
    allowed: tuple[Any, ...]
    description: str
    #: ``"value"``: one of ``allowed`` (or passing ``check``); ``"array"``: an
    #: optional array checked by shape.
    kind: Literal["value", "array"] = "value"
    #: For options over a range (``epsilon``, ``max_steps``): the test, and what it asks for.
    check: Callable[[Any], bool] | None = None
    expected: str = ""
    #: For ``kind="array"``: the array's symbolic shape over ``B`` (batch), ``T`` (time) and the
    #: sizes of the layer it is passed to (``H``, ``I``...); ``(B, T, ...)`` holds one entry per step.
    shape: tuple[str, ...] = ()
    #: For ``kind="array"``: whether a sequence of one array per layer may stand for one array for every layer.
    per_layer: bool = False
    #: For ``kind="array"``: ``(low, high)``, the closed interval its entries must lie in, NaN refused (``None``:
    #: any value). The conformance suite draws the ends most often (a zoneout mask's 0 and 1), and values between.
    values: tuple[float, ...] | None = None
    #: For ``kind="array"``: whether the call must pass it (``None`` refused; the signature gives it no default).
    required: bool = False
    #: For ``kind="array"`` of shape ``(B, T)``: its entries may not decrease along each row's valid prefix
    #: (Phased LSTM's ``timestamps``).
    nondecreasing: bool = False
    #: For ``kind="array"``: one array per boundary between consecutive layers (``layers - 1`` of them, of the
    #: sizes of the layer below the boundary; none for one layer), which multiplies the input of the layer above
    #: (the between-layer dropout mask, ``dropout_mask``). A single array stands for every boundary.
    between_layers: bool = False
    #: For ``kind="array"``: a dropout mask, the caller's Bernoulli draws already scaled by 1 / (1 - p) (entries
    #: >= 0 that only multiply; no gradient reaches them). The conformance suite draws zeros and a scale.
    dropout: bool = False

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` is allowed (``True`` is not taken for ``1``)."""
        if self.check is not None:
            return self.check(value)
        return any(type(value) is type(a) and value == a for a in self.allowed)

    def describe_allowed(self) -> str:
        """What the option accepts, for error messages and pages."""
        return self.expected or " or ".join(repr(a) for a in self.allowed)


#: Draws one parameter for ``init_params``: (rng, param name, shape, layer sizes, options) -> a float64 array.
#: ``layer sizes`` hold ``I``, ``H``, the op's other sizes, ``layer`` and ``num_layers``.
Initialiser = Callable[[Any, str, tuple[int, ...], Mapping[str, int], Mapping[str, Any]], Any]
#: Checks an op's init options and returns the sizes they fix: (merged options, names the caller gave) -> sizes.
InitDims = Callable[[Mapping[str, Any], frozenset[str]], dict[str, int]]


def _no_dims(options: Mapping[str, Any], given: frozenset[str]) -> dict[str, int]:
    return {}


@dataclass(frozen=True)
class InitScheme:
    """How :func:`rnnspec.init_params` draws an op's parameters.

    A record names one of :mod:`rnnspec.init`'s schemes by name (``init="uniform_fan_in"``) or
    carries its own: an op with an initialisation of its own (a paper's) defines it beside its
    record, so adding it touches no other spec module.
    """

    #: Draws one parameter array.
    draw: Initialiser
    #: The op's init-only options (``init_params`` keywords that are not the op's), with their defaults.
    defaults: Mapping[str, Any] = field(default_factory=dict)
    #: Checks the init options (raising :class:`rnnspec.errors.OptionError`) and returns the sizes they fix.
    dims: InitDims = _no_dims
    #: Whether the optional parameters (skip's ``h0``, ``c0``) are drawn too, given the options.
    optional: Callable[[Mapping[str, Any]], bool] = lambda options: False


@dataclass(frozen=True)
class CaseHints:
    """What the conformance suite needs to draw the interesting cases of an op.

    The suite draws sizes, options and arrays from the record alone; these are
    the few facts about an op's behaviour that its shapes and options do not say.
    """

    #: Values drawn for the options over a range (the others are drawn from ``allowed``): a tuple is
    #: sampled from, a range's integers are drawn (ACT's ``epsilon`` and ``max_steps``).
    option_draws: Mapping[str, tuple[Any, ...] | range] = field(default_factory=dict)
    #: The op's discrete decision, whose thresholds ``"ties"`` and ``"clear"`` cases place:
    #: ``"skip_gate"`` (Skip RNN's binary update gate), ``"halting"`` (ACT's halting sum) or ``None``.
    decision: Literal["skip_gate", "halting"] | None = None
    #: The options of a ``"ties"`` case (``None``: the op makes no decision a tie can place).
    tie_options: Mapping[str, Any] | None = None
    #: The options a ``"clear"`` case needs: its margins from the thresholds assume them.
    clear_options: Mapping[str, Any] = field(default_factory=dict)
    #: The option value under which the recurrence runs through a relu (a kink at 0), such as
    #: ``("activation", "relu")``; a ``"ties"`` case then puts pre-activations on the kink.
    relu: tuple[str, Any] | None = None
    #: The option bounding the inner steps of one input step (ACT's ``max_steps``), for the tolerances.
    inner_steps: str | None = None
    #: The parameters (a primitive: the arguments) drawn in ``[-recurrent_bound, recurrent_bound]``:
    #: recurrent weights whose range decides whether the recurrence grows (IndRNN's ``u``).
    recurrent: tuple[str, ...] = ()
    #: A primitive's arguments that the case's weight scale multiplies (a sequence op: its weights).
    scaled: tuple[str, ...] = ()
    #: Whether cases draw the parameters themselves (weights of fan-in scale, small biases) rather
    #: than from ``init_params``, whose init would be degenerate (IndRNN's ``w_ih`` of std 0.001).
    drawn_params: bool = False
    #: The options pinned (a single value) or drawn (several) by the saturated-gates checks;
    #: ``None``: the op has no gate to saturate (``linear_recurrence``'s multipliers are the caller's).
    saturating: Mapping[str, tuple[Any, ...]] | None = field(default_factory=dict)
    #: The array option holding one timestamp per step (``(B, T)``, non-decreasing along time: Phased LSTM's
    #: ``timestamps``), or ``None``. Cases draw it on a grid of eighths, regular, irregular or with ties
    #: (:attr:`rnnspec.conformance.cases.CaseSpec.clock`), so that with :attr:`grid_params` every phase is exact.
    clock: str | None = None
    #: Parameters drawn entry by entry from these exact values rather than by ``init_params`` (Phased LSTM's
    #: ``tau``, ``s``, ``r_on``): dyadic values whose sums, differences, floors and quotients by powers of two
    #: are exact in every float format, so that with the clock's grid the phases land exactly on the
    #: breakpoints of a piecewise gate in any correct arithmetic, often, and never within rounding of one.
    grid_params: Mapping[str, tuple[float, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class OpSpec:
    """The contract of one op: what it takes, what it returns, what it computes.

    The op's Python signature is the method of the same name on
    :class:`rnnspec.Backend`; this record holds everything else.
    """

    name: str
    summary: str
    equations: tuple[str, ...]
    params: tuple[ParamSpec, ...]
    state: tuple[StateSpec, ...]
    options: tuple[OptionSpec, ...]
    result_fields: tuple[str, ...]
    gradient: str
    #: Sizes fixed by the options, such as ``{"G": 4}`` gate blocks.
    fixed_dims: Callable[[Mapping[str, Any]], dict[str, int]] = field(default=lambda options: {})
    dtypes: tuple[str, ...] = FLOAT_DTYPES
    #: ``"sequence"``: x and per-layer params; ``"primitive"``: the arrays in
    #: ``params`` are positional arguments with shapes over ``B``, ``T``, ``H``.
    kind: Literal["sequence", "primitive"] = "sequence"
    #: When the layout depends on an option (ACT's ``cell``), these give the
    #: params and the state for the options of a call instead of ``params`` / ``state``.
    params_for: Callable[[Mapping[str, Any]], tuple[ParamSpec, ...]] | None = None
    state_for: Callable[[Mapping[str, Any]], tuple[StateSpec, ...]] | None = None
    #: The most layers a call may stack (``None``: any number).
    max_layers: int | None = None
    #: The module of each framework backend that implements the op (``backends/<framework>/<module>.py``;
    #: ``None``: the op's name). A sequence op's module has ``run(call)`` for every op it serves; a
    #: primitive's has a function named after the op (see :mod:`rnnspec.backends.common.ops`).
    module: str | None = None
    #: The class name of the op's layer in every framework (``torch.nn``, Flax NNX, Keras); ``None``: no layer.
    layer: str | None = None
    #: The type of the op's result (its fields are ``result_fields``); ``None``: a primitive's one
    #: array, of the shape of its first argument.
    result: ResultType | None = SequenceResult
    #: Sizes the params use that ``init_params`` takes as init options, by symbol: ``{"K": "window"}``.
    init_sizes: Mapping[str, str] = field(default_factory=dict)
    #: How ``init_params`` draws the parameters: the name of a scheme of :mod:`rnnspec.init`, or a scheme
    #: of the op's own.
    init: str | InitScheme = "uniform_fan_in"
    #: The op this op wraps with a gate of its own (``skip_lstm``'s ``lstm``), if any.
    base: str | None = None
    #: Hints for the conformance suite's draws.
    hints: CaseHints = field(default_factory=CaseHints)

    def __post_init__(self) -> None:
        fields = ("h",) if self.result is None else self.result._fields
        if fields != self.result_fields:
            raise ValueError(f"op {self.name!r}: result fields {self.result_fields} but a result of fields {fields}")

    @property
    def module_name(self) -> str:
        """The framework backends' module that implements the op."""
        return self.module or self.name

    @property
    def per_step(self) -> tuple[str, ...]:
        """The arguments holding one entry per step on axis 1: a sequence op's ``x`` and its array
        options of shape ``(B, T, ...)`` (``zoneout_mask``); a primitive's ``(B, T, ...)`` arrays
        (``a``, ``b``; ``pre``)."""
        if self.kind == "primitive":
            return tuple(p.name for p in self.params if p.shape[:2] == ("B", "T"))
        return ("x", *(o.name for o in self.array_options if o.shape[:2] == ("B", "T")))

    @property
    def array_options(self) -> tuple[OptionSpec, ...]:
        """The options that take an optional array (qrnn's ``zoneout_mask``)."""
        return tuple(o for o in self.options if o.kind == "array")

    @property
    def sizes(self) -> frozenset[str]:
        """Every size the op's default layout of params and state uses (``I``, ``H``, ``G``, ``K``...)."""
        shapes = [p.shape for p in self.layer_params(top=True)] + [s.shape for s in self.layer_state(top=True)]
        return frozenset(name for shape in shapes for e in shape for name in symbols(e))

    @property
    def value_options(self) -> tuple[OptionSpec, ...]:
        """The options chosen from a fixed set of values."""
        return tuple(o for o in self.options if o.kind == "value")

    def option(self, name: str) -> OptionSpec:
        """Return the option record called ``name``."""
        for opt in self.options:
            if opt.name == name:
                return opt
        raise KeyError(name)

    def layer_params(self, *, top: bool, options: Mapping[str, Any] | None = None) -> tuple[ParamSpec, ...]:
        """The parameters a layer may carry (the top layer may carry more)."""
        params = self.params if self.params_for is None else self.params_for(self._with_defaults(options))
        return tuple(p for p in params if p.layers == "all" or top)

    def layer_state(self, *, top: bool, options: Mapping[str, Any] | None = None) -> tuple[StateSpec, ...]:
        """The state entries of a layer (the top layer may carry more)."""
        state = self.state if self.state_for is None else self.state_for(self._with_defaults(options))
        return tuple(s for s in state if s.layers == "all" or top)

    def _with_defaults(self, options: Mapping[str, Any] | None) -> dict[str, Any]:
        return {**{o.name: o.default for o in self.options}, **(options or {})}
