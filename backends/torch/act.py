"""act: Adaptive Computation Time over one layer of a base cell (rnn, lstm, gru, indrnn).

As the reference (:mod:`rnnspec.reference.act`): at each input step the cell
runs on ``[x_t, flag]`` (flag 0 on the first inner step, 1 after) until the
halting units reach ``1 - epsilon`` or ``max_steps``, or one is NaN (which
stops its row, with ``R(t)`` NaN). ``N(t)`` is decided from
detached values and carries no gradient, while ``R(t) = 1 - sum_{n<N} h^n``
stays in the graph; the weights sum to 1, also at the cap. The input projection
of ``x_t`` (without the flag column) is one matmul over every time step; the
flag adds ``w_ih[:, I]`` on later inner steps. Two inner loops (:mod:`.skipping`
picks one):

- training: the inner loop stays batched, with a per-row mask of the rows still
  pondering (halted rows compute with weight 0);
- skipping (inference): only the rows still pondering run the cell; rows that
  halt leave the batch, and the step ends when none is left.

The training loop takes one of two forms, with the same values and gradients: in
plain eager autograd, one ``torch.autograd.Function`` with a hand-written backward
(:mod:`.act_autograd`; its inner steps in native kernels on float32/float64 CPU
tensors when the kernel library builds, path ``"native-training"``); under
``torch.func`` transforms, ``torch.compile`` or a forced plain path
(:func:`.skip_autograd.usable`), :func:`_training`'s per-step autograd graph.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from rnnspec.backends.common.cells import cell_defaults
from rnnspec.backends.common.ops import SequenceCall
from rnnspec.backends.common.state import initial_states
from rnnspec.results import ACTResult

from . import act_autograd, skip_autograd
from .cells import Cell, Params, make_cell
from .sequence import ARRAY_OPS, Lengths, State, fresh, reverse_valid
from .skipping import choose_path, record_training, row_index, select_rows

__all__ = ["run"]


def _ponder(
    cell: Cell,
    p: Params,
    state: State,
    projected: torch.Tensor,
    flag: torch.Tensor,
    keep: torch.Tensor | None,
    epsilon: float,
    max_steps: int,
) -> act_autograd.Pondering:
    """One input step: the mean-field state, N(t) and R(t) of every row, in the inner loop's final values.

    Rows outside their length (``keep`` False) count as halted from the start:
    they take no inner step that matters, and the caller discards their values.
    """
    run = act_autograd.begin(state, keep)
    s = state
    threshold = 1.0 - epsilon
    for n in range(1, max_steps + 1):
        if bool(run.halted.all()):
            break
        s = cell.step(p, s, projected if n == 1 else projected + flag)
        h = torch.sigmoid(F.linear(s["h"], p["w_halt"], p["b_halt"]))
        run, _, _, _ = act_autograd.halt(run, n, max_steps, s, h, threshold, 1.0, 0.0, float(n))
    return run


def _ponder_rows(
    cell: Cell,
    p: Params,
    state: State,
    projected: torch.Tensor,
    flag: torch.Tensor,
    live: np.ndarray,
    epsilon: float,
    max_steps: int,
) -> tuple[State, torch.Tensor, torch.Tensor]:
    """:func:`_ponder` running the cell only on the rows still pondering.

    Rows outside their length (``live`` False, on the host) take no step: they
    keep their state, with N and R 0. A row's values are the training loop's:
    the same operations, in the same order, on that row.
    """
    batch = projected.shape[0]
    steps, remainder = projected.new_zeros((batch,)), projected.new_zeros((batch,))
    if not live.any():
        return dict(state), steps, remainder
    rows = row_index(live, projected.device)  # the batch rows still pondering; None: all of them, in order
    s = select_rows(state, rows)
    gi = projected if rows is None else projected.index_select(0, rows)
    total = gi.new_zeros((gi.shape[0], 1))
    mean = {k: torch.zeros_like(v) for k, v in s.items()}
    threshold = 1.0 - epsilon
    done: list[tuple[torch.Tensor | None, State, torch.Tensor, torch.Tensor]] = []  # rows, mean, N, R of halted rows
    for n in range(1, max_steps + 1):
        s = cell.step(p, s, gi if n == 1 else gi + flag)
        h = torch.sigmoid(F.linear(s["h"], p["w_halt"], p["b_halt"]))
        # As act_autograd.halt: a NaN halting unit stops its row, with R NaN.
        stop = torch.ones_like(h, dtype=torch.bool) if n == max_steps else ~(total + h < threshold)
        rest = torch.where(torch.isnan(h), h, 1.0 - total)
        weight = torch.where(stop, rest, h)
        mean = {k: mean[k] + weight * s[k] for k in mean}
        left = rest[:, 0]
        total = total + h
        halts = stop[:, 0].cpu().numpy()
        if halts.all():
            done.append((rows, mean, left.new_full(left.shape, float(n)), left))
            break
        if halts.any():
            gone = torch.from_numpy(np.flatnonzero(halts)).to(gi.device)
            here = torch.from_numpy(np.flatnonzero(~halts)).to(gi.device)
            left = left.index_select(0, gone)
            done.append(
                (
                    gone if rows is None else rows[gone],
                    select_rows(mean, gone),
                    left.new_full(left.shape, float(n)),
                    left,
                )
            )
            rows = here if rows is None else rows[here]
            s, mean = select_rows(s, here), select_rows(mean, here)
            gi, total = gi.index_select(0, here), total.index_select(0, here)
    if len(done) == 1 and done[0][0] is None:  # every row halted at once: nothing to scatter
        _, mean, steps, remainder = done[0]
        return mean, steps, remainder
    index = torch.cat([i for i, _, _, _ in done if i is not None])  # None only when all halted at once (above)
    new = {k: v.index_copy(0, index, torch.cat([m[k] for _, m, _, _ in done])) for k, v in state.items()}
    steps = steps.index_copy(0, index, torch.cat([n_stop for _, _, n_stop, _ in done]))
    remainder = remainder.index_copy(0, index, torch.cat([r for _, _, _, r in done]))
    return new, steps, remainder


Loop = tuple[torch.Tensor, State, torch.Tensor, torch.Tensor]


def _training(
    cell: Cell,
    p: Params,
    state: State,
    projected: torch.Tensor,
    flag: torch.Tensor,
    valid: torch.Tensor | None,
    epsilon: float,
    max_steps: int,
) -> Loop:
    """Every row in every inner step, in the graph: the outputs, final state, N and R."""
    outputs, n_steps, remainders = [], [], []
    for t in range(projected.shape[1]):
        keep = None if valid is None else valid[:, t]
        run = _ponder(cell, p, state, projected[:, t], flag, keep, epsilon, max_steps)
        state, y, steps, remainder = act_autograd.settle(run, state, keep, 0.0)
        outputs.append(y)
        n_steps.append(steps)
        remainders.append(remainder)
    return torch.stack(outputs, 1), state, torch.stack(n_steps, 1), torch.stack(remainders, 1)


def _skipping(
    cell: Cell,
    p: Params,
    state: State,
    projected: torch.Tensor,
    flag: torch.Tensor,
    lengths: Lengths,
    epsilon: float,
    max_steps: int,
) -> Loop:
    """Only the rows still pondering run the cell: the same values as :func:`_training`, without its graph."""
    time = projected.shape[1]
    valid = np.arange(time)[None, :] < lengths.on_host()[:, None]
    state = fresh(state)  # a row that never steps must not alias the caller's state
    outputs, n_steps, remainders = [], [], []
    for t in range(time):
        state, steps, remainder = _ponder_rows(cell, p, state, projected[:, t], flag, valid[:, t], epsilon, max_steps)
        outputs.append(state["h"])
        n_steps.append(steps)
        remainders.append(remainder)
    out = torch.stack(outputs, 1)
    if not lengths.full:
        out = torch.where(torch.from_numpy(valid).to(out.device)[..., None], out, 0.0)
    return out, state, torch.stack(n_steps, 1), torch.stack(remainders, 1)


def run(call: SequenceCall) -> ACTResult:
    """ACT over one layer of ``cell`` (its own options at their defaults)."""
    x, params, options, reverse = call.x, call.params, call.options, call.reverse
    cell, epsilon, max_steps = options["cell"], options["epsilon"], options["max_steps"]
    batch, time, features = x.shape
    base = make_cell(cell, cell_defaults(cell))
    (p,) = params
    hidden = p["w_halt"].shape[1]
    norm = ARRAY_OPS.lengths(call.lengths, x)
    (state,) = initial_states("act", x, params, options, call.initial_state, ARRAY_OPS)
    path = choose_path("act", [x, *p.values(), *state.values()])
    if time == 0:
        empty = x.new_zeros((batch, 0))
        return ACTResult(x.new_zeros((batch, 0, hidden)), (fresh(state),), empty, empty.clone(), empty.clone())
    inp = reverse_valid(x, norm) if reverse else x
    w_ih = p["w_ih"]
    projected = F.linear(inp, w_ih[:, :features], p["b_ih"])  # x_t's part, every step at once
    flag = w_ih[:, features]  # the flag column, added on inner steps n > 1
    eps, cap = float(epsilon), int(max_steps)
    leaves = [x, *p.values(), *state.values()]
    recurrent = call.arrays.get("recurrent_mask")
    if recurrent is not None:  # recurrent dropout: only the training loop's cell takes the mask
        record_training("act", False)
        masked = base.with_recurrent_mask(recurrent[0])
        out, state, ponder_steps, ponder_remainder = _training(
            masked, p, state, projected, flag, norm.valid(), eps, cap
        )
    elif path == "skipping":
        out, state, ponder_steps, ponder_remainder = _skipping(base, p, state, projected, flag, norm, eps, cap)
    elif skip_autograd.usable(leaves):
        defaults = cell_defaults(cell)
        layout = act_autograd.ACTLayout(
            cell,
            str(defaults.get("activation", "tanh")),
            bool(defaults.get("reset_after", True)),
            base.state_names,
            eps,
            cap,
        )
        kernels = act_autograd.native_kernels(layout, [projected, *leaves[1:]])
        record_training("act", kernels is not None)
        out, state, ponder_steps, ponder_remainder = act_autograd.run(
            layout, p, state, projected, flag, norm.valid(), kernels
        )
    else:
        out, state, ponder_steps, ponder_remainder = _training(base, p, state, projected, flag, norm.valid(), eps, cap)
    ponder_cost = ponder_steps + ponder_remainder
    if reverse:
        out, ponder_steps, ponder_remainder, ponder_cost = (
            reverse_valid(a, norm) for a in (out, ponder_steps, ponder_remainder, ponder_cost)
        )
    return ACTResult(out, (state,), ponder_steps, ponder_remainder, ponder_cost)
