"""The machinery every sequence op of the JAX backend shares, as the reference's :mod:`.stack` and :mod:`.scan`.

- :func:`normalise_lengths`: ``lengths`` (None, NumPy, a list, a jax array or
  a tracer) as an int32 array, or None when every row is known to be full;
- :func:`reverse_valid`: each row's valid prefix reversed (a gather), which is
  how ``reverse=True`` is realised, as in the reference;
- :func:`scan`: the masked time loop as one ``lax.scan`` (past a row's length
  the state is frozen and the output is zero);
- :data:`ARRAY_OPS`: JAX's array operations for the framework-free core
  (:mod:`rnnspec.backends.common`: start states, the stack of layers, segments).

Everything here is a pure function of jax arrays whose control flow depends on
shapes only, so it traces under ``jax.jit`` and ``jax.vmap``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from rnnspec.backends.common.arrays import ArrayOps

__all__ = [
    "ARRAY_OPS",
    "UNROLL",
    "Lengths",
    "State",
    "normalise_lengths",
    "reverse_valid",
    "scan",
    "time_major",
    "zero_past",
]

#: The state of one layer: named entries such as ``{"h": ..., "c": ...}``.
State = dict[str, jax.Array]

#: ``lax.scan``'s ``unroll`` for the loops over time: time steps per iteration of the compiled loop.
#: Measured by ``bench/jax_recurrences.py`` (CPU, float32, B=16 T=256 H=256): unroll 1 / 2 / 4 / 8 ran the
#: linear recurrence in 3.2 / 3.6 / 4.8 / 7.2 ms and lstm in 110 / 117 / 119 / 133 ms, and compiled
#: lstm in 0.43 / 0.51 / 0.77 / 1.16 s: unrolling only costs here, so 1.
UNROLL = 1


@dataclass(frozen=True)
class Lengths:
    """Each row's length, normalised.

    Attributes
    ----------
    values
        ``(batch,)`` int32, or None when every row is known to have full length
        (``lengths=None``, or host values all equal to ``time``).
    time
        The length of the time axis.
    """

    values: jax.Array | None
    time: int

    def valid(self) -> jax.Array | None:
        """``(batch, time)`` bool, True where a step lies within its row's length; None when every row is full."""
        if self.values is None:
            return None
        return jnp.arange(self.time, dtype=jnp.int32)[None, :] < self.values[:, None]

    def or_full(self, batch: int) -> jax.Array:
        """The values, ``time`` for every row when they are None."""
        if self.values is None:
            return jnp.full((batch,), self.time, dtype=jnp.int32)
        return self.values


def normalise_lengths(lengths: Any, batch: int, time: int) -> Lengths:
    """``lengths`` as :class:`Lengths`: None is every row at full length.

    Host values (NumPy, a list, a concrete jax array) that are all ``time``
    drop the mask, which saves a select per step; a traced ``lengths`` always
    keeps it, since its values are unknown until run.
    """
    if lengths is None:
        return Lengths(None, time)
    if not isinstance(lengths, jax.core.Tracer):
        host = np.asarray(lengths).reshape(batch)
        if np.all(host == time):
            return Lengths(None, time)
    return Lengths(jnp.asarray(lengths).astype(jnp.int32).reshape(batch), time)


def zero_past(value: jax.Array, lengths: Any) -> jax.Array:
    """``value`` (batch, time, ...) with the steps past each row's length zeroed (:mod:`rnnspec.padding`)."""
    batch, time = value.shape[:2]
    n = normalise_lengths(lengths, batch, time)
    if n.values is None:
        return value
    valid = jnp.arange(time)[None, :] < n.values[:, None]
    return jnp.where(valid.reshape(valid.shape + (1,) * (value.ndim - 2)), value, jnp.zeros((), value.dtype))


def reverse_valid(a: jax.Array, lengths: Lengths) -> jax.Array:
    """Reverse each row's valid prefix along axis 1; the padding stays in place.

    Its own inverse, and (a gather whose transpose is the inverse scatter) its own reverse mode.
    """
    if lengths.values is None:
        return jnp.flip(a, axis=1)
    steps = jnp.arange(a.shape[1], dtype=jnp.int32)[None, :]
    n = lengths.values[:, None]
    index = jnp.where(steps < n, n - 1 - steps, steps)
    return jnp.take_along_axis(a, index.reshape(index.shape + (1,) * (a.ndim - 2)), axis=1)


def time_major(a: jax.Array) -> jax.Array:
    """``(batch, time, ...)`` -> ``(time, batch, ...)``: what ``lax.scan`` iterates over."""
    return jnp.swapaxes(a, 0, 1)


#: One step: (the layer's state, the step's inputs) -> the new state. The output is its ``"h"``.
StepFn = Callable[[State, Sequence[jax.Array]], State]


def scan(
    step: StepFn,
    inputs: Sequence[jax.Array],
    state: Mapping[str, jax.Array],
    valid: jax.Array | None,
    *,
    time_major_inputs: bool = False,
) -> tuple[jax.Array, State]:
    """Run ``step`` over time from ``state`` with one ``lax.scan``; ``inputs`` are ``(batch, time, ...)`` arrays.

    ``valid`` ``(batch, time)`` is True where a step lies within its row's length
    (None: every step): past it the state is frozen (``s_t = s_{t-1}``) and the
    output is zero. ``time_major_inputs=True`` says that ``inputs`` are
    ``(time, batch, ...)`` already (``valid`` stays ``(batch, time)``). Returns
    the outputs (``(batch, time, H)``, the new ``"h"`` of each step) and the
    final state.
    """
    xs = list(inputs) if time_major_inputs else [time_major(a) for a in inputs]

    def body(carry: State, xs_t: list[jax.Array]) -> tuple[State, jax.Array]:
        if valid is None:
            new = step(carry, xs_t)
            return new, new["h"]
        *ins, keep_t = xs_t
        new = step(carry, ins)
        keep = keep_t[:, None]
        kept = {k: jnp.where(keep, new[k], v) for k, v in carry.items()}
        return kept, jnp.where(keep, new["h"], jnp.zeros((), new["h"].dtype))

    if valid is not None:
        xs.append(valid.T)
    final, ys = lax.scan(body, dict(state), xs, unroll=UNROLL)
    return time_major(ys), final


def _filled(x: jax.Array, tail: tuple[int, ...], value: float) -> jax.Array:
    return jnp.full((x.shape[0], *tail), value, x.dtype)


def _broadcast(x: jax.Array, p: jax.Array, tail: tuple[int, ...]) -> jax.Array:
    return jnp.broadcast_to(p, (x.shape[0], *tail))


def _final(h: jax.Array, lengths: jax.Array | None, carry: jax.Array, reverse: bool) -> jax.Array:
    """A primitive's state after a segment, read off its h: the step each row processed last."""
    last = h[:, 0] if reverse else h[:, -1]
    if lengths is None:
        return last
    index = jnp.zeros_like(lengths) if reverse else jnp.maximum(lengths - 1, 0)
    picked = jnp.take_along_axis(h, index[:, None, None], axis=1)[:, 0]
    return jnp.where((lengths > 0)[:, None], picked, carry)


#: JAX's array operations for the framework-free core.
ARRAY_OPS = ArrayOps(
    is_array=lambda value: isinstance(value, jax.Array),
    lengths=lambda lengths, x: normalise_lengths(lengths, x.shape[0], x.shape[1]),
    filled=_filled,
    broadcast=_broadcast,
    reverse_valid=reverse_valid,
    clip_lengths=lambda lengths, start, width: jnp.clip(jnp.asarray(lengths).astype(jnp.int32) - start, 0, width),
    concat=lambda pieces: jnp.concatenate(pieces, axis=1),
    final_state=_final,
)
