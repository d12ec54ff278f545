"""The elementwise recurrences: ``linear_recurrence`` (QRNN's pooling) and ``indrnn_recurrence``.

Plain torch loops over time in the masked scan of :mod:`.sequence`: past a
row's length ``h`` is frozen, and returned as 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .cells import ACTIVATIONS
from .sequence import State, normalise_lengths, reverse_valid, scan

__all__ = ["indrnn_recurrence", "indrnn_scan", "linear_recurrence", "linear_scan"]


def linear_scan(
    a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor, valid: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``h_t = a_t * h_{t-1} + b_t`` from ``h0`` over ``(batch, time, H)``; all ``h`` and the final one."""

    def step(s: State, xs: Sequence[torch.Tensor]) -> State:
        return {"h": xs[0] * s["h"] + xs[1]}

    h, final = scan(step, [a, b], {"h": h0}, valid, h0.shape[1])
    return h, final["h"]


def indrnn_scan(
    pre: torch.Tensor, u: torch.Tensor, h0: torch.Tensor, activation: str, valid: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``h_t = act(pre_t + u * h_{t-1})`` from ``h0`` over ``(batch, time, H)``; all ``h`` and the final one."""
    fn = ACTIVATIONS[activation]

    def step(s: State, xs: Sequence[torch.Tensor]) -> State:
        return {"h": fn(xs[0] + u * s["h"])}

    h, final = scan(step, [pre], {"h": h0}, valid, h0.shape[1])
    return h, final["h"]


def linear_recurrence(
    *, a: torch.Tensor, b: torch.Tensor, initial: torch.Tensor | None, lengths: Any, reverse: bool
) -> torch.Tensor:
    """``h_t = a_t * h_{t-1} + b_t``, ``h`` of shape ``(batch, time, H)``."""
    batch, time, hidden = a.shape
    norm = normalise_lengths(lengths, batch, time, a.device)
    h0 = a.new_zeros((batch, hidden)) if initial is None else initial
    if reverse:
        a, b = reverse_valid(a, norm), reverse_valid(b, norm)
    h, _ = linear_scan(a, b, h0, norm.valid())
    return reverse_valid(h, norm) if reverse else h


def indrnn_recurrence(
    *,
    pre: torch.Tensor,
    u: torch.Tensor,
    initial: torch.Tensor | None,
    activation: str,
    lengths: Any,
    reverse: bool,
) -> torch.Tensor:
    """``h_t = act(pre_t + u * h_{t-1})``, ``h`` of shape ``(batch, time, H)``."""
    batch, time, hidden = pre.shape
    norm = normalise_lengths(lengths, batch, time, pre.device)
    h0 = pre.new_zeros((batch, hidden)) if initial is None else initial
    if reverse:
        pre = reverse_valid(pre, norm)
    h, _ = indrnn_scan(pre, u, h0, activation, norm.valid())
    return reverse_valid(h, norm) if reverse else h
