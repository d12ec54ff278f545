"""act: Adaptive Computation Time over one layer of a base cell (rnn, lstm, gru, indrnn).

As the reference (:mod:`rnnspec.reference.act`): at each input step the cell
runs on ``[x_t, flag]`` (flag 0 on the first inner step, 1 after) until the
halting units reach ``1 - epsilon`` or ``max_steps``. Rows halt independently:
the inner loop stays batched, with a per-row mask of the rows still pondering.
``N(t)`` is decided from detached values and carries no gradient, while
``R(t) = 1 - sum_{n<N} h^n`` stays in the graph; the weights sum to 1, also at
the cap. The input projection of ``x_t`` (without the flag column) is one
matmul over every time step; the flag adds ``w_ih[:, I]`` on later inner steps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from rnnspec.results import ACTResult

from .cells import Cell, Params, make_cell
from .sequence import State, fresh, initial_states, normalise_lengths, reverse_valid

__all__ = ["act"]

#: The pondered cell runs with its own options at their defaults.
_CELL_DEFAULTS: dict[str, dict[str, Any]] = {
    "rnn": {"activation": "tanh"},
    "lstm": {},
    "gru": {"reset_after": True},
    "indrnn": {"activation": "relu"},
}


def _ponder(
    cell: Cell,
    p: Params,
    state: State,
    projected: torch.Tensor,
    flag: torch.Tensor,
    keep: torch.Tensor | None,
    epsilon: float,
    max_steps: int,
) -> tuple[State, torch.Tensor, torch.Tensor]:
    """One input step: the mean-field state, N(t) and R(t) of every row.

    Rows outside their length (``keep`` False) count as halted from the start:
    they take no inner step that matters, and the caller discards their values.
    """
    batch = projected.shape[0]
    total = projected.new_zeros((batch, 1))  # the halting units of the steps taken so far
    halted = torch.zeros((batch, 1), dtype=torch.bool, device=projected.device)
    if keep is not None:
        halted = ~keep[:, None]
    steps = projected.new_zeros((batch,))
    remainder = projected.new_zeros((batch,))
    mean = {k: torch.zeros_like(v) for k, v in state.items()}
    s = state
    threshold = 1.0 - epsilon
    for n in range(1, max_steps + 1):
        if bool(halted.all()):
            break
        active = ~halted
        s = cell.step(p, s, projected if n == 1 else projected + flag)
        h = torch.sigmoid(F.linear(s["h"], p["w_halt"], p["b_halt"]))
        stop = active if n == max_steps else active & (total.detach() + h.detach() >= threshold)
        weight = torch.where(stop, 1.0 - total, torch.where(active, h, 0.0))
        mean = {k: mean[k] + weight * s[k] for k in mean}
        steps = torch.where(stop[:, 0], float(n), steps)
        remainder = torch.where(stop[:, 0], 1.0 - total[:, 0], remainder)
        total = torch.where(active, total + h, total)
        halted = halted | stop
    return mean, steps, remainder


def act(
    *,
    x: torch.Tensor,
    params: Sequence[Mapping[str, torch.Tensor]],
    cell: str,
    epsilon: float,
    max_steps: int,
    lengths: Any,
    initial_state: Sequence[Mapping[str, torch.Tensor]] | None,
    reverse: bool,
) -> ACTResult:
    """ACT over one layer of ``cell`` (its own options at their defaults)."""
    batch, time, features = x.shape
    options = {"cell": cell, "epsilon": epsilon, "max_steps": max_steps}
    base = make_cell(cell, _CELL_DEFAULTS[cell])
    (p,) = params
    hidden = p["w_halt"].shape[1]
    norm = normalise_lengths(lengths, batch, time, x.device)
    valid = norm.valid()
    (state,) = initial_states("act", x, params, options, initial_state)
    if time == 0:
        empty = x.new_zeros((batch, 0))
        return ACTResult(x.new_zeros((batch, 0, hidden)), (fresh(state),), empty, empty.clone(), empty.clone())
    inp = reverse_valid(x, norm) if reverse else x
    w_ih = p["w_ih"]
    projected = F.linear(inp, w_ih[:, :features], p["b_ih"])  # x_t's part, every step at once
    flag = w_ih[:, features]  # the flag column, added on inner steps n > 1
    outputs, n_steps, remainders = [], [], []
    for t in range(time):
        keep = None if valid is None else valid[:, t]
        new, steps, remainder = _ponder(base, p, state, projected[:, t], flag, keep, float(epsilon), int(max_steps))
        if keep is None:
            state = new
            outputs.append(new["h"])
            n_steps.append(steps)
            remainders.append(remainder)
        else:
            state = {k: torch.where(keep[:, None], v, state[k]) for k, v in new.items()}
            outputs.append(torch.where(keep[:, None], new["h"], 0.0))
            n_steps.append(torch.where(keep, steps, 0.0))
            remainders.append(torch.where(keep, remainder, 0.0))
    out, ponder_steps, ponder_remainder = torch.stack(outputs, 1), torch.stack(n_steps, 1), torch.stack(remainders, 1)
    ponder_cost = ponder_steps + ponder_remainder
    if reverse:
        out, ponder_steps, ponder_remainder, ponder_cost = (
            reverse_valid(a, norm) for a in (out, ponder_steps, ponder_remainder, ponder_cost)
        )
    return ACTResult(out, (state,), ponder_steps, ponder_remainder, ponder_cost)
