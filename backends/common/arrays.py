"""The array operations a framework backend hands the core: one :class:`ArrayOps` per framework.

The core (:mod:`.state`, :mod:`.segments`) is written against these few
operations, so that starting a state, stacking layers and cutting time into
segments are written once for torch, JAX and TensorFlow. Each framework's
``sequence`` module defines its ``ARRAY_OPS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["ArrayOps"]


@dataclass(frozen=True)
class ArrayOps:
    """The array operations of one framework that the core needs.

    ``Lengths`` below is the framework's normalised lengths (its ``sequence.Lengths``).
    """

    #: Whether a value is an array of the framework (lengths given as one stay one, on their device).
    is_array: Callable[[Any], bool]
    #: ``(lengths, x) -> Lengths``: the caller's ``lengths`` (None: every row full) normalised for x.
    lengths: Callable[[Any, Any], Any]
    #: ``(x, tail, value) -> (batch, *tail)`` filled with ``value``, of x's dtype and device (x's batch may
    #: be unknown until run time, inside a trace).
    filled: Callable[[Any, tuple[int, ...], float], Any]
    #: ``(x, p, tail) -> p`` broadcast to ``(batch, *tail)`` (a learnt initial state), differentiably.
    broadcast: Callable[[Any, Any, tuple[int, ...]], Any]
    #: ``(a, lengths) -> a`` with each row's valid prefix reversed along axis 1 (how ``reverse=True`` runs).
    reverse_valid: Callable[[Any, Any], Any]
    #: ``(lengths, start, width) -> clip(lengths - start, 0, width)``, integers, for lengths that are arrays.
    clip_lengths: Callable[[Any, int, int], Any]
    #: The arrays of a list concatenated along the time axis (axis 1).
    concat: Callable[[list[Any]], Any]
    #: ``(h, lengths, carry, reverse) -> state``: a primitive's state after a segment, read off its h
    #: (``carry`` is the state it started from, None for zeros).
    final_state: Callable[[Any, Any, Any, bool], Any]
    #: A caller's initial state entry as the op's loop carries it (TensorFlow reads a variable into a tensor).
    carried: Callable[[Any], Any] = lambda value: value
