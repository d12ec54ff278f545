"""indrnn: stacked IndRNN layers, ``h' = act(W_ih x + b_ih + u * h)``.

Each layer's input projection is one matmul over every time step; only the
elementwise recurrence (:func:`.recurrences.indrnn_scan`) runs over time.
"""

from __future__ import annotations

from rnnspec.backends.common.ops import SequenceCall
from rnnspec.backends.common.state import indrnn_layer, run_layers
from rnnspec.results import SequenceResult

from .cells import linear, make_cell, make_hoist
from .classic import plain_layer
from .paths import record_path
from .recurrences import indrnn_scan
from .sequence import ARRAY_OPS

__all__ = ["run"]


def run(call: SequenceCall) -> SequenceResult:
    """IndRNN over a stack of layers (the layer is the core's :func:`~rnnspec.backends.common.state.indrnn_layer`)."""
    activation = call.options["activation"]
    if call.arrays.get("recurrent_mask") is not None:  # recurrent dropout: the plain cell, which takes the mask
        record_path("indrnn", "plain")
        cell, hoist = make_cell("indrnn", call.options), make_hoist("indrnn", call.options)
        return run_layers(
            call,
            lambda p, arrays: plain_layer(cell.with_recurrent_mask(arrays["recurrent_mask"]), p, hoist),
            ARRAY_OPS,
        )
    scan = indrnn_scan
    return run_layers(call, lambda p, _: indrnn_layer(p, activation, linear, scan), ARRAY_OPS)
