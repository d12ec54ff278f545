"""The Keras QRNN layer's ``zoneout``: a Bernoulli(p) mask per layer with ``training=True``, its expectation otherwise.

In evaluation (``training=False``, or no flag: Keras' inference) the layer's outputs are bitwise the
TensorFlow op's with the mask filled with p. In training the masks the layer hands the op are {0, 1},
one per layer, at the rate p (a 6-sigma bound over 10^5 draws), drawn afresh at every call and
repeated by a layer of the same ``seed``; ``model.fit`` trains through them and ``model.predict``
uses the expectation; p = 0 passes no mask; a caller's mask is used instead; a bad p is refused
naming the layer and ``zoneout``. Run in the TensorFlow venv.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers_readme import run_section_example

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from rnnspec.backends.common.layers import layer_backend  # noqa: E402
from rnnspec.backends.tensorflow import keras as layers  # noqa: E402
from rnnspec.conformance.tolerances import tolerance  # noqa: E402
from rnnspec.errors import OptionError  # noqa: E402

P = 0.25
DOCS = Path(__file__).resolve().parents[1] / "docs" / "getting-started" / "tensorflow.md"
BATCH, TIME, FEATURES, UNITS = 4, 6, 3, 5


class Spy:
    """Records the ``zoneout_mask`` of every call of the TensorFlow backend's qrnn, then runs it."""

    def __init__(self, method: Any) -> None:
        self.method, self.masks = method, []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.masks.append(kwargs.get("zoneout_mask"))
        return self.method(*args, **kwargs)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Spy:
    target = layer_backend("tensorflow")
    recorder = Spy(target.qrnn)
    monkeypatch.setattr(target, "qrnn", recorder)
    return recorder


def inputs(batch: int = BATCH, time: int = TIME, features: int = FEATURES) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((batch, time, features))


def make(units: int = UNITS, **options: Any) -> Any:
    return layers.QRNN(units, seed=3, dtype="float64", return_sequences=True, **options)


def test_in_evaluation_the_layer_is_the_op_with_the_mask_filled_with_p() -> None:
    layer = make(num_layers=2, zoneout=P, window=2)
    x = inputs()
    got = layer(x, training=False)
    params = [w.tensors(tf.float64) for w in layer.stack]
    want = layer_backend("tensorflow").qrnn(
        tf.constant(x), params, mode="fo", zoneout_mask=tf.fill((BATCH, TIME, UNITS), tf.constant(P, tf.float64))
    )
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want.outputs))
    np.testing.assert_array_equal(np.asarray(layer(x)), np.asarray(got))  # no flag: inference


def test_in_training_each_layer_gets_its_own_bernoulli_mask_drawn_afresh_at_every_call(spy: Spy) -> None:
    batch, time, features, units = 50, 64, 4, 32
    layer = make(units, num_layers=2, zoneout=P)
    x = inputs(batch, time, features)
    first, second = layer(x, training=True), layer(x, training=True)
    assert not np.array_equal(np.asarray(first), np.asarray(second))
    drawn = [np.asarray(m) for call in spy.masks for m in call]
    assert len(drawn) == 4
    for k, m in enumerate(drawn):
        assert m.shape == (batch, time, units)
        assert set(np.unique(m)) <= {0.0, 1.0}, f"mask {k} is not a {{0, 1}} mask"
        bound = 6.0 * math.sqrt(P * (1.0 - P) / m.size)
        assert abs(m.mean() - P) <= bound, f"mask {k}: rate {m.mean():.4f}, p {P} +- {bound:.4f}"
    assert not any(np.array_equal(drawn[j], drawn[k]) for j in range(4) for k in range(j))
    twin = make(units, num_layers=2, zoneout=P)  # the same seed: the same draws
    np.testing.assert_array_equal(np.asarray(twin(x, training=True)), np.asarray(first))


def test_fit_trains_through_drawn_masks_and_predict_uses_their_expectation() -> None:
    layer = make(num_layers=2, zoneout=P)
    model = keras.Sequential([keras.Input((TIME, FEATURES), dtype="float64"), layer])
    model.compile(optimizer="sgd", loss="mse")
    x = inputs().astype(np.float32).astype(np.float64)  # Keras' data adapters round the data to float32
    before = [np.array(w.numpy()) for w in layer.trainable_weights]
    model.fit(x, np.zeros((BATCH, TIME, UNITS)), batch_size=BATCH, epochs=1, verbose=0)
    assert any(not np.array_equal(w.numpy(), b) for w, b in zip(layer.trainable_weights, before, strict=True))
    predicted = model.predict(x, verbose=0)
    tol = tolerance("float64", steps=2 * TIME)
    np.testing.assert_allclose(predicted, np.asarray(layer(x, training=False)), rtol=tol.rtol, atol=tol.atol)
    assert not np.allclose(predicted, np.asarray(layer(x, training=True)), rtol=tol.rtol, atol=tol.atol)


def test_zero_zoneout_passes_no_mask_and_a_callers_mask_is_used_instead(spy: Spy) -> None:
    x = inputs()
    make(num_layers=2)(x, training=True)
    make(num_layers=2)(x, training=False)
    mine = np.ones((BATCH, TIME, UNITS))
    make(num_layers=2, zoneout=P)(x, training=True, zoneout_mask=mine)
    assert spy.masks[:2] == [None, None]
    np.testing.assert_array_equal(np.asarray(spy.masks[2]), mine)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, math.nan, "0.1", True, None], ids=repr)
def test_a_bad_probability_is_refused_naming_the_layer_and_zoneout(bad: Any) -> None:
    with pytest.raises(OptionError) as info:
        make(zoneout=bad)
    assert (info.value.op, info.value.argument) == ("QRNN", "zoneout")


def test_zoneout_survives_the_config_round_trip() -> None:
    layer = make(zoneout=P)
    assert layers.QRNN.from_config(layer.get_config()).zoneout == P


def test_the_getting_started_zoneout_example_runs_drawing_in_training_and_not_in_evaluation() -> None:
    namespace = run_section_example(DOCS, "### Zoneout")
    qrnn, x, train_out, eval_out = (namespace[k] for k in ("qrnn", "x", "train_out", "eval_out"))
    assert not np.array_equal(np.asarray(train_out), np.asarray(eval_out))
    np.testing.assert_array_equal(np.asarray(qrnn(x)), np.asarray(eval_out))
