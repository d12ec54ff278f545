"""Gradient checkpointing of any op (the option ``checkpoint_every=K``) with ``torch.utils.checkpoint``.

The time axis is cut into segments of K steps as :mod:`rnnspec.backends.segments`
says (lengths, reverse, the state carried from segment to segment). Each
segment runs the op's own function under ``torch.utils.checkpoint``
(non-reentrant). Autograd then keeps each segment's inputs and initial state
only, and recomputes a segment's activations while its backward runs, so the
memory of forward plus backward falls from T steps of activations to about
T/K states and K steps.

Lengths given as a tensor stay a tensor, on its device. Under ``torch.func``
transforms the checkpoint cannot run, and the op runs whole (segments alone
would change nothing).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.utils.checkpoint

from rnnspec.backends import segments
from rnnspec.backends.segments import PER_STEP

from .functorch import transformed_arguments

__all__ = ["PER_STEP", "checkpointed", "with_checkpointing"]


def _clip_lengths(lengths: torch.Tensor, start: int, width: int) -> torch.Tensor:
    return (lengths.to(torch.int64) - start).clamp(0, width)


def _concat(pieces: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(pieces, dim=1)


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


_OPS = segments.ArrayOps(is_array=torch.is_tensor, clip_lengths=_clip_lengths, concat=_concat, final_state=_final)


def _run_segment(fn: Callable[..., Any], arguments: dict[str, Any]) -> Any:
    return torch.utils.checkpoint.checkpoint(fn, use_reentrant=False, **arguments)


def checkpointed(op: str, fn: Callable[..., Any], every: int, arguments: dict[str, Any]) -> Any:
    """``fn(**arguments)`` (the function of ``op``) run in checkpointed segments of ``every`` steps."""
    plan = segments.plan(op, every, arguments)
    if plan is None or transformed_arguments(arguments):
        return fn(**arguments)
    return segments.run_in_segments(plan, fn, arguments, _OPS, _run_segment)


def with_checkpointing(op: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` taking the option ``checkpoint_every`` too: None runs it as it is, K in segments."""
    return segments.with_checkpointing(op, fn, checkpointed)
