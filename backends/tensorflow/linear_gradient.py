"""``h_t = a_t * h_{t-1} + b_t`` with its own gradient: the backward pass is a reverse linear recurrence.

TensorFlow's gradient of a ``tf.while_loop`` writes each step's cotangents into
TensorLists as long as the loop, and copies them at every step of the backward
loop: quadratic in the number of steps (140 s for 4096 steps of batch 16, size
512 under XLA). The recurrence is linear, so its gradient is one too. With
``g_t = dL/dh_t`` in total (through ``h_{t+1}`` as well),

    g_t = dh_t + a_{t+1} g_{t+1},   db_t = g_t,   da_t = g_t h_{t-1},   dh0 = a_0 g_0,

one reverse loop carrying ``q = a_t g_t`` (which ends as ``dh0``), and a product.

:func:`linear_recurrence` takes the rows' validity: past a row's length the
state is frozen (``a = 1, b = 0`` there, which also keeps a NaN in the padding
out of both passes) and the outputs are zero, as :func:`.sequence.scan` does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf

from .sequence import dim

__all__ = ["linear_recurrence"]


def _loop(a: tf.Tensor, b: tf.Tensor, carry: tf.Tensor, backward: bool) -> tuple[tf.Tensor, tf.Tensor]:
    """One pass over time of ``(batch, time, H)`` ``a`` and ``b``; the outputs ``(batch, time, H)`` and the last carry.

    Forward (from step 0): ``out_t = a_t * carry + b_t``, ``carry = out_t``.
    Backward (from the last step): ``out_t = b_t + carry``, ``carry = a_t * out_t``.
    The loop is not differentiated (its gradient is :func:`_recurrence`'s), so
    it gathers each step straight from the batch-major ``a`` and ``b``, with no
    transposed copy of them. One step per iteration: unrolling 2 to 16 steps
    per iteration measured slower under XLA on the CPU (stacking a chunk's
    steps makes XLA recompute the chain in the fusion; writing them one by one
    adds kernels), and at most about 15% faster in a graph without XLA.
    """
    time = dim(a, 1)
    static_batch = a.shape[0]
    out = tf.TensorArray(a.dtype, size=time, element_shape=tf.TensorShape([static_batch, a.shape[2]]))

    def body(i: tf.Tensor, carry: tf.Tensor, out: tf.TensorArray) -> tuple[tf.Tensor, tf.Tensor, tf.TensorArray]:
        t = time - 1 - i if backward else i
        a_t, b_t = tf.gather(a, t, axis=1), tf.gather(b, t, axis=1)
        if backward:
            new = b_t + carry
            return i + 1, a_t * new, out.write(t, new)
        new = a_t * carry + b_t
        return i + 1, new, out.write(t, new)

    _, last, out = tf.while_loop(lambda i, *_: i < time, body, (tf.constant(0), carry, out), maximum_iterations=time)
    return tf.transpose(out.stack(), [1, 0, 2]), last


def _pass(a: tf.Tensor, b: tf.Tensor, carry: tf.Tensor, backward: bool) -> tuple[tf.Tensor, tf.Tensor]:
    """:func:`_loop`, or no step at all on an empty time axis (the carry comes back as it is)."""
    time = dim(a, 1)
    if isinstance(time, int):
        return _loop(a, b, carry, backward) if time > 0 else (tf.zeros_like(b), tf.identity(carry))
    # Known only at run time. The branch stays inside the custom gradient's passes, never differentiated:
    # TensorFlow's gradient of a cond around a custom gradient fails once the trace is reused.
    out, last = tf.cond(time > 0, lambda: _loop(a, b, carry, backward), lambda: (tf.zeros_like(b), tf.identity(carry)))
    return out, last


def _differentiable(
    a: tf.Tensor, b: tf.Tensor, h0: tf.Tensor
) -> tuple[tuple[tf.Tensor, tf.Tensor], Callable[[tf.Tensor, tf.Tensor], Any]]:
    """Every ``h_t`` ``(batch, time, H)`` of ``h_t = a_t * h_{t-1} + b_t`` from ``h0``, and the last ``h``.

    The last ``h`` is the loop's carry (``h0`` on an empty time axis); its
    cotangent starts the reverse loop's carry, since it adds to ``g`` at the last step.
    """
    h, last = _pass(a, b, h0, backward=False)

    def grad(dh: tf.Tensor | None, dlast: tf.Tensor | None) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        dh = tf.zeros_like(h) if dh is None else dh
        dlast = tf.zeros_like(h0) if dlast is None else dlast
        g, dh0 = _pass(a, dh, dlast, backward=True)
        before = tf.concat([h0[:, None], h[:, :-1]], axis=1)  # h_{t-1}
        return g * before, g, dh0

    return (h, last), grad


#: ``_differentiable`` as TensorFlow differentiates it.
_recurrence: Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]] = tf.custom_gradient(
    _differentiable
)


def linear_recurrence(
    a: tf.Tensor, b: tf.Tensor, h0: tf.Tensor, valid: tf.Tensor | None
) -> tuple[tf.Tensor, tf.Tensor]:
    """``h_t = a_t * h_{t-1} + b_t`` from ``h0`` over ``(batch, time, H)``: all ``h`` and the final one.

    ``valid`` ``(batch, time)`` is True where a step lies within its row's
    length (None: every step); past it ``h`` is frozen and returned as 0, and
    the final ``h`` is the one after the row's last valid step.
    """
    a, b, h0 = tf.convert_to_tensor(a), tf.convert_to_tensor(b), tf.convert_to_tensor(h0)
    if valid is not None:
        keep = valid[:, :, None]
        a, b = tf.where(keep, a, tf.ones_like(a)), tf.where(keep, b, tf.zeros_like(b))
    h, final = _recurrence(a, b, h0)
    if valid is not None:
        h = tf.where(keep, h, tf.zeros_like(h))
    return h, final
