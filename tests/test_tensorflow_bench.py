"""The benchmark suite's TensorFlow adapter: its timed updates train, its Python-loop ports compute the spec.

Run by ``nox -s tests-tensorflow`` (TensorFlow, without torch); timings are not checked.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
pytest.importorskip("keras")

import rnnspec  # noqa: E402  (after the skips: the adapter imports tensorflow)
from rnnspec.bench import ports  # noqa: E402
from rnnspec.bench.framework import Net, load, task_loss  # noqa: E402


def test_the_timed_updates_train_the_model() -> None:
    """Each timed update is an Adam step: on one batch, the loss it returns falls (rnnspec's Keras layer,
    Keras' own, and a Python-loop port through ``adam``); the forward pass gives the readout."""
    fw = load("tensorflow")
    net = Net("indrnn", 3, 4, 2, native="RNN", activation="relu", learning_rate=0.05)
    rng = np.random.default_rng(0)
    x, y = fw.tensor(rng.standard_normal((4, 5, 3)).astype(np.float32)), fw.tensor(np.ones((4, 1), np.float32))
    host = rnnspec.init_params("indrnn", input_size=3, hidden_size=4, num_layers=2, seed=0)
    head = {"w": np.ones((1, 4), np.float32), "b": np.zeros(1, np.float32)}

    def loss(p: Any) -> Any:
        out = ports.indrnn(fw, x, p["rnn"])[:, -1]
        return task_loss(fw, fw.linear(out, p["head"]["w"], p["head"]["b"]), y, "mse")

    updates = {
        "rnnspec": fw.model(net, x, y, training=True, host=host),
        "native": fw.model(net, x, y, training=True),
        "port": fw.adam(loss, {"rnn": fw.params(host), "head": fw.params([head])[0]}, net.learning_rate),
    }
    for name, update in updates.items():
        losses = [float(update()) for _ in range(4)]
        assert losses[-1] < losses[0], (name, losses)
    forward = fw.model(net, x, y, training=False, host=host)
    assert tuple(np.asarray(forward()).shape) == (4, 1)


@pytest.mark.parametrize("window", [1, 2])
def test_the_salesforce_qrnn_loop_and_the_rnn_act_port_compute_the_spec(window: int) -> None:
    fw = load("tensorflow")
    reference = rnnspec.get_backend("numpy")
    x_host = np.random.default_rng(0).standard_normal((3, 7, 5)).astype(np.float32)
    stack = rnnspec.init_params("qrnn", input_size=5, hidden_size=4, num_layers=2, seed=1, window=window)
    got = ports.qrnn(fw, fw.tensor(x_host), fw.params(stack))
    want = reference.qrnn(x_host, stack, mode="fo").outputs
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5)
    host = rnnspec.init_params("act", input_size=5, hidden_size=4, seed=1, cell="rnn")
    got = ports.act(fw, fw.tensor(x_host), fw.params(host), 0.01, 100, cell="rnn")
    np.testing.assert_allclose(np.asarray(got), reference.act(x_host, host, cell="rnn").outputs, rtol=1e-4, atol=1e-5)
