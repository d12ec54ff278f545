"""The Keras PhasedLSTM layer calls the op with the caller's timestamps, as the op defines it.

``call`` takes ``timestamps`` by keyword: the layer equals the TensorFlow op on its weights; a
left-padded mask moves the timestamps with the inputs; the init options reach ``init_params``;
``trainable_ratio_on=False`` makes ``r_on`` a non-trainable weight that ``model.fit`` leaves alone
and the config keeps; a keyword the op does not take per step is refused naming it.
"""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import rnnspec  # noqa: E402
from rnnspec.backends.tensorflow.keras import PhasedLSTM  # noqa: E402
from rnnspec.errors import UnknownArgumentError  # noqa: E402

I, H, BATCH, T = 3, 4, 3, 6  # noqa: E741


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((BATCH, T, I)).astype(np.float32)
    timestamps = np.cumsum(rng.uniform(0.0, 2.0, (BATCH, T)), axis=1).astype(np.float32)
    return x, timestamps


@pytest.mark.parametrize("peepholes", [False, True])
def test_the_keras_layer_equals_the_op_with_the_same_timestamps(peepholes: bool) -> None:
    layer = PhasedLSTM(
        H,
        num_layers=2,
        return_sequences=True,
        return_state=True,
        seed=3,
        peepholes=peepholes,
        period_range=(1.0, 4.0),
        ratio_on=0.3,
    )
    x, timestamps = _data()
    outputs, *state = layer(x, timestamps=timestamps)
    params = layer.canonical_params()
    assert np.all(params[0]["r_on"].numpy() == np.float32(0.3))
    assert params[1]["tau"].numpy().max() <= 4.0
    theirs = rnnspec.get_backend("tensorflow").phased_lstm(
        tf.constant(x), params, timestamps=tf.constant(timestamps), peepholes=peepholes
    )
    assert np.array_equal(outputs.numpy(), theirs.outputs.numpy())
    assert np.array_equal(state[-1].numpy(), theirs.state[1]["c"].numpy())


def test_a_left_padded_mask_moves_the_timestamps_with_the_inputs() -> None:
    """Row 1 padded on the left runs as the same row padded on the right: its valid steps first, with their
    own timestamps."""
    layer = PhasedLSTM(H, return_sequences=True, seed=3, period_range=(1.0, 4.0), ratio_on=0.3)
    x, timestamps = _data()
    left = np.ones((BATCH, T), dtype=bool)
    left[1, :2] = False
    right = np.roll(left, -2, axis=1)
    moved_x, moved_t = x.copy(), timestamps.copy()
    moved_x[1], moved_t[1] = np.roll(x[1], -2, axis=0), np.roll(timestamps[1], -2)
    padded = layer(x, mask=left, timestamps=timestamps).numpy()
    moved = layer(moved_x, mask=right, timestamps=moved_t).numpy()
    np.testing.assert_array_equal(padded[1, 2:], moved[1, :4])
    assert np.all(padded[1, :2] == 0)
    changed = timestamps.copy()
    changed[1, 5] += 0.5  # a valid step's own timestamp: its output changes
    assert not np.array_equal(layer(x, mask=left, timestamps=changed).numpy()[1, 5], padded[1, 5])


@pytest.mark.parametrize("trainable_ratio_on", [True, False])
def test_r_on_is_a_trainable_weight_only_when_asked(trainable_ratio_on: bool) -> None:
    layer = PhasedLSTM(H, seed=3, ratio_on=0.3, trainable_ratio_on=trainable_ratio_on)
    x, timestamps = _data()
    layer(x, timestamps=timestamps)
    trainable = {w.path.split("/")[-1] for w in layer.trainable_weights}
    assert ("r_on" in trainable) is trainable_ratio_on
    assert {"tau", "s", "w_ih"} <= trainable
    assert len(layer.weights) == 7  # r_on kept either way
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x, timestamps=timestamps) ** 2)
    grads = dict(
        zip((w.path for w in layer.trainable_weights), tape.gradient(loss, layer.trainable_weights), strict=True)
    )
    assert all(g is not None for g in grads.values())
    config = layer.get_config()
    assert config["trainable_ratio_on"] is trainable_ratio_on
    assert config["ratio_on"] == 0.3
    again = PhasedLSTM.from_config(config)
    assert again.trainable_ratio_on is trainable_ratio_on


def test_a_keyword_that_is_no_per_step_option_is_refused_naming_it() -> None:
    layer = PhasedLSTM(H, seed=3)
    x, timestamps = _data()
    with pytest.raises(UnknownArgumentError, match="times"):
        layer(x, times=timestamps)
    with pytest.raises(Exception, match="timestamps"):
        layer(x)


def test_the_functional_api_takes_the_timestamps_as_an_input() -> None:
    inputs, stamps = keras.Input((None, I)), keras.Input((None,))
    out = keras.layers.Dense(1)(PhasedLSTM(H, seed=3)(inputs, timestamps=stamps))
    model = keras.Model([inputs, stamps], out)
    x, timestamps = _data()
    assert model.predict([x, timestamps], verbose=0).shape == (BATCH, 1)
