"""The Keras DeepIndRNN: the authors' residual, batch-normalised stacks train, equal their hand-written
composition, normalise per step as a hand computation does, keep padding out of the statistics, use moving
statistics at inference, and ``no_decay_variables`` leaves exactly the recurrent weights undecayed."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from rnnspec.backends.tensorflow.keras import (  # noqa: E402
    DeepIndRNN,
    IndRNN,
    PerStepBatchNormalization,
    exclude_from_weight_decay,
    no_decay_variables,
)
from rnnspec.conformance.assertions import assert_tree_close  # noqa: E402
from rnnspec.conformance.tolerances import tolerance  # noqa: E402
from rnnspec.errors import OptionError, ShapeError  # noqa: E402

H = 6


def _hand_recurrence(z: np.ndarray, u: np.ndarray) -> np.ndarray:
    """h_t = relu(z_t + u * h_{t-1}) from h_0 = 0, step by step (float64)."""
    h = np.zeros_like(z[:, 0])
    out = []
    for t in range(z.shape[1]):
        h = np.maximum(z[:, t] + u * h, 0.0)
        out.append(h)
    return np.stack(out, axis=1)


def _np(a: Any) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def test_a_six_layer_residual_indrnn_with_batch_normalisation_trains() -> None:
    keras.utils.set_random_seed(0)
    rnn = DeepIndRNN(16, 6, residual=True, batch_norm="after", seq_len=12, seed=0)
    readout = keras.layers.Dense(1)
    x = tf.random.uniform((64, 12, 2), seed=1)
    target = tf.reduce_sum(x[..., 0] * x[..., 1], 1, keepdims=True)  # a sum of products over the sequence
    readout(rnn(x))
    weights = rnn.trainable_weights + readout.trainable_weights
    optimizer = keras.optimizers.Adam(1e-2)

    @tf.function
    def step() -> Any:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((readout(rnn(x, training=True)) - target) ** 2)
        optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights, strict=True))
        return loss

    losses = [float(step()) for _ in range(40)]
    assert losses[-1] < 0.1 * losses[0], f"loss {losses[0]:.3f} -> {losses[-1]:.3f}"


def test_a_residual_stack_equals_its_hand_written_composition_of_linear_batch_norm_recurrence_and_shortcut() -> None:
    layer = DeepIndRNN(H, 3, residual=True, batch_norm="before", return_sequences=True, seed=1)
    x = np.random.default_rng(2).normal(size=(5, 7, 3))
    result = layer.run(x.astype(np.float32), training=True)
    sums: list[np.ndarray] = []
    y = x
    for i, cell in enumerate(layer.cells):
        p = {k: _np(v) for k, v in cell.canonical_params()[0].items()}
        s = y @ p["w_ih"].T + p["b_ih"] + (sums[0] if i == 2 else 0)  # the shortcut of layers 0 -> 2
        sums.append(s)
        norm = layer.norms[i]
        z = (s - s.mean((0, 1))) / np.sqrt(s.var((0, 1)) + norm.epsilon) * _np(norm.gamma) + _np(norm.beta)
        y = _hand_recurrence(z, p["u"])
    tol = tolerance("float32", steps=3 * 7)
    assert_tree_close(_np(result.outputs), y, tol, context="outputs")
    assert_tree_close(_np(result.state[2]["h"]), y[:, -1], tol, context="final state")


def test_a_stack_without_batch_norm_or_shortcut_equals_its_indrnn_layers_called_in_turn() -> None:
    layer = DeepIndRNN(H, 3, return_sequences=True, seed=3)
    x = np.random.default_rng(4).normal(size=(4, 6, 3)).astype(np.float32)
    mask = np.arange(6)[None, :] < np.array([6, 0, 3, 5])[:, None]
    ours = layer(x, mask=mask)
    y = x
    for cell in layer.cells:
        cell.return_sequences = True
        y = cell(y, mask=mask)
    assert isinstance(layer.cells[0], IndRNN)
    assert_tree_close(_np(ours), _np(y), tolerance("float32", steps=18), context="outputs")


def test_per_step_statistics_equal_a_hand_computation_over_each_steps_valid_rows() -> None:
    rng = np.random.default_rng(5)
    norm = PerStepBatchNormalization(8)
    norm.build((None, None, H))
    norm.gamma.assign(rng.uniform(0.5, 1.5, H))
    norm.beta.assign(rng.uniform(-1, 1, H))
    x = rng.normal(size=(5, 6, H))
    lengths = np.array([6, 4, 4, 1, 0])
    mask = np.arange(6)[None, :] < lengths[:, None]
    y = _np(norm(x.astype(np.float32), training=True, mask=mask))
    w, b = _np(norm.gamma), _np(norm.beta)
    tol = tolerance("float32", steps=1)
    for t in range(6):
        rows = np.flatnonzero(lengths > t)
        mean, var = x[rows, t].mean(0), x[rows, t].var(0)
        assert_tree_close(y[rows, t], (x[rows, t] - mean) / np.sqrt(var + 1e-3) * w + b, tol, context=f"t={t}")
        assert not y[lengths <= t, t].any(), f"padded rows at step {t} are not zero"
        # BatchNormalization's update (momentum 0.99, biased variance) at each step with a valid row.
        assert_tree_close(_np(norm.moving_mean)[t], 0.01 * mean, tol, context=f"moving_mean[{t}]")
        assert_tree_close(_np(norm.moving_variance)[t], 0.99 + 0.01 * var, tol, context=f"moving_variance[{t}]")
    assert not _np(norm.moving_mean)[6:].any(), "rows past the sequence moved"


@pytest.mark.parametrize("statistics", ["batch_time", "per_step"])
@pytest.mark.parametrize("where", ["before", "after"])
def test_padded_steps_enter_no_statistic_and_come_out_as_zeros(where: str, statistics: str) -> None:
    max_length = 6 if statistics == "per_step" else None

    def build() -> Any:
        return DeepIndRNN(
            H,
            3,
            residual=True,
            batch_norm=where,
            bn_statistics=statistics,
            max_length=max_length,
            return_sequences=True,
            seed=8,
        )

    model, twin = build(), build()
    rng = np.random.default_rng(9)
    x = rng.normal(size=(4, 6, 3)).astype(np.float32)
    mask = np.arange(6)[None, :] < np.array([6, 2, 0, 4])[:, None]
    noisy = np.where(mask[..., None], x, 1e3 * rng.normal(size=x.shape)).astype(np.float32)
    first, second = model(x, mask=mask, training=True), twin(noisy, mask=mask, training=True)
    np.testing.assert_array_equal(np.asarray(second), np.asarray(first))
    assert not np.asarray(second)[~mask].any()
    for a, b in zip(model.non_trainable_weights, twin.non_trainable_weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=f"{a.path} saw the padding")


@pytest.mark.parametrize("statistics", ["batch_time", "per_step"])
def test_inference_uses_the_moving_statistics_so_each_row_is_independent_of_the_others(statistics: str) -> None:
    max_length = 5 if statistics == "per_step" else None
    layer = DeepIndRNN(
        H, 6, residual=True, batch_norm="before", bn_statistics=statistics, max_length=max_length, seed=11
    )
    x = np.random.default_rng(12).normal(size=(8, 5, 3)).astype(np.float32)
    layer(x, training=True)  # one training call: the moving statistics move
    moving = [np.asarray(v) for v in layer.non_trainable_weights]
    alone, together = layer(x[:1], training=False), layer(x, training=False)
    assert_tree_close(_np(alone), _np(together[:1]), tolerance("float32", steps=30), context="one row alone")
    for v, before in zip(layer.non_trainable_weights, moving, strict=True):
        np.testing.assert_array_equal(np.asarray(v), before, err_msg=f"inference moved {v.path}")
    assert not np.allclose(np.asarray(layer(x[:1], training=True)), np.asarray(alone)), "training kept moving stats"


def test_a_sequence_longer_than_max_length_is_refused_naming_max_length() -> None:
    layer = DeepIndRNN(H, 2, batch_norm="after", bn_statistics="per_step", max_length=4, seed=0)
    with pytest.raises(ShapeError, match="max_length") as err:
        layer(np.zeros((2, 5, 3), np.float32))
    assert err.value.argument == "x"


def _paths(variables: list[Any]) -> set[str]:
    return {v.path.split("/", 1)[1] for v in variables}


def test_no_decay_variables_are_exactly_the_recurrent_weights_when_biases_and_norms_decay() -> None:
    layer = DeepIndRNN(H, 4, residual=True, batch_norm="after", seed=0)
    layer(np.zeros((2, 3, 3), np.float32))
    assert _paths(no_decay_variables(layer, biases=True, norms=True)) == {f"cell_{i}/layer_0/u" for i in range(4)}


def test_no_decay_variables_follow_the_authors_by_default_leaving_biases_and_norms_undecayed_too() -> None:
    model = keras.Sequential(
        [
            keras.Input((None, 3)),
            IndRNN(H, num_layers=2, return_sequences=True, name="rnn"),
            keras.layers.LayerNormalization(name="norm"),
        ]
    )
    names = {v.path.split("/", 1)[1] for v in no_decay_variables(model)}  # below the model's own name
    assert names == {
        "rnn/layer_0/u",
        "rnn/layer_1/u",
        "rnn/layer_0/b_ih",
        "rnn/layer_1/b_ih",
        "norm/gamma",
        "norm/beta",
    }


def test_adamw_excluding_them_decays_the_input_weights_and_leaves_u_alone() -> None:
    layer = IndRNN(H, seed=0)
    x = np.ones((2, 3, 3), np.float32)
    layer(x)
    before = {k: _np(v) for k, v in layer.canonical_params()[0].items()}
    optimizer = keras.optimizers.AdamW(0.1, weight_decay=0.5)
    exclude_from_weight_decay(optimizer, layer)
    with tf.GradientTape() as tape:
        loss = 0.0 * tf.reduce_sum(layer(x))  # zero gradients: only the decay moves
    optimizer.apply_gradients(zip(tape.gradient(loss, layer.trainable_weights), layer.trainable_weights, strict=True))
    after = {k: _np(v) for k, v in layer.canonical_params()[0].items()}
    assert_tree_close(after["w_ih"], before["w_ih"] * (1 - 0.1 * 0.5), tolerance("float32", steps=1), context="w_ih")
    np.testing.assert_array_equal(after["u"], before["u"])
    np.testing.assert_array_equal(after["b_ih"], before["b_ih"])


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("num_layers", 0),
        ("residual", 1),
        ("block_layers", 0),
        ("batch_norm", "middle"),
        ("bn_statistics", "per_time"),
        ("max_length", 10),  # without per-step statistics
        ("dropout", 1.0),
        ("activation", "sigmoid"),
        ("return_sequences", "yes"),
    ],
)
def test_a_bad_option_is_refused_naming_the_layer_and_the_argument(argument: str, value: Any) -> None:
    with pytest.raises(OptionError) as err:
        DeepIndRNN(H, **{"num_layers": 2, argument: value})
    assert err.value.argument == argument
    assert "DeepIndRNN" in str(err.value)
