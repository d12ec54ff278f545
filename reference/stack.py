"""Stacked layers, variable lengths, reverse direction and initial state.

``reverse=True`` is realised by reversing each row's valid prefix of the input
(:func:`reverse_valid`), running forward, and reversing the outputs back. That
is the same as running every layer backwards over the row's valid prefix, and
the permutation is its own inverse and its own reverse mode.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .activations import Array
from .cells import Cell
from .scan import Tape, scan, scan_vjp

__all__ = ["StackTape", "reverse_valid", "run_stack", "run_stack_vjp"]


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

    inputs: list[Array]
    tapes: list[Tape]
    valid: np.ndarray
    lengths: np.ndarray


def run_stack(
    make_cell: Callable[[int], Cell],
    params: Sequence[Mapping[str, Array]],
    x: Array,
    lengths: np.ndarray,
    initial_state: Sequence[Mapping[str, Array]],
    reverse: bool,
) -> tuple[Array, tuple[dict[str, Array], ...], StackTape]:
    """Run the layers bottom to top; each reads the outputs of the one below."""
    valid = np.arange(x.shape[1])[None, :] < lengths[:, None]
    inp = reverse_valid(x, lengths) if reverse else x
    inputs, tapes, finals = [], [], []
    for k, p in enumerate(params):
        inputs.append(inp)
        inp, final, tape = scan(make_cell(k), p, inp, dict(initial_state[k]), valid)
        tapes.append(tape)
        finals.append(final)
    outputs = reverse_valid(inp, lengths) if reverse else inp
    return outputs, tuple(finals), StackTape(inputs, tapes, valid, lengths)


def run_stack_vjp(
    make_cell: Callable[[int], Cell],
    params: Sequence[Mapping[str, Array]],
    tape: StackTape,
    reverse: bool,
    d_outputs: Array,
    d_final: Sequence[Mapping[str, Array]],
) -> tuple[Array, list[dict[str, Array]], tuple[dict[str, Array], ...]]:
    """Reverse mode of :func:`run_stack`: cotangents of x, params and initial state."""
    d_inp = reverse_valid(d_outputs, tape.lengths) if reverse else d_outputs
    d_params: list[dict[str, Array]] = [{}] * len(params)
    d_initial: list[dict[str, Array]] = [{}] * len(params)
    for k in reversed(range(len(params))):
        d_inp, d_params[k], d_initial[k] = scan_vjp(
            make_cell(k), params[k], tape.tapes[k], tape.valid, tape.inputs[k].shape, d_inp, dict(d_final[k])
        )
    d_x = reverse_valid(d_inp, tape.lengths) if reverse else d_inp
    return d_x, d_params, tuple(d_initial)
