"""The masked time loop of one layer, forward with a tape and reverse mode.

Past a row's length the state is frozen and the output is zero (PyTorch's
packed-sequence semantics): the driver keeps the old state for those rows, so
cells never see lengths.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .activations import Array
from .cells import Cell, Params, State

__all__ = ["Tape", "scan", "scan_vjp"]


@dataclass
class Tape:
    """What the reverse mode of one layer needs from its forward run."""

    caches: list[dict[str, Any]] = field(default_factory=list)


def scan(cell: Cell, p: Params, x: Array, state: State, valid: np.ndarray) -> tuple[Array, State, Tape]:
    """Run ``cell`` over ``x`` (batch, time, features) from ``state``.

    ``valid`` (batch, time) is True where a step lies within the row's length.
    Returns the outputs (batch, time, out), the final state and the tape.
    """
    batch, time = x.shape[:2]
    tape = Tape()
    outputs: list[Array] = []
    for t in range(time):
        new, y, cache = cell.step(p, state, x[:, t])
        keep = valid[:, t, None]
        state = {k: np.where(keep, new[k], state[k]) for k in state}
        outputs.append(np.where(keep, y, 0.0))
        tape.caches.append(cache)
    if time == 0:
        out_size = next(iter(state.values())).shape[1]
        return np.zeros((batch, 0, out_size)), state, tape
    return np.stack(outputs, axis=1), state, tape


def scan_vjp(
    cell: Cell,
    p: Params,
    tape: Tape,
    valid: np.ndarray,
    x_shape: tuple[int, ...],
    d_outputs: Array,
    d_final: State,
) -> tuple[Array, dict[str, Array], State]:
    """Reverse mode of :func:`scan`: cotangents of x, the params and the initial state."""
    d_x = np.zeros(x_shape)
    d_params = {k: np.zeros_like(v, dtype=np.float64) for k, v in p.items()}
    d_state = dict(d_final)
    for t in reversed(range(x_shape[1])):
        keep = valid[:, t, None]
        d_new = {k: np.where(keep, v, 0.0) for k, v in d_state.items()}
        d_y = np.where(keep, d_outputs[:, t], 0.0)
        d_prev, d_x[:, t], grads = cell.step_vjp(p, tape.caches[t], d_new, d_y)
        d_state = {k: d_prev[k] + np.where(keep, 0.0, d_state[k]) for k in d_state}
        for k, g in grads.items():
            d_params[k] += g
    return d_x, d_params, d_state
