"""``from_tf1_phased_lstm`` reads a TF1 checkpoint's path as it reads the checkpoint's variables.

The checkpoint is written as TF1 writes one, by a ``tf.compat.v1.train.Saver`` in a graph, with a
``PhasedLSTMCell``'s variables under ``rnn/phased_lstm_cell/`` and an optimizer's slots beside them.
TensorFlow's ``mod``, which TF1's cell applies to ``time - phase``, is the floor modulo the spec's
``phi`` is written with, also for times before the phase.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import assert_trees_equal
from helpers_tf1 import SCOPE, tf1_variables

tf = pytest.importorskip("tensorflow")

from rnnspec.convert import from_tf1_phased_lstm  # noqa: E402
from rnnspec.errors import ParameterError  # noqa: E402


def write_tf1_checkpoint(variables: dict[str, np.ndarray], directory: Path) -> str:
    """Save ``variables`` under their names with TF1's Saver, in a graph; the checkpoint's path prefix."""
    with tf.Graph().as_default():
        created = {name: tf.compat.v1.Variable(value, name=name.replace("/", "_")) for name, value in variables.items()}
        saver = tf.compat.v1.train.Saver(var_list=created)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            prefix: str = saver.save(session, str(directory / "model.ckpt"), global_step=3)
    return prefix


def test_a_checkpoint_path_or_its_directory_converts_as_its_variables_do(tmp_path: Path) -> None:
    variables = tf1_variables(np.random.default_rng(0), 2, 4, dtype="float32")
    slots = {f"{name}/Adam": np.ones_like(value) for name, value in variables.items()}
    path = write_tf1_checkpoint(variables | slots, tmp_path)
    reader = tf.train.load_checkpoint(path)
    read = {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}
    assert sorted(read) == sorted(variables | slots)
    want = from_tf1_phased_lstm(variables, prefix=SCOPE)
    assert_trees_equal(from_tf1_phased_lstm(read, prefix=SCOPE), want, "from the reader's arrays")
    assert_trees_equal(from_tf1_phased_lstm(path, prefix=SCOPE), want, "from the path")
    assert_trees_equal(from_tf1_phased_lstm(tmp_path, prefix=SCOPE), want, "from the directory")


def test_a_path_that_holds_no_checkpoint_is_refused_naming_the_argument(tmp_path: Path) -> None:
    with pytest.raises(ParameterError) as err:
        from_tf1_phased_lstm(tmp_path / "missing", prefix=SCOPE)
    message = str(err.value)
    assert message.startswith("from_tf1_phased_lstm: argument variables: expected a TF1 checkpoint"), message
    assert "missing" in message


def test_tensorflows_mod_of_time_minus_phase_is_the_floor_modulo_also_before_the_phase() -> None:
    rng = np.random.default_rng(1)
    shifted = rng.uniform(-20.0, 20.0, 64)
    period = rng.uniform(0.5, 4.0, 64)
    x = tf.constant(shifted)
    tf1_mod = tf.stop_gradient(tf.math.mod(x, period) - x) + x  # the value TF1's cell's _mod computes
    np.testing.assert_allclose(tf1_mod.numpy(), np.mod(shifted, period), rtol=0, atol=1e-13)
    np.testing.assert_array_equal(tf.math.mod(x, period).numpy(), np.mod(shifted, period))
    assert np.all(tf1_mod.numpy()[shifted < 0] >= 0.0)
