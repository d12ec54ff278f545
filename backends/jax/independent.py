"""indrnn: stacked IndRNN layers, ``h' = act(W_ih x + b_ih + u * h)``.

Each layer's input projection is one matmul over every time step; only the
elementwise recurrence (:func:`.recurrences.indrnn_scan`: a ``lax.scan``, or
the Pallas kernel on a GPU) runs over time.
"""

from __future__ import annotations

import functools

from rnnspec.backends.common.ops import SequenceCall
from rnnspec.backends.common.state import indrnn_layer, run_layers
from rnnspec.results import SequenceResult

from .cells import linear, make_cell
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
        cell = make_cell("indrnn", call.options)
        return run_layers(call, lambda p, arrays: plain_layer(cell, p, arrays["recurrent_mask"]), ARRAY_OPS)
    scan = functools.partial(indrnn_scan, op="indrnn")
    return run_layers(call, lambda p, _: indrnn_layer(p, activation, linear, scan), ARRAY_OPS)
