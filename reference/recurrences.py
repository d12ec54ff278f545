"""The reference's cells of the primitives, one function per op named after it (as in the framework backends).

A primitive's cell reads the primitive's per-step arguments concatenated on the
feature axis (``[a, b]``) and takes its other required arguments (``u``) as params.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .cells import Cell
from .independent import IndRNNRecurrenceCell, LinearCell

__all__ = ["indrnn_recurrence", "linear_recurrence"]


def linear_recurrence(options: Mapping[str, Any]) -> Cell:
    """``h_t = a_t * h_{t-1} + b_t``'s cell."""
    return LinearCell()


def indrnn_recurrence(options: Mapping[str, Any]) -> Cell:
    """``h_t = act(pre_t + u * h_{t-1})``'s cell, with the call's activation."""
    return IndRNNRecurrenceCell(activation=options["activation"])
