"""phased_lstm: the time gate of every step at once, then the gated LSTM cell in the masked time loop.

The gate ``k`` (batch, time, H) reads only the timestamps and the layer's
``tau``, ``s`` and ``r_on``, so it is a handful of elementwise ops over the
whole sequence before the loop, as the input projection is; the loop mixes
each step's LSTM candidate with the previous state by it. The floor modulo is
written ``a - tau * floor(a / tau)`` and the branches are selected by
``torch.where`` on the spec's comparisons, so that autograd's derivative is the
spec's convention (the floor a constant; at a kink, the selected branch's).
The timestamps are data: detached, no gradient reaches them.

Paths (:func:`.fused.last_path`):

- ``"plain"``: the masked time loop above, every unit at every step;
- ``"open-units"``: at inference (no gradient can flow) on float32/float64 CPU
  tensors, a layer whose gate is exactly 0 (closed, with ``leak=0`` as the paper
  runs inference) at more than ``1 - OPEN_UNITS_MAX_DENSITY`` of its valid
  (row, step, unit) entries runs the native kernel
  ``backends/common/kernels/phased.c``, which computes the gates only of the open
  units, a closed one keeping its state as the spec's mix with k = 0 does. The
  call records ``"open-units"`` when at least one of its layers took it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from rnnspec.backends.common import native
from rnnspec.backends.common.ops import SequenceCall
from rnnspec.backends.common.state import LayerFn, run_layers
from rnnspec.results import SequenceResult

from . import fused
from .recurrence_autograd import NATIVE_DTYPES, address
from .recurrences import native_usable
from .sequence import ARRAY_OPS, Lengths, State, scan

__all__ = ["OPEN_UNITS_MAX_DENSITY", "run", "time_gate"]

#: The largest fraction of open (row, step, unit) entries at which inference runs the open-units kernel; denser
#: gates run the plain loop, whose matmuls cover every unit at once faster than the kernel's dot products do
#: (B=16 T=256 H=512 float32 on one x86-64 core: the two break even near a third of the entries open).
OPEN_UNITS_MAX_DENSITY = 0.25

_LIBRARY = "phased"


def time_gate(
    timestamps: torch.Tensor, tau: torch.Tensor, s: torch.Tensor, r_on: torch.Tensor, leak: float
) -> torch.Tensor:
    """The openness ``k`` (batch, time, H) of each unit at each step, from ``timestamps`` (batch, time)."""
    shifted = timestamps.detach()[:, :, None] - s
    phase = (shifted - tau * torch.floor(shifted / tau)) / tau
    rising = 2.0 * phase / r_on
    return torch.where(phase < r_on / 2, rising, torch.where(phase < r_on, 2.0 - rising, leak * phase))


def _gate_args(timestamps: torch.Tensor, p: Mapping[str, torch.Tensor], dtype: torch.dtype) -> list[torch.Tensor]:
    """The time gate's inputs as the kernels read them: contiguous, detached, of ``dtype``."""
    return [t.detach().to(dtype).contiguous() for t in (timestamps, p["tau"], p["s"], p["r_on"])]


def _open_enough(
    inp: torch.Tensor,
    timestamps: torch.Tensor,
    p: Mapping[str, torch.Tensor],
    leak: float,
    lengths: Lengths,
    tensors: Sequence[torch.Tensor],
) -> bool:
    """Whether a layer runs the open-units kernel: no gradient, native-ready tensors, few open gate entries."""
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return False
    if not native_usable(tensors, _LIBRARY):
        return False
    batch, time, hidden = inp.shape[0], inp.shape[1], int(p["tau"].shape[0])
    entries = int(lengths.on_host().clip(0, time).sum()) * hidden
    if entries == 0:
        return True
    limit = int(OPEN_UNITS_MAX_DENSITY * entries)
    count = torch.zeros(1, dtype=torch.int64)
    lens = None if lengths.full else lengths.values.to(torch.int64).contiguous()
    gate = _gate_args(timestamps, p, inp.dtype)
    scratch = inp.new_empty(hidden)
    _kernel("open_count", inp.dtype, "iii" + "p" * 4 + "dpi" + "pp")(
        batch, time, hidden, *(address(a) for a in gate), leak, address(lens), limit, address(scratch), address(count)
    )
    return int(count) <= limit


def _unit_rows_finite(w: torch.Tensor, blocks: int, hidden: int) -> torch.Tensor:
    """Per unit, whether every entry of its ``blocks`` rows (or entries) of ``w`` is finite."""
    return torch.isfinite(w.reshape(blocks, hidden, -1)).all(dim=2).all(dim=0)


def _open_units(
    inp: torch.Tensor,
    state: State,
    lengths: Lengths,
    p: Mapping[str, torch.Tensor],
    timestamps: torch.Tensor,
    leak: float,
    peepholes: bool,
) -> tuple[torch.Tensor, State]:
    """One layer at inference in the native kernel that computes only the open units (see ``kernels/phased.c``)."""
    batch, time, hidden = inp.shape[0], inp.shape[1], int(p["tau"].shape[0])
    dtype = inp.dtype

    def dense(t: torch.Tensor) -> torch.Tensor:
        return t.detach().to(dtype).contiguous()

    w_ih, b_ih, w_hh, b_hh = (dense(p[n]) for n in ("w_ih", "b_ih", "w_hh", "b_hh"))
    peep = dense(p["w_peephole"]) if peepholes else None
    # A unit whose own weights, biases or peepholes are not finite is computed at every step (see the kernel).
    finite = _unit_rows_finite(w_ih, 4, hidden) & _unit_rows_finite(w_hh, 4, hidden)
    finite &= _unit_rows_finite(b_ih, 4, hidden) & _unit_rows_finite(b_hh, 4, hidden)
    if peep is not None:
        finite &= _unit_rows_finite(peep, 3, hidden)
    always = (~finite).to(torch.uint8).contiguous()
    x = dense(inp)
    h, c = (state[n].detach().to(dtype).clone(memory_format=torch.contiguous_format) for n in ("h", "c"))
    out = x.new_empty((batch, time, hidden))
    lens = None if lengths.full else lengths.values.to(torch.int64).contiguous()
    pre, h_prev, k = x.new_empty((batch, 4 * hidden)), x.new_empty((batch, hidden)), x.new_empty((batch, hidden))
    open_ = torch.empty((batch, hidden), dtype=torch.uint8)
    units, rows = torch.empty(hidden, dtype=torch.int64), torch.empty(batch, dtype=torch.int64)
    weights = [address(a) for a in (x, w_ih, b_ih, w_hh, b_hh, peep)]
    gate = [address(a) for a in _gate_args(timestamps, p, dtype)]
    rest = [address(a) for a in (lens, always, h, c, out, pre, h_prev, k, open_, units, rows)]
    _kernel("open_units", dtype, "iiii" + "p" * 10 + "d" + "p" * 11)(
        batch, time, x.shape[2], hidden, *weights, *gate, leak, *rest
    )
    return out, {"h": h, "c": c}


def _kernel(name: str, dtype: torch.dtype, signature: str) -> Any:
    library = native.library(_LIBRARY)
    if library is None:  # _open_enough checked it; a library cannot vanish in between
        raise RuntimeError(f"the native {_LIBRARY!r} kernels are unavailable: {native.unavailable(_LIBRARY)}")
    return library.function(f"phased_lstm_{name}{NATIVE_DTYPES[dtype]}", signature)


def _layer(
    p: Mapping[str, torch.Tensor],
    leak: float,
    peepholes: bool,
    timestamps: torch.Tensor,
    taken: list[bool],
    recurrent_mask: torch.Tensor | None = None,
) -> LayerFn:
    """A Phased LSTM layer; ``timestamps`` aligned with the (possibly reversed) time axis it sees.

    ``taken`` receives, per run, whether the layer ran the open-units kernel (never under recurrent dropout:
    ``recurrent_mask``, which only the plain loop takes)."""

    def run(inp: torch.Tensor, state: State, lengths: Lengths) -> tuple[torch.Tensor, State]:
        if recurrent_mask is None and _open_enough(
            inp, timestamps, p, leak, lengths, [inp, timestamps, *state.values(), *p.values()]
        ):
            taken.append(True)
            return _open_units(inp, state, lengths, p, timestamps, leak, peepholes)
        taken.append(False)
        k = time_gate(timestamps, p["tau"], p["s"], p["r_on"], leak)
        gi = F.linear(inp, p["w_ih"], p["b_ih"])
        w_hh, b_hh = p["w_hh"], p["b_hh"]
        peep = p["w_peephole"].chunk(3) if peepholes else None

        def step(s: State, xs: Sequence[torch.Tensor]) -> State:
            gi_t, k_t = xs
            h, c = s["h"], s["c"]
            hm = h if recurrent_mask is None else h * recurrent_mask  # the gate's mix reads h
            ai, af, ag, ao = (gi_t + F.linear(hm, w_hh, b_hh)).chunk(4, dim=1)
            if peep is not None:
                ai, af = ai + peep[0] * c, af + peep[1] * c
            c_cand = torch.sigmoid(af) * c + torch.sigmoid(ai) * torch.tanh(ag)
            if peep is not None:
                ao = ao + peep[2] * c_cand
            h_cand = torch.sigmoid(ao) * torch.tanh(c_cand)
            return {"h": k_t * h_cand + (1.0 - k_t) * h, "c": k_t * c_cand + (1.0 - k_t) * c}

        return scan(step, [gi, k], state, lengths.valid(), state["h"].shape[1])

    return run


def run(call: SequenceCall) -> SequenceResult:
    """Phased LSTM over a stack of layers (with or without peepholes)."""
    leak, peepholes = float(call.options["leak"]), bool(call.options["peepholes"])
    taken: list[bool] = []
    result = run_layers(
        call,
        lambda p, arrays: _layer(p, leak, peepholes, arrays["timestamps"], taken, arrays.get("recurrent_mask")),
        ARRAY_OPS,
    )
    fused.record_path(call.op, "open-units" if any(taken) else "plain")
    return result
