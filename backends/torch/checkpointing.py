"""Gradient checkpointing of any op (the option ``checkpoint_every=K``) with ``torch.utils.checkpoint``.

The time axis is cut into segments of K steps (the last one shorter when K
does not divide T). Each segment runs the op's own function under
``torch.utils.checkpoint`` (non-reentrant), from the final state of the segment
before it in processing order: first to last, or last to first when
``reverse=True``. Autograd then keeps each segment's inputs and initial state
only, and recomputes a segment's activations while its backward runs, so the
memory of forward plus backward falls from T steps of activations to about
T/K states and K steps.

Each segment gets its part of every per-step array (``x`` and ``zoneout_mask``;
``a`` and ``b``, ``pre`` for the primitives) and of each row's length,
``clip(lengths - t0, 0, K)``: a row that ends before a segment passes its
state through it unchanged. The per-step fields of the results are
concatenated along time; the final state is the last segment's. The primitives
return h alone, so the state they pass on is read off h: the step processed
last in the segment (``lengths - 1``, or step 0 when reversed), or the initial
value for a row with no step in it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.utils.checkpoint

from .functorch import transformed_arguments

__all__ = ["PER_STEP", "checkpointed", "with_checkpointing"]

#: The arguments of each op that hold one entry per step on axis 1 (sequence ops: x and zoneout_mask).
PER_STEP: dict[str, tuple[str, ...]] = {"linear_recurrence": ("a", "b"), "indrnn_recurrence": ("pre",)}
_SEQUENCE_PER_STEP = ("x", "zoneout_mask")


def _per_step(op: str) -> tuple[str, ...]:
    return PER_STEP.get(op, _SEQUENCE_PER_STEP)


def _slice(value: Any, start: int, stop: int) -> Any:
    """Steps ``start:stop`` of an array, or of each array of a sequence (one mask per layer)."""
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return value[:, start:stop]
    return tuple(v[:, start:stop] for v in value)


def _segment_lengths(lengths: Any, start: int, stop: int) -> Any:
    """Each row's steps inside ``start:stop``; a tensor stays a tensor (on its device), the rest NumPy."""
    if lengths is None:
        return None
    if isinstance(lengths, torch.Tensor):
        return (lengths.to(torch.int64) - start).clamp(0, stop - start)
    return np.clip(np.asarray(lengths).astype(np.int64) - start, 0, stop - start)


def _final(h: torch.Tensor, lengths: Any, initial: torch.Tensor | None, reverse: bool) -> torch.Tensor:
    """A primitive's state after a segment, read off its h: the step each row processed last."""
    last = h[:, 0] if reverse else h[:, -1]
    if lengths is None:
        return last
    steps = torch.as_tensor(lengths, device=h.device).to(torch.int64)
    index = torch.zeros_like(steps) if reverse else (steps - 1).clamp(min=0)
    picked = h[torch.arange(h.shape[0], device=h.device), index]
    before = torch.zeros_like(last) if initial is None else initial
    return torch.where((steps > 0)[:, None], picked, before)


def checkpointed(op: str, fn: Callable[..., Any], every: int, arguments: dict[str, Any]) -> Any:
    """``fn(**arguments)`` (the function of ``op``) run in checkpointed segments of ``every`` steps."""
    names = _per_step(op)
    time = int(arguments[names[0]].shape[1])
    if time <= every:
        return fn(**arguments)
    # Under torch.func transforms the checkpoint cannot run; segments alone would change nothing.
    if transformed_arguments(arguments):
        return fn(**arguments)
    primitive = op in PER_STEP
    carry_name = "initial" if primitive else "initial_state"
    reverse = bool(arguments["reverse"])
    bounds = [(start, min(start + every, time)) for start in range(0, time, every)]
    carry = arguments[carry_name]
    pieces: list[Any] = []
    for start, stop in reversed(bounds) if reverse else bounds:
        segment = dict(arguments)
        for name in names:
            if name in segment:
                segment[name] = _slice(arguments[name], start, stop)
        segment["lengths"] = _segment_lengths(arguments["lengths"], start, stop)
        segment[carry_name] = carry
        result = torch.utils.checkpoint.checkpoint(fn, use_reentrant=False, **segment)
        carry = _final(result, segment["lengths"], carry, reverse) if primitive else result.state
        pieces.append(result)
    if reverse:
        pieces.reverse()
    if primitive:
        return torch.cat(pieces, dim=1)
    return _joined(pieces, carry)


def _joined(pieces: Sequence[Any], state: Any) -> Any:
    """One result from the segments' results: per-step fields concatenated along time, the last state."""
    fields = {
        name: state if name == "state" else torch.cat([getattr(p, name) for p in pieces], dim=1)
        for name in pieces[0]._fields
    }
    return type(pieces[0])(**fields)


def with_checkpointing(op: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` taking the option ``checkpoint_every`` too: None runs it as it is, K in segments."""

    def run(*, checkpoint_every: int | None = None, **arguments: Any) -> Any:
        if checkpoint_every is None:
            return fn(**arguments)
        return checkpointed(op, fn, int(checkpoint_every), arguments)

    run.__name__ = run.__qualname__ = getattr(fn, "__name__", op)
    run.__doc__ = fn.__doc__
    return run
