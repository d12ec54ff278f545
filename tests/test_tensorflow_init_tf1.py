"""The Keras layers take init_params' ``init_style`` and ``initial_state_std`` (see test_init_tf1.py)."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import rnnspec  # noqa: E402  (after the skips: the layers import tensorflow and keras)
from rnnspec.backends.tensorflow import keras as layers  # noqa: E402
from rnnspec.errors import OptionError  # noqa: E402

FEATURES, UNITS = 3, 6
OPTIONS = {"init_style": "tf1", "trainable_initial_state": True, "initial_state_std": 1.0}


def test_a_keras_layer_draws_init_params_tf1_arrays_from_its_seed_and_keeps_the_options_in_its_config() -> None:
    layer = layers.SkipGRU(UNITS, num_layers=2, reset_after=False, seed=3, **OPTIONS)
    layer.build((None, None, FEATURES))
    expected = rnnspec.init_params(
        "skip_gru", input_size=FEATURES, hidden_size=UNITS, num_layers=2, seed=3, reset_after=False, **OPTIONS
    )
    for got, want in zip(layer.numpy_params(), expected, strict=True):
        assert list(got) == list(want)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])
    assert {key: layer.get_config()[key] for key in OPTIONS} == OPTIONS
    assert layers.SkipGRU.from_config(layer.get_config()).init_options == layer.init_options


def test_a_keras_layer_names_a_bad_init_style() -> None:
    with pytest.raises(OptionError, match=r"^LSTM: argument init_style: expected 'torch' or 'tf1'"):
        layers.LSTM(UNITS, init_style="keras")
