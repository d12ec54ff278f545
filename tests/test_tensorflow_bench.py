"""The benchmark suite's TensorFlow adapter: its timed updates train, its Python-loop ports compute the spec.

Run by ``nox -s tests-tensorflow`` (TensorFlow, without torch); timings are not checked.
"""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
pytest.importorskip("keras")

from helpers_bench import assert_timed_updates_train  # noqa: E402

import rnnspec  # noqa: E402  (after the skips: the adapter imports tensorflow)
from rnnspec.bench import ports  # noqa: E402
from rnnspec.bench.framework import load  # noqa: E402


def test_the_timed_updates_train_the_model() -> None:
    """Each timed update is an Adam step: on one batch, the loss it returns falls (rnnspec's Keras layer,
    Keras' own, and a Python-loop port through ``adam``); the forward pass gives the readout."""
    assert_timed_updates_train("tensorflow")


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
