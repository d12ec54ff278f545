"""What every layer's ``load_canonical`` refuses before it writes a weight: extra keys, non-numeric arrays, no layers.

The checks live in :mod:`rnnspec.backends.common.layers` and wrap each framework's
``load_canonical``; PyTorch and Flax NNX layers stand for them here (Keras runs
in its own session).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from rnnspec.errors import DtypeError, ParameterError


def torch_lstm() -> Any:
    layers = pytest.importorskip("rnnspec.backends.torch.nn")
    return layers.LSTM(3, 4, num_layers=2)


def nnx_lstm() -> Any:
    nnx = pytest.importorskip("flax.nnx")
    layers = pytest.importorskip("rnnspec.backends.jax.nnx")
    return layers.LSTM(3, 4, num_layers=2, rngs=nnx.Rngs(0))


LAYERS = [pytest.param(torch_lstm, id="torch"), pytest.param(nnx_lstm, id="nnx")]
KEYS = "['b_hh', 'b_ih', 'w_hh', 'w_ih']"


def assert_unchanged(layer: Any, before: list[dict[str, np.ndarray]]) -> None:
    for got, expected in zip(layer.numpy_params(), before, strict=True):
        for name in expected:
            np.testing.assert_array_equal(got[name], expected[name])


@pytest.mark.parametrize("make", LAYERS)
def test_a_key_the_layer_does_not_hold_is_refused_before_any_weight_is_written(make: Callable[[], Any]) -> None:
    layer = make()
    before = layer.numpy_params()
    params = [{k: v + 1 for k, v in p.items()} for p in before]
    params[1]["w_gate"] = np.zeros((1, 4), np.float32)  # skip_lstm's, which an LSTM would have dropped
    expected = rf"LSTM: argument params\[1\]: expected only the keys {re.escape(KEYS)}, got also the keys \['w_gate'\]"
    with pytest.raises(ParameterError, match=expected):
        layer.load_canonical(params)
    assert_unchanged(layer, before)


@pytest.mark.parametrize("make", LAYERS)
@pytest.mark.parametrize(
    ("value", "actual"),
    [
        pytest.param(lambda w: w.astype(object), "dtype object", id="object-array"),
        pytest.param(lambda w: w.astype(str), "dtype <U", id="string-array"),
        pytest.param(lambda w: [[1.0, 2.0], [3.0]], "list (setting an array element with a sequence", id="ragged"),
    ],
)
def test_an_entry_of_no_numeric_dtype_is_refused_naming_it(
    make: Callable[[], Any], value: Callable[[np.ndarray], Any], actual: str
) -> None:
    layer = make()
    before = layer.numpy_params()
    params = layer.numpy_params()
    params[0]["w_hh"] = value(params[0]["w_hh"])
    expected = r"LSTM: argument params\[0\]\['w_hh'\]: expected a numeric array \(bool, integer or float\), got "
    with pytest.raises(DtypeError, match=expected + re.escape(actual)):
        layer.load_canonical(params)
    assert_unchanged(layer, before)


@pytest.mark.parametrize("make", LAYERS)
def test_one_mapping_in_place_of_a_list_of_layers_is_refused_as_such(make: Callable[[], Any]) -> None:
    layer = make()
    with pytest.raises(ParameterError, match=r"argument params: expected a sequence of 2 mappings .*, got one mapping"):
        layer.load_canonical(layer.numpy_params()[0])
    with pytest.raises(ParameterError, match=r"argument params\[1\]: expected a mapping of named arrays, got str"):
        layer.load_canonical([layer.numpy_params()[0], "w_ih"])


@pytest.mark.parametrize("make", LAYERS)
def test_lists_and_the_frameworks_own_arrays_still_load(make: Callable[[], Any]) -> None:
    layer = make()
    params = [{k: (v + 1).tolist() for k, v in p.items()} for p in layer.numpy_params()]
    layer.load_canonical(params)
    layer.load_canonical(layer.canonical_params())
    np.testing.assert_allclose(layer.numpy_params()[1]["b_hh"], params[1]["b_hh"], rtol=1e-6)
