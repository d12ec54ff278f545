"""Shared helpers of the tests that prove the NumPy reference of the adaptive ops exact.

The adaptive ops are ``skip_rnn``/``skip_lstm``/``skip_gru`` (Skip RNN) and ``act``
(Adaptive Computation Time). Everything here is written independently of
``rnnspec.reference``: random cases, and one loop per op written once over a tiny
array namespace (:data:`NUMPY` or :data:`TORCH`), so the same code is a fast NumPy
function (for central differences) and a torch autograd graph (for exact VJPs).

The loops differ in structure from the reference on purpose: they run one row at a
time over that row's valid steps only (walking time backwards for ``reverse``), so
there is no masking; ACT stops each row's inner loop at its own halting step.

- Skip: ``u = u~ + offset``. By default ``offset = detach(bin(u~) - u~)``: the value is
  ``bin(u~)`` exactly (``u~`` in [0, 1]: both differences are exact in floating point)
  and autograd's d u / d u~ is 1, the straight-through estimator. With ``offsets``
  given (recorded at a base point), ``u = u~ + c`` is a smooth function with the same
  value at that point and the straight-through derivative: central differences of it
  check the reference's VJP.
- ACT: N is decided from plain floats (detached); ``R = 1 - sum_{n<N} h^n`` stays in
  the graph, so autograd reaches the halting units only through the weights p^n.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from helpers import (
    assert_trees_close,
    grad_of,
    leaf,
    step_order,
    valid_steps,
)

import rnnspec
import rnnspec.reference as reference

#: The NumPy reference through the public backend interface.
B = rnnspec.get_backend("numpy")

#: Gate blocks per classic cell: the rows of w_ih are GATES * hidden.
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
STATE_NAMES = {"rnn": ("h",), "lstm": ("h", "c"), "gru": ("h",), "indrnn": ("h",)}
GATE_STATE = ("update_prob", "cum_update_prob")
SKIP_FIELDS = ("outputs", "state", "update_gate", "update_prob")
ACT_FIELDS = ("outputs", "state", "ponder_steps", "ponder_remainder", "ponder_cost")
ACT_CELLS = ("rnn", "lstm", "gru", "indrnn")

#: Every skip op with every value of its options, as (op, options) pairs.
SKIP_VARIANTS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("skip_rnn", {"activation": "tanh"}),
    ("skip_rnn", {"activation": "relu"}),
    ("skip_lstm", {}),
    ("skip_gru", {"reset_after": True}),
    ("skip_gru", {"reset_after": False}),
)

#: Discrete decisions (binarisation at 0.5, min's switch, halting at 1 - epsilon, relu's kink)
#: stay at least this far from their thresholds in the smooth cases, so a +-EPS step never flips one.
MARGIN = 1e-3


# -- array namespaces ------------------------------------------------------------------


class NumpyOps:
    """The operations the loops use, on float64 NumPy arrays (``detach`` is the identity)."""

    @staticmethod
    def sigmoid(a: Any) -> Any:
        return 0.5 * (1.0 + np.tanh(0.5 * a))  # no overflow warning for any a

    @staticmethod
    def tanh(a: Any) -> Any:
        return np.tanh(a)

    @staticmethod
    def relu(a: Any) -> Any:
        return np.maximum(a, 0.0)

    @staticmethod
    def detach(a: Any) -> Any:
        return a

    @staticmethod
    def binarize(a: Any) -> Any:
        return (a >= 0.5).astype(np.float64)

    @staticmethod
    def where(cond: Any, a: Any, b: Any) -> Any:
        return np.where(cond, a, b)

    @staticmethod
    def cat(parts: Sequence[Any]) -> Any:
        return np.concatenate(parts)

    @staticmethod
    def stack(parts: Sequence[Any]) -> Any:
        return np.stack(parts)

    @staticmethod
    def zeros(*shape: int) -> Any:
        return np.zeros(shape)

    @staticmethod
    def ones(*shape: int) -> Any:
        return np.ones(shape)

    @staticmethod
    def value(a: Any) -> float:
        return float(np.asarray(a).reshape(()))


class TorchOps:
    """The same operations on float64 torch tensors, differentiable."""

    @staticmethod
    def sigmoid(a: Any) -> Any:
        return torch.sigmoid(a)

    @staticmethod
    def tanh(a: Any) -> Any:
        return torch.tanh(a)

    @staticmethod
    def relu(a: Any) -> Any:
        return torch.relu(a)

    @staticmethod
    def detach(a: Any) -> Any:
        return a.detach()

    @staticmethod
    def binarize(a: Any) -> Any:
        return (a >= 0.5).to(torch.float64)

    @staticmethod
    def where(cond: Any, a: Any, b: Any) -> Any:
        return torch.where(cond, a, b)

    @staticmethod
    def cat(parts: Sequence[Any]) -> Any:
        return torch.cat(list(parts))

    @staticmethod
    def stack(parts: Sequence[Any]) -> Any:
        return torch.stack(list(parts))

    @staticmethod
    def zeros(*shape: int) -> Any:
        return torch.zeros(shape, dtype=torch.float64)

    @staticmethod
    def ones(*shape: int) -> Any:
        return torch.ones(shape, dtype=torch.float64)

    @staticmethod
    def value(a: Any) -> float:
        return float(a.detach().reshape(()))


NUMPY = NumpyOps()
TORCH = TorchOps()
Ops = NumpyOps | TorchOps


# -- one step of each base cell, on one row ----------------------------------------------


@dataclass
class Trace:
    """What a loop saw at its discrete decisions, for margin checks and reconstructions."""

    #: Every relu pre-activation computed on a valid step.
    relu_pre: list[float] = field(default_factory=list)
    #: Skip: u~ at every valid step.
    u_tilde: list[float] = field(default_factory=list)
    #: Skip: update_prob - (1 - cum) at every valid step whose inputs are not the constant defaults.
    min_gaps: list[float] = field(default_factory=list)
    #: Skip: bin(u~) - u~ at every valid step, by (row, time index).
    offsets: dict[tuple[int, int], float] = field(default_factory=dict)
    #: ACT: |cumulative halting sum - (1 - epsilon)| at every decision that max_steps does not force.
    halting_gaps: list[float] = field(default_factory=list)
    #: ACT: the weights p^n of every valid step, by (row, time index).
    weights: dict[tuple[int, int], list[float]] = field(default_factory=dict)
    #: ACT: whether max_steps forced the stop (the sum still below 1 - epsilon), by (row, time index).
    capped: dict[tuple[int, int], bool] = field(default_factory=dict)


def cell_step(
    ops: Ops,
    cell: str,
    options: Mapping[str, Any],
    p: Mapping[str, Any],
    state: Mapping[str, Any],
    x: Any,
    trace: Trace | None = None,
) -> dict[str, Any]:
    """One step of ``cell`` on one row: ``x`` (I,), state entries (H,); returns the new state.

    rnn ``h' = act(W_ih x + b_ih + W_hh h + b_hh)``; lstm gates i, f, g, o; gru gates r, z, n
    (``reset_after`` True: ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``, False:
    ``n = tanh(W_in x + b_in + W_hn (r * h) + b_hn)``); indrnn ``h' = relu(W_ih x + b_ih + u * h)``.
    """
    h = state["h"]
    if cell == "indrnn":
        a = p["w_ih"] @ x + p["b_ih"] + p["u"] * h
        if trace is not None:
            trace.relu_pre.extend(np.asarray(ops.detach(a)).tolist())
        return {"h": ops.relu(a)}
    hidden = h.shape[0]
    if cell == "rnn":
        a = p["w_ih"] @ x + p["b_ih"] + p["w_hh"] @ h + p["b_hh"]
        if options.get("activation", "tanh") == "relu":
            if trace is not None:
                trace.relu_pre.extend(np.asarray(ops.detach(a)).tolist())
            return {"h": ops.relu(a)}
        return {"h": ops.tanh(a)}
    if cell == "lstm":
        a = p["w_ih"] @ x + p["b_ih"] + p["w_hh"] @ h + p["b_hh"]
        i = ops.sigmoid(a[:hidden])
        f = ops.sigmoid(a[hidden : 2 * hidden])
        g = ops.tanh(a[2 * hidden : 3 * hidden])
        o = ops.sigmoid(a[3 * hidden :])
        c = f * state["c"] + i * g
        return {"h": o * ops.tanh(c), "c": c}
    assert cell == "gru", cell
    w_ih, w_hh, b_ih, b_hh = p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"]
    r = ops.sigmoid(w_ih[:hidden] @ x + b_ih[:hidden] + w_hh[:hidden] @ h + b_hh[:hidden])
    z = ops.sigmoid(
        w_ih[hidden : 2 * hidden] @ x
        + b_ih[hidden : 2 * hidden]
        + w_hh[hidden : 2 * hidden] @ h
        + b_hh[hidden : 2 * hidden]
    )
    if options.get("reset_after", True):
        n = ops.tanh(w_ih[2 * hidden :] @ x + b_ih[2 * hidden :] + r * (w_hh[2 * hidden :] @ h + b_hh[2 * hidden :]))
    else:
        n = ops.tanh(w_ih[2 * hidden :] @ x + b_ih[2 * hidden :] + w_hh[2 * hidden :] @ (r * h) + b_hh[2 * hidden :])
    return {"h": (1.0 - z) * n + z * h}


def _stack_rows(ops: Ops, rows: Sequence[Sequence[Any]], batch: int, time: int, width: int) -> Any:
    """rows[b][t] of shape (width,) -> (batch, time, width)."""
    if batch == 0 or time == 0:
        return ops.zeros(batch, time, width)
    return ops.stack([ops.stack(list(row)) for row in rows])


# -- Skip RNN ---------------------------------------------------------------------------


def skip_forward(
    ops: Ops,
    op: str,
    options: Mapping[str, Any],
    x: Any,
    params: Sequence[Mapping[str, Any]],
    lengths: Any,
    initial_state: Sequence[Mapping[str, Any]] | None,
    reverse: bool,
    *,
    offsets: Mapping[tuple[int, int], float] | None = None,
    trace: Trace | None = None,
) -> dict[str, Any]:
    """Skip RNN (the authors' code) one row at a time; the result fields as a dict.

    ``offsets`` None: u = u~ + detach(bin(u~) - u~) (straight-through). Given: u = u~ + offsets[b, t].
    min(update_prob, 1 - cum) takes update_prob on ties (``where``, not ``minimum``, whose
    gradient torch splits on ties), as the spec says.
    """
    base = op.removeprefix("skip_")
    names = STATE_NAMES[base]
    batch, time = x.shape[0], x.shape[1]
    assert batch >= 1, "the loop stacks rows: batch 0 is not supported"
    hidden = params[-1]["w_hh"].shape[1]
    widths = [p["w_hh"].shape[1] for p in params]
    top = params[-1]
    full = np.full(batch, time) if lengths is None else np.asarray(lengths)
    outputs, gates, probs = [], [], []
    finals: list[list[dict[str, Any]]] = []
    for b in range(batch):
        if initial_state is None:
            s = [
                {n: p[f"{n}0"] if f"{n}0" in p else ops.zeros(w) for n in names}
                for p, w in zip(params, widths, strict=True)
            ]
            prob, cum = ops.ones(1), ops.zeros(1)
        else:
            s = [{n: layer[n][b] for n in names} for layer in initial_state]
            prob, cum = initial_state[-1]["update_prob"][b], initial_state[-1]["cum_update_prob"][b]
        out = [ops.zeros(hidden) for _ in range(time)]
        gate = [ops.zeros(1) for _ in range(time)]
        tilde = [ops.zeros(1) for _ in range(time)]
        for step, t in enumerate(step_order(int(full[b]), reverse)):
            u_tilde = cum + ops.where(prob <= 1.0 - cum, prob, 1.0 - cum)
            if trace is not None:
                trace.u_tilde.append(ops.value(u_tilde))
                if not (initial_state is None and step == 0):  # there prob = 1 and cum = 0 are constants
                    trace.min_gaps.append(ops.value(prob - (1.0 - cum)))
                trace.offsets[(b, t)] = ops.value(ops.binarize(u_tilde) - u_tilde)
            u = u_tilde + ops.detach(ops.binarize(u_tilde) - u_tilde) if offsets is None else u_tilde + offsets[b, t]
            inp = x[b, t]
            cands = []
            for p, layer in zip(params, s, strict=True):
                cand = cell_step(ops, base, options, p, layer, inp, trace)
                cands.append(cand)
                inp = cand["h"]
            g = cands[-1]["c" if base == "lstm" else "h"]
            du = ops.sigmoid(top["w_gate"] @ g + top["b_gate"])
            s = [{n: u * cand[n] + (1.0 - u) * layer[n] for n in names} for cand, layer in zip(cands, s, strict=True)]
            prob, cum = u * du + (1.0 - u) * prob, (1.0 - u) * u_tilde
            out[t], gate[t], tilde[t] = s[-1]["h"], u, u_tilde
        finals.append([*s[:-1], {**s[-1], "update_prob": prob, "cum_update_prob": cum}])
        outputs.append(out)
        gates.append(gate)
        probs.append(tilde)
    state = [{name: ops.stack([f[k][name] for f in finals]) for name in finals[0][k]} for k in range(len(params))]
    return {
        "outputs": _stack_rows(ops, outputs, batch, time, hidden),
        "state": state,
        "update_gate": _stack_rows(ops, gates, batch, time, 1)[..., 0],
        "update_prob": _stack_rows(ops, probs, batch, time, 1)[..., 0],
    }


@dataclass
class SkipCase:
    """One call ``B.<op>(x, params, **options, lengths=..., initial_state=..., reverse=...)``."""

    op: str
    options: dict[str, Any]
    x: np.ndarray
    params: list[dict[str, np.ndarray]]
    lengths: np.ndarray | None = None
    initial_state: list[dict[str, np.ndarray]] | None = None
    reverse: bool = False

    @property
    def base(self) -> str:
        return self.op.removeprefix("skip_")

    @property
    def shape(self) -> tuple[int, int, int]:
        """(batch, time, hidden of the top layer)."""
        return self.x.shape[0], self.x.shape[1], self.params[-1]["w_hh"].shape[1]

    def kwargs(self) -> dict[str, Any]:
        return {**self.options, "lengths": self.lengths, "initial_state": self.initial_state, "reverse": self.reverse}

    def run(self, **overrides: Any) -> Any:
        """The reference's result (keyword arguments in ``overrides`` replace the case's)."""
        kwargs = {**self.kwargs(), **overrides}
        return getattr(B, self.op)(kwargs.pop("x", self.x), kwargs.pop("params", self.params), **kwargs)

    def loop(self, ops: Ops = NUMPY, **kwargs: Any) -> dict[str, Any]:
        """:func:`skip_forward` on the case (``kwargs``: ``offsets``, ``trace``, or replaced arrays)."""
        x = kwargs.pop("x", self.x)
        params = kwargs.pop("params", self.params)
        state = kwargs.pop("initial_state", self.initial_state)
        return skip_forward(ops, self.op, self.options, x, params, self.lengths, state, self.reverse, **kwargs)

    def default_state(self) -> list[dict[str, np.ndarray]]:
        """The initial state the op uses when none is given: h0/c0 broadcast (or zeros), update_prob 1, cum 0."""
        batch = self.x.shape[0]
        out = []
        for p in self.params:
            hidden = p["w_hh"].shape[1]
            out.append({n: np.tile(p.get(f"{n}0", np.zeros(hidden)), (batch, 1)) for n in STATE_NAMES[self.base]})
        out[-1]["update_prob"] = np.ones((batch, 1))
        out[-1]["cum_update_prob"] = np.zeros((batch, 1))
        return out


def cell_params(rng: np.random.Generator, cell: str, inputs: int, hidden: int, scale: float = 1.0) -> dict[str, Any]:
    """float64 params of one layer of ``cell`` (torch's layout), uniform in [-scale, scale]."""
    if cell == "indrnn":
        return {
            "w_ih": rng.uniform(-scale, scale, (hidden, inputs)),
            "b_ih": rng.uniform(-scale, scale, (hidden,)),
            "u": rng.uniform(-scale, scale, (hidden,)),
        }
    rows = GATES[cell] * hidden
    return {
        "w_ih": rng.uniform(-scale, scale, (rows, inputs)),
        "w_hh": rng.uniform(-scale, scale, (rows, hidden)),
        "b_ih": rng.uniform(-scale, scale, (rows,)),
        "b_hh": rng.uniform(-scale, scale, (rows,)),
    }


def skip_params(
    rng: np.random.Generator,
    op: str,
    input_size: int,
    hidden: int,
    layers: int,
    *,
    trainable_initial_state: bool = False,
    gate_bias: tuple[float, float] = (-1.0, 1.0),
) -> list[dict[str, np.ndarray]]:
    """float64 skip params: the base cell per layer, w_gate (1, H) and b_gate (1,) on the top one, h0/c0 optional."""
    base = op.removeprefix("skip_")
    params = [cell_params(rng, base, input_size if k == 0 else hidden, hidden) for k in range(layers)]
    params[-1]["w_gate"] = rng.uniform(-2.0, 2.0, (1, hidden))
    params[-1]["b_gate"] = rng.uniform(*gate_bias, (1,))
    if trainable_initial_state:
        for p in params:
            for name in STATE_NAMES[base]:
                p[f"{name}0"] = rng.uniform(-1.0, 1.0, (hidden,))
    return params


def skip_state(rng: np.random.Generator, op: str, batch: int, hidden: int, layers: int) -> list[dict[str, np.ndarray]]:
    """A random initial state: h (c) per layer; on the top one update_prob in (0.05, 0.95), cum in [0, 0.45)."""
    names = STATE_NAMES[op.removeprefix("skip_")]
    state = [{n: rng.uniform(-1.0, 1.0, (batch, hidden)) for n in names} for _ in range(layers)]
    state[-1]["update_prob"] = rng.uniform(0.05, 0.95, (batch, 1))
    state[-1]["cum_update_prob"] = rng.uniform(0.0, 0.45, (batch, 1))
    return state


def skip_margins(case: SkipCase) -> tuple[float, float, float]:
    """(min |u~ - 1/2|, min |update_prob - (1 - cum)|, min |relu pre-activation|) over valid steps (inf if none)."""
    trace = Trace()
    case.loop(trace=trace)

    def smallest(values: Sequence[float], shift: float = 0.0) -> float:
        return min((abs(v - shift) for v in values), default=np.inf)

    return smallest(trace.u_tilde, 0.5), smallest(trace.min_gaps), smallest(trace.relu_pre)


def make_skip_case(
    seed: int,
    op: str,
    options: Mapping[str, Any],
    *,
    batch: int = 3,
    time: int = 5,
    input_size: int = 3,
    hidden: int = 2,
    layers: int = 1,
    lengths: Sequence[int] | None = None,
    with_state: bool = False,
    reverse: bool = False,
    trainable_initial_state: bool = False,
    margin: float = MARGIN,
) -> SkipCase:
    """A random case, redrawn (deterministically, sub-seeds of ``seed``) until it is informative and smooth.

    Informative: some valid step skips (u = 0) besides the updates. Smooth: every u~ is at least
    ``margin`` from 1/2, min's arguments at least ``margin`` apart, relu pre-activations at least
    ``margin`` from 0. Callers assert these again with :func:`skip_margins`.
    """
    for attempt in range(200):
        rng = np.random.default_rng([seed, attempt])
        case = SkipCase(
            op=op,
            options=dict(options),
            x=rng.uniform(-1.0, 1.0, (batch, time, input_size)),
            params=skip_params(rng, op, input_size, hidden, layers, trainable_initial_state=trainable_initial_state),
            lengths=None if lengths is None else np.asarray(lengths, dtype=np.int64),
            initial_state=skip_state(rng, op, batch, hidden, layers) if with_state else None,
            reverse=reverse,
        )
        trace = Trace()
        case.loop(trace=trace)
        if not any(u < 0.5 for u in trace.u_tilde):
            continue
        if min(skip_margins(case)) >= margin:
            return case
    raise AssertionError(f"no informative smooth skip case for seed {seed}")


def skip_cotangents(rng: np.random.Generator, case: SkipCase) -> dict[str, Any]:
    """Random cotangents of every field (padding included: its gradient must vanish), every state entry."""
    batch, time, _ = case.shape
    state = case.default_state()  # for the structure and shapes only
    return {
        "outputs": rng.normal(size=(batch, time, case.shape[2])),
        "state": [{k: rng.normal(size=v.shape) for k, v in layer.items()} for layer in state],
        "update_gate": rng.normal(size=(batch, time)),
        "update_prob": rng.normal(size=(batch, time)),
    }


# -- ACT --------------------------------------------------------------------------------


def act_forward(
    ops: Ops,
    cell: str,
    x: Any,
    params: Mapping[str, Any],
    lengths: Any,
    initial_state: Sequence[Mapping[str, Any]] | None,
    reverse: bool,
    epsilon: float,
    max_steps: int,
    *,
    trace: Trace | None = None,
) -> dict[str, Any]:
    """ACT one row and one input step at a time; the result fields as a dict.

    The cell runs with its options at their defaults (rnn tanh, gru reset after, indrnn relu).
    Each input step runs inner steps until the running sum of the halting units (a Python
    float: no gradient) reaches ``1 - epsilon`` or ``max_steps`` is reached.
    """
    names = STATE_NAMES[cell]
    batch, time = x.shape[0], x.shape[1]
    assert batch >= 1, "the loop stacks rows: batch 0 is not supported"
    hidden = params["w_halt"].shape[1]
    full = np.full(batch, time) if lengths is None else np.asarray(lengths)
    outputs, steps, remainders, costs, finals = [], [], [], [], []
    threshold = 1.0 - epsilon
    for b in range(batch):
        s = {n: ops.zeros(hidden) if initial_state is None else initial_state[0][n][b] for n in names}
        out = [ops.zeros(hidden) for _ in range(time)]
        n_row = [ops.zeros(1) for _ in range(time)]
        r_row = [ops.zeros(1) for _ in range(time)]
        c_row = [ops.zeros(1) for _ in range(time)]
        for t in step_order(int(full[b]), reverse):
            inner, halts, states, total = s, [], [], 0.0
            for n in range(1, max_steps + 1):
                flag = ops.zeros(1) if n == 1 else ops.ones(1)
                inner = cell_step(ops, cell, {}, params, inner, ops.cat([x[b, t], flag]), trace)
                h = ops.sigmoid(params["w_halt"] @ inner["h"] + params["b_halt"])
                halts.append(h)
                states.append(inner)
                total = total + ops.value(h)
                if n < max_steps and trace is not None:
                    trace.halting_gaps.append(abs(total - threshold))
                if total >= threshold or n == max_steps:
                    break
            remainder = ops.ones(1)
            for h in halts[:-1]:
                remainder = remainder - h
            weights = [*halts[:-1], remainder]
            if trace is not None:
                trace.weights[(b, t)] = [ops.value(w) for w in weights]
                trace.capped[(b, t)] = total < threshold
            mean = {k: weights[0] * states[0][k] for k in names}
            for w, st in zip(weights[1:], states[1:], strict=True):
                mean = {k: mean[k] + w * st[k] for k in names}
            s = mean
            out[t] = s["h"]
            n_row[t] = ops.ones(1) * len(halts)
            r_row[t] = remainder
            c_row[t] = remainder + len(halts)
        outputs.append(out)
        steps.append(n_row)
        remainders.append(r_row)
        costs.append(c_row)
        finals.append(s)
    state = {n: ops.stack([f[n] for f in finals]) for n in names}
    return {
        "outputs": _stack_rows(ops, outputs, batch, time, hidden),
        "state": [state],
        "ponder_steps": _stack_rows(ops, steps, batch, time, 1)[..., 0],
        "ponder_remainder": _stack_rows(ops, remainders, batch, time, 1)[..., 0],
        "ponder_cost": _stack_rows(ops, costs, batch, time, 1)[..., 0],
    }


@dataclass
class ACTCase:
    """One call ``B.act(x, params, cell=, epsilon=, max_steps=, lengths=, initial_state=, reverse=)``."""

    cell: str
    epsilon: float
    max_steps: int
    x: np.ndarray
    params: dict[str, np.ndarray]
    lengths: np.ndarray | None = None
    initial_state: list[dict[str, np.ndarray]] | None = None
    reverse: bool = False

    #: The op's name, as ``reference.vjp`` takes it.
    op: ClassVar[str] = "act"

    @property
    def shape(self) -> tuple[int, int, int]:
        """(batch, time, hidden)."""
        return self.x.shape[0], self.x.shape[1], self.params["w_halt"].shape[1]

    def kwargs(self) -> dict[str, Any]:
        return {
            "cell": self.cell,
            "epsilon": self.epsilon,
            "max_steps": self.max_steps,
            "lengths": self.lengths,
            "initial_state": self.initial_state,
            "reverse": self.reverse,
        }

    def run(self, **overrides: Any) -> Any:
        """The reference's result (keyword arguments in ``overrides`` replace the case's)."""
        kwargs = {**self.kwargs(), **overrides}
        return B.act(kwargs.pop("x", self.x), kwargs.pop("params", self.params), **kwargs)

    def loop(self, ops: Ops = NUMPY, **kwargs: Any) -> dict[str, Any]:
        """:func:`act_forward` on the case (``kwargs``: ``trace``, or replaced arrays)."""
        x = kwargs.pop("x", self.x)
        params = kwargs.pop("params", self.params)
        state = kwargs.pop("initial_state", self.initial_state)
        return act_forward(
            ops, self.cell, x, params, self.lengths, state, self.reverse, self.epsilon, self.max_steps, **kwargs
        )

    def state_or_zeros(self) -> list[dict[str, np.ndarray]]:
        batch, _, hidden = self.shape
        if self.initial_state is not None:
            return self.initial_state
        return [{n: np.zeros((batch, hidden)) for n in STATE_NAMES[self.cell]}]


def act_params(
    rng: np.random.Generator,
    cell: str,
    input_size: int,
    hidden: int,
    halt_bias: tuple[float, float] = (-1.0, 1.0),
    halt_scale: float = 1.0,
) -> dict[str, np.ndarray]:
    """float64 act params: the cell with one more input column (the flag), w_halt (1, H), b_halt (1,)."""
    params = cell_params(rng, cell, input_size + 1, hidden)
    params["w_halt"] = rng.uniform(-halt_scale, halt_scale, (1, hidden))
    params["b_halt"] = rng.uniform(*halt_bias, (1,))
    return params


def act_margins(case: ACTCase) -> tuple[float, float]:
    """(min |cumulative halting sum - (1 - epsilon)| over unforced decisions, min |relu pre-activation|)."""
    trace = Trace()
    case.loop(trace=trace)
    return min(trace.halting_gaps, default=np.inf), min((abs(a) for a in trace.relu_pre), default=np.inf)


def make_act_case(
    seed: int,
    cell: str,
    *,
    epsilon: float = 0.01,
    max_steps: int = 100,
    batch: int = 3,
    time: int = 4,
    input_size: int = 2,
    hidden: int = 3,
    lengths: Sequence[int] | None = None,
    with_state: bool = False,
    reverse: bool = False,
    halt_bias: tuple[float, float] = (-1.0, 1.0),
    margin: float = MARGIN,
    require_cap: bool = False,
) -> ACTCase:
    """A random case, redrawn (sub-seeds of ``seed``) until its halting sums and relu
    pre-activations keep ``margin`` from their thresholds (callers assert it with :func:`act_margins`).

    With ``require_cap``, also until max_steps forces the stop of some valid step (its halting sum
    still below ``1 - epsilon``) and some other valid step stops before max_steps; w_halt is drawn
    three times wider then, so that the halting units vary between steps.
    """
    for attempt in range(200):
        rng = np.random.default_rng([seed, attempt])
        case = ACTCase(
            cell=cell,
            epsilon=epsilon,
            max_steps=max_steps,
            x=rng.uniform(-1.0, 1.0, (batch, time, input_size)),
            params=act_params(rng, cell, input_size, hidden, halt_bias, 3.0 if require_cap else 1.0),
            lengths=None if lengths is None else np.asarray(lengths, dtype=np.int64),
            initial_state=(
                [{n: rng.uniform(-1.0, 1.0, (batch, hidden)) for n in STATE_NAMES[cell]}] if with_state else None
            ),
            reverse=reverse,
        )
        if require_cap:
            trace = Trace()
            steps = case.loop(trace=trace)["ponder_steps"][valid_steps(case.lengths, batch, time)]
            if not (any(trace.capped.values()) and np.any(steps < max_steps)):
                continue
        if min(act_margins(case)) >= margin:
            return case
    raise AssertionError(f"no smooth act case for seed {seed}")


def act_cotangents(rng: np.random.Generator, case: ACTCase) -> dict[str, Any]:
    """Random cotangents of every field, ponder_steps included (it must carry no gradient)."""
    batch, time, hidden = case.shape
    return {
        "outputs": rng.normal(size=(batch, time, hidden)),
        "state": [{n: rng.normal(size=(batch, hidden)) for n in STATE_NAMES[case.cell]}],
        "ponder_steps": rng.normal(size=(batch, time)),
        "ponder_remainder": rng.normal(size=(batch, time)),
        "ponder_cost": rng.normal(size=(batch, time)),
    }


# -- losses, gradients, comparisons ------------------------------------------------------


def fields_of(result: Any) -> dict[str, Any]:
    """A result NamedTuple (or a loop's dict) as a dict of fields; the state as a list of dicts."""
    fields = dict(result) if isinstance(result, Mapping) else result._asdict()
    fields["state"] = [dict(layer) for layer in fields["state"]]
    return fields


def inner_product(cotangents: Mapping[str, Any], result: Any) -> Any:
    """``<cotangents, result>`` over every field the cotangents name (NumPy float or torch scalar)."""
    fields = fields_of(result)
    total: Any = 0.0
    for key, cot in cotangents.items():
        if key == "state":
            for cot_layer, res_layer in zip(cot, fields["state"], strict=True):
                for name, c in cot_layer.items():
                    total = total + _dot(c, res_layer[name])
        else:
            total = total + _dot(cot, fields[key])
    return total


def _dot(cot: np.ndarray, value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return (torch.from_numpy(np.asarray(cot, dtype=np.float64)) * value).sum()
    return float(np.sum(np.asarray(cot, dtype=np.float64) * np.asarray(value, dtype=np.float64)))


def to_numpy(tree: Any) -> Any:
    """Nested dicts/lists of torch tensors as NumPy arrays."""
    if isinstance(tree, Mapping):
        return {k: to_numpy(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [to_numpy(v) for v in tree]
    return tree.detach().numpy().copy() if isinstance(tree, torch.Tensor) else tree


def torch_gradients(
    forward: Callable[[Any, Any, Any], dict[str, Any]],
    cotangents: Mapping[str, Any],
    x: np.ndarray,
    params: Any,
    initial_state: Sequence[Mapping[str, np.ndarray]] | None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The torch result and autograd's gradient of ``<cotangents, result>`` w.r.t. x, params, initial state.

    ``forward(x, params, initial_state)`` takes torch leaves (params: a dict or a list of dicts,
    like ``params``). With ``initial_state`` None the initial-state gradient is absent.
    """
    x_t = leaf(x)
    single = isinstance(params, Mapping)
    p_t = [{k: leaf(v) for k, v in layer.items()} for layer in ([params] if single else params)]
    s_t = None if initial_state is None else [{k: leaf(v) for k, v in layer.items()} for layer in initial_state]
    result = forward(x_t, p_t[0] if single else p_t, s_t)
    loss = inner_product(cotangents, result)
    if loss.requires_grad:
        loss.backward()
    grads: dict[str, Any] = {
        "x": grad_of(x_t),
        "params": [{k: grad_of(v) for k, v in layer.items()} for layer in p_t],
    }
    if single:
        grads["params"] = grads["params"][0]
    if s_t is not None:
        grads["initial_state"] = [{k: grad_of(v) for k, v in layer.items()} for layer in s_t]
    return to_numpy(result), grads


def take_rows(tree: Any, rows: Any) -> Any:
    """Rows ``rows`` of every (batch, ...) array of a nested tree."""
    if isinstance(tree, Mapping):
        return {k: take_rows(v, rows) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [take_rows(v, rows) for v in tree]
    return None if tree is None else np.asarray(tree)[rows]


# -- the checks both adaptive ops' tests make ----------------------------------------------

#: The result fields that hold discrete decisions: compared for equality, not closeness.
DISCRETE_FIELDS = ("update_gate", "ponder_steps")


def assert_fields_match(got: Any, want: Any, rtol: float, what: str) -> None:
    """Fields close, and the discrete ones (skip's update_gate, a {0, 1} decision; act's
    ponder_steps, an integer count) equal."""
    got, want = fields_of(got), fields_of(want)
    for name in DISCRETE_FIELDS:
        if name in want:
            np.testing.assert_array_equal(got[name], want[name], err_msg=f"{what}: {name}")
    assert_trees_close(got, want, rtol, what)


def reference_vjp(case: SkipCase | ACTCase, cotangents: Mapping[str, Any]) -> dict[str, Any]:
    """The VJP under test: ``reference.vjp`` of the case's op at the case's inputs."""
    return reference.vjp(case.op, cotangents, case.x, case.params, **case.kwargs())


def torch_vjp(case: SkipCase | ACTCase, cotangents: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The torch result and autograd's VJP through the case's loop on :data:`TORCH`.

    Skip: the straight-through binarisation. Without a given initial state, the params'
    gradient (h0/c0 included) comes from the default run, and the initial state's from a second
    run that passes the defaults explicitly. ACT: the halting count held constant, the loop
    started from the given initial state or explicit zeros.
    """

    def forward(x: Any, params: Any, state: Any) -> dict[str, Any]:
        return case.loop(TORCH, x=x, params=params, initial_state=state)

    if isinstance(case, ACTCase):
        return torch_gradients(forward, cotangents, case.x, case.params, case.state_or_zeros())
    result, grads = torch_gradients(forward, cotangents, case.x, case.params, case.initial_state)
    if case.initial_state is None:
        _, explicit = torch_gradients(forward, cotangents, case.x, case.params, case.default_state())
        grads["initial_state"] = explicit["initial_state"]
    return result, grads
