"""Constraints the caller applies to parameters between updates, outside the ops.

IndRNN (Li et al., CVPR 2018) keeps each recurrent weight in ``[-U, U]`` with
``U = mag ** (1 / seq_len)``, so that ``|u| ** seq_len``, the factor by which a
unit's state and gradient can grow over ``seq_len`` steps, stays at most
``mag``. The authors project ``u`` into that interval before every forward
pass; the projection is not part of the graph, so it changes no gradient. The
``indrnn`` and ``indrnn_recurrence`` ops therefore never clip ``u`` themselves:
the caller applies :func:`indrnn_constrain`, usually right after each optimiser
step.
"""

from __future__ import annotations

import math
import numbers
import sys
from typing import Any

import numpy as np

from .errors import OptionError

__all__ = ["indrnn_bound", "indrnn_constrain"]


def _finite_real(value: Any) -> float | None:
    """``value`` as a float if it is a finite real number (not a bool), else None."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def check_mag(where: str, mag: Any) -> float:
    """``mag`` as a float, or an :class:`~rnnspec.errors.OptionError` from ``where``."""
    number = _finite_real(mag)
    if number is None or number < 1.0:
        raise OptionError(
            where, "mag", "a finite real number >= 1 (the growth factor allowed over seq_len steps)", repr(mag)
        )
    return number


def check_seq_len(where: str, seq_len: Any) -> int:
    """``seq_len`` as an int, or an :class:`~rnnspec.errors.OptionError` from ``where``."""
    if isinstance(seq_len, bool | np.bool_) or not isinstance(seq_len, numbers.Integral) or seq_len < 1:
        raise OptionError(where, "seq_len", "a positive integer (the number of time steps)", repr(seq_len))
    return int(seq_len)


def indrnn_bound(seq_len: int, mag: float = 2.0) -> float:
    r"""The bound ``U`` on IndRNN's recurrent weights for sequences of ``seq_len`` steps.

    .. math::

        U = \mathrm{mag}^{1 / \mathrm{seq\_len}}

    so that :math:`U^{\mathrm{seq\_len}} = \mathrm{mag}`: a unit whose weight
    satisfies :math:`|u| \le U` scales its state, and the gradient through it, by
    at most ``mag`` over ``seq_len`` steps (for relu, ignoring the inputs).

    Parameters
    ----------
    seq_len
        The number of time steps the model is trained on, a positive integer.
    mag
        The largest growth allowed over ``seq_len`` steps, a finite number
        ``>= 1``. The authors use 2, 5 or 10.

    Returns
    -------
    float
        ``mag ** (1 / seq_len)``, in ``[1, mag]``.

    Raises
    ------
    rnnspec.errors.OptionError
        ``seq_len`` is not a positive integer, or ``mag`` not a finite number ``>= 1``.

    Examples
    --------
    >>> import rnnspec
    >>> round(rnnspec.indrnn_bound(100), 6)
    1.006956
    >>> rnnspec.indrnn_bound(1, mag=10.0)
    10.0
    """
    steps = check_seq_len("indrnn_bound", seq_len)
    return float(check_mag("indrnn_bound", mag) ** (1.0 / steps))


def indrnn_constrain(u: Any, bound: float) -> Any:
    r"""Project IndRNN's recurrent weights ``u`` into ``[-bound, bound]``.

    .. math::

        \Pi(u)_j = \min(\max(u_j, -\mathrm{bound}), \mathrm{bound})

    This is the Euclidean projection onto the box, the authors' constraint. Apply
    it to the parameter between optimiser steps (or before each forward), never
    inside the differentiated computation: clipping in the graph would zero the
    gradient of every clipped entry, which changes training. The input is never
    modified; assign the result back yourself::

        with torch.no_grad():                          # PyTorch
            layer_u.copy_(rnnspec.indrnn_constrain(layer_u, U))
        p = {**p, "u": rnnspec.indrnn_constrain(p["u"], U)}  # JAX, NumPy

    Parameters
    ----------
    u
        The recurrent weights, an array of any shape and library. An array with a
        ``clip`` method (NumPy, PyTorch, JAX, CuPy) is clipped with it; a TensorFlow
        tensor or variable with ``tf.clip_by_value`` (also inside a ``tf.function``);
        otherwise an array of the array API standard through its ``__array_namespace__()``;
        otherwise (a list, or an array of a library with neither) with
        :func:`numpy.clip`, which returns a NumPy array. NaN entries stay NaN.
    bound
        The half-width of the interval, a positive finite number, usually
        ``rnnspec.indrnn_bound(seq_len, mag)``.

    Returns
    -------
    array
        A new array of ``u``'s type, shape and dtype with every entry in
        ``[-bound, bound]``.

    Raises
    ------
    rnnspec.errors.OptionError
        ``bound`` is not a positive finite number.

    Examples
    --------
    >>> import numpy as np
    >>> import rnnspec
    >>> rnnspec.indrnn_constrain(np.array([-3.0, 0.5, 1.2]), 1.0)
    array([-1. ,  0.5,  1. ])
    """
    limit = _finite_real(bound)
    if limit is None or limit <= 0.0:
        raise OptionError("indrnn_constrain", "bound", "a positive finite number", repr(bound))
    # A Python float, so that it never promotes the dtype of u (NEP 50 weak scalars).
    if callable(getattr(u, "clip", None)):
        return u.clip(-limit, limit)
    # TensorFlow's tensors have no clip method and no array namespace. If u is one, TensorFlow is
    # imported already: look it up rather than import it (nothing in spec imports a framework).
    tf = sys.modules.get("tensorflow")
    if tf is not None and isinstance(u, (tf.Tensor, tf.Variable)):
        return tf.clip_by_value(u, -limit, limit)
    namespace = getattr(u, "__array_namespace__", None)
    if callable(namespace):
        xp = namespace()
        if hasattr(xp, "clip"):
            return xp.clip(u, -limit, limit)
        low = xp.full_like(u, -limit)
        high = xp.full_like(u, limit)
        return xp.minimum(xp.maximum(u, low), high)
    return np.clip(u, -limit, limit)
