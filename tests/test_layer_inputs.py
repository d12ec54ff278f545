"""A layer refuses an ``x`` that does not fit it naming ``x``, not the layer's own weights (torch and Flax NNX;
the Keras layers' checks are in test_tensorflow_keras.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from rnnspec.errors import DtypeError, ShapeError

FEATURES, H = 5, 8


def _torch_layer(batch_first: bool = True) -> tuple[Any, Callable[[np.ndarray], Any]]:
    torch = pytest.importorskip("torch")
    from rnnspec.backends.torch.nn import GRU

    return GRU(FEATURES, H, batch_first=batch_first), torch.from_numpy


def _nnx_layer(batch_first: bool = True) -> tuple[Any, Callable[[np.ndarray], Any]]:
    pytest.importorskip("flax")
    from flax import nnx

    from rnnspec.backends.jax.nnx import GRU

    return GRU(FEATURES, H, batch_first=batch_first, rngs=nnx.Rngs(0)), np.asarray


LAYERS = {"torch": _torch_layer, "nnx": _nnx_layer}


@pytest.mark.parametrize("framework", LAYERS)
def test_a_wrong_feature_size_names_x_and_the_layers_input_size(framework: str) -> None:
    layer, array = LAYERS[framework]()
    with pytest.raises(ShapeError) as err:
        layer(array(np.zeros((2, 4, 3), np.float32)))
    assert err.value.argument == "x"
    assert "GRU layer" in str(err.value)
    assert "input_size=5" in str(err.value)
    assert "(2, 4, 3)" in str(err.value)
    assert "w_ih" not in str(err.value)


@pytest.mark.parametrize("framework", LAYERS)
def test_a_wrong_feature_size_in_time_major_layout_names_x(framework: str) -> None:
    layer, array = LAYERS[framework](batch_first=False)
    with pytest.raises(ShapeError, match=r"argument x: expected \(time, batch, input_size\)"):
        layer(array(np.zeros((4, 2, 3), np.float32)))


@pytest.mark.parametrize("framework", LAYERS)
def test_x_of_the_wrong_rank_names_x(framework: str) -> None:
    layer, array = LAYERS[framework]()
    with pytest.raises(ShapeError, match=r"argument x: expected a 3-d array"):
        layer(array(np.zeros((4, FEATURES), np.float32)))


def test_a_float64_x_to_a_float32_torch_layer_names_x_and_both_dtypes() -> None:
    layer, array = _torch_layer()
    with pytest.raises(DtypeError) as err:
        layer(array(np.zeros((2, 4, FEATURES), np.float64)))
    assert err.value.argument == "x"
    assert "float32" in err.value.expected
    assert "float64" in err.value.actual


def test_a_float64_x_to_a_float32_nnx_layer_names_x_under_x64() -> None:
    jax = pytest.importorskip("jax")
    layer, _ = _nnx_layer()
    # Without x64, jax makes every float64 input float32 itself.
    with jax.enable_x64(True), pytest.raises(DtypeError) as err:
        layer(jax.numpy.zeros((2, 4, FEATURES), jax.numpy.float64))
    assert err.value.argument == "x"


@pytest.mark.parametrize("framework", LAYERS)
def test_an_x_that_fits_runs(framework: str) -> None:
    layer, array = LAYERS[framework]()
    assert tuple(layer(array(np.zeros((2, 4, FEATURES), np.float32))).outputs.shape) == (2, 4, H)
