"""rnn, lstm and gru: cuDNN's RNN where it applies (:mod:`.cudnn`), else the plain path.

The plain path runs the cells of :mod:`.cells` in the masked time loop of
:mod:`.sequence`. Each layer's input projection is one matmul over every time
step, hoisted out of the loop; only the recurrent part runs inside it.
:func:`.cudnn.why_plain` decides (on a GPU, outside XLA, options cuDNN can
express, not forced off by :func:`.paths.plain_path`); :func:`.paths.last_path`
tells which path a call took.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import tensorflow as tf

from rnnspec.backends.common.ops import SequenceCall
from rnnspec.backends.common.state import LayerFn, initial_states, run_layers
from rnnspec.results import SequenceResult

from . import cudnn
from .cells import Cell, make_cell
from .paths import record_path
from .sequence import ARRAY_OPS, Lengths, State, scan

__all__ = ["plain_layer", "run"]


def plain_layer(cell: Cell, p: Mapping[str, tf.Tensor]) -> LayerFn:
    """A layer of ``cell`` with params ``p``: the input projection of every step at once, then the time loop."""

    def run(inp: tf.Tensor, state: State, lengths: Lengths) -> tuple[tf.Tensor, State]:
        hidden = int(p["w_hh"].shape[1])

        def step(s: State, xs: Sequence[tf.Tensor], keep: tf.Tensor | None) -> tuple[State, list[tf.Tensor]]:
            new = cell.step(p, s, xs[0])
            return new, [new["h"]]

        (outputs,), final = scan(step, [cell.project(p, inp)], state, lengths.valid(), [(hidden,)])
        return outputs, final

    return run


def run(call: SequenceCall) -> SequenceResult:
    """rnn, lstm or gru over a stack of layers: cuDNN's kernels where they apply, else the plain path."""
    op, x, options = call.op, call.x, call.options
    mode = cudnn.rnn_mode(op, options)
    if mode is not None and cudnn.why_plain(op, x, options) is None:
        record_path(op, cudnn.FAST_PATH)
        norm = ARRAY_OPS.lengths(call.lengths, x)
        initial = initial_states(op, x, call.params, options, call.initial_state, ARRAY_OPS)
        outputs, state = cudnn.run_cudnn(x, call.params, norm, initial, call.reverse, mode)
        return SequenceResult(outputs, state)
    record_path(op, "plain")
    cell = make_cell(op, options)
    return run_layers(call, lambda p, _: plain_layer(cell, p), ARRAY_OPS)
