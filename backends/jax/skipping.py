"""Skip RNN's candidates at inference: only the rows whose gate opens run the cells.

At a step of Skip RNN's training loop every row computes its candidate
``S(s_{t-1}, x_t)`` (the straight-through gradient ``d u~ = <d, S - s>`` reads it
at skipped steps too). Without a derivative a skipped row's candidate is never
used, since ``s_t = u_t S + (1 - u_t) s_{t-1}`` with ``u_t = 0`` is ``s_{t-1}``.
:func:`candidates` computes them under ``jax.jit`` with a ``lax.switch`` on
how many rows ``n`` need one (their gate open, within their length):

- ``n = 0``: no cell work; each row's "candidate" is its old state (and its
  ``update_prob``), which the mix turns back into the old state;
- ``0 < n <= m`` for a bucket ``m`` of :func:`buckets` (``ceil(B / 8)``,
  ``ceil(B / 4)``, ``ceil(B / 2)``, from batch :data:`MIN_BUCKET_BATCH`): the
  cells run on ``m`` gathered rows (the ``n`` that update, then other rows
  to fill the bucket, which keep their old values), and the results are
  scattered back over the old state;
- otherwise: the cells run on the whole batch, the training loop's own ops.

The whole-batch branch runs the training loop's own operations; the gathered
ones run them on fewer rows. Values agree with the training loop's within
float rounding, not bitwise: XLA fuses the cell's elementwise operations
differently inside a branch than inline, and its matmul kernels block by the
row count, so the sums may round differently.

With the batch axis split over devices by an explicit sharding there are no
buckets (gathering rows would move them between devices, and ``jnp.argsort``
refuses a sharded axis): only a step where no row updates is skipped. Under
``jax.vmap`` the switch's index is batched, and JAX then runs every branch and
selects: the values are right and nothing is saved.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from .sequence import State

__all__ = ["MIN_BUCKET_BATCH", "Candidates", "buckets", "candidates"]

#: The smallest batch with gathered-row buckets: below it a gather and scatter cost about what they save.
MIN_BUCKET_BATCH = 8

#: The cells of every layer on some rows: (each layer's state, layer 0's input projection) ->
#: (each layer's candidate state, the top layer's new update probability ``du~``).
Candidates = Callable[[Sequence[State], jax.Array], tuple[list[State], jax.Array]]


def buckets(batch: int) -> tuple[int, ...]:
    """The row counts the gathered branches compute, ascending, each below ``batch``; none below
    :data:`MIN_BUCKET_BATCH`."""
    if batch < MIN_BUCKET_BATCH:
        return ()
    return tuple(sorted({math.ceil(batch / d) for d in (8, 4, 2)} - {batch}))


def _batch_sharded(a: jax.Array) -> bool:
    """Whether ``a``'s batch axis is split over devices by an explicit sharding (``jax.sharding.AxisType.Explicit``)."""
    spec: tuple[object, ...] = tuple(getattr(getattr(jax.typeof(a), "sharding", None), "spec", ()))
    return len(spec) > 0 and spec[0] is not None


def candidates(
    compute: Candidates,
    states: Sequence[State],
    gi: jax.Array,
    prob: jax.Array,
    need: jax.Array,
) -> tuple[list[State], jax.Array]:
    """Each layer's candidate state and the top layer's ``du~``, computed only where ``need`` holds.

    Parameters
    ----------
    compute
        The cells of every layer on the rows given (the training loop's own function).
    states
        Each layer's state entries at ``t - 1``, ``(B, H)`` arrays.
    gi
        Layer 0's input projection at step t, ``(B, G*H)``.
    prob
        The top layer's ``update_prob`` at ``t - 1``, ``(B, 1)``: a skipped row's ``du~``.
    need
        ``(B,)`` bool: the rows whose gate opens at t within their length.

    Returns
    -------
    The candidates and ``du~``, where ``need`` holds (and possibly elsewhere) those of
    ``compute``; elsewhere the old state and ``prob``, which the caller's mix leaves
    as they were.
    """
    batch = need.shape[0]
    # Gathering rows across the devices of a batch sharding would move them between devices (and jax refuses the
    # sort): there, only the step where no row updates is skipped.
    sizes = () if _batch_sharded(need) else buckets(batch)

    def none(_: None) -> tuple[list[State], jax.Array]:
        return [dict(s) for s in states], prob

    def every(_: None) -> tuple[list[State], jax.Array]:
        return compute(states, gi)

    def gathered(size: int) -> Callable[[None], tuple[list[State], jax.Array]]:
        def branch(_: None) -> tuple[list[State], jax.Array]:
            # The needed rows first (a stable sort keeps their order), then other rows to fill the bucket: distinct
            # in-range rows, so the scatter needs no bounds checks; a filler keeps its old values.
            rows = jnp.argsort(~need, stable=True)[:size]
            used = need[rows][:, None]
            sub, du = compute([{n: v[rows] for n, v in s.items()} for s in states], gi[rows])

            def put(old: jax.Array, new: jax.Array) -> jax.Array:
                return old.at[rows].set(jnp.where(used, new, old[rows]), unique_indices=True)

            merged = [{n: put(s[n], c[n]) for n in s} for s, c in zip(states, sub, strict=True)]
            return merged, put(prob, du)

        return branch

    count = jnp.sum(need.astype(jnp.int32))
    # 0: no row; 1..len(sizes): the smallest bucket holding every needed row; last: the whole batch.
    index = jnp.where(count == 0, 0, 1 + sum(((count > m).astype(jnp.int32) for m in sizes), jnp.int32(0)))
    branches: list[Callable[[None], tuple[list[State], jax.Array]]] = [none, *(gathered(m) for m in sizes), every]
    result: tuple[list[State], jax.Array] = lax.switch(index, branches, None)
    return result
