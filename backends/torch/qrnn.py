"""qrnn: causal-convolution gates (``torch.nn.functional.conv1d`` over ``[x_prev, x]``), then the pooling.

Only the pooling, a linear recurrence (:func:`.recurrences.linear_scan`), runs
over time. The state is ``{"c", "x_prev"}`` as the reference's: ``x_prev`` is
each row's last ``K-1`` inputs before its length, in processing order.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from rnnspec.backends.common.ops import SequenceCall
from rnnspec.backends.common.state import LayerFn, run_layers
from rnnspec.ops import QRNN_GATES
from rnnspec.results import SequenceResult

from .recurrences import linear_scan
from .sequence import ARRAY_OPS, Lengths, State

__all__ = ["run"]


def _gates(padded: torch.Tensor, w: torch.Tensor, b: torch.Tensor, time: int) -> torch.Tensor:
    """``(batch, time, G*H)``: step t reads ``padded[:, t : t + K]`` (a cross-correlation, not flipped)."""
    if time == 0:  # conv1d rejects an input shorter than its kernel
        return padded.new_zeros((padded.shape[0], 0, w.shape[0]))
    return F.conv1d(padded.transpose(1, 2), w, b).transpose(1, 2)


def _last_inputs(padded: torch.Tensor, lengths: torch.Tensor, window: int) -> torch.Tensor:
    """Each row's last K-1 inputs before its length: ``padded[b, L_b : L_b + K - 1]``."""
    index = lengths[:, None] + torch.arange(window - 1, device=padded.device)[None, :]
    return torch.gather(padded, 1, index[:, :, None].expand(-1, -1, padded.shape[2]))


def _layer(p: Mapping[str, torch.Tensor], mode: str, mask: torch.Tensor | None) -> LayerFn:
    """A QRNN layer; ``mask`` is the zoneout mask aligned with the (possibly reversed) time axis it sees."""

    def run(inp: torch.Tensor, state: State, lengths: Lengths) -> tuple[torch.Tensor, State]:
        w, b = p["w"], p["b"]
        window = w.shape[2]
        names = QRNN_GATES[mode]
        hidden = w.shape[0] // len(names)
        padded = torch.cat([state["x_prev"], inp], dim=1)
        pre = _gates(padded, w, b, inp.shape[1])
        gates = dict(zip(names, torch.split(pre, hidden, dim=2), strict=True))
        z = torch.tanh(gates["z"])
        f = torch.sigmoid(gates["f"])
        f_eff = f if mask is None else torch.where(mask == 1, 1.0, f)
        drive = torch.sigmoid(gates["i"]) * z if "i" in gates else (1.0 - f_eff) * z
        valid = lengths.valid()
        c, final = linear_scan(f_eff, drive, state["c"], valid, op="qrnn")
        h = torch.sigmoid(gates["o"]) * c if "o" in gates else c
        if "o" in gates and valid is not None:  # o is NaN where the padding is: never let o * 0 read it
            h = torch.where(valid[:, :, None], h, 0.0)
        return h, {"c": final, "x_prev": _last_inputs(padded, lengths.values, window)}

    return run


def run(call: SequenceCall) -> SequenceResult:
    """QRNN (f-, fo- or ifo-pooling, any window K) over a stack of layers."""
    mode = call.options["mode"]
    return run_layers(call, lambda p, arrays: _layer(p, mode, arrays["zoneout_mask"]), ARRAY_OPS)
