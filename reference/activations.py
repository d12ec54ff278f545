"""Elementwise nonlinearities and their derivatives, written for float64."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]

__all__ = ["ACTIVATIONS", "Array", "sigmoid"]


def sigmoid(a: Array) -> Array:
    """Logistic sigmoid without overflow for large |a|."""
    e = np.exp(-np.abs(a))
    return np.where(a >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _tanh_grad(a: Array, y: Array) -> Array:
    return 1.0 - y * y


def _relu(a: Array) -> Array:
    return np.maximum(a, 0.0)


def _relu_grad(a: Array, y: Array) -> Array:
    # relu'(0) = 0, as PyTorch and the IndRNN kernel define it.
    return (a > 0).astype(a.dtype)


#: name -> (function, derivative given (pre-activation, activation value)).
ACTIVATIONS: dict[str, tuple[Callable[[Array], Array], Callable[[Array, Array], Array]]] = {
    "tanh": (np.tanh, _tanh_grad),
    "relu": (_relu, _relu_grad),
}
