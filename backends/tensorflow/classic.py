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
from typing import Any

import tensorflow as tf

from rnnspec.results import SequenceResult

from . import cudnn
from .cells import Cell, make_cell
from .paths import record_path
from .sequence import LayerFn, Lengths, State, dim, initial_states, normalise_lengths, run_stack, scan

__all__ = ["gru", "lstm", "plain_layer", "rnn"]


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


def _run(
    op: str,
    x: tf.Tensor,
    params: Sequence[Mapping[str, tf.Tensor]],
    lengths: Any,
    initial_state: Sequence[Mapping[str, tf.Tensor]] | None,
    reverse: bool,
    options: Mapping[str, Any],
) -> SequenceResult:
    norm = normalise_lengths(lengths, dim(x, 0), dim(x, 1))
    initial = initial_states(op, x, params, options, initial_state)
    mode = cudnn.rnn_mode(op, options)
    if mode is not None and cudnn.why_plain(op, x, options) is None:
        record_path(op, cudnn.FAST_PATH)
        outputs, state = cudnn.run_cudnn(x, params, norm, initial, reverse, mode)
    else:
        record_path(op, "plain")
        cell = make_cell(op, options)
        outputs, state = run_stack([plain_layer(cell, p) for p in params], x, norm, initial, reverse)
    return SequenceResult(outputs, state)


def rnn(
    *,
    x: tf.Tensor,
    params: Sequence[Mapping[str, tf.Tensor]],
    activation: str,
    lengths: Any,
    initial_state: Sequence[Mapping[str, tf.Tensor]] | None,
    reverse: bool,
) -> SequenceResult:
    """Elman rnn (tanh or relu) over a stack of layers."""
    return _run("rnn", x, params, lengths, initial_state, reverse, {"activation": activation})


def lstm(
    *,
    x: tf.Tensor,
    params: Sequence[Mapping[str, tf.Tensor]],
    lengths: Any,
    initial_state: Sequence[Mapping[str, tf.Tensor]] | None,
    reverse: bool,
) -> SequenceResult:
    """LSTM over a stack of layers."""
    return _run("lstm", x, params, lengths, initial_state, reverse, {})


def gru(
    *,
    x: tf.Tensor,
    params: Sequence[Mapping[str, tf.Tensor]],
    reset_after: bool,
    lengths: Any,
    initial_state: Sequence[Mapping[str, tf.Tensor]] | None,
    reverse: bool,
) -> SequenceResult:
    """GRU (reset after the matmul, cuDNN's; or before, Cho's) over a stack of layers."""
    return _run("gru", x, params, lengths, initial_state, reverse, {"reset_after": reset_after})
