"""Stacked layers, variable lengths, reverse direction and initial state.

A layer is anything with ``forward(inp, state, valid)`` and its reverse mode
``vjp(tape, d_out, d_final)`` (:class:`Layer`); :class:`ScanLayer` runs a cell
step by step. ``reverse=True`` is realised by reversing each row's valid prefix
of the input (:func:`reverse_valid`), running forward, and reversing the
outputs back. That is the same as running every layer backwards over the row's
valid prefix, and the permutation is its own inverse and its own reverse mode.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .activations import Array
from .cells import Cell, Params
from .scan import scan, scan_vjp

__all__ = ["Layer", "ScanLayer", "StackTape", "full_lengths", "reverse_valid", "run_stack", "run_stack_vjp"]

LayerState = dict[str, Array]


class Layer(Protocol):
    """One layer of a stack, forward and reverse mode, in float64."""

    def forward(self, inp: Array, state: LayerState, valid: np.ndarray) -> tuple[Array, LayerState, Any]: ...

    def vjp(self, tape: Any, d_out: Array, d_final: LayerState) -> tuple[Array, dict[str, Array], LayerState]: ...


@dataclass(frozen=True)
class ScanLayer:
    """A layer that runs ``cell`` with params ``p`` over time (see :mod:`.scan`)."""

    cell: Cell
    p: Params

    def forward(self, inp: Array, state: LayerState, valid: np.ndarray) -> tuple[Array, LayerState, Any]:
        out, final, tape = scan(self.cell, self.p, inp, state, valid)
        return out, final, (tape, valid, inp.shape)

    def vjp(self, tape: Any, d_out: Array, d_final: LayerState) -> tuple[Array, dict[str, Array], LayerState]:
        caches, valid, shape = tape
        return scan_vjp(self.cell, self.p, caches, valid, shape, d_out, d_final)


def full_lengths(lengths: Any, batch: int, time: int) -> np.ndarray:
    """``lengths`` as int64 NumPy, or every row at full length."""
    if lengths is None:
        return np.full((batch,), time, dtype=np.int64)
    return np.asarray(lengths).astype(np.int64)


def reverse_valid(a: Array, lengths: np.ndarray) -> Array:
    """Reverse each row's valid prefix along axis 1; padding stays in place."""
    time = a.shape[1]
    t = np.arange(time)[None, :]
    n = lengths[:, None]
    index = np.where(t < n, n - 1 - t, t)
    return np.take_along_axis(a, index.reshape(index.shape + (1,) * (a.ndim - 2)), axis=1)


@dataclass
class StackTape:
    """What the reverse mode of a stack needs from its forward run."""

    tapes: list[Any]
    lengths: np.ndarray
    #: Each layer's input mask (the between-layer dropout mask of the boundary below it), or None.
    masks: Sequence[Array | None] = ()


def run_stack(
    layers: Sequence[Layer],
    x: Array,
    lengths: np.ndarray,
    initial_state: Sequence[Mapping[str, Array]],
    reverse: bool,
    masks: Sequence[Array | None] | None = None,
) -> tuple[Array, tuple[LayerState, ...], StackTape]:
    """Run the layers bottom to top; each reads the outputs of the one below, times its input mask when
    ``masks`` gives one (the between-layer dropout mask, aligned with the time axis the layers see)."""
    masks = list(masks) if masks is not None else [None] * len(layers)
    valid = np.arange(x.shape[1])[None, :] < lengths[:, None]
    inp = reverse_valid(x, lengths) if reverse else x
    tapes, finals = [], []
    for layer, state, mask in zip(layers, initial_state, masks, strict=True):
        if mask is not None:
            inp = inp * mask
        inp, final, tape = layer.forward(inp, dict(state), valid)
        tapes.append(tape)
        finals.append(final)
    outputs = reverse_valid(inp, lengths) if reverse else inp
    return outputs, tuple(finals), StackTape(tapes, lengths, masks)


def run_stack_vjp(
    layers: Sequence[Layer],
    tape: StackTape,
    reverse: bool,
    d_outputs: Array,
    d_final: Sequence[Mapping[str, Array]],
) -> tuple[Array, list[dict[str, Array]], tuple[LayerState, ...]]:
    """Reverse mode of :func:`run_stack`: cotangents of x, params and initial state."""
    d_inp = reverse_valid(d_outputs, tape.lengths) if reverse else d_outputs
    d_params: list[dict[str, Array]] = [{} for _ in layers]
    d_initial: list[LayerState] = [{} for _ in layers]
    for k in reversed(range(len(layers))):
        d_inp, d_params[k], d_initial[k] = layers[k].vjp(tape.tapes[k], d_inp, dict(d_final[k]))
        mask = tape.masks[k] if tape.masks else None
        if mask is not None:  # a constant: no gradient reaches it
            d_inp = d_inp * mask
    d_x = reverse_valid(d_inp, tape.lengths) if reverse else d_inp
    return d_x, d_params, tuple(d_initial)
