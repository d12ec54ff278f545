"""Parameter files with TensorFlow: tensors and Keras layers round-trip exactly.

The NumPy, PyTorch and JAX halves are in ``test_param_files.py``; TensorFlow
tests run in a session of their own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import random_bits

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import rnnspec  # noqa: E402
from rnnspec.backends.tensorflow import keras as layers  # noqa: E402
from rnnspec.errors import OptionError, ParamFileMismatchError  # noqa: E402

SUFFIXES = (".npz", ".safetensors")


def tf_bits(dtype: str, shape: tuple[int, ...], seed: int) -> Any:
    """A tf tensor of ``dtype`` with random bits."""
    if dtype == "bfloat16":
        return tf.bitcast(tf.constant(random_bits("int16", shape, seed)), tf.bfloat16)
    return tf.constant(random_bits(dtype, shape, seed))


def tf_signature(tensor: Any) -> tuple[str, tuple[int, ...], bytes]:
    """What an exact round trip keeps: dtype, shape and bytes."""
    raw = tf.bitcast(tensor, tf.int16) if tensor.dtype == tf.bfloat16 else tensor
    return tensor.dtype.name, tuple(tensor.shape), np.asarray(raw.numpy()).tobytes()


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_tf_tensors_of_every_float_dtype_round_trip_bit_for_bit(tmp_path: Path, suffix: str) -> None:
    dtypes = ("float16", "bfloat16", "float32", "float64")
    params = [{f"w_{dtype}": tf_bits(dtype, (4, 3), k) for k, dtype in enumerate(dtypes)}]
    params[0]["v"] = tf.Variable(tf_bits("float32", (2,), 9))
    path = tmp_path / f"params{suffix}"
    rnnspec.save_params(path, params, backend="tensorflow")
    loaded: Any = rnnspec.load_params(path, backend="tensorflow")
    assert list(loaded[0]) == list(params[0])
    for name, tensor in params[0].items():
        assert tf_signature(loaded[0][name]) == tf_signature(tf.convert_to_tensor(tensor)), name


def test_tf_tensors_are_found_without_naming_the_backend(tmp_path: Path) -> None:
    params = {"w": tf_bits("float32", (3, 2), 1)}
    path = tmp_path / "params.npz"
    rnnspec.save_params(path, params)
    loaded: Any = rnnspec.load_params(path)
    assert loaded["w"].tobytes() == params["w"].numpy().tobytes()


def keras_lstm(seed: int, **kwargs: Any) -> Any:
    layer = layers.LSTM(5, num_layers=2, return_sequences=True, seed=seed, **kwargs)
    layer.build((None, None, 3))
    return layer


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_a_keras_layer_saves_and_loads_its_params_exactly(tmp_path: Path, suffix: str) -> None:
    source = keras_lstm(0)
    path = tmp_path / f"lstm{suffix}"
    source.save_params(path)
    target = keras_lstm(1)
    target.load_params(path)
    for got, expected in zip(target.numpy_params(), source.numpy_params(), strict=True):
        assert list(got) == list(expected)
        for name in expected:
            assert got[name].tobytes() == expected[name].tobytes(), name


def test_an_unbuilt_keras_layer_is_built_by_loading_and_refuses_to_save(tmp_path: Path) -> None:
    params = rnnspec.init_params("gru", input_size=7, hidden_size=4, reset_after=True)
    path = tmp_path / "gru.npz"
    rnnspec.save_params(path, params, op="gru")
    layer = layers.GRU(4, reset_after=True)
    with pytest.raises(OptionError, match=r"GRU: argument save_params: expected a built layer"):
        layer.save_params(tmp_path / "unbuilt.npz")
    layer.load_params(path)
    assert layer.built
    assert layer.input_size == 7
    np.testing.assert_array_equal(layer.numpy_params()[0]["w_ih"], params[0]["w_ih"])


def test_a_keras_layer_refuses_a_file_of_another_op(tmp_path: Path) -> None:
    path = tmp_path / "lstm.npz"
    keras_lstm(0).save_params(path)
    with pytest.raises(ParamFileMismatchError, match=r"holds params of op 'lstm', not of op 'gru'"):
        layers.GRU(5, num_layers=2).load_params(path)
