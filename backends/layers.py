"""Moved to :mod:`rnnspec.backends.common.layers`, the layer core; kept while the layer modules move over."""

from __future__ import annotations

from rnnspec.backends.common.layers import (
    CELL_BIASES,
    ParamFiles,
    check_canonical,
    check_checkpoint_every,
    check_layer_input,
    layer_backend,
)

__all__ = [
    "CELL_BIASES",
    "TIME_FIELDS",
    "ParamFiles",
    "check_canonical",
    "check_checkpoint_every",
    "check_layer_input",
    "layer_backend",
]

#: Results' fields with a time axis (transposed for time-major layers).
TIME_FIELDS = ("outputs", "update_gate", "update_prob", "ponder_steps", "ponder_remainder", "ponder_cost")
