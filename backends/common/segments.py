"""The time segments of gradient checkpointing (the option ``checkpoint_every=K``), for every framework.

The time axis is cut into segments of K steps (the last one shorter when K
does not divide T), processed in the op's order: first to last, or last to
first when ``reverse=True``, each from the final state of the segment before
it. Each segment gets its part of every per-step array (``x`` and
``zoneout_mask``; ``a`` and ``b``, ``pre`` for the primitives) and of each
row's length, ``clip(lengths - t0, 0, K)``: a row that ends before a segment
passes its state through it unchanged. The per-step fields of the results are
concatenated along time; the final state is the last segment's. The primitives
return h alone, so the state they pass on is read off h: the step processed
last in the segment (``lengths - 1``, or step 0 when reversed), or the carried
state for a row with no step in it.

This module is that logic, framework-free, reading each op's per-step
arguments off its record (:attr:`rnnspec.ops.OpSpec.per_step`). Each framework
backend's ``checkpointing`` module brings the rest: the framework's checkpoint
(how a segment is recomputed while its backward runs); its array operations
are its :class:`~.arrays.ArrayOps`. :func:`run_in_segments` is the Python loop over segments
that torch and TensorFlow use; JAX scans over the segments instead, and takes
:func:`plan` from here (and the result type from the op's record).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from rnnspec.ops import OPS

from .arrays import ArrayOps

__all__ = [
    "Checkpointed",
    "Plan",
    "RunSegment",
    "plan",
    "run_in_segments",
    "segment_lengths",
    "steps_of",
    "with_checkpointing",
]

#: A backend's ``checkpointed(op, fn, every, arguments)``: ``fn(**arguments)`` run in segments of ``every`` steps.
Checkpointed = Callable[[str, Callable[..., Any], int, dict[str, Any]], Any]
#: ``run(fn, arguments)``: one segment's call of ``fn`` under the framework's checkpoint.
RunSegment = Callable[[Callable[..., Any], dict[str, Any]], Any]


@dataclass(frozen=True)
class Plan:
    """How one call is cut into segments."""

    #: The op.
    op: str
    #: The segment length K.
    every: int
    #: The per-step arguments the call holds (not None), the first of them ``x`` (``a``, ``pre``).
    names: tuple[str, ...]
    #: The number of steps T.
    time: int
    #: Whether the op is a primitive (``linear_recurrence``, ``indrnn_recurrence``): it returns h alone.
    primitive: bool
    #: The argument holding the state a segment starts from: ``initial`` or ``initial_state``.
    carry_name: str
    #: Whether the segments run last to first.
    reverse: bool

    def bounds(self) -> Iterator[tuple[int, int]]:
        """Each segment's ``(start, stop)`` steps, in processing order."""
        starts = range(0, self.time, self.every)
        for start in reversed(starts) if self.reverse else starts:
            yield start, min(start + self.every, self.time)


def plan(op: str, every: int, arguments: dict[str, Any]) -> Plan | None:
    """How to cut the call ``arguments`` of ``op`` into segments of ``every`` steps.

    Returns
    -------
    Plan or None
        None when the call is run whole: its time axis is no longer than
        ``every``, or unknown (a trace over a ``None`` dimension, which cannot
        be cut in Python).
    """
    spec = OPS[op]
    names = tuple(n for n in spec.per_step if arguments.get(n) is not None)
    time = arguments[names[0]].shape[1]
    if time is None or int(time) <= every:
        return None
    primitive = spec.kind == "primitive"
    carry_name = "initial" if primitive else "initial_state"
    return Plan(op, every, names, int(time), primitive, carry_name, bool(arguments["reverse"]))


def steps_of(value: Any, start: int, stop: int) -> Any:
    """Steps ``start:stop`` of an array, or of each array of a sequence (qrnn's zoneout masks, one per layer)."""
    if isinstance(value, (list, tuple)):
        return tuple(v[:, start:stop] for v in value)
    return value[:, start:stop]


def segment_lengths(lengths: Any, start: int, width: int, ops: ArrayOps) -> Any:
    """Each row's steps inside the segment ``start:start + width``: an array stays one, the rest NumPy."""
    if lengths is None:
        return None
    if ops.is_array(lengths):
        return ops.clip_lengths(lengths, start, width)
    return np.clip(np.asarray(lengths).astype(np.int64) - start, 0, width)


def run_in_segments(
    plan: Plan, fn: Callable[..., Any], arguments: dict[str, Any], ops: ArrayOps, run: RunSegment
) -> Any:
    """``fn(**arguments)`` as a Python loop over the segments of ``plan``, each one ``run(fn, segment)``."""
    carry = arguments[plan.carry_name]
    pieces: list[Any] = []
    for start, stop in plan.bounds():
        segment = dict(arguments)
        for name in plan.names:
            segment[name] = steps_of(arguments[name], start, stop)
        segment["lengths"] = segment_lengths(arguments["lengths"], start, stop - start, ops)
        segment[plan.carry_name] = carry
        result = run(fn, segment)
        carry = ops.final_state(result, segment["lengths"], carry, plan.reverse) if plan.primitive else result.state
        pieces.append(result)
    if plan.reverse:
        pieces.reverse()
    if plan.primitive:
        return ops.concat(pieces)
    fields = {
        name: carry if name == "state" else ops.concat([getattr(p, name) for p in pieces]) for name in pieces[0]._fields
    }
    return type(pieces[0])(**fields)


def with_checkpointing(op: str, fn: Callable[..., Any], checkpointed: Checkpointed) -> Callable[..., Any]:
    """``fn`` taking the option ``checkpoint_every`` too: None runs it as it is, K through ``checkpointed``."""

    def run(*, checkpoint_every: int | None = None, **arguments: Any) -> Any:
        if checkpoint_every is None:
            return fn(**arguments)
        return checkpointed(op, fn, int(checkpoint_every), arguments)

    run.__name__ = run.__qualname__ = getattr(fn, "__name__", op)
    run.__doc__ = fn.__doc__
    return run
