"""Shared checks of the benchmark suite's framework adapters, for the torch/jax and the TensorFlow test sessions.

Nothing here imports a framework at import time: the adapter is loaded by the check.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import rnnspec


def assert_timed_updates_train(backend: str) -> None:
    """Each timed update of ``backend``'s adapter is an Adam step: on one batch, the loss it returns falls.

    For rnnspec's layer, the framework's own and a Python-loop port through ``adam``; the forward
    pass gives the readout's shape.
    """
    from rnnspec.bench import ports
    from rnnspec.bench.framework import Net, load, task_loss

    fw = load(backend)
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
