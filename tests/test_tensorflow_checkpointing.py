"""checkpoint_every on the TensorFlow backend: gradients reach variables, eagerly and in tf.function."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

import rnnspec  # noqa: E402  (after the skip: the backend imports tensorflow)
from rnnspec.conformance.tolerances import tolerance  # noqa: E402

TF = rnnspec.get_backend("tensorflow")
BATCH, TIME, INPUT, HIDDEN = 3, 17, 4, 6


def gradients(op: str, every: int | None, *, graph: bool) -> list[np.ndarray]:
    """Gradients of <outputs, w> for tf.Variable params (as Keras holds them) and tensor lengths."""
    layers = 1 if op == "act" else 2
    arrays = rnnspec.init_params(op, input_size=INPUT, hidden_size=HIDDEN, num_layers=layers, seed=0, dtype="float64")
    params = [{k: tf.Variable(v) for k, v in layer.items()} for layer in arrays]
    rng = np.random.default_rng(1)
    x = tf.constant(rng.standard_normal((BATCH, TIME, INPUT)))
    weights = tf.constant(rng.standard_normal((BATCH, TIME, HIDDEN)))
    lengths = tf.constant([TIME, 5, 0], dtype=tf.int32)
    variables = [v for layer in params for v in layer.values()]

    def step(x: tf.Tensor) -> list[Any]:
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = getattr(TF, op)(x, params, lengths=lengths, reverse=True, checkpoint_every=every).outputs
            loss = tf.reduce_sum(out * weights)
        return [out, *tape.gradient(loss, [x, *variables], unconnected_gradients=tf.UnconnectedGradients.ZERO)]

    run = tf.function(step) if graph else step
    return [np.asarray(g) for g in run(x)]


@pytest.mark.parametrize("graph", [False, True], ids=["eager", "tf.function"])
@pytest.mark.parametrize("op", ["lstm", "skip_rnn", "qrnn"])
def test_checkpointed_gradients_reach_variable_params_as_without_checkpointing(op: str, graph: bool) -> None:
    tol = tolerance("float64", steps=2 * TIME, kind="gradient")
    for got, want in zip(gradients(op, 4, graph=graph), gradients(op, None, graph=graph), strict=True):
        np.testing.assert_allclose(got, want, rtol=tol.rtol, atol=tol.atol)
