"""act: Adaptive Computation Time over one layer of a base cell (rnn, lstm, gru, indrnn).

As the reference (:mod:`rnnspec.reference.act`): at each input step the cell
runs on ``[x_t, flag]`` (flag 0 on the first inner step, 1 after) until the
halting units reach ``1 - epsilon`` or ``max_steps``::

    h^n = sigmoid(w_halt . h(s^n) + b_halt),  N = min(M, min{n : not (h^1 + ... + h^n < 1 - epsilon)})
    R = 1 - (h^1 + ... + h^{N-1}) (NaN where h^N is),  s_t = sum_{n<N} h^n s^n + R s^N,  ponder_cost = N + R

A NaN halting unit passes the test "not below 1 - epsilon": its row halts there, with ``R`` NaN.

Rows halt independently: the inner loop stays batched, with a per-row mask of
the rows still pondering. ``N`` comes from comparisons and carries no gradient;
``R`` does. The outer loop over time is a ``lax.scan``.

The inner loop, two ways, one function (:func:`_ponderer`, a ``jax.custom_jvp``):

- its value is a ``lax.while_loop`` that stops as soon as every row has
  halted, under the static bound ``max_steps`` (the spec's default is 100,
  while rows typically halt after a few steps): what ``jax.jit`` runs when no
  derivative is asked for;
- its derivative (forward mode, and reverse mode by transposing it) is that of
  a ``lax.scan`` over all ``max_steps`` inner steps, each a ``lax.cond`` that
  skips the cell once every row has halted. Reverse mode cannot go through a
  ``while_loop`` (its trip count is unknown when the residuals are laid out);
  the scan's is fixed. Both compute the same values: the scan's extra steps
  change nothing.

Recurrent dropout (``recurrent_mask``, one ``(batch, H)`` mask: act has one
layer): every inner step's recurrent product reads ``h * mask``. The mask is an
argument of the inner loop (None without it), so both forms take it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from rnnspec.backends.common.cells import cell_defaults
from rnnspec.backends.common.ops import SequenceCall
from rnnspec.backends.common.state import initial_states, layer_arrays
from rnnspec.results import ACTResult

from .cells import Cell, Params, linear, make_cell, sigmoid
from .sequence import ARRAY_OPS, UNROLL, State, reverse_valid, time_major

__all__ = ["run"]

#: The inner loop's carry: (s^n, sum of halting units so far, halted, N, R, the mean-field state).
Carry = tuple[State, jax.Array, jax.Array, jax.Array, jax.Array, State]
#: (params, state, the step's projected x_t, the flag column, the rows within their length, the recurrent
#: dropout mask or None) -> (the mean-field state, N, R).
Ponder = Callable[
    [Params, State, jax.Array, jax.Array, jax.Array, jax.Array | None], tuple[State, jax.Array, jax.Array]
]


def _ponderer(cell: Cell, threshold: float, max_steps: int) -> Ponder:
    """The inner loop of one input step for ``cell``, halting at ``threshold`` or ``max_steps``."""

    def start(state: State, projected: jax.Array, keep: jax.Array) -> Carry:
        batch, dtype = projected.shape[0], projected.dtype
        zeros = jnp.zeros((batch,), dtype)
        # Rows outside their length count as halted from the start; the caller discards their values.
        halted = ~keep[:, None]
        mean = {k: jnp.zeros_like(v) for k, v in state.items()}
        return dict(state), jnp.zeros((batch, 1), dtype), halted, zeros, zeros, mean

    def advance(
        p: Params, projected: jax.Array, flag: jax.Array, mask: jax.Array | None, carry: Carry, n: jax.Array
    ) -> Carry:
        s, total, halted, steps, remainder, mean = carry
        active = ~halted
        s = cell.with_recurrent_mask(mask).step(p, s, jnp.where(n == 1, projected, projected + flag))
        h = sigmoid(linear(s["h"], p["w_halt"], p["b_halt"]))
        # "Not below", not ">=": a NaN halting unit stops its row (the spec's rule), with R NaN.
        stop = active & (~(total + h < threshold) | (n == max_steps))
        rest = jnp.where(jnp.isnan(h), h, 1.0 - total)
        zero = jnp.zeros((), h.dtype)
        weight = jnp.where(stop, rest, jnp.where(active, h, zero))
        mean = {k: mean[k] + weight * s[k] for k in mean}
        steps = jnp.where(stop[:, 0], n.astype(steps.dtype), steps)
        remainder = jnp.where(stop[:, 0], rest[:, 0], remainder)
        total = jnp.where(active, total + h, total)
        return s, total, halted | stop, steps, remainder, mean

    def finish(carry: Carry) -> tuple[State, jax.Array, jax.Array]:
        _, _, _, steps, remainder, mean = carry
        return mean, steps, remainder

    def scanned(
        p: Params, state: State, projected: jax.Array, flag: jax.Array, keep: jax.Array, mask: jax.Array | None
    ) -> tuple[State, jax.Array, jax.Array]:
        def body(carry: Carry, n: jax.Array) -> tuple[Carry, None]:
            step = lax.cond(jnp.all(carry[2]), lambda c: c, lambda c: advance(p, projected, flag, mask, c, n), carry)
            return step, None

        carry, _ = lax.scan(body, start(state, projected, keep), jnp.arange(1, max_steps + 1, dtype=jnp.int32))
        return finish(carry)

    @jax.custom_jvp
    def looped(
        p: Params, state: State, projected: jax.Array, flag: jax.Array, keep: jax.Array, mask: jax.Array | None
    ) -> tuple[State, jax.Array, jax.Array]:
        def pondering(c: tuple[jax.Array, Carry]) -> jax.Array:
            return (c[0] <= max_steps) & ~jnp.all(c[1][2])

        def body(c: tuple[jax.Array, Carry]) -> tuple[jax.Array, Carry]:
            return c[0] + 1, advance(p, projected, flag, mask, c[1], c[0])

        _, carry = lax.while_loop(pondering, body, (jnp.int32(1), start(state, projected, keep)))
        return finish(carry)

    @looped.defjvp
    def _looped_jvp(primals: tuple[Any, ...], tangents: tuple[Any, ...]) -> tuple[Any, Any]:
        return jax.jvp(scanned, primals, tangents)

    ponder: Ponder = looped
    return ponder


def run(call: SequenceCall) -> ACTResult:
    """ACT over one layer of ``cell`` (its own options at their defaults)."""
    x, params, options, reverse = call.x, call.params, call.options, call.reverse
    cell, epsilon, max_steps = options["cell"], options["epsilon"], options["max_steps"]
    batch, time, features = x.shape
    (p,) = params
    norm = ARRAY_OPS.lengths(call.lengths, x)
    valid = norm.valid()
    (state,) = initial_states("act", x, params, options, call.initial_state, ARRAY_OPS)
    inp = reverse_valid(x, norm) if reverse else x
    w_ih = p["w_ih"]
    projected = linear(inp, w_ih[:, :features], p["b_ih"])  # x_t's part, every step at once
    flag = w_ih[:, features]  # the flag column, added on inner steps n > 1
    ponder = _ponderer(make_cell(cell, cell_defaults(cell)), 1.0 - float(epsilon), int(max_steps))
    keep_all = valid if valid is not None else jnp.ones((batch, time), dtype=bool)
    mask = layer_arrays(call, norm, ARRAY_OPS)[0].get("recurrent_mask")  # act's one layer's, or None

    def step(s: State, xs_t: tuple[jax.Array, jax.Array]) -> tuple[State, tuple[jax.Array, ...]]:
        proj_t, keep = xs_t
        new, n_steps, remainder = ponder(p, s, proj_t, flag, keep, mask)
        if valid is None:
            return new, (new["h"], n_steps, remainder)
        zero = jnp.zeros((), proj_t.dtype)
        kept = {k: jnp.where(keep[:, None], v, s[k]) for k, v in new.items()}
        out = jnp.where(keep[:, None], new["h"], zero)
        return kept, (out, jnp.where(keep, n_steps, zero), jnp.where(keep, remainder, zero))

    final, (ys, n_steps, remainders) = lax.scan(step, dict(state), (time_major(projected), keep_all.T), unroll=UNROLL)
    out, ponder_steps, ponder_remainder = time_major(ys), n_steps.T, remainders.T
    ponder_cost = ponder_steps + ponder_remainder
    if reverse:
        out, ponder_steps, ponder_remainder, ponder_cost = (
            reverse_valid(a, norm) for a in (out, ponder_steps, ponder_remainder, ponder_cost)
        )
    return ACTResult(out, (final,), ponder_steps, ponder_remainder, ponder_cost)
