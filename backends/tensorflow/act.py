"""act: Adaptive Computation Time over one layer of a base cell (rnn, lstm, gru, indrnn).

As the reference (:mod:`rnnspec.reference.act`): at each input step the cell
runs on ``[x_t, flag]`` (flag 0 on the first inner step, 1 after) until the
halting units reach ``1 - epsilon`` or ``max_steps``::

    s^n = S(s^{n-1}, [x_t, flag_n]);  h^n = sigmoid(w_halt . h(s^n) + b_halt)
    N = min(max_steps, min{n : h^1 + ... + h^n >= 1 - epsilon});  R = 1 - (h^1 + ... + h^{N-1})
    s_t = sum_{n<N} h^n s^n + R s^N;  ponder_cost = N + R

Rows halt independently: the inner loop stays batched, with a per-row mask of
the rows still pondering. The inner loop is a ``tf.while_loop`` bounded by the
static ``max_steps`` (``maximum_iterations``, which XLA needs) that also stops
once every row has halted, nested in the time loop of :mod:`.sequence`.
``N(t)`` is decided from values under ``tf.stop_gradient`` and carries no
gradient, while ``R(t) = 1 - sum_{n<N} h^n`` stays differentiable (the
remainder path); the weights sum to 1, also at the cap. The input projection
of ``x_t`` (without the flag column) is one matmul over every time step; the
flag adds ``w_ih[:, I]`` on later inner steps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf

from rnnspec.results import ACTResult

from .cells import Cell, Params, linear, make_cell
from .sequence import State, dim, initial_states, normalise_lengths, reverse_valid, scan

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
    projected: tf.Tensor,
    flag: tf.Tensor,
    keep: tf.Tensor | None,
    epsilon: float,
    max_steps: int,
) -> tuple[State, tf.Tensor, tf.Tensor]:
    """One input step: the mean-field state, N(t) and R(t) of every row.

    Rows outside their length (``keep`` False) count as halted from the start:
    their values are discarded by the time loop.
    """
    dtype = projected.dtype
    column = tf.zeros_like(projected[:, :1])  # (batch, 1)
    halted = tf.zeros_like(column, tf.bool) if keep is None else ~keep[:, None]
    threshold = 1.0 - epsilon

    def more(n: tf.Tensor, s: State, mean: State, halted: tf.Tensor, *_: tf.Tensor) -> tf.Tensor:
        return (n <= max_steps) & ~tf.reduce_all(halted)

    def body(
        n: tf.Tensor, s: State, mean: State, halted: tf.Tensor, total: tf.Tensor, steps: tf.Tensor, rem: tf.Tensor
    ) -> tuple[tf.Tensor, State, State, tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        active = ~halted
        later = tf.cast(n > 1, dtype)  # the flag: 0 on the first inner step, 1 after
        s = cell.step(p, s, projected + later * flag)
        h = tf.sigmoid(linear(s["h"], p["w_halt"], p["b_halt"]))
        reached = tf.stop_gradient(total) + tf.stop_gradient(h) >= threshold
        stop = active & (reached | (n == max_steps))
        weight = tf.where(stop, 1.0 - total, tf.where(active, h, tf.zeros_like(h)))
        mean = {k: mean[k] + weight * s[k] for k in mean}
        steps = tf.where(stop[:, 0], tf.cast(n, dtype), steps)
        rem = tf.where(stop[:, 0], 1.0 - total[:, 0], rem)
        total = tf.where(active, total + h, total)
        return n + 1, s, mean, halted | stop, total, steps, rem

    start = (
        tf.constant(1),
        dict(state),
        {k: tf.zeros_like(v) for k, v in state.items()},
        halted,
        column,
        column[:, 0],
        column[:, 0],
    )
    final = tf.while_loop(more, body, start, maximum_iterations=max_steps)
    return final[2], final[5], final[6]


def act(
    *,
    x: tf.Tensor,
    params: Sequence[Mapping[str, tf.Tensor]],
    cell: str,
    epsilon: float,
    max_steps: int,
    lengths: Any,
    initial_state: Sequence[Mapping[str, tf.Tensor]] | None,
    reverse: bool,
) -> ACTResult:
    """ACT over one layer of ``cell`` (its own options at their defaults)."""
    features = int(x.shape[2])
    options = {"cell": cell, "epsilon": epsilon, "max_steps": max_steps}
    base = make_cell(cell, _CELL_DEFAULTS[cell])
    (p,) = params
    hidden = int(p["w_halt"].shape[1])
    norm = normalise_lengths(lengths, dim(x, 0), dim(x, 1))
    (state,) = initial_states("act", x, params, options, initial_state)
    inp = reverse_valid(x, norm) if reverse else x
    w_ih = p["w_ih"]
    projected = linear(inp, w_ih[:, :features], p["b_ih"])  # x_t's part, every step at once
    flag = w_ih[:, features]  # the flag column, added on inner steps n > 1

    def step(s: State, xs: Sequence[tf.Tensor], keep: tf.Tensor | None) -> tuple[State, list[tf.Tensor]]:
        new, steps, remainder = _ponder(base, p, s, xs[0], flag, keep, float(epsilon), int(max_steps))
        return new, [new["h"], steps, remainder]

    (out, ponder_steps, ponder_remainder), final = scan(step, [projected], state, norm.valid(), [(hidden,), (), ()])
    ponder_cost = ponder_steps + ponder_remainder
    if reverse:
        out, ponder_steps, ponder_remainder, ponder_cost = (
            reverse_valid(a, norm) for a in (out, ponder_steps, ponder_remainder, ponder_cost)
        )
    return ACTResult(out, (final,), ponder_steps, ponder_remainder, ponder_cost)
