"""The reference's layer of each sequence op and cell of each primitive, found through the op's record.

As in the framework backends (:func:`rnnspec.backends.common.ops.op_table`), the
record names the module that implements the op
(:attr:`rnnspec.ops.OpSpec.module_name`): ``reference/<module>.py`` has
``layer(op, p, options, arrays)`` for a sequence op that :class:`.runs.SequenceRun`
runs (skip ops and act have runs of their own), or a function named after a
primitive, ``<op>(options)``, returning its cell. A run (:mod:`.runs`) reads
everything else off the record: the sizes of a layer from its params' shapes, its initial state from the record's state
entries, which of its array options hold one entry per step. Adding a sequence op
to the reference means adding its module.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Mapping
from typing import Any

from rnnspec.ops import OPS

from .activations import Array
from .cells import Cell
from .stack import Layer

__all__ = ["LayerFactory", "layer_factory", "primitive_cell"]

#: Builds one layer of a sequence op from its float64 params, the call's value options and the layer's
#: array options (float64, aligned with the time axis the layer sees: flipped for ``reverse``; or None).
LayerFactory = Callable[[Mapping[str, Array], Mapping[str, Any], Mapping[str, Array | None]], Layer]


def _module(op: str) -> Any:
    return importlib.import_module(f"rnnspec.reference.{OPS[op].module_name}")


def layer_factory(op: str) -> LayerFactory:
    """The layer of sequence ``op``: ``layer(op, ...)`` of the reference module its record names."""
    return functools.partial(_module(op).layer, op)


def primitive_cell(op: str, options: Mapping[str, Any]) -> Cell:
    """The cell of primitive ``op``: ``<op>(options)`` of the reference module its record names.

    Its input is the primitive's per-step arguments concatenated on the feature axis (``[a, b]``),
    its params the other required arguments (``u``).
    """
    found: Cell = getattr(_module(op), op)(options)
    return found
