"""The paper examples' TensorFlow trainer (examples/trainers/tensorflow.py): checkpoint state, schedule, half_mse.

As test_examples_recipes.py checks the torch and JAX trainers: a trainer given
another's state goes on to the same losses and weights, the step size decays
at the stated update, ``half_mse`` is half the MSE; and an example stopped and
resumed ends where an unstopped run ends.
"""

from __future__ import annotations

import importlib
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import assert_relative_close, assert_trees_equal

from rnnspec.conformance.tolerances import tolerance

pytest.importorskip("keras")
pytest.importorskip("tqdm")
pytest.importorskip("matplotlib")

from helpers_examples import SPECS, models, restored_environment
from helpers_examples import batches as _batches


@pytest.fixture(autouse=True)
def _quiet_and_restored_environment() -> Iterator[None]:
    yield from restored_environment()


@pytest.mark.parametrize("op", sorted(SPECS))
def test_a_trainer_given_anothers_state_goes_on_to_the_same_losses_and_weights(op: str) -> None:
    spec = SPECS[op]
    batches = _batches(spec, 8)
    straight = models.make_trainer("tensorflow", spec, 0)
    losses = [straight.step(x, y) for x, y in batches]

    first = models.make_trainer("tensorflow", spec, 0)
    for x, y in batches[:4]:
        first.step(x, y)
    saved = pickle.loads(pickle.dumps(first.state()))
    resumed = models.make_trainer("tensorflow", spec, 1)  # other initial weights: all must come from the state
    resumed.load_state(saved)
    assert resumed.updates == 4
    later = [resumed.step(x, y) for x, y in batches[4:]]
    assert later == losses[4:]
    assert_trees_equal(resumed.state()["net"], straight.state()["net"], f"tensorflow {op} weights")


def test_the_trainer_steps_with_the_schedules_size_before_and_after_each_decay() -> None:
    spec = SPECS["indrnn"]  # lr 1e-3, x0.1 after every 3 updates
    trainer = models.make_trainer("tensorflow", spec, 0)
    seen = []
    for x, y in _batches(spec, 7):
        seen.append(trainer.learning_rate())
        trainer.step(x, y)
    seen.append(trainer.learning_rate())
    np.testing.assert_allclose(seen, [1e-3] * 3 + [1e-4] * 3 + [1e-5] * 2, rtol=1e-6)  # float32 in Keras


def test_half_mse_is_half_the_mean_squared_error_of_the_outputs() -> None:
    spec = models.ModelSpec("GRU", "gru", 2, 4, loss="half_mse")
    trainer = models.make_trainer("tensorflow", spec, 0)
    x, y = _batches(spec, 1)[0]
    output = trainer.predict(x)["output"].astype(np.float64)
    expected = 0.5 * np.mean((output - y.astype(np.float64)) ** 2)
    assert_relative_close(trainer.step(x, y), expected, tolerance("float32", steps=x.shape[1]).rtol, "half_mse")


def test_an_example_trained_then_resumed_further_ends_exactly_as_one_trained_at_once(tmp_path: Path) -> None:
    example = importlib.import_module("indrnn_adding")
    common = ["--backend", "tensorflow", "--quick", "--checkpoint-every", "4", "--length", "20"]
    example.main([*common, "--steps", "10", "--out", str(tmp_path / "once")])
    example.main([*common, "--steps", "5", "--out", str(tmp_path / "twice")])
    example.main([*common, "--steps", "10", "--out", str(tmp_path / "twice"), "--resume"])
    for model in ("indrnn", "lstm"):
        a: dict[str, Any] = pickle.loads((tmp_path / "once" / f"indrnn_adding_{model}.ckpt").read_bytes())
        b: dict[str, Any] = pickle.loads((tmp_path / "twice" / f"indrnn_adding_{model}.ckpt").read_bytes())
        assert a["updates"] == b["updates"] == 10
        assert a["history"]["loss"] == b["history"]["loss"], model
