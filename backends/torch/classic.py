"""rnn, lstm and gru: torch's fused kernels where the spec's semantics match (:mod:`.fused`), else the plain path.

The plain path runs the cells of :mod:`.cells` in the masked time loop of
:mod:`.sequence`, with each layer's input projection hoisted out of the loop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from rnnspec.results import SequenceResult

from . import fused
from .cells import Cell, make_cell
from .sequence import LayerFn, Lengths, State, initial_states, normalise_lengths, run_stack, scan

__all__ = ["gru", "lstm", "plain_layer", "rnn"]


def plain_layer(cell: Cell, p: Mapping[str, torch.Tensor]) -> LayerFn:
    """A layer of ``cell`` with params ``p``: the input projection of every step at once, then the time loop."""

    def run(inp: torch.Tensor, state: State, lengths: Lengths) -> tuple[torch.Tensor, State]:
        gi = cell.project(p, inp)
        hidden = state["h"].shape[1]
        return scan(lambda s, xs: cell.step(p, s, xs[0]), [gi], state, lengths.valid(), hidden)

    return run


def _run(
    op: str,
    x: torch.Tensor,
    params: Sequence[Mapping[str, torch.Tensor]],
    lengths: Any,
    initial_state: Sequence[Mapping[str, torch.Tensor]] | None,
    reverse: bool,
    options: Mapping[str, Any],
) -> SequenceResult:
    batch, time = x.shape[:2]
    norm = normalise_lengths(lengths, batch, time, x.device)
    initial = initial_states(op, x, params, options, initial_state)
    if fused.why_plain(op, x, options) is None:
        fused.record_path(op, "fused")
        outputs, state = fused.run_fused(op, x, params, norm, initial, reverse, options)
    else:
        fused.record_path(op, "plain")
        cell = make_cell(op, options)
        outputs, state = run_stack([plain_layer(cell, p) for p in params], x, norm, initial, reverse)
    return SequenceResult(outputs, state)


def rnn(
    *,
    x: torch.Tensor,
    params: Sequence[Mapping[str, torch.Tensor]],
    activation: str,
    lengths: Any,
    initial_state: Sequence[Mapping[str, torch.Tensor]] | None,
    reverse: bool,
) -> SequenceResult:
    """Elman rnn (tanh or relu) over a stack of layers."""
    return _run("rnn", x, params, lengths, initial_state, reverse, {"activation": activation})


def lstm(
    *,
    x: torch.Tensor,
    params: Sequence[Mapping[str, torch.Tensor]],
    lengths: Any,
    initial_state: Sequence[Mapping[str, torch.Tensor]] | None,
    reverse: bool,
) -> SequenceResult:
    """LSTM over a stack of layers."""
    return _run("lstm", x, params, lengths, initial_state, reverse, {})


def gru(
    *,
    x: torch.Tensor,
    params: Sequence[Mapping[str, torch.Tensor]],
    reset_after: bool,
    lengths: Any,
    initial_state: Sequence[Mapping[str, torch.Tensor]] | None,
    reverse: bool,
) -> SequenceResult:
    """GRU (reset after the matmul, cuDNN's; or before, Cho's) over a stack of layers."""
    return _run("gru", x, params, lengths, initial_state, reverse, {"reset_after": reset_after})
