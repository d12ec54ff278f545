"""skip_rnn, skip_lstm, skip_gru: Skip RNN's state-update gate over a stack of base cells (training semantics).

As the reference (:mod:`rnnspec.reference.skip`) and the authors' code: time is
the outer loop and the layers the inner one, since every layer shares the one
gate driven by the top layer's candidate; every candidate is computed at every
step (the straight-through gradient needs it). The binarisation's gradient is
the identity: ``u = bin(u~) + (u~ - u~.detach())``, exactly ``bin(u~)`` forward
with ``d u / d u~ = 1``, ``bin(u~) = (u~ >= 0.5)``. ``min(update_prob, 1 - cum)``
passes its gradient to ``update_prob`` on ties, as the spec says (``torch.minimum``
would split it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from rnnspec.results import SkipResult

from .cells import make_cell
from .sequence import State, fresh, initial_states, normalise_lengths, reverse_valid

__all__ = ["skip_gru", "skip_lstm", "skip_rnn"]


def _sigmoid(a: torch.Tensor) -> torch.Tensor:
    """``sigmoid(a)`` whose derivative stays accurate where it saturates.

    ``torch.sigmoid``'s backward is ``y * (1 - y)``, which for ``y`` near 1 loses
    all but a few bits of ``1 - y`` in float32. Through ``exp(logsigmoid(a))`` the
    derivative is ``y * sigmoid(-a)``, computed from ``a``. The gate's ``du~``
    needs it: the straight-through chain of ``update_prob`` grows its cotangent
    by up to ``1 + du~`` per skipped step, so an update's saturated ``du~`` can
    carry most of the gradient.
    """
    return torch.exp(F.logsigmoid(a))


def _mix(on: torch.Tensor, through: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """``u * new + (1 - u) * old`` for ``u = on + through`` (``on`` in {0, 1}, ``through`` zero with gradient).

    The value is exactly ``new`` or ``old``, and ``d u`` is ``<d, new - old>``
    with the difference taken first, as the reference does: autograd of the
    product form would sum ``d * new - d * old``, which cancels in float32 when
    ``new`` is close to ``old``, and the straight-through chain amplifies that.
    """
    return torch.where(on, new, old) + through * (new - old)


def _skip(
    op: str,
    x: torch.Tensor,
    params: Sequence[Mapping[str, torch.Tensor]],
    lengths_arg: Any,
    initial_state: Sequence[Mapping[str, torch.Tensor]] | None,
    reverse: bool,
    options: Mapping[str, Any],
) -> SkipResult:
    cell = make_cell(op.removeprefix("skip_"), options)
    names = cell.state_names
    gate_input = "c" if "c" in names else "h"
    batch, time = x.shape[:2]
    lengths = normalise_lengths(lengths_arg, batch, time, x.device)
    valid = lengths.valid()
    states = list(initial_states(op, x, params, options, initial_state))
    top = params[-1]
    hidden = top["w_hh"].shape[1]
    if time == 0:
        empty = x.new_zeros((batch, 0))
        return SkipResult(x.new_zeros((batch, 0, hidden)), tuple(fresh(s) for s in states), empty, empty.clone())
    inp = reverse_valid(x, lengths) if reverse else x
    projected = cell.project(params[0], inp)  # layer 0's input projection, every step at once
    outputs, gates, probs = [], [], []
    for t in range(time):
        prob_prev, cum_prev = states[-1]["update_prob"], states[-1]["cum_update_prob"]
        room = 1.0 - cum_prev
        u_tilde = cum_prev + torch.where(prob_prev <= room, prob_prev, room)
        on = u_tilde >= 0.5
        through = u_tilde - u_tilde.detach()  # zero, with d/du~ = 1: the straight-through estimator
        u = on.to(u_tilde.dtype) + through
        cands: list[State] = []
        for k, (p, s) in enumerate(zip(params, states, strict=True)):
            gi = projected[:, t] if k == 0 else cell.project(p, cands[-1]["h"])
            cands.append(cell.step(p, {n: s[n] for n in names}, gi))
        du = _sigmoid(F.linear(cands[-1][gate_input], top["w_gate"], top["b_gate"]))
        new = [{n: _mix(on, through, c[n], s[n]) for n in names} for c, s in zip(cands, states, strict=True)]
        new[-1]["update_prob"] = _mix(on, through, du, prob_prev)
        new[-1]["cum_update_prob"] = (1.0 - u) * u_tilde
        y = new[-1]["h"]
        if valid is None:
            states = new
            outputs.append(y)
            gates.append(u[:, 0])
            probs.append(u_tilde[:, 0])
        else:
            keep = valid[:, t, None]
            states = [{n: torch.where(keep, v, s[n]) for n, v in ns.items()} for ns, s in zip(new, states, strict=True)]
            outputs.append(torch.where(keep, y, 0.0))
            gates.append(torch.where(keep[:, 0], u[:, 0], 0.0))
            probs.append(torch.where(keep[:, 0], u_tilde[:, 0], 0.0))
    out, gate, prob = torch.stack(outputs, 1), torch.stack(gates, 1), torch.stack(probs, 1)
    if reverse:
        out, gate, prob = (reverse_valid(a, lengths) for a in (out, gate, prob))
    return SkipResult(out, tuple(states), gate, prob)


def skip_rnn(
    *,
    x: torch.Tensor,
    params: Sequence[Mapping[str, torch.Tensor]],
    activation: str,
    lengths: Any,
    initial_state: Sequence[Mapping[str, torch.Tensor]] | None,
    reverse: bool,
) -> SkipResult:
    """Skip RNN over rnn cells."""
    return _skip("skip_rnn", x, params, lengths, initial_state, reverse, {"activation": activation})


def skip_lstm(
    *,
    x: torch.Tensor,
    params: Sequence[Mapping[str, torch.Tensor]],
    lengths: Any,
    initial_state: Sequence[Mapping[str, torch.Tensor]] | None,
    reverse: bool,
) -> SkipResult:
    """Skip RNN over lstm cells (the gate reads the top layer's candidate c)."""
    return _skip("skip_lstm", x, params, lengths, initial_state, reverse, {})


def skip_gru(
    *,
    x: torch.Tensor,
    params: Sequence[Mapping[str, torch.Tensor]],
    reset_after: bool,
    lengths: Any,
    initial_state: Sequence[Mapping[str, torch.Tensor]] | None,
    reverse: bool,
) -> SkipResult:
    """Skip RNN over gru cells."""
    return _skip("skip_gru", x, params, lengths, initial_state, reverse, {"reset_after": reset_after})
