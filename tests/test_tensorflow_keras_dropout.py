"""The Keras layers' ``dropout`` (between stacked layers, torch.nn's meaning) and ``recurrent_dropout``.

A call without ``training=True`` is bitwise the layer without dropout; with ``training=True`` the masks the
layer hands the op (captured by a spy on the backend's op) have the record's shapes, entries 0 or exactly
1 / (1 - p) at the rate p (a 6-sigma bound), one per boundary and one per layer, drawn afresh at every call
and repeated by ``seed``; the backward layer of ``keras.layers.Bidirectional`` draws its own; the options
survive ``get_config``; a bad p is refused naming the layer and the argument; a bidirectional, dropped-out
two-layer SkipGRU trains with ``model.fit``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from helpers_dropout import assert_dropout_masks, spy_on  # noqa: E402
from helpers_readme import run_section_example  # noqa: E402

from rnnspec.backends.tensorflow import keras as layers  # noqa: E402
from rnnspec.errors import OptionError  # noqa: E402

DOCS = Path(__file__).resolve().parents[1] / "docs" / "getting-started" / "tensorflow.md"
P = 0.3
BAD_PROBABILITIES = [-0.1, 1.0, math.nan, "0.1", True, None]
#: Large enough for the 6-sigma bound on the rate to be tight: batch, time, input size, units.
BIG = (40, 30, 4, 32)


def normal(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize(
    ("cls", "options"),
    [
        (layers.LSTM, {"dropout": P, "recurrent_dropout": P}),
        (layers.SkipGRU, {"dropout": P, "recurrent_dropout": P}),
        (layers.QRNN, {"dropout": P}),
        (layers.ACT, {"recurrent_dropout": P}),
    ],
)
def test_without_training_a_layer_is_bitwise_the_layer_without_dropout(cls: Any, options: dict[str, Any]) -> None:
    depth = 1 if cls is layers.ACT else 2
    layer = cls(5, depth, return_sequences=True, seed=0, **options)
    plain = cls(5, depth, return_sequences=True, seed=1)
    x = normal((4, 6, 3), 0)
    layer(x)
    plain(x)
    plain.load_canonical(layer.numpy_params())
    want = np.asarray(plain(x))
    np.testing.assert_array_equal(np.asarray(layer(x)), want)
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), want)
    assert not np.array_equal(np.asarray(layer(x, training=True)), want)


def test_in_training_the_masks_have_the_shapes_the_rate_and_the_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    batch, time, inputs, units = BIG
    layer = layers.LSTM(units, 3, dropout=P, recurrent_dropout=0.5, seed=0)
    x = normal((batch, time, inputs), 1)
    layer(x)
    spy = spy_on(monkeypatch, "tensorflow", "lstm")
    layer(x, training=True)
    layer(x, training=True)
    first, second = spy.calls
    assert len(first["dropout_mask"]) == 2
    assert len(first["recurrent_mask"]) == 3
    masks = [*first["dropout_mask"], *second["dropout_mask"]]
    assert_dropout_masks(masks, (batch, time, units), P, "dropout masks of two calls")
    recurrent = [*first["recurrent_mask"], *second["recurrent_mask"]]
    assert_dropout_masks(recurrent, (batch, units), 0.5, "recurrent masks of two calls")
    layer(x)
    assert (spy.calls[2]["dropout_mask"], spy.calls[2]["recurrent_mask"]) == (None, None)


def test_the_seed_repeats_the_draws_and_the_backward_layer_of_bidirectional_draws_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    x = normal((4, 6, 3), 2)
    runs = []
    for _ in range(2):
        layer = layers.GRU(5, 2, dropout=P, recurrent_dropout=P, seed=3, return_sequences=True)
        runs.append(np.asarray(layer(x, training=True)))
    np.testing.assert_array_equal(runs[0], runs[1])
    bi = keras.layers.Bidirectional(layers.GRU(5, 2, dropout=P, recurrent_dropout=P, seed=3, return_sequences=True))
    bi(x)
    spy = spy_on(monkeypatch, "tensorflow", "gru")
    bi(x, training=True)
    forward, backward = spy.calls
    for key in ("dropout_mask", "recurrent_mask"):
        assert not np.array_equal(np.asarray(forward[key][0]), np.asarray(backward[key][0])), key


def test_the_options_survive_the_config() -> None:
    layer = layers.SkipGRU(5, 2, dropout=P, recurrent_dropout=0.1)
    config = layer.get_config()
    assert (config["dropout"], config["recurrent_dropout"]) == (P, 0.1)
    again = layers.SkipGRU.from_config(config)
    assert (again.dropout, again.recurrent_dropout) == (P, 0.1)


@pytest.mark.parametrize("bad", BAD_PROBABILITIES)
@pytest.mark.parametrize("argument", ["dropout", "recurrent_dropout"])
def test_a_bad_probability_is_refused_naming_the_layer_and_the_argument(argument: str, bad: Any) -> None:
    with pytest.raises(OptionError, match=rf"SkipGRU: argument {argument}: expected a probability"):
        layers.SkipGRU(4, 2, **{argument: bad})


def test_a_layer_takes_only_the_dropout_its_op_has_and_warns_of_dropout_without_a_boundary() -> None:
    with pytest.raises(ValueError, match="recurrent_dropout"):  # Keras' refusal of a keyword no layer takes
        layers.QRNN(4, 2, recurrent_dropout=P)
    with pytest.warns(UserWarning, match="LSTM: dropout=0.3 acts between stacked layers"):
        layers.LSTM(4, dropout=P)


def test_a_bidirectional_two_layer_skip_gru_with_dropout_trains() -> None:
    """The issue's acceptance test: the loss of a seeded synthetic task clearly falls in a few dozen updates."""
    keras.utils.set_random_seed(0)
    x = normal((32, 12, 3), 7)
    y = np.cumsum(x[..., :1], axis=1) / 4.0  # a running sum: needs the recurrence
    rnn = layers.SkipGRU(16, 2, dropout=0.2, recurrent_dropout=0.2, return_sequences=True, seed=1)
    model = keras.Sequential([keras.Input((12, 3)), keras.layers.Bidirectional(rnn), keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(2e-2), "mse")
    before = float(model.evaluate(x, y, verbose=0))
    model.fit(x, y, batch_size=32, epochs=40, verbose=0, shuffle=False)
    after = float(model.evaluate(x, y, verbose=0))
    assert after < 0.5 * before, f"evaluation loss {before:.4f} -> {after:.4f}"


def test_the_getting_started_dropout_example_runs_drawing_in_training_and_not_in_evaluation() -> None:
    namespace = run_section_example(DOCS, "### Dropout")
    bi, x, train_out, eval_out = (namespace[k] for k in ("bi", "x", "train_out", "eval_out"))
    assert tuple(train_out.shape) == (4, 10, 16)
    assert not np.array_equal(np.asarray(train_out), np.asarray(eval_out))
    np.testing.assert_array_equal(np.asarray(bi(x)), np.asarray(eval_out))
