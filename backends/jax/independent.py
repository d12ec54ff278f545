"""indrnn: stacked IndRNN layers, ``h' = act(W_ih x + b_ih + u * h)``.

Each layer's input projection is one matmul over every time step; only the
elementwise recurrence (:func:`.recurrences.indrnn_scan`: a ``lax.scan``, or
the Pallas kernel on a GPU) runs over time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax

from rnnspec.results import SequenceResult

from .cells import linear
from .recurrences import indrnn_scan
from .sequence import LayerFn, Lengths, State, initial_states, normalise_lengths, run_stack

__all__ = ["indrnn"]


def _layer(p: Mapping[str, jax.Array], activation: str) -> LayerFn:
    def run(inp: jax.Array, state: State, lengths: Lengths) -> tuple[jax.Array, State]:
        pre = linear(inp, p["w_ih"], p["b_ih"])
        h, final = indrnn_scan(pre, p["u"], state["h"], activation, lengths.valid(), op="indrnn")
        return h, {"h": final}

    return run


def indrnn(
    *,
    x: jax.Array,
    params: Sequence[Mapping[str, jax.Array]],
    activation: str,
    lengths: Any,
    initial_state: Sequence[Mapping[str, jax.Array]] | None,
    reverse: bool,
) -> SequenceResult:
    """IndRNN over a stack of layers."""
    batch, time = x.shape[:2]
    norm = normalise_lengths(lengths, batch, time)
    initial = initial_states("indrnn", x, params, {"activation": activation}, initial_state)
    outputs, state = run_stack([_layer(p, activation) for p in params], x, norm, initial, reverse)
    return SequenceResult(outputs, state)
