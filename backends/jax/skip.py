"""skip_rnn, skip_lstm, skip_gru: Skip RNN's state-update gate over a stack of base cells (training semantics).

As the reference (:mod:`rnnspec.reference.skip`) and the authors' code: one
``lax.scan`` over time whose step runs the layers bottom to top, since every
layer shares the one gate driven by the top layer's candidate; every candidate
is computed at every step (the straight-through gradient needs it)::

    u~_t = cum + min(update_prob, 1 - cum)          (ties send the gradient to update_prob)
    u_t  = bin(u~_t) = [u~_t >= 0.5],  d u_t / d u~_t = 1  (straight-through)
    s_t  = u_t S(s_{t-1}, x_t) + (1 - u_t) s_{t-1}
    update_prob' = u_t sigmoid(w_gate . g + b_gate) + (1 - u_t) update_prob,  cum' = (1 - u_t) u~_t

The straight-through estimator is a ``stop_gradient`` construction:
``u = bin(u~) + (u~ - stop_gradient(u~))`` is exactly ``bin(u~)`` forward, with
derivative 1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from rnnspec.results import SkipResult

from .cells import linear, make_cell, sigmoid
from .sequence import UNROLL, State, initial_states, normalise_lengths, reverse_valid, time_major

__all__ = ["skip_gru", "skip_lstm", "skip_rnn"]


def _mix(on: jax.Array, through: jax.Array, new: jax.Array, old: jax.Array) -> jax.Array:
    """``u * new + (1 - u) * old`` for ``u = on + through`` (``on`` in {0, 1}, ``through`` zero with gradient).

    The value is exactly ``new`` or ``old``, and ``d u`` is ``<d, new - old>``
    with the difference taken first, as the reference does: the product form
    would sum ``d * new - d * old``, which cancels in float32 when ``new`` is
    close to ``old``, and the straight-through chain amplifies that.
    """
    return jnp.where(on, new, old) + through * (new - old)


def _skip(
    op: str,
    x: jax.Array,
    params: Sequence[Mapping[str, jax.Array]],
    lengths_arg: Any,
    initial_state: Sequence[Mapping[str, jax.Array]] | None,
    reverse: bool,
    options: Mapping[str, Any],
) -> SkipResult:
    cell = make_cell(op.removeprefix("skip_"), options)
    names = cell.state_names
    gate_input = "c" if "c" in names else "h"
    batch, time = x.shape[:2]
    lengths = normalise_lengths(lengths_arg, batch, time)
    valid = lengths.valid()
    states = list(initial_states(op, x, params, options, initial_state))
    top = params[-1]
    inp = reverse_valid(x, lengths) if reverse else x
    projected = cell.project(params[0], inp)  # layer 0's input projection, every step at once

    def step(carry: list[State], xs_t: list[jax.Array]) -> tuple[list[State], tuple[jax.Array, ...]]:
        prob_prev, cum_prev = carry[-1]["update_prob"], carry[-1]["cum_update_prob"]
        room = 1.0 - cum_prev
        u_tilde = cum_prev + jnp.where(room < prob_prev, room, prob_prev)  # a NaN update_prob stays NaN
        on = u_tilde >= 0.5
        # Zero, with d/du~ = 1: the straight-through estimator (zero also where u~ is NaN, whose gate is 0).
        through = jnp.where(jnp.isnan(u_tilde), 0.0, u_tilde - lax.stop_gradient(u_tilde))
        u = on.astype(u_tilde.dtype) + through
        cands: list[State] = []
        for k, (p, s) in enumerate(zip(params, carry, strict=True)):  # over layers, not time
            gi = xs_t[0] if k == 0 else cell.project(p, cands[-1]["h"])
            cands.append(cell.step(p, {n: s[n] for n in names}, gi))
        du = sigmoid(linear(cands[-1][gate_input], top["w_gate"], top["b_gate"]))
        new = [{n: _mix(on, through, c[n], s[n]) for n in names} for c, s in zip(cands, carry, strict=True)]
        new[-1]["update_prob"] = _mix(on, through, du, prob_prev)
        new[-1]["cum_update_prob"] = (1.0 - u) * u_tilde
        y, gate, prob = new[-1]["h"], u[:, 0], u_tilde[:, 0]
        if valid is not None:
            keep = xs_t[1][:, None]
            zero = jnp.zeros((), y.dtype)
            new = [{n: jnp.where(keep, v, s[n]) for n, v in ns.items()} for ns, s in zip(new, carry, strict=True)]
            y = jnp.where(keep, y, zero)
            gate, prob = jnp.where(keep[:, 0], gate, zero), jnp.where(keep[:, 0], prob, zero)
        return new, (y, gate, prob)

    xs = [time_major(projected)] + ([] if valid is None else [valid.T])
    final, (ys, gates, probs) = lax.scan(step, [dict(s) for s in states], xs, unroll=UNROLL)
    out, gate, prob = time_major(ys), gates.T, probs.T
    if reverse:
        out, gate, prob = (reverse_valid(a, lengths) for a in (out, gate, prob))
    return SkipResult(out, tuple(final), gate, prob)


def skip_rnn(
    *,
    x: jax.Array,
    params: Sequence[Mapping[str, jax.Array]],
    activation: str,
    lengths: Any,
    initial_state: Sequence[Mapping[str, jax.Array]] | None,
    reverse: bool,
) -> SkipResult:
    """Skip RNN over rnn cells."""
    return _skip("skip_rnn", x, params, lengths, initial_state, reverse, {"activation": activation})


def skip_lstm(
    *,
    x: jax.Array,
    params: Sequence[Mapping[str, jax.Array]],
    lengths: Any,
    initial_state: Sequence[Mapping[str, jax.Array]] | None,
    reverse: bool,
) -> SkipResult:
    """Skip RNN over lstm cells (the gate reads the top layer's candidate c)."""
    return _skip("skip_lstm", x, params, lengths, initial_state, reverse, {})


def skip_gru(
    *,
    x: jax.Array,
    params: Sequence[Mapping[str, jax.Array]],
    reset_after: bool,
    lengths: Any,
    initial_state: Sequence[Mapping[str, jax.Array]] | None,
    reverse: bool,
) -> SkipResult:
    """Skip RNN over gru cells."""
    return _skip("skip_gru", x, params, lengths, initial_state, reverse, {"reset_after": reset_after})
