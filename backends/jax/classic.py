"""rnn, lstm and gru: cuDNN's LSTM where it applies (:mod:`.cudnn`), else the plain path.

The plain path runs the cells of :mod:`.cells` in the masked ``lax.scan`` of
:mod:`.sequence`, with each layer's input projection hoisted out of the loop
(one matmul over every time step, of the time-major input, so that the
``(time, batch, gates * H)`` projection needs no transpose of its own) and
``w_hh`` transposed once before it (:func:`.cells.prepare`). lstm's loop is
:func:`.lstm_layer.lstm_layer`, the same scan with a derivative of its own,
whose reverse loop leaves the weight gradients to one matmul after it.

The hoisted projection is the matmul alone: ``b_ih`` is added inside the loop,
to each step's slice. Added to the whole projection, it was one more pass over
a ``(time, batch, gates * H)`` array and one more temporary of that size, and
the size is what cost: XLA's CPU runtime allocates a program's temporaries as
one block at every call, which glibc's ``malloc`` maps afresh from the kernel
once it is over 32 MiB (its largest mmap threshold), so that every call
page-faulted it in. lstm at B=16 T=256 H=256 (16 MiB of projection) made 9,200
minor faults and spent 18 to 23 ms of its 80 ms of CPU time in the kernel; with
the add in the loop, none and about 60 ms (``bench/jax_recurrences.py``). Twice
that batch or sequence crosses the threshold again with the projection alone.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax

from rnnspec.backends.common.ops import SequenceCall
from rnnspec.backends.common.state import LayerFn, initial_states, run_layers
from rnnspec.results import SequenceResult

from . import cudnn
from .cells import Cell, make_cell, prepare
from .lstm_layer import lstm_layer
from .paths import record_path
from .sequence import ARRAY_OPS, Lengths, State, scan, time_major

__all__ = ["plain_layer", "run"]


def plain_layer(cell: Cell, p: Mapping[str, jax.Array], recurrent_mask: jax.Array | None = None) -> LayerFn:
    """A layer of ``cell`` with params ``p``: the input projection of every step at once, then the scan (the
    cell under recurrent dropout where ``recurrent_mask`` is given)."""
    masked = recurrent_mask is not None
    cell = cell.with_recurrent_mask(recurrent_mask)

    def run(inp: jax.Array, state: State, lengths: Lengths) -> tuple[jax.Array, State]:
        # Transposing the input (I wide) rather than the projection (gates * H wide) moves less memory.
        gi = cell.project(p, time_major(inp), bias=False)
        if cell.name == "lstm" and not masked:  # the same loop, with a derivative of its own (see .lstm_layer)
            return lstm_layer(gi, p["b_ih"], p["w_hh"], p["b_hh"], state["h"], state["c"], lengths.valid())
        prepared, b_ih = prepare(p), p["b_ih"]
        # b_ih is added to each step's slice, where it fuses into the step's elementwise kernel, rather than to
        # the whole projection (see the module's docstring): the values are the same, the same additions.
        return scan(
            lambda s, xs: cell.step(prepared, s, xs[0] + b_ih), [gi], state, lengths.valid(), time_major_inputs=True
        )

    return run


def run(call: SequenceCall) -> SequenceResult:
    """rnn, lstm or gru over a stack of layers: cuDNN's LSTM where it applies, else the plain path."""
    op, x = call.op, call.x
    masked = any(a is not None for a in call.arrays.values())  # cuDNN's LSTM takes no dropout masks
    if not masked and cudnn.why_plain(op, x) is None:
        record_path(op, cudnn.FAST_PATH)
        norm = ARRAY_OPS.lengths(call.lengths, x)
        initial = initial_states(op, x, call.params, call.options, call.initial_state, ARRAY_OPS)
        outputs, state = cudnn.run_cudnn_lstm(x, call.params, norm, initial, call.reverse)
        return SequenceResult(outputs, state)
    record_path(op, "plain")
    cell = make_cell(op, call.options)
    return run_layers(call, lambda p, arrays: plain_layer(cell, p, arrays.get("recurrent_mask")), ARRAY_OPS)
