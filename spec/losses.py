"""Auxiliary losses of the adaptive ops, written once for every array type.

They use only ``sum``/``mean`` over axes, through the array's own namespace
(the array API's ``__array_namespace__``) or its methods, so NumPy, PyTorch
and JAX arrays work unchanged; no framework is imported here.
"""

from __future__ import annotations

import math
from typing import Any

from .errors import OptionError, ShapeError

__all__ = ["skip_budget_loss"]


def _sum_time_mean_batch(a: Any) -> Any:
    namespace = getattr(a, "__array_namespace__", None)
    if namespace is not None:
        xp = namespace()
        return xp.mean(xp.sum(a, axis=1))
    if type(a).__module__.startswith("tensorflow"):
        import tensorflow as tf  # only reached with a TensorFlow tensor in hand

        return tf.reduce_mean(tf.reduce_sum(a, axis=1))
    return a.sum(axis=1).mean()


def skip_budget_loss(update_gate: Any, cost_per_sample: float) -> Any:
    """Skip RNN's budget loss (Campos et al. 2018, eq. 8).

    .. math:: L_{budget} = \\lambda \\cdot \\frac{1}{B} \\sum_b \\sum_t u_{b,t}

    Parameters
    ----------
    update_gate
        The ``update_gate`` field of a skip op's result, (batch, time), any
        array type; its gradient reaches u~ through the straight-through estimator.
    cost_per_sample
        lambda, a non-negative finite number (1e-5 in the paper's adding task).

    Returns
    -------
    A scalar array of ``update_gate``'s type.
    """
    shape = tuple(getattr(update_gate, "shape", ()))
    if len(shape) != 2:
        raise ShapeError("skip_budget_loss", "update_gate", "shape (batch, time)", f"shape {shape}")
    if (
        isinstance(cost_per_sample, bool)
        or not isinstance(cost_per_sample, (int, float))
        or not math.isfinite(cost_per_sample)
        or cost_per_sample < 0
    ):
        raise OptionError("skip_budget_loss", "cost_per_sample", "a finite number >= 0", repr(cost_per_sample))
    return _sum_time_mean_batch(update_gate) * cost_per_sample
