"""The Keras cells (``rnnspec.backends.tensorflow.keras.*Cell``) and the Keras cell converters.

``keras.layers.RNN(cell)`` equals the rnnspec Keras layer of the same weights (outputs, final state,
the extras a cell appends as its last columns); the cells save their config; Keras' own
``SimpleRNNCell``/``LSTMCell``/``GRUCell`` convert to the rnnspec cells and back, stepping alike; bad
calls name the cell and the argument. Kept small: every Keras call builds graphs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("tensorflow")

from rnnspec.backends.tensorflow import keras as rk  # noqa: E402
from rnnspec.conformance.tolerances import tolerance  # noqa: E402
from rnnspec.convert import from_keras, to_keras  # noqa: E402
from rnnspec.errors import OptionError, ShapeError  # noqa: E402

I, H, BATCH, T = 3, 4, 2, 4  # noqa: E741
TOL = tolerance("float32", steps=T)


def _x() -> np.ndarray:
    return np.random.default_rng(1).standard_normal((BATCH, T, I)).astype(np.float32)


def _close(actual: Any, expected: Any, what: str) -> None:
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=TOL.rtol, atol=TOL.atol, err_msg=what)


@pytest.mark.parametrize(
    ("cell", "layer"),
    [
        (lambda: rk.SkipGRUCell(H, return_extras=True, seed=1), lambda: rk.SkipGRU(H, return_extras=True)),
        (lambda: rk.QRNNCell(H, window=3, mode="ifo", seed=1), lambda: rk.QRNN(H, window=3, mode="ifo")),
    ],
    ids=["SkipGRUCell", "QRNNCell"],
)
def test_keras_rnn_of_a_cell_equals_the_rnnspec_layer(cell: Any, layer: Any) -> None:
    step, whole = cell(), layer()
    step.build((None, I))
    whole.return_sequences, whole.return_state = True, True
    whole.load_canonical(step.numpy_params())
    x = _x()
    got = keras.layers.RNN(step, return_sequences=True, return_state=True)(x)
    expected = whole(x)
    n = len(step.state_names)
    _close(got[0][..., :H], expected[0], "outputs")
    for j, name in enumerate(step.extra_fields):  # the extras: the output's last columns
        _close(got[0][..., H + j], expected[1 + n + j], name)
    for j, name in enumerate(step.state_names):  # Keras' flat state: x_prev flattened
        _close(np.reshape(got[1 + j], np.shape(expected[1 + j])), expected[1 + j], f"state {name}")


def test_a_cell_rebuilt_from_its_config_is_the_same_cell() -> None:
    cell = rk.SkipLSTMCell(H, return_extras=True, seed=3, trainable_initial_state=True)
    again = rk.SkipLSTMCell.from_config(cell.get_config())
    for a in (cell, again):
        a.build((None, I))
    assert again.get_config() == cell.get_config()
    for key, value in cell.numpy_params()[0].items():
        np.testing.assert_array_equal(again.numpy_params()[0][key], value, err_msg=key)


@pytest.mark.parametrize("keras_class", ["SimpleRNNCell", "LSTMCell", "GRUCell"])
def test_a_keras_cell_and_its_rnnspec_cell_step_alike_both_ways(keras_class: str) -> None:
    theirs = getattr(keras.layers, keras_class)(H, bias_initializer="glorot_uniform")
    theirs.build((None, I))
    ours = getattr(rk, {"SimpleRNNCell": "RNNCell"}.get(keras_class, keras_class))(H)
    ours.load_canonical(from_keras(theirs))
    (back,) = to_keras(ours.numpy_params(), ours.op, cells=True)
    assert type(back) is type(theirs)
    x = _x()
    expected = keras.layers.RNN(theirs, return_sequences=True)(x)
    _close(keras.layers.RNN(ours, return_sequences=True)(x), expected, f"rnnspec's {keras_class}")
    _close(keras.layers.RNN(back, return_sequences=True)(x), expected, f"to_keras's {keras_class}")


def test_bad_calls_name_the_cell_and_the_argument() -> None:
    cell = rk.LSTMCell(H)
    cell.build((None, I))
    x = np.zeros((BATCH, I), np.float32)
    h = np.zeros((BATCH, H), np.float32)
    calls = [
        (lambda: cell(x, [h]), ShapeError, "states"),
        (lambda: cell(np.zeros((BATCH, I + 1), np.float32), [h, h]), ShapeError, "x"),
        (lambda: cell(x, [h, np.zeros((BATCH + 1, H), np.float32)]), ShapeError, "state['c']"),
        (lambda: rk.QRNNCell(H, window=2).state_size, OptionError, "state_size"),
        (lambda: rk.GRUCell(H, return_extras=True), OptionError, "return_extras"),
    ]
    for call, error, argument in calls:
        with pytest.raises(error) as info:
            call()
        assert info.value.argument == argument
