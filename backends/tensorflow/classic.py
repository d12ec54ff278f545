"""rnn, lstm and gru: cuDNN's RNN where it applies (:mod:`.cudnn`), else the plain path.

The plain path runs the cells of :mod:`.cells` in the masked time loop of
:mod:`.sequence`. Each layer's input projection is one matmul over every time
step, hoisted out of the loop; only the recurrent part runs inside it. Before
the loop the layer also rewrites its params for the step
(:func:`.cells.make_hoist`: the recurrent weights transposed, ``b_hh`` moved
into the projection's bias where the equations allow), projects the input
time-major (the projection is gates times larger than the input, and the loop
reads it time-major), and reads it in chunks whose length
:func:`.sequence.balanced_chunk_steps` chooses from the sizes. Against
``keras.layers.LSTM``/``GRU`` in a ``tf.function`` (batch 16, 256 steps,
H = 256, CPU, one thread, process time, least of 11 alternated runs), these
took the lstm forward from 1.25x Keras' time to 0.97-1.0x and forward and
backward from 0.69x to 0.61-0.66x; the gru (``reset_after=True``) forward
from 1.2x to 0.97x, forward and backward from 0.8x to 0.7x. The two matmuls
are most of the time and the same work as Keras'.

From :data:`.sequence.UNROLL_MIN_STEPS` steps, or a length unknown when
traced, and outside XLA, the loop runs :data:`.sequence.UNROLL_STEPS` steps
per iteration (:func:`.sequence.unroll_steps`), reading a chunk of as many
steps at once; the steps left over run one per iteration after it. That took
the forward to 0.86-0.99x Keras' time (lstm) and 0.90-0.99x (gru) at the size
above, forward and backward to 0.56-0.62x and 0.59-0.75x (``python -m
rnnspec.bench --sections classic --backends tensorflow --threads 1 --clock
cpu``, four runs; see :func:`.sequence.unroll_steps`).

:func:`.cudnn.why_plain` decides (on a GPU, outside XLA, options cuDNN can
express, not forced off by :func:`.paths.plain_path`); :func:`.paths.last_path`
tells which path a call took.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import tensorflow as tf

from rnnspec.backends.common.ops import SequenceCall
from rnnspec.backends.common.state import LayerFn, initial_states, run_layers
from rnnspec.results import SequenceResult

from . import cudnn
from .cells import Cell, Params, make_cell, make_hoist, project
from .paths import record_path
from .sequence import ARRAY_OPS, Lengths, State, balanced_chunk_steps, dim, scan, unroll_steps

__all__ = ["plain_layer", "run"]


def plain_layer(cell: Cell, p: Mapping[str, tf.Tensor], hoist: Callable[[Params], Params]) -> LayerFn:
    """A layer of ``cell`` with params ``p``: the input projection of every step at once, then the time loop.

    ``hoist`` (:func:`.cells.make_hoist` of the cell) rewrites ``p`` for the projection and the step, once.
    """

    def run(inp: tf.Tensor, state: State, lengths: Lengths) -> tuple[tf.Tensor, State]:
        hidden = int(p["w_hh"].shape[1] if "w_hh" in p else p["u"].shape[0])  # indrnn's cell has no w_hh
        looped = hoist(p)

        def step(s: State, xs: Sequence[tf.Tensor], keep: tf.Tensor | None) -> tuple[State, list[tf.Tensor]]:
            new = cell.step(looped, s, xs[0])
            return new, [new["h"]]

        # Transposed before the projection, which is gates times larger than the input: the loop reads time-major.
        gi = project(looped, tf.transpose(inp, [1, 0, 2]))
        unroll = unroll_steps(dim(inp, 1))
        chunk = None if unroll > 1 else balanced_chunk_steps(gi)  # an unrolled loop reads a chunk per iteration
        (outputs,), final = scan(
            step, [gi], state, lengths.valid(), [(hidden,)], time_major=True, chunk=chunk, unroll=unroll
        )
        return outputs, final

    return run


def run(call: SequenceCall) -> SequenceResult:
    """rnn, lstm or gru over a stack of layers: cuDNN's kernels where they apply, else the plain path."""
    op, x, options = call.op, call.x, call.options
    mode = cudnn.rnn_mode(op, options)
    masked = any(a is not None for a in call.arrays.values())  # cuDNN's kernels take no dropout masks
    if mode is not None and not masked and cudnn.why_plain(op, x, options) is None:
        record_path(op, cudnn.FAST_PATH)
        norm = ARRAY_OPS.lengths(call.lengths, x)
        initial = initial_states(op, x, call.params, options, call.initial_state, ARRAY_OPS)
        outputs, state = cudnn.run_cudnn(x, call.params, norm, initial, call.reverse, mode)
        return SequenceResult(outputs, state)
    record_path(op, "plain")
    cell, hoist = make_cell(op, options), make_hoist(op, options)
    return run_layers(
        call, lambda p, arrays: plain_layer(cell.with_recurrent_mask(arrays.get("recurrent_mask")), p, hoist), ARRAY_OPS
    )
