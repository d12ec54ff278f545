"""Helpers that many test modules share, written once.

Comparisons of nested result trees, central finite differences, torch autograd leaves and
readable parameter ids. Nothing here imports a framework at import time: torch is imported
by the functions that need it, so JAX and TensorFlow tests may import this module too.
The op-specific helpers live in ``helpers_reference`` (rnn/lstm/gru), ``helpers_recurrences``
(indrnn, qrnn and their primitives) and ``helpers_adaptive`` (skip ops and act); pytest
fixtures shared by several modules live in ``conftest.py``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

#: The default step of :func:`central_difference`. Truncation error ~ eps**2 / 6 * |L'''| ~ 1e-13
#: and rounding error ~ 1e-16 * |L| / eps ~ 1e-10 * |L|: both far below a 1e-7 bound, and 1e-6 is
#: close to the optimum (3 * 1.1e-16) ** (1/3) ~ 7e-6 of a cubic-error scheme.
EPS = 1e-6
#: The tolerance of a gradient against central differences (with :data:`EPS`), and of a float64
#: result or gradient against torch autograd of an independent implementation.
FD_RTOL = 1e-7
TORCH_RTOL = 1e-10
#: relu cases keep every valid pre-activation this far from 0, so a +-EPS step never crosses the kink.
RELU_MARGIN = 1e-3


# -- ids and case grids ---------------------------------------------------------------------

#: (layers, lengths, given initial state, reverse) of a sequence op's parametrized cases:
#: stacked layers, a 0-length and a full row, both directions.
SEQUENCE_SHAPES: list[tuple[int, list[int] | None, bool, bool]] = [
    (1, None, False, False),
    (3, [0, 5, 3], True, False),
    (2, [5, 0, 2], True, True),
    (1, [3, 5, 0], True, True),
    (2, None, False, True),
]


def shape_id(layers: int, lengths: Any, with_state: bool, reverse: bool) -> str:
    """A readable pytest id of a sequence case's shape, such as ``L2-len-state-reverse``."""
    return (
        f"L{layers}-{'len' if lengths else 'full'}-{'state' if with_state else 'zeros'}"
        f"-{'reverse' if reverse else 'forward'}"
    )


def variant_id(variant: tuple[str, Mapping[str, Any] | tuple[tuple[str, Any], ...]]) -> str:
    """A readable pytest id of an ``(op, options)`` pair, such as ``rnn-relu`` or ``gru-reset_after=False``.

    ``options`` is a mapping or a tuple of ``(name, value)`` pairs: string values appear alone,
    others as ``name=value``.
    """
    op, options = variant
    items = options.items() if isinstance(options, Mapping) else options
    return "-".join([op, *(value if isinstance(value, str) else f"{name}={value}" for name, value in items)])


# -- random values --------------------------------------------------------------------------


def random_bits(dtype: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """An array of ``dtype`` whose bytes are random: every kind of float value, NaN payloads included."""
    itemsize = np.dtype(dtype).itemsize
    raw = np.random.default_rng(seed).integers(0, 256, size=int(np.prod(shape)) * itemsize, dtype=np.uint8)
    return raw.view(dtype).reshape(shape)


def logit(p: float) -> float:
    """The inverse of the sigmoid: the pre-activation whose sigmoid is ``p``."""
    return math.log(p / (1.0 - p))


def full_lengths(lengths: Any, batch: int, time: int) -> np.ndarray:
    """``lengths`` as int64, or every row at full length."""
    if lengths is None:
        return np.full((batch,), time, dtype=np.int64)
    return np.asarray(lengths, dtype=np.int64)


def valid_steps(lengths: Any, batch: int, time: int) -> np.ndarray:
    """(batch, time) bool: True where the step lies within the row's length (every step when ``lengths`` is None)."""
    return np.arange(time)[None, :] < full_lengths(lengths, batch, time)[:, None]


def step_order(length: int, reverse: bool) -> range:
    """The time indices ``0 .. length-1`` in processing order: backwards when ``reverse``."""
    return range(length - 1, -1, -1) if reverse else range(length)


def sigmoid(a: np.ndarray) -> np.ndarray:
    """The logistic function, elementwise."""
    return 1.0 / (1.0 + np.exp(-a))


# -- gradients ------------------------------------------------------------------------------


def central_difference(loss: Callable[[], float], array: np.ndarray, eps: float = EPS) -> np.ndarray:
    """d loss / d array by central differences, perturbing ``array`` in place (and restoring it)."""
    grad = np.zeros(array.shape)
    for index in np.ndindex(array.shape):
        original = array[index]
        array[index] = original + eps
        plus = loss()
        array[index] = original - eps
        minus = loss()
        array[index] = original
        grad[index] = (plus - minus) / (2.0 * eps)
    return grad


def leaf(array: np.ndarray) -> torch.Tensor:
    """A float64 torch leaf tensor requiring grad, holding a copy of ``array``."""
    import torch

    return torch.tensor(np.array(array, dtype=np.float64), requires_grad=True)


def grad_of(t: torch.Tensor) -> np.ndarray:
    """``t.grad`` as NumPy (zeros when autograd never reached ``t``), a copy."""
    return np.zeros(tuple(t.shape)) if t.grad is None else t.grad.detach().numpy().copy()


def sequence_inner_product(cotangents: Mapping[str, Any], result: Any) -> float:
    """The loss ``<cotangents, result>`` of a sequence result, over outputs and every state entry of every layer.

    Its gradient with respect to the inputs is the VJP of ``cotangents``.
    """
    total = float(np.sum(np.asarray(cotangents["outputs"]) * np.asarray(result.outputs, dtype=np.float64)))
    for cot_layer, res_layer in zip(cotangents["state"], result.state, strict=True):
        for name, cot in cot_layer.items():
            total += float(np.sum(cot * np.asarray(res_layer[name], dtype=np.float64)))
    return total


def numerical_sequence_vjp(
    call: Callable[[np.ndarray, list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]], Any],
    x: np.ndarray,
    params: Sequence[Mapping[str, np.ndarray]],
    initial_state: Sequence[Mapping[str, np.ndarray]],
    cotangents: Mapping[str, Any],
) -> dict[str, Any]:
    """Central differences of ``<cotangents, call(x, params, initial_state)>`` w.r.t. every input array."""
    x = np.array(x, dtype=np.float64)
    params = [{k: np.array(v, dtype=np.float64) for k, v in p.items()} for p in params]
    state = [{k: np.array(v, dtype=np.float64) for k, v in s.items()} for s in initial_state]

    def loss() -> float:
        return sequence_inner_product(cotangents, call(x, params, state))

    return {
        "x": central_difference(loss, x),
        "params": [{k: central_difference(loss, v) for k, v in p.items()} for p in params],
        "initial_state": [{k: central_difference(loss, v) for k, v in s.items()} for s in state],
    }


# -- comparisons ----------------------------------------------------------------------------


def deep_copy(tree: Any) -> Any:
    """A deep copy of nested dicts/lists/tuples of arrays."""
    return copy.deepcopy(tree)


def assert_relative_close(actual: Any, expected: Any, rtol: float, what: str) -> None:
    """Elementwise ``|actual - expected| <= rtol * max(1, |expected|)``, same shapes, ``actual`` finite."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    if actual.size == 0:
        return
    assert np.all(np.isfinite(actual)), f"{what}: not finite"
    err = np.abs(actual - expected) / np.maximum(1.0, np.abs(expected))
    assert np.all(err <= rtol), f"{what}: max scaled error {np.max(err):.3e} beyond rtol {rtol}"


def assert_trees_close(actual: Any, expected: Any, rtol: float, what: str) -> None:
    """Same nested structure (mappings by keys, sequences by length); leaves within ``rtol``."""
    if isinstance(expected, Mapping):
        assert isinstance(actual, Mapping), f"{what}: not a mapping"
        assert sorted(actual) == sorted(expected), f"{what}: keys {sorted(actual)} != {sorted(expected)}"
        for key in expected:
            assert_trees_close(actual[key], expected[key], rtol, f"{what}[{key!r}]")
    elif isinstance(expected, (list, tuple)):
        assert isinstance(actual, (list, tuple)), f"{what}: not a sequence"
        assert len(actual) == len(expected), f"{what}: length {len(actual)} != {len(expected)}"
        for k, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_trees_close(a, e, rtol, f"{what}[{k}]")
    else:
        assert_relative_close(actual, expected, rtol, what)


def assert_trees_equal(actual: Any, expected: Any, what: str) -> None:
    """Same structure, same dtypes, bitwise-equal arrays (None leaves must stay None)."""
    if isinstance(expected, Mapping):
        assert isinstance(actual, Mapping), f"{what}: not a mapping"
        assert sorted(actual) == sorted(expected), f"{what}: keys {sorted(actual)} != {sorted(expected)}"
        for key in expected:
            assert_trees_equal(actual[key], expected[key], f"{what}[{key!r}]")
    elif isinstance(expected, (list, tuple)):
        assert isinstance(actual, (list, tuple)), f"{what}: not a sequence"
        assert len(actual) == len(expected), f"{what}: length {len(actual)} != {len(expected)}"
        for k, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_trees_equal(a, e, f"{what}[{k}]")
    elif expected is None:
        assert actual is None, f"{what}: not None"
    else:
        assert isinstance(actual, np.ndarray), f"{what}: not an array"
        assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
        np.testing.assert_array_equal(actual, expected, err_msg=what)
