"""indrnn: stacked IndRNN layers, ``h' = act(W_ih x + b_ih + u * h)``.

Each layer's input projection is one matmul over every time step; only the
elementwise recurrence (:func:`.recurrences.indrnn_scan`) runs over time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf

from rnnspec.results import SequenceResult

from .cells import linear
from .recurrences import indrnn_scan
from .sequence import LayerFn, Lengths, State, dim, initial_states, normalise_lengths, run_stack

__all__ = ["indrnn"]


def _layer(p: Mapping[str, tf.Tensor], activation: str) -> LayerFn:
    def run(inp: tf.Tensor, state: State, lengths: Lengths) -> tuple[tf.Tensor, State]:
        pre = linear(inp, p["w_ih"], p["b_ih"])
        h, final = indrnn_scan(pre, p["u"], state["h"], activation, lengths.valid())
        return h, {"h": final}

    return run


def indrnn(
    *,
    x: tf.Tensor,
    params: Sequence[Mapping[str, tf.Tensor]],
    activation: str,
    lengths: Any,
    initial_state: Sequence[Mapping[str, tf.Tensor]] | None,
    reverse: bool,
) -> SequenceResult:
    """IndRNN over a stack of layers."""
    norm = normalise_lengths(lengths, dim(x, 0), dim(x, 1))
    initial = initial_states("indrnn", x, params, {"activation": activation}, initial_state)
    outputs, state = run_stack([_layer(p, activation) for p in params], x, norm, initial, reverse)
    return SequenceResult(outputs, state)
