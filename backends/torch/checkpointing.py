"""Gradient checkpointing of any op (the option ``checkpoint_every=K``) with ``torch.utils.checkpoint``.

The time axis is cut into segments of K steps as :mod:`rnnspec.backends.common.segments`
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

from rnnspec.backends.common import segments

from .functorch import transformed_arguments
from .sequence import ARRAY_OPS

__all__ = ["checkpointed", "with_checkpointing"]


def _run_segment(fn: Callable[..., Any], arguments: dict[str, Any]) -> Any:
    return torch.utils.checkpoint.checkpoint(fn, use_reentrant=False, **arguments)


def checkpointed(op: str, fn: Callable[..., Any], every: int, arguments: dict[str, Any]) -> Any:
    """``fn(**arguments)`` (the function of ``op``) run in checkpointed segments of ``every`` steps."""
    plan = segments.plan(op, every, arguments)
    if plan is None or transformed_arguments(arguments):
        return fn(**arguments)
    return segments.run_in_segments(plan, fn, arguments, ARRAY_OPS, _run_segment)


def with_checkpointing(op: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` taking the option ``checkpoint_every`` too: None runs it as it is, K in segments."""
    return segments.with_checkpointing(op, fn, checkpointed)
