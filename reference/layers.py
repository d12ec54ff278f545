"""The reference's layer of each sequence op and cell of each primitive, by op name.

A run (:mod:`.runs`) reads everything else off the op's record: the sizes of a
layer from its params' shapes, its initial state from the record's state
entries, which of its array options hold one entry per step. Adding a sequence
op to the reference means adding its layer here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .activations import Array
from .cells import Cell, GRUCell, LSTMCell, RNNCell
from .independent import IndRNNCell, IndRNNRecurrenceCell, LinearCell
from .qrnn import QRNNLayer
from .stack import Layer, ScanLayer

__all__ = ["LAYERS", "PRIMITIVE_CELLS", "LayerFactory"]

#: Builds one layer of a sequence op from its float64 params, the call's value options and the layer's
#: array options (float64, aligned with the time axis the layer sees: flipped for ``reverse``; or None).
LayerFactory = Callable[[Mapping[str, Array], Mapping[str, Any], Mapping[str, Array | None]], Layer]

#: The layer of each sequence op run by :class:`.runs.SequenceRun` (skip ops and act have runs of their own).
LAYERS: dict[str, LayerFactory] = {
    "rnn": lambda p, o, a: ScanLayer(RNNCell(activation=o["activation"]), p),
    "lstm": lambda p, o, a: ScanLayer(LSTMCell(), p),
    "gru": lambda p, o, a: ScanLayer(GRUCell(reset_after=o["reset_after"]), p),
    "indrnn": lambda p, o, a: ScanLayer(IndRNNCell(activation=o["activation"]), p),
    "qrnn": lambda p, o, a: QRNNLayer(p, o["mode"], a["zoneout_mask"]),
}

#: The cell of each primitive, from the call's value options. Its input is the primitive's per-step
#: arguments concatenated on the feature axis (``[a, b]``), its params the other required arguments (``u``).
PRIMITIVE_CELLS: dict[str, Callable[[Mapping[str, Any]], Cell]] = {
    "linear_recurrence": lambda o: LinearCell(),
    "indrnn_recurrence": lambda o: IndRNNRecurrenceCell(activation=o["activation"]),
}
