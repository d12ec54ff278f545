"""The reference's layer of rnn, lstm and gru: their cell (:mod:`.cells`) over time (:class:`.stack.ScanLayer`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .activations import Array
from .cells import make_cell
from .stack import Layer, ScanLayer

__all__ = ["layer"]


def layer(op: str, p: Mapping[str, Array], options: Mapping[str, Any], arrays: Mapping[str, Array | None]) -> Layer:
    """One layer of ``op`` (rnn, lstm, gru) with float64 params ``p``, the call's value options and the layer's
    recurrent dropout mask."""
    return ScanLayer(make_cell(op, options, arrays.get("recurrent_mask")), p)
