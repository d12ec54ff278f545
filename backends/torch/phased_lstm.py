"""phased_lstm: the time gate of every step at once, then the gated LSTM cell in the masked time loop.

The gate ``k`` (batch, time, H) reads only the timestamps and the layer's
``tau``, ``s`` and ``r_on``, so it is a handful of elementwise ops over the
whole sequence before the loop, as the input projection is; the loop mixes
each step's LSTM candidate with the previous state by it. The floor modulo is
written ``a - tau * floor(a / tau)`` and the branches are selected by
``torch.where`` on the spec's comparisons, so that autograd's derivative is the
spec's convention (the floor a constant; at a kink, the selected branch's).
The timestamps are data: detached, no gradient reaches them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from rnnspec.backends.common.ops import SequenceCall
from rnnspec.backends.common.state import LayerFn, run_layers
from rnnspec.results import SequenceResult

from . import fused
from .sequence import ARRAY_OPS, Lengths, State, scan

__all__ = ["run", "time_gate"]


def time_gate(
    timestamps: torch.Tensor, tau: torch.Tensor, s: torch.Tensor, r_on: torch.Tensor, leak: float
) -> torch.Tensor:
    """The openness ``k`` (batch, time, H) of each unit at each step, from ``timestamps`` (batch, time)."""
    shifted = timestamps.detach()[:, :, None] - s
    phase = (shifted - tau * torch.floor(shifted / tau)) / tau
    rising = 2.0 * phase / r_on
    return torch.where(phase < r_on / 2, rising, torch.where(phase < r_on, 2.0 - rising, leak * phase))


def _layer(p: Mapping[str, torch.Tensor], leak: float, peepholes: bool, timestamps: torch.Tensor) -> LayerFn:
    """A Phased LSTM layer; ``timestamps`` aligned with the (possibly reversed) time axis it sees."""

    def run(inp: torch.Tensor, state: State, lengths: Lengths) -> tuple[torch.Tensor, State]:
        k = time_gate(timestamps, p["tau"], p["s"], p["r_on"], leak)
        gi = F.linear(inp, p["w_ih"], p["b_ih"])
        w_hh, b_hh = p["w_hh"], p["b_hh"]
        peep = p["w_peephole"].chunk(3) if peepholes else None

        def step(s: State, xs: Sequence[torch.Tensor]) -> State:
            gi_t, k_t = xs
            h, c = s["h"], s["c"]
            ai, af, ag, ao = (gi_t + F.linear(h, w_hh, b_hh)).chunk(4, dim=1)
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
    fused.record_path(call.op, "plain")
    leak, peepholes = float(call.options["leak"]), bool(call.options["peepholes"])
    return run_layers(call, lambda p, arrays: _layer(p, leak, peepholes, arrays["timestamps"]), ARRAY_OPS)
