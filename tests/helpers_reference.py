"""Shared helpers of the tests that prove the NumPy reference of rnn/lstm/gru exact.

Everything here is written independently of ``rnnspec.reference``: random cases,
a torch runner built straight on ``torch.nn.RNN``/``LSTM``/``GRU`` (never through
``rnnspec.convert``), a hand-written torch loop of the Cho GRU, central finite
differences (``helpers.central_difference``) of the scalar loss ``<cotangents, result>``
(``helpers.sequence_inner_product``), whose gradient is a VJP.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from helpers import full_lengths, step_order
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnspec.reference as reference

#: Gate blocks per op: the rows of w_ih are GATES * hidden.
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
STATE_NAMES = {"rnn": ("h",), "lstm": ("h", "c"), "gru": ("h",)}
TORCH_CLASSES = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}
TORCH_NAMES = (("w_ih", "weight_ih"), ("w_hh", "weight_hh"), ("b_ih", "bias_ih"), ("b_hh", "bias_hh"))

#: Every op with every value of its options, as (op, options) pairs.
VARIANTS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("rnn", {"activation": "tanh"}),
    ("rnn", {"activation": "relu"}),
    ("lstm", {}),
    ("gru", {"reset_after": True}),
    ("gru", {"reset_after": False}),
)


def has_torch_module(op: str, options: Mapping[str, Any]) -> bool:
    """Whether torch.nn has this op with these options (torch's GRU resets after the matmul)."""
    return not (op == "gru" and options.get("reset_after") is False)


# -- random cases ---------------------------------------------------------------


def random_params(
    rng: np.random.Generator, op: str, input_size: int, hidden: int, layers: int, scale: float = 1.0
) -> list[dict[str, np.ndarray]]:
    """One float64 parameter dict per layer, entries uniform in [-scale, scale]."""
    rows = GATES[op] * hidden
    out = []
    for k in range(layers):
        cols = input_size if k == 0 else hidden
        out.append(
            {
                "w_ih": rng.uniform(-scale, scale, (rows, cols)),
                "w_hh": rng.uniform(-scale, scale, (rows, hidden)),
                "b_ih": rng.uniform(-scale, scale, (rows,)),
                "b_hh": rng.uniform(-scale, scale, (rows,)),
            }
        )
    return out


def random_state(rng: np.random.Generator, op: str, batch: int, hidden: int, layers: int) -> list[dict[str, Any]]:
    """A random float64 initial state, one dict per layer."""
    return [{name: rng.uniform(-1.0, 1.0, (batch, hidden)) for name in STATE_NAMES[op]} for _ in range(layers)]


@dataclass
class Case:
    """One call of an op: ``reference.<op>(x, params, **options, lengths=..., initial_state=..., reverse=...)``."""

    op: str
    options: dict[str, Any]
    x: np.ndarray
    params: list[dict[str, np.ndarray]]
    lengths: np.ndarray | None = None
    initial_state: list[dict[str, np.ndarray]] | None = None
    reverse: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def batch(self) -> int:
        return self.x.shape[0]

    @property
    def time(self) -> int:
        return self.x.shape[1]

    @property
    def hidden(self) -> int:
        return self.params[0]["w_hh"].shape[1]

    @property
    def layers(self) -> int:
        return len(self.params)

    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments of the call (options, lengths, initial_state, reverse)."""
        return {**self.options, "lengths": self.lengths, "initial_state": self.initial_state, "reverse": self.reverse}

    def lengths_or_full(self) -> np.ndarray:
        return full_lengths(self.lengths, self.batch, self.time)

    def state_or_zeros(self) -> list[dict[str, np.ndarray]]:
        if self.initial_state is not None:
            return self.initial_state
        zeros = np.zeros((self.batch, self.hidden))
        return [{name: zeros.copy() for name in STATE_NAMES[self.op]} for _ in range(self.layers)]


def run_reference(case: Case, **overrides: Any) -> Any:
    """The reference's result for ``case`` (keyword arguments in ``overrides`` replace the case's)."""
    kwargs = {**case.kwargs(), **overrides}
    x = kwargs.pop("x", case.x)
    params = kwargs.pop("params", case.params)
    return getattr(reference, case.op)(x, params, **kwargs)


def make_case(
    seed: int,
    op: str,
    options: Mapping[str, Any],
    *,
    batch: int = 3,
    time: int = 5,
    input_size: int = 4,
    hidden: int = 3,
    layers: int = 1,
    lengths: Sequence[int] | None = None,
    with_state: bool = False,
    reverse: bool = False,
    scale: float = 1.0,
    relu_margin: float = 1e-3,
) -> Case:
    """A random case; for relu, redrawn until every valid pre-activation is at least ``relu_margin`` from 0.

    The redraw is deterministic (sub-seeds of ``seed``); callers assert the margin again
    with :func:`relu_preactivations`.
    """
    for attempt in range(100):
        rng = np.random.default_rng([seed, attempt])
        case = Case(
            op=op,
            options=dict(options),
            x=rng.uniform(-1.0, 1.0, (batch, time, input_size)),
            params=random_params(rng, op, input_size, hidden, layers, scale),
            lengths=None if lengths is None else np.asarray(lengths, dtype=np.int64),
            initial_state=random_state(rng, op, batch, hidden, layers) if with_state else None,
            reverse=reverse,
        )
        if op != "rnn" or options.get("activation") != "relu":
            return case
        pre = relu_preactivations(case)
        if pre.size == 0 or np.min(np.abs(pre)) >= relu_margin:
            return case
    raise AssertionError(f"no relu case with pre-activations {relu_margin} away from 0 for seed {seed}")


def relu_preactivations(case: Case) -> np.ndarray:
    """Every pre-activation ``W_ih x + b_ih + W_hh h + b_hh`` an rnn computes at a valid step.

    An independent per-row, per-step loop (runs each row's valid prefix backwards
    when ``reverse``), used to keep finite differences away from relu's kink.
    """
    pre: list[np.ndarray] = []
    state = case.state_or_zeros()
    for b, n in enumerate(case.lengths_or_full()):
        order = step_order(n, case.reverse)
        inp = case.x[b, :n]
        for k, p in enumerate(case.params):
            h = state[k]["h"][b]
            out = np.zeros((n, case.hidden))
            for t in order:
                a = p["w_ih"] @ inp[t] + p["b_ih"] + p["w_hh"] @ h + p["b_hh"]
                pre.append(a)
                h = np.maximum(a, 0.0)
                out[t] = h
            inp = out
    return np.concatenate(pre) if pre else np.zeros((0,))


# -- cotangents -----------------------------------------------------------------


def random_cotangents(rng: np.random.Generator, case: Case) -> dict[str, Any]:
    """Random cotangents of every result field (also on padded outputs, whose gradient must be zero)."""
    return {
        "outputs": rng.normal(size=(case.batch, case.time, case.hidden)),
        "state": [
            {name: rng.normal(size=(case.batch, case.hidden)) for name in STATE_NAMES[case.op]}
            for _ in range(case.layers)
        ],
    }


# -- torch ----------------------------------------------------------------------


def torch_module(
    op: str, options: Mapping[str, Any], params: Sequence[Mapping[str, np.ndarray]], bidirectional: bool = False
) -> torch.nn.Module:
    """A float64 torch.nn.RNN/LSTM/GRU (batch-first) holding ``params``, filled by hand (not by rnnspec.convert).

    With ``bidirectional`` (one layer only), ``params`` holds two dicts: forward then reverse direction.
    """
    first = params[0]
    kwargs: dict[str, Any] = {"nonlinearity": options["activation"]} if op == "rnn" else {}
    layers = 1 if bidirectional else len(params)
    module = TORCH_CLASSES[op](
        input_size=first["w_ih"].shape[1],
        hidden_size=first["w_hh"].shape[1],
        num_layers=layers,
        batch_first=True,
        bidirectional=bidirectional,
        dtype=torch.float64,
        **kwargs,
    )
    suffixes = [("_l0", params[0]), ("_l0_reverse", params[1])] if bidirectional else []
    if not bidirectional:
        suffixes = [(f"_l{k}", p) for k, p in enumerate(params)]
    with torch.no_grad():
        for suffix, layer in suffixes:
            for ours, theirs in TORCH_NAMES:
                getattr(module, theirs + suffix).copy_(torch.from_numpy(np.array(layer[ours])))
    return module


def torch_initial_state(op: str, state: Sequence[Mapping[str, np.ndarray]]) -> tuple[torch.Tensor, ...]:
    """rnnspec's per-layer state dicts as torch's (layers, batch, hidden) tensors, leaves requiring grad."""
    return tuple(
        torch.tensor(np.stack([layer[name] for layer in state]), requires_grad=True) for name in STATE_NAMES[op]
    )


def torch_run(
    module: torch.nn.Module, x: torch.Tensor, lengths: np.ndarray | None, state0: tuple[torch.Tensor, ...]
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """Run a batch-first torch module with packed variable lengths; differentiable.

    torch cannot pack rows of length 0: they are left out of the module's run, given zero
    outputs and their initial state as final state (rnnspec's semantics of an empty row).
    Returns outputs (batch, time, directions*hidden) and the final state tensors.
    """
    batch, time = x.shape[:2]
    lstm = isinstance(module, torch.nn.LSTM)
    width = module.hidden_size * (2 if module.bidirectional else 1)
    if lengths is None:
        out, final = module(x, state0 if lstm else state0[0])
        return out, (tuple(final) if lstm else (final,))
    lengths = np.asarray(lengths)
    rows = torch.from_numpy(np.flatnonzero(lengths > 0))
    outputs = torch.zeros(batch, time, width, dtype=x.dtype)
    if len(rows) == 0:
        return outputs, state0
    packed = pack_padded_sequence(
        x[rows], torch.from_numpy(lengths[lengths > 0]), batch_first=True, enforce_sorted=False
    )
    sub_state = tuple(s[:, rows] for s in state0)
    out_packed, final = module(packed, sub_state if lstm else sub_state[0])
    out, _ = pad_packed_sequence(out_packed, batch_first=True, total_length=time)
    finals = tuple(final) if lstm else (final,)
    outputs = outputs.index_copy(0, rows, out)
    return outputs, tuple(s.index_copy(1, rows, f) for s, f in zip(state0, finals, strict=True))


def reverse_prefix_index(lengths: np.ndarray, time: int) -> np.ndarray:
    """For each row, the time index that reverses its valid prefix and keeps its padding in place."""
    t = np.arange(time)[None, :]
    n = np.asarray(lengths)[:, None]
    return np.where(t < n, n - 1 - t, t)


def torch_cho_gru(
    x: torch.Tensor,
    params: Sequence[Mapping[str, torch.Tensor]],
    lengths: np.ndarray,
    state0: Sequence[torch.Tensor],
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """A hand-written torch loop of the Cho (reset before the matmul) GRU, masked by lengths.

    n = tanh(W_in x + b_in + W_hn (r * h) + b_hn); h' = (1 - z) n + z h.
    """
    time = x.shape[1]
    valid = torch.from_numpy(np.arange(time)[None, :] < np.asarray(lengths)[:, None])
    inp = x
    finals = []
    for k, p in enumerate(params):
        hidden = p["w_hh"].shape[1]
        w_ir, w_iz, w_in = p["w_ih"].split(hidden)
        w_hr, w_hz, w_hn = p["w_hh"].split(hidden)
        b_ir, b_iz, b_in = p["b_ih"].split(hidden)
        b_hr, b_hz, b_hn = p["b_hh"].split(hidden)
        h = state0[k]
        outs = []
        for t in range(time):
            xt = inp[:, t]
            r = torch.sigmoid(xt @ w_ir.T + b_ir + h @ w_hr.T + b_hr)
            z = torch.sigmoid(xt @ w_iz.T + b_iz + h @ w_hz.T + b_hz)
            n = torch.tanh(xt @ w_in.T + b_in + (r * h) @ w_hn.T + b_hn)
            h_new = (1 - z) * n + z * h
            keep = valid[:, t, None]
            h = torch.where(keep, h_new, h)
            outs.append(torch.where(keep, h_new, torch.zeros_like(h_new)))
        inp = torch.stack(outs, dim=1)
        finals.append(h)
    return inp, (torch.stack(finals),)


@dataclass
class TorchRun:
    """A differentiable torch computation of a case, with its leaves."""

    x: torch.Tensor
    state0: tuple[torch.Tensor, ...]
    params: list[dict[str, torch.Tensor]]
    outputs: torch.Tensor
    final: tuple[torch.Tensor, ...]

    def state(self, op: str) -> list[dict[str, np.ndarray]]:
        """The final state as rnnspec's per-layer dicts."""
        layers = self.final[0].shape[0]
        return [
            {name: self.final[j][k].detach().numpy() for j, name in enumerate(STATE_NAMES[op])} for k in range(layers)
        ]


def torch_forward(case: Case) -> TorchRun:
    """The case computed by torch (torch.nn modules, or the Cho GRU loop), autograd enabled.

    ``reverse=True`` is realised by reversing each row's valid prefix before and after a
    forward run (gather with an index built here), which is the spec's definition.
    """
    x = torch.tensor(case.x, requires_grad=True)
    state0 = torch_initial_state(case.op, case.state_or_zeros())
    lengths = case.lengths_or_full()
    index = torch.from_numpy(reverse_prefix_index(lengths, case.time))[:, :, None]
    inp = x.gather(1, index.expand(-1, -1, x.shape[2])) if case.reverse else x
    if has_torch_module(case.op, case.options):
        module = torch_module(case.op, case.options, case.params)
        params = [{ours: getattr(module, f"{theirs}_l{k}") for ours, theirs in TORCH_NAMES} for k in range(case.layers)]
        out, final = torch_run(module, inp, None if case.lengths is None else lengths, state0)
    else:
        params = [{k: torch.tensor(v, requires_grad=True) for k, v in layer.items()} for layer in case.params]
        out, final = torch_cho_gru(inp, params, lengths, [s for s in state0[0]])
    if case.reverse:
        out = out.gather(1, index.expand(-1, -1, out.shape[2]))
    return TorchRun(x, state0, params, out, final)


def torch_vjp(case: Case, cotangents: Mapping[str, Any]) -> dict[str, Any]:
    """Autograd's gradient of ``<cotangents, result>``, shaped like ``reference.vjp``'s answer."""
    run = torch_forward(case)
    loss = (run.outputs * torch.from_numpy(cotangents["outputs"])).sum()
    for j, name in enumerate(STATE_NAMES[case.op]):
        cot = torch.from_numpy(np.stack([layer[name] for layer in cotangents["state"]]))
        loss = loss + (run.final[j] * cot).sum()
    loss.backward()
    return {
        "x": run.x.grad.numpy(),
        "params": [{k: v.grad.numpy() for k, v in layer.items()} for layer in run.params],
        "initial_state": [
            {name: run.state0[j].grad[k].numpy() for j, name in enumerate(STATE_NAMES[case.op])}
            for k in range(case.layers)
        ],
    }
