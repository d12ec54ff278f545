"""rnn, lstm and gru: torch's fused kernels where the spec's semantics match (:mod:`.fused`), else the plain path.

The plain path runs the cells of :mod:`.cells` in the masked time loop of
:mod:`.sequence`, with each layer's input projection hoisted out of the loop.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from rnnspec.backends.common.ops import SequenceCall
from rnnspec.backends.common.state import LayerFn, initial_states, run_layers
from rnnspec.results import SequenceResult

from . import fused
from .cells import Cell, make_cell
from .sequence import ARRAY_OPS, Lengths, State, scan

__all__ = ["plain_layer", "run"]


def plain_layer(cell: Cell, p: Mapping[str, torch.Tensor]) -> LayerFn:
    """A layer of ``cell`` with params ``p``: the input projection of every step at once, then the time loop."""

    def run(inp: torch.Tensor, state: State, lengths: Lengths) -> tuple[torch.Tensor, State]:
        gi = cell.project(p, inp)
        hidden = state["h"].shape[1]
        return scan(lambda s, xs: cell.step(p, s, xs[0]), [gi], state, lengths.valid(), hidden)

    return run


def run(call: SequenceCall) -> SequenceResult:
    """rnn, lstm or gru over a stack of layers: torch's fused kernel where it applies, else the plain path."""
    op, x, options = call.op, call.x, call.options
    masked = any(a is not None for a in call.arrays.values())  # torch's fused kernels take no dropout masks
    if not masked and fused.why_plain(op, x, options) is None:
        fused.record_path(op, "fused")
        norm = ARRAY_OPS.lengths(call.lengths, x)
        initial = initial_states(op, x, call.params, options, call.initial_state, ARRAY_OPS)
        outputs, state = fused.run_fused(op, x, call.params, norm, initial, call.reverse, options)
        return SequenceResult(outputs, state)
    fused.record_path(op, "plain")
    cell = make_cell(op, options)
    return run_layers(
        call, lambda p, arrays: plain_layer(cell.with_recurrent_mask(arrays.get("recurrent_mask")), p), ARRAY_OPS
    )
