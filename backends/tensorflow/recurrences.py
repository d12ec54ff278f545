"""The elementwise recurrences: ``linear_recurrence`` (QRNN's pooling) and ``indrnn_recurrence``.

Past a row's length ``h`` is frozen, and returned as 0. ``indrnn_recurrence``
runs in the masked time loop of :mod:`.sequence`; ``linear_recurrence`` in
:mod:`.linear_gradient`'s, whose gradient is a reverse linear recurrence
rather than TensorFlow's gradient of the loop (quadratic in the number of steps).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from . import linear_gradient
from .cells import ACTIVATIONS
from .sequence import dim, normalise_lengths, reverse_valid, scan

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


def _start(first: tf.Tensor, initial: tf.Tensor | None) -> tf.Tensor:
    """``initial``, or zeros ``(batch, H)`` of ``first``'s dtype."""
    if initial is not None:
        return tf.convert_to_tensor(initial)
    return tf.zeros(tf.stack([dim(first, 0), dim(first, 2)]), first.dtype)


def linear_recurrence(
    *, a: tf.Tensor, b: tf.Tensor, initial: tf.Tensor | None, lengths: Any, reverse: bool
) -> tf.Tensor:
    """``h_t = a_t * h_{t-1} + b_t``, ``h`` of shape ``(batch, time, H)``."""
    norm = normalise_lengths(lengths, dim(a, 0), dim(a, 1))
    h0 = _start(a, initial)
    if reverse:
        a, b = reverse_valid(a, norm), reverse_valid(b, norm)
    h, _ = linear_scan(a, b, h0, norm.valid())
    return reverse_valid(h, norm) if reverse else h


def indrnn_recurrence(
    *,
    pre: tf.Tensor,
    u: tf.Tensor,
    initial: tf.Tensor | None,
    activation: str,
    lengths: Any,
    reverse: bool,
) -> tf.Tensor:
    """``h_t = act(pre_t + u * h_{t-1})``, ``h`` of shape ``(batch, time, H)``."""
    norm = normalise_lengths(lengths, dim(pre, 0), dim(pre, 1))
    h0 = _start(pre, initial)
    if reverse:
        pre = reverse_valid(pre, norm)
    h, _ = indrnn_scan(pre, u, h0, activation, norm.valid())
    return reverse_valid(h, norm) if reverse else h
