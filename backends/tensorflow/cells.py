"""One time step of each cell as pure TensorFlow functions.

A cell splits its step in two. :meth:`Cell.project` is the input projection
``x @ w_ih.T + b_ih``, which reads no state: it is computed for every time step
at once, as one matmul, before the time loop. :meth:`Cell.step` takes that
projection of one step and the layer's state and returns the new state, whose
``"h"`` is the step's output. The equations are the spec's (see
``rnnspec/ops/<op>.md``) and the reference's (``rnnspec.reference.cells``).

A time loop over the layer first rewrites its params once with
:func:`make_hoist` (the plain path of rnn, lstm and gru does), so that the step
does the least per step; measured on the CPU, one thread, 16 rows, H = 256,
256 steps:

- the recurrent weights transposed, so that the step's matmul is ``h @ w``
  rather than ``h @ w.T``: inside a ``tf.while_loop``,
  ``tf.linalg.matmul(h, w, transpose_b=True)`` by a ``(4H, H)`` weight took
  33 ms against 23 by the weight already transposed (92 against 23 with
  ``TF_ENABLE_ONEDNN_OPTS=0``, TensorFlow's own kernels). This was
  most of the plain lstm's gap to ``keras.layers.LSTM``, whose weights are
  stored transposed. The gradient keeps the untransposed weight for the same
  reason (:func:`_matmul_transposed`);
- ``b_hh`` moved into the input projection's bias where the equations allow
  (every gate but gru's candidate with ``reset_after``, which multiplies it by
  ``r``): ``gi + h @ w`` per step took 24.7 ms, ``gi + (h @ w + b_hh)`` 26.2,
  and with ``tf.nn.bias_add`` fused into the matmul by grappler 28.1. This
  rounds ``b_ih + b_hh`` first, rather than each with its own product.

A step given the spec's params computes the same values without either (act
and the skip cells call it so).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import tensorflow as tf

from rnnspec.backends.common.cells import Cell, bind_cell

__all__ = ["ACTIVATIONS", "Cell", "Params", "linear", "make_cell", "make_hoist", "project"]

Params = Mapping[str, tf.Tensor]
State = dict[str, tf.Tensor]

#: The nonlinearities of the rnn and indrnn cells (``tf.nn.relu``'s gradient takes relu'(0) = 0, as the spec).
ACTIVATIONS: dict[str, Callable[[tf.Tensor], tf.Tensor]] = {"tanh": tf.tanh, "relu": tf.nn.relu}


def linear(x: tf.Tensor, w: tf.Tensor, b: tf.Tensor | None = None) -> tf.Tensor:
    """``x @ w.T + b`` over the last axis of ``x`` (any leading axes)."""
    y = tf.linalg.matmul(x, w, transpose_b=True) if x.shape.rank == 2 else tf.tensordot(x, w, [[x.shape.rank - 1], [1]])
    return y if b is None else y + b


def project(p: Params, x: tf.Tensor) -> tf.Tensor:
    """:meth:`Cell.project` of every step at once, ``x`` ``(..., I)``: one 2-D matmul, then ``tf.nn.bias_add``.

    Grappler fuses that bias into the matmul; after a ``tf.tensordot`` (as
    :func:`linear` computes it) the bias is a pass of its own over the
    projection: 21.2 against 20.6 ms for an lstm layer's at 16 x 256 steps,
    H = 256.
    """
    w, lead = p["w_ih"], tf.shape(x)[:-1]
    rows = tf.stack([tf.reduce_prod(lead), tf.shape(x)[-1]])  # not -1: x may be empty
    y = tf.nn.bias_add(tf.linalg.matmul(tf.reshape(x, rows), w, transpose_b=True), p["b_ih"])
    return tf.reshape(y, tf.concat([lead, tf.shape(w)[:1]], 0))


def _block_keys(start: int, stop: int | None) -> tuple[str, str, str]:
    """The keys under which :func:`make_hoist` keeps rows ``start:stop`` of ``w_hh``, their transpose
    ``(H, rows)``, and the rows of ``b_hh`` the step still adds (where they were not moved into ``b_ih``)."""
    rows = f"[{start}:{stop}]"
    return f"w_hh{rows}", f"w_hh{rows}.T", f"b_hh{rows}"


def _differentiable_matmul(h: tf.Tensor, w_t: tf.Tensor, w: tf.Tensor) -> tuple[tf.Tensor, Callable[..., Any]]:
    """``h @ w_t``, ``w_t`` being ``w.T``, with the gradient of ``h`` computed from ``w``: ``dz @ w``.

    TensorFlow's gradient of ``h @ w_t`` is ``dz @ w_t.T``, the slow transposed
    product again (see the module docstring): it made the backward pass of an
    lstm 1.2x slower. ``w`` gets no gradient here: it gets ``w_t``'s, through
    the transpose outside the loop.
    """

    def grad(dz: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, None]:
        return tf.linalg.matmul(dz, w), tf.linalg.matmul(h, dz, transpose_a=True), None

    return tf.linalg.matmul(h, w_t), grad


#: ``_differentiable_matmul`` as TensorFlow differentiates it.
_matmul_transposed: Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tf.Tensor] = tf.custom_gradient(_differentiable_matmul)


def _recurrent(p: Params, h: tf.Tensor, start: int = 0, stop: int | None = None) -> tf.Tensor:
    """``h @ w_hh[start:stop].T + b_hh[start:stop]`` from the spec's params.

    From params :func:`make_hoist` rewrote, the product by the block it
    transposed, plus the rows of ``b_hh`` it left to the step (none where it
    moved them into ``b_ih``, the step's ``gi``).
    """
    w_key, t_key, b_key = _block_keys(start, stop)
    if t_key in p:
        product = _matmul_transposed(h, p[t_key], p[w_key])
        return product + p[b_key] if b_key in p else product
    if (start, stop) == (0, None):
        return linear(h, p["w_hh"], p["b_hh"])  # no slicing ops: this runs at every step
    return linear(h, p["w_hh"][start:stop], p["b_hh"][start:stop])


def _hoisted(p: Params, blocks: tuple[tuple[int, int | None], ...], fold: bool) -> Params:
    """``p`` with the row ``blocks`` of ``w_hh`` transposed (:func:`_block_keys`); ``fold``: ``b_hh`` moved into
    ``b_ih``, else left to the step by block."""
    hoisted = dict(p)
    for start, stop in blocks:
        whole = (start, stop) == (0, None)
        w_key, t_key, b_key = _block_keys(start, stop)
        w = tf.convert_to_tensor(p["w_hh"] if whole else p["w_hh"][start:stop])  # a variable is read once, here
        hoisted[w_key], hoisted[t_key] = w, tf.transpose(w)
        if not fold:
            hoisted[b_key] = tf.convert_to_tensor(p["b_hh"] if whole else p["b_hh"][start:stop])
    if fold:
        hoisted["b_ih"] = p["b_ih"] + p["b_hh"]
    return hoisted


def _masked(h: tf.Tensor, mask: tf.Tensor | None) -> tf.Tensor:
    """The state a recurrent product reads: ``h * mask`` under recurrent dropout, else ``h``."""
    return h if mask is None else h * mask


def _rnn(p: Params, state: State, gi: tf.Tensor, activation: str, recurrent_mask: tf.Tensor | None = None) -> State:
    """``h' = act(W_ih x + b_ih + W_hh h + b_hh)``."""
    return {"h": ACTIVATIONS[activation](gi + _recurrent(p, _masked(state["h"], recurrent_mask)))}


def _lstm(p: Params, state: State, gi: tf.Tensor, recurrent_mask: tf.Tensor | None = None) -> State:
    """Gates i, f, g, o; ``c' = f c + i g``; ``h' = o tanh(c')``."""
    ai, af, ag, ao = tf.split(gi + _recurrent(p, _masked(state["h"], recurrent_mask)), 4, axis=1)
    c = tf.sigmoid(af) * state["c"] + tf.sigmoid(ai) * tf.tanh(ag)
    return {"h": tf.sigmoid(ao) * tf.tanh(c), "c": c}


def _gru(p: Params, state: State, gi: tf.Tensor, reset_after: bool, recurrent_mask: tf.Tensor | None = None) -> State:
    """Gates r, z, n; ``h' = (1 - z) n + z h``; the reset gate after (cuDNN) or before (Cho) the matmul."""
    h = state["h"]
    hm = _masked(h, recurrent_mask)  # what the recurrent products read; the update reads h
    hidden = int(p["w_hh"].shape[1])
    gi_r, gi_z, gi_n = tf.split(gi, 3, axis=1)
    if reset_after:
        gh_r, gh_z, gh_n = tf.split(_recurrent(p, hm), 3, axis=1)
        r = tf.sigmoid(gi_r + gh_r)
        z = tf.sigmoid(gi_z + gh_z)
        n = tf.tanh(gi_n + r * gh_n)
    else:
        gh_r, gh_z = tf.split(_recurrent(p, hm, 0, 2 * hidden), 2, axis=1)
        r = tf.sigmoid(gi_r + gh_r)
        z = tf.sigmoid(gi_z + gh_z)
        n = tf.tanh(gi_n + _recurrent(p, r * hm, 2 * hidden, None))
    return {"h": (1.0 - z) * n + z * h}


def _indrnn(p: Params, state: State, gi: tf.Tensor, activation: str, recurrent_mask: tf.Tensor | None = None) -> State:
    """``h' = act(W_ih x + b_ih + u * h)``."""
    return {"h": ACTIVATIONS[activation](gi + p["u"] * _masked(state["h"], recurrent_mask))}


#: Each cell's step, by the cell's op name (its options are bound by :func:`make_cell`).
STEPS: dict[str, Callable[..., State]] = {"rnn": _rnn, "lstm": _lstm, "gru": _gru, "indrnn": _indrnn}


def _hoist_whole(p: Params, **_: Any) -> Params:
    return _hoisted(p, ((0, None),), fold=True)


def _hoist_gru(p: Params, reset_after: bool) -> Params:
    if reset_after:  # r multiplies the candidate's h @ w + b: b_hh stays in the step
        return _hoisted(p, ((0, None),), fold=False)
    hidden = int(p["w_hh"].shape[1])
    return _hoisted(p, ((0, 2 * hidden), (2 * hidden, None)), fold=True)  # r*h meets the candidate's rows alone


#: Each cell's hoist (see :func:`make_hoist`), by the cell's op name; indrnn's ``u`` is elementwise.
HOISTS: dict[str, Callable[..., Params]] = {
    "rnn": _hoist_whole,
    "lstm": _hoist_whole,
    "gru": _hoist_gru,
    "indrnn": lambda p, **_: p,
}


def make_cell(name: str, options: Mapping[str, Any]) -> Cell:
    """The cell ``name`` (rnn, lstm, gru, indrnn) with its options (only its own are read)."""
    return Cell(*bind_cell(STEPS, name, options), linear=linear)


def make_hoist(name: str, options: Mapping[str, Any]) -> Callable[[Params], Params]:
    """``p -> p'``: one layer's params as cell ``name``'s time loop reads them fastest, made once before it.

    ``p'`` holds the blocks of ``w_hh`` the step multiplies by, transposed,
    and ``b_ih`` plus the rows of ``b_hh`` that can be added before the loop
    (see the module docstring). :meth:`Cell.project` and :meth:`Cell.step`
    given ``p'`` compute the layer given ``p``, to rounding; gradients reach
    ``p`` through the rewrite.
    """
    return bind_cell(HOISTS, name, options)[2]
