"""The elementwise recurrences: ``linear_recurrence`` (QRNN's pooling) and ``indrnn_recurrence``.

Past a row's length ``h`` is frozen, and returned as 0. ``indrnn_recurrence``
runs in the masked time loop of :mod:`.sequence`; ``linear_recurrence`` in
:mod:`.linear_gradient`'s, whose gradient is a reverse linear recurrence
rather than TensorFlow's gradient of the loop (quadratic in the number of steps).
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from rnnspec.backends.common import state as common_state

from . import linear_gradient
from .cells import ACTIVATIONS
from .sequence import ARRAY_OPS, scan

__all__ = ["indrnn_recurrence", "indrnn_scan", "linear_recurrence", "linear_scan"]


def linear_scan(a: tf.Tensor, b: tf.Tensor, h0: tf.Tensor, valid: tf.Tensor | None) -> tuple[tf.Tensor, tf.Tensor]:
    """``h_t = a_t * h_{t-1} + b_t`` from ``h0`` over ``(batch, time, H)``; all ``h`` and the final one."""
    return linear_gradient.linear_recurrence(a, b, h0, valid)


def indrnn_scan(
    pre: tf.Tensor, u: tf.Tensor, h0: tf.Tensor, activation: str, valid: tf.Tensor | None
) -> tuple[tf.Tensor, tf.Tensor]:
    """``h_t = act(pre_t + u * h_{t-1})`` from ``h0`` over ``(batch, time, H)``; all ``h`` and the final one."""
    fn = ACTIVATIONS[activation]

    def step(h: tf.Tensor, xs: Sequence[tf.Tensor], keep: tf.Tensor | None) -> tuple[tf.Tensor, list[tf.Tensor]]:
        new = fn(xs[0] + u * h)
        return new, [new]

    (h,), final = scan(step, [pre], h0, valid, [(int(h0.shape[1]),)])
    return h, final


#: The primitives' op functions: lengths, reverse and the zero start from the core, the scans from here.
linear_recurrence = common_state.linear_recurrence(linear_scan, ARRAY_OPS)
indrnn_recurrence = common_state.indrnn_recurrence(indrnn_scan, ARRAY_OPS)
