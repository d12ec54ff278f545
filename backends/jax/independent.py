"""indrnn: stacked IndRNN layers, ``h' = act(W_ih x + b_ih + u * h)``.

Each layer's input projection is one matmul over every time step; only the
elementwise recurrence (:func:`.recurrences.indrnn_scan`: a ``lax.scan``, or
the Pallas kernel on a GPU) runs over time.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax

from rnnspec.backends.common.ops import SequenceCall
from rnnspec.backends.common.state import LayerFn, run_layers
from rnnspec.results import SequenceResult

from .cells import linear
from .recurrences import indrnn_scan
from .sequence import ARRAY_OPS, Lengths, State

__all__ = ["run"]


def _layer(p: Mapping[str, jax.Array], activation: str) -> LayerFn:
    def run(inp: jax.Array, state: State, lengths: Lengths) -> tuple[jax.Array, State]:
        pre = linear(inp, p["w_ih"], p["b_ih"])
        h, final = indrnn_scan(pre, p["u"], state["h"], activation, lengths.valid(), op="indrnn")
        return h, {"h": final}

    return run


def run(call: SequenceCall) -> SequenceResult:
    """IndRNN over a stack of layers."""
    activation = call.options["activation"]
    return run_layers(call, lambda p, _: _layer(p, activation), ARRAY_OPS)
