"""One time step of each cell as pure TensorFlow functions.

A cell splits its step in two. :meth:`Cell.project` is the input projection
``x @ w_ih.T + b_ih``, which reads no state: it is computed for every time step
at once, as one matmul, before the time loop. :meth:`Cell.step` takes that
projection of one step and the layer's state and returns the new state, whose
``"h"`` is the step's output. The equations are the spec's (see
``rnnspec/ops/<op>.md``) and the reference's (``rnnspec.reference.cells``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import tensorflow as tf

from rnnspec.backends.common.cells import Cell, bind_cell

__all__ = ["ACTIVATIONS", "Cell", "Params", "linear", "make_cell"]

Params = Mapping[str, tf.Tensor]
State = dict[str, tf.Tensor]

#: The nonlinearities of the rnn and indrnn cells (``tf.nn.relu``'s gradient takes relu'(0) = 0, as the spec).
ACTIVATIONS: dict[str, Callable[[tf.Tensor], tf.Tensor]] = {"tanh": tf.tanh, "relu": tf.nn.relu}


def linear(x: tf.Tensor, w: tf.Tensor, b: tf.Tensor | None = None) -> tf.Tensor:
    """``x @ w.T + b`` over the last axis of ``x`` (any leading axes)."""
    y = tf.linalg.matmul(x, w, transpose_b=True) if x.shape.rank == 2 else tf.tensordot(x, w, [[x.shape.rank - 1], [1]])
    return y if b is None else y + b


def _rnn(p: Params, state: State, gi: tf.Tensor, activation: str) -> State:
    """``h' = act(W_ih x + b_ih + W_hh h + b_hh)``."""
    return {"h": ACTIVATIONS[activation](gi + linear(state["h"], p["w_hh"], p["b_hh"]))}


def _lstm(p: Params, state: State, gi: tf.Tensor) -> State:
    """Gates i, f, g, o; ``c' = f c + i g``; ``h' = o tanh(c')``."""
    ai, af, ag, ao = tf.split(gi + linear(state["h"], p["w_hh"], p["b_hh"]), 4, axis=1)
    c = tf.sigmoid(af) * state["c"] + tf.sigmoid(ai) * tf.tanh(ag)
    return {"h": tf.sigmoid(ao) * tf.tanh(c), "c": c}


def _gru(p: Params, state: State, gi: tf.Tensor, reset_after: bool) -> State:
    """Gates r, z, n; ``h' = (1 - z) n + z h``; the reset gate after (cuDNN) or before (Cho) the matmul."""
    h = state["h"]
    w_hh, b_hh = p["w_hh"], p["b_hh"]
    hidden = int(w_hh.shape[1])
    gi_r, gi_z, gi_n = tf.split(gi, 3, axis=1)
    if reset_after:
        gh_r, gh_z, gh_n = tf.split(linear(h, w_hh, b_hh), 3, axis=1)
        r = tf.sigmoid(gi_r + gh_r)
        z = tf.sigmoid(gi_z + gh_z)
        n = tf.tanh(gi_n + r * gh_n)
    else:
        gh_r, gh_z = tf.split(linear(h, w_hh[: 2 * hidden], b_hh[: 2 * hidden]), 2, axis=1)
        r = tf.sigmoid(gi_r + gh_r)
        z = tf.sigmoid(gi_z + gh_z)
        n = tf.tanh(gi_n + linear(r * h, w_hh[2 * hidden :], b_hh[2 * hidden :]))
    return {"h": (1.0 - z) * n + z * h}


def _indrnn(p: Params, state: State, gi: tf.Tensor, activation: str) -> State:
    """``h' = act(W_ih x + b_ih + u * h)``."""
    return {"h": ACTIVATIONS[activation](gi + p["u"] * state["h"])}


#: Each cell's step, by the cell's op name (its options are bound by :func:`make_cell`).
STEPS: dict[str, Callable[..., State]] = {"rnn": _rnn, "lstm": _lstm, "gru": _gru, "indrnn": _indrnn}


def make_cell(name: str, options: Mapping[str, Any]) -> Cell:
    """The cell ``name`` (rnn, lstm, gru, indrnn) with its options (only its own are read)."""
    return Cell(*bind_cell(STEPS, name, options), linear=linear)
