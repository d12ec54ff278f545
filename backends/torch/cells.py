"""One time step of each cell as pure torch functions: the plain path.

A cell splits its step in two. :meth:`Cell.project` is the input projection
``x @ w_ih.T + b_ih``, which reads no state: the plain path computes it for
every time step at once, as one matmul, before the time loop. :meth:`Cell.step`
takes that projection of one step and the layer's state and returns the new
state, whose ``"h"`` is the step's output. The equations are the spec's (see
``rnnspec/ops/<op>.md``) and the reference's (``rnnspec.reference.cells``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F

from rnnspec.backends.common.cells import Cell, bind_cell

__all__ = ["ACTIVATIONS", "Cell", "Params", "make_cell"]

Params = Mapping[str, torch.Tensor]
State = dict[str, torch.Tensor]

#: The nonlinearities of the rnn and indrnn cells (relu'(0) = 0, as the reference defines it).
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"tanh": torch.tanh, "relu": torch.relu}


def _masked(h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The state a recurrent product reads: ``h * mask`` under recurrent dropout, else ``h``."""
    return h if mask is None else h * mask


def _rnn(
    p: Params, state: State, gi: torch.Tensor, activation: str, recurrent_mask: torch.Tensor | None = None
) -> State:
    """``h' = act(W_ih x + b_ih + W_hh h + b_hh)``."""
    return {"h": ACTIVATIONS[activation](gi + F.linear(_masked(state["h"], recurrent_mask), p["w_hh"], p["b_hh"]))}


def _lstm(p: Params, state: State, gi: torch.Tensor, recurrent_mask: torch.Tensor | None = None) -> State:
    """Gates i, f, g, o; ``c' = f c + i g``; ``h' = o tanh(c')``."""
    a = gi + F.linear(_masked(state["h"], recurrent_mask), p["w_hh"], p["b_hh"])
    ai, af, ag, ao = a.chunk(4, dim=1)
    i, f, g, o = torch.sigmoid(ai), torch.sigmoid(af), torch.tanh(ag), torch.sigmoid(ao)
    c = f * state["c"] + i * g
    return {"h": o * torch.tanh(c), "c": c}


def _gru(
    p: Params, state: State, gi: torch.Tensor, reset_after: bool, recurrent_mask: torch.Tensor | None = None
) -> State:
    """Gates r, z, n; ``h' = (1 - z) n + z h``; the reset gate after (cuDNN) or before (Cho) the matmul."""
    h = state["h"]
    hm = _masked(h, recurrent_mask)  # what the recurrent products read; the update reads h
    hidden = h.shape[1]
    w_hh, b_hh = p["w_hh"], p["b_hh"]
    gi_r, gi_z, gi_n = gi[:, :hidden], gi[:, hidden : 2 * hidden], gi[:, 2 * hidden :]
    if reset_after:
        gh = F.linear(hm, w_hh, b_hh)
        r = torch.sigmoid(gi_r + gh[:, :hidden])
        z = torch.sigmoid(gi_z + gh[:, hidden : 2 * hidden])
        n = torch.tanh(gi_n + r * gh[:, 2 * hidden :])
    else:
        gh = F.linear(hm, w_hh[: 2 * hidden], b_hh[: 2 * hidden])
        r = torch.sigmoid(gi_r + gh[:, :hidden])
        z = torch.sigmoid(gi_z + gh[:, hidden:])
        n = torch.tanh(gi_n + F.linear(r * hm, w_hh[2 * hidden :], b_hh[2 * hidden :]))
    return {"h": (1.0 - z) * n + z * h}


def _indrnn(
    p: Params, state: State, gi: torch.Tensor, activation: str, recurrent_mask: torch.Tensor | None = None
) -> State:
    """``h' = act(W_ih x + b_ih + u * h)``."""
    return {"h": ACTIVATIONS[activation](gi + p["u"] * _masked(state["h"], recurrent_mask))}


#: Each cell's step, by the cell's op name (its options are bound by :func:`make_cell`).
STEPS: dict[str, Callable[..., State]] = {"rnn": _rnn, "lstm": _lstm, "gru": _gru, "indrnn": _indrnn}


def make_cell(name: str, options: Mapping[str, Any]) -> Cell:
    """The cell ``name`` (rnn, lstm, gru, indrnn) with its options (only its own are read)."""
    return Cell(*bind_cell(STEPS, name, options), linear=F.linear)
