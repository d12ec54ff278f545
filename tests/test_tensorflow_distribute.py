"""A Keras SkipGRU model under ``tf.distribute.MirroredStrategy`` over two logical CPU devices.

One training step on two replicas, each given half of the batch, gives the
gradients of one replica on the whole batch: through a custom loop
(``strategy.run`` and a summed all-reduce) and through ``model.fit`` (one SGD
step, whose weight change is the learning rate times the gradient). The
budget loss that the layer attaches with ``add_loss`` is part of both.

Logical devices can only be configured before TensorFlow initialises its
runtime, so the model runs in a fresh interpreter and hands its arrays back in
an ``.npz`` file.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("keras")

from rnnspec.conformance.tolerances import tolerance

BATCH, TIME, FEATURES, UNITS, LAYERS = 8, 7, 3, 6, 2
LEARNING_RATE = 1.0

SCRIPT = textwrap.dedent(
    """
    import sys

    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    import keras

    from rnnspec.backends.tensorflow.keras import SkipGRU

    BATCH, TIME, FEATURES, UNITS, LAYERS, LEARNING_RATE = {sizes}
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, TIME, FEATURES)).astype(np.float32)
    lengths = np.array([7, 3, 5, 7, 1, 6, 2, 4])
    x[np.arange(TIME)[None, :] >= lengths[:, None]] = 0.0  # right padding, read back by Masking
    y = rng.standard_normal((BATCH, 1)).astype(np.float32)


    def build():
        return keras.Sequential(
            [
                keras.Input((TIME, FEATURES)),
                keras.layers.Masking(),
                SkipGRU(UNITS, num_layers=LAYERS, budget_loss_weight=0.05, seed=0),
                keras.layers.Dense(1, kernel_initializer=keras.initializers.GlorotUniform(seed=1)),
            ]
        )


    single = build()
    weights = single.get_weights()
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(single(x, training=True) - y)) + tf.add_n(single.losses)
    single_grads = [g.numpy() for g in tape.gradient(loss, single.trainable_variables)]

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        mirrored = build()
    mirrored.set_weights(weights)
    batches = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH))


    @tf.function
    def step(xb, yb):
        def replica(xr, yr):
            with tf.GradientTape() as tape:
                per_example = tf.reduce_mean(tf.square(mirrored(xr, training=True) - yr), axis=-1)
                loss = tf.nn.compute_average_loss(per_example, global_batch_size=BATCH)
                loss += tf.nn.scale_regularization_loss(tf.add_n(mirrored.losses))
            return tape.gradient(loss, mirrored.trainable_variables), tf.shape(xr)[0]

        grads, rows = strategy.run(replica, args=(xb, yb))
        summed = [strategy.reduce(tf.distribute.ReduceOp.SUM, g, axis=None) for g in grads]
        return summed, strategy.experimental_local_results(rows)


    mirrored_grads, rows = step(*next(iter(batches)))

    with strategy.scope():
        fitted = build()
        fitted.compile(keras.optimizers.SGD(LEARNING_RATE), "mse")
    fitted.set_weights(weights)
    fitted.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    fit_grads = [(w0 - w1) / LEARNING_RATE for w0, w1 in zip(weights, fitted.get_weights())]

    np.savez(
        sys.argv[1],
        replicas=strategy.num_replicas_in_sync,
        rows=np.array([int(r) for r in rows]),
        **{{f"single_{{k}}": g for k, g in enumerate(single_grads)}},
        **{{f"mirrored_{{k}}": g.numpy() for k, g in enumerate(mirrored_grads)}},
        **{{f"fit_{{k}}": g for k, g in enumerate(fit_grads)}},
        names=np.array([v.path for v in single.trainable_variables]),
    )
    """
).format(sizes=(BATCH, TIME, FEATURES, UNITS, LAYERS, LEARNING_RATE))


@pytest.fixture(scope="module")
def gradients(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    out = tmp_path_factory.mktemp("distribute") / "gradients.npz"
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(out)], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-4000:]
    with np.load(out) as arrays:
        return {key: np.array(arrays[key]) for key in arrays.files}


def _compare(gradients: dict[str, np.ndarray], prefix: str) -> None:
    # The deepest path: every time step of every layer, forward and back.
    tol = tolerance("float32", steps=TIME * LAYERS, kind="gradient")
    names = list(gradients["names"])
    assert any("skip_gru/layer_1/b_gate" in str(n) for n in names)
    for k, name in enumerate(names):
        np.testing.assert_allclose(
            gradients[f"{prefix}_{k}"], gradients[f"single_{k}"], rtol=tol.rtol, atol=tol.atol, err_msg=str(name)
        )


def test_two_replicas_each_took_half_of_the_batch(gradients: dict[str, np.ndarray]) -> None:
    assert int(gradients["replicas"]) == 2
    assert list(gradients["rows"]) == [BATCH // 2, BATCH // 2]


def test_a_mirrored_custom_step_gives_the_single_replica_gradients(gradients: dict[str, np.ndarray]) -> None:
    _compare(gradients, "mirrored")


def test_a_mirrored_fit_step_changes_the_weights_by_the_single_replica_gradients(
    gradients: dict[str, np.ndarray],
) -> None:
    _compare(gradients, "fit")
