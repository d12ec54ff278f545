"""The Flax NNX layers' ``dropout`` (between stacked layers) and ``recurrent_dropout`` (one mask per layer over time).

With ``deterministic=True`` (``model.eval()``) a layer with dropout is bitwise the layer without; with
``deterministic=False`` (the default, ``model.train()``) the masks the layer hands the op (captured by a spy
on the backend's op) have the record's shapes, entries 0 or exactly 1 / (1 - p) at the rate p (a 6-sigma
bound), one per boundary and one per layer, drawn afresh at every call, from the call's ``rngs`` where given
(the same seed, the same masks) and advancing under ``nnx.jit``; a bad p is refused naming the layer and the
argument; a bidirectional (``nnx.Bidirectional``), dropped-out two-layer SkipGRU trains.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("jax")
nnx = pytest.importorskip("flax.nnx")
optax = pytest.importorskip("optax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from helpers_dropout import assert_dropout_masks, spy_on  # noqa: E402
from helpers_readme import run_section_example  # noqa: E402

from rnnspec.backends.jax import nnx as layers  # noqa: E402
from rnnspec.errors import OptionError, UnknownArgumentError  # noqa: E402

DOCS = Path(__file__).resolve().parents[1] / "docs" / "getting-started" / "jax.md"
P = 0.3
BAD_PROBABILITIES = [-0.1, 1.0, math.nan, "0.1", True, None]
#: Large enough for the 6-sigma bound on the rate to be tight: batch, time, input size, hidden size.
BIG = (40, 30, 4, 32)


def normal(shape: tuple[int, ...], seed: int) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


@pytest.mark.parametrize(
    ("cls", "options"),
    [
        (layers.LSTM, {"dropout": P, "recurrent_dropout": P}),
        (layers.SkipGRU, {"dropout": P, "recurrent_dropout": P}),
        (layers.QRNN, {"dropout": P, "zoneout": 0.0}),
        (layers.ACT, {"recurrent_dropout": P}),
    ],
)
def test_deterministic_a_layer_is_bitwise_the_layer_without_dropout(cls: Any, options: dict[str, Any]) -> None:
    depth = 1 if cls is layers.ACT else 2
    layer = cls(3, 5, depth, rngs=nnx.Rngs(0), **options)
    plain = cls(3, 5, depth, rngs=nnx.Rngs(1))
    plain.load_canonical(layer.canonical_params())
    x = normal((4, 6, 3), 0)
    want = np.asarray(plain(x).outputs)
    assert not np.array_equal(np.asarray(layer(x).outputs), want)  # the default draws
    np.testing.assert_array_equal(np.asarray(layer(x, deterministic=True).outputs), want)
    layer.eval()
    np.testing.assert_array_equal(np.asarray(layer(x).outputs), want)


def test_in_training_the_masks_have_the_shapes_the_rate_and_the_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    batch, time, inputs, hidden = BIG
    layer = layers.LSTM(inputs, hidden, 3, dropout=P, recurrent_dropout=0.5, rngs=nnx.Rngs(0))
    assert layer.deterministic is False, "as nnx.Dropout, the layer starts in training mode"
    spy = spy_on(monkeypatch, "jax", "lstm")
    x = normal((batch, time, inputs), 1)
    layer(x)
    layer(x)
    first, second = spy.calls
    assert len(first["dropout_mask"]) == 2
    assert len(first["recurrent_mask"]) == 3
    masks = [*first["dropout_mask"], *second["dropout_mask"]]
    assert_dropout_masks(masks, (batch, time, hidden), P, "dropout masks of two calls")
    recurrent = [*first["recurrent_mask"], *second["recurrent_mask"]]
    assert_dropout_masks(recurrent, (batch, hidden), 0.5, "recurrent masks of two calls")
    layer.eval()
    layer(x)
    assert (spy.calls[2]["dropout_mask"], spy.calls[2]["recurrent_mask"]) == (None, None)


def test_time_major_layers_draw_batch_major_masks(monkeypatch: pytest.MonkeyPatch) -> None:
    layer = layers.GRU(3, 5, 2, batch_first=False, dropout=P, recurrent_dropout=P, rngs=nnx.Rngs(0))
    spy = spy_on(monkeypatch, "jax", "gru")
    assert layer(normal((7, 4, 3), 2)).outputs.shape == (7, 4, 5)
    assert spy.calls[0]["dropout_mask"][0].shape == (4, 7, 5)
    assert spy.calls[0]["recurrent_mask"][0].shape == (4, 5)


def test_draws_follow_the_rngs_seeds_and_change_under_jit() -> None:
    layer = layers.SkipGRU(3, 5, 2, dropout=P, recurrent_dropout=P, rngs=nnx.Rngs(0))
    x = normal((4, 6, 3), 3)
    runs = {seed: layer(x, rngs=nnx.Rngs(dropout=seed)) for seed in (1, 2)}  # Flax's convention: outputs
    np.testing.assert_array_equal(np.asarray(runs[1]), np.asarray(layer(x, rngs=nnx.Rngs(dropout=1))))
    assert not np.array_equal(np.asarray(runs[1]), np.asarray(runs[2]))
    twin = layers.SkipGRU(3, 5, 2, dropout=P, recurrent_dropout=P, rngs=nnx.Rngs(0))  # the same stream
    np.testing.assert_array_equal(np.asarray(layer(x).outputs), np.asarray(twin(x).outputs))
    jitted = nnx.jit(lambda m, x: m(x).outputs)
    assert not np.array_equal(np.asarray(jitted(layer, x)), np.asarray(jitted(layer, x)))


@pytest.mark.parametrize("bad", BAD_PROBABILITIES)
@pytest.mark.parametrize("argument", ["dropout", "recurrent_dropout"])
def test_a_bad_probability_is_refused_naming_the_layer_and_the_argument(argument: str, bad: Any) -> None:
    with pytest.raises(OptionError, match=rf"SkipGRU: argument {argument}: expected a probability"):
        layers.SkipGRU(3, 4, 2, rngs=nnx.Rngs(0), **{argument: bad})


def test_a_layer_takes_only_the_dropout_its_op_has_and_warns_of_dropout_without_a_boundary() -> None:
    with pytest.raises(UnknownArgumentError, match="recurrent_dropout"):
        layers.QRNN(3, 4, 2, recurrent_dropout=P, rngs=nnx.Rngs(0))
    with pytest.warns(UserWarning, match="GRU: dropout=0.3 acts between stacked layers"):
        layers.GRU(3, 4, dropout=P, rngs=nnx.Rngs(0))
    with pytest.raises(OptionError, match="deterministic"):
        layers.GRU(3, 4, 2, dropout=P, rngs=nnx.Rngs(0))(normal((2, 3, 3), 4), deterministic="yes")


def test_a_bidirectional_two_layer_skip_gru_with_dropout_trains() -> None:
    """The issue's acceptance test: the loss of a seeded synthetic task clearly falls in a few dozen updates."""
    x = normal((32, 12, 3), 7)
    y = jnp.cumsum(x[..., :1], axis=1) / 4.0  # a running sum: needs the recurrence
    options = {"num_layers": 2, "dropout": 0.2, "recurrent_dropout": 0.2}

    class Model(nnx.Module):  # type: ignore[misc,unused-ignore]
        def __init__(self) -> None:
            self.rnn = nnx.Bidirectional(
                layers.SkipGRU(3, 16, **options, rngs=nnx.Rngs(params=0, dropout=1)),
                layers.SkipGRU(3, 16, **options, rngs=nnx.Rngs(params=2, dropout=3)),
            )
            self.head = nnx.Linear(32, 1, rngs=nnx.Rngs(4))

        def __call__(self, x: jax.Array) -> jax.Array:
            return self.head(self.rnn(x))

    model = Model()
    optimizer = nnx.Optimizer(model, optax.adam(2e-2), wrt=nnx.Param)

    def loss_fn(model: Model) -> jax.Array:
        return jnp.mean((model(x) - y) ** 2)

    @nnx.jit
    def step(model: Model, optimizer: Any) -> None:
        grads = nnx.grad(loss_fn)(model)
        optimizer.update(model, grads)

    model.eval()
    before = float(loss_fn(model))
    model.train()
    for _ in range(40):
        step(model, optimizer)
    model.eval()
    after = float(loss_fn(model))
    assert after < 0.5 * before, f"evaluation loss {before:.4f} -> {after:.4f}"


def test_the_getting_started_dropout_example_runs_drawing_in_training_and_not_in_evaluation() -> None:
    namespace = run_section_example(DOCS, "### Dropout")
    bi, x, train_out, eval_out = (namespace[k] for k in ("bi", "x", "train_out", "eval_out"))
    assert np.shape(train_out) == (4, 10, 16)
    assert not np.array_equal(np.asarray(train_out), np.asarray(eval_out))
    np.testing.assert_array_equal(np.asarray(bi(x)), np.asarray(eval_out))
