"""The Phased LSTM frequency discrimination example (examples/phased_lstm_frequency.py) and what it adds to the
examples' trainers.

The task's data: a sequence's target is 1 exactly when its period lies in the band, its samples are the
stated sine wave at its sample times, the times do not decrease and keep the condition's spacing. The
trainers: the LSTM baseline reads the timestamps as a feature, the readout reads each row's last valid
step, and evaluation runs the layer with ``eval_options`` (the Phased LSTM's leak 0) on the trained weights.
The example itself runs quick on torch in a subprocess, as a user runs it, and writes its plots and curves.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import assert_relative_close

from rnnspec.conformance.tolerances import tolerance

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"
SCRIPT = EXAMPLES_DIR / "phased_lstm_frequency.py"
if str(EXAMPLES_DIR) not in sys.path:
    sys.path.insert(0, str(EXAMPLES_DIR))

import models  # noqa: E402
from tasks import FrequencyTask  # noqa: E402

#: The three sampling conditions' tasks (high and low resolution, asynchronous).
TASKS = {"high": FrequencyTask(0.1), "low": FrequencyTask(1.0), "async": FrequencyTask(None)}


def _valid(lengths: np.ndarray, steps: int) -> np.ndarray:
    return np.arange(steps)[None, :] < lengths[:, None]


@pytest.mark.parametrize("condition", sorted(TASKS))
def test_a_sequences_target_is_one_exactly_when_its_period_lies_in_the_band(condition: str) -> None:
    task = TASKS[condition]
    drawn = task.sample(np.random.default_rng(3), 400)
    in_band = (drawn.periods >= 5.0) & (drawn.periods <= 6.0)
    assert np.array_equal(drawn.y[:, 0], in_band.astype(np.float32))
    assert np.all(in_band[:200]), "the first half of a batch is drawn from the band"
    assert 0 < np.sum(~in_band[200:]) < 200, "the second half is log-uniform over (1, 100) ms"
    assert np.all((drawn.periods >= 1.0) & (drawn.periods <= 100.0))
    x, y, extras = task.batch(np.random.default_rng(3), 400)
    assert np.array_equal(x, drawn.x)
    assert np.array_equal(y, drawn.y)
    assert np.array_equal(extras["timestamps"], drawn.timestamps)
    assert np.array_equal(extras["lengths"], drawn.lengths)


@pytest.mark.parametrize("condition", sorted(TASKS))
def test_the_samples_are_the_sine_wave_at_non_decreasing_times_within_the_window(condition: str) -> None:
    task = TASKS[condition]
    drawn = task.sample(np.random.default_rng(4), 64)
    valid = _valid(drawn.lengths, task.max_steps)
    t = drawn.timestamps.astype(np.float64)
    assert drawn.x.shape == (64, task.max_steps, 1)
    assert drawn.timestamps.shape == (64, task.max_steps)
    assert np.all(np.diff(t, axis=1) >= 0), "timestamps decrease somewhere (padding included)"
    assert np.all((t >= 0.0) & (t <= 125.0))
    assert np.all(drawn.x[~valid] == 0.0), "x is zero past each row's length"
    if task.resolution is None:
        assert np.all((drawn.lengths >= 15) & (drawn.lengths < 125))
    else:
        steps = np.diff(t, axis=1)[valid[:, 1:]]
        np.testing.assert_allclose(steps, task.resolution, atol=1e-4)  # float32 times up to 125 ms
        assert np.all(drawn.lengths * task.resolution >= 15.0 - 1e-9)
    expected = np.sin(2 * np.pi / drawn.periods[:, None] * t - drawn.shifts[:, None])
    # The float32 times are off the drawn ones by at most half an ulp, |t| 2^-24, which moves the wave by at most
    # 2 pi / period times that; x itself is rounded to float32 (half an ulp of 1 at most).
    bound = 2 * np.pi / drawn.periods[:, None] * np.abs(t) * 2.0**-24 + 2.0**-24
    error = np.abs(drawn.x[..., 0] - expected)
    assert np.all(error[valid] <= bound[valid])


def test_a_frequency_task_refuses_a_resolution_that_is_not_positive() -> None:
    with pytest.raises(ValueError, match=r"resolution must be a positive number of ms or None, got 0\.0"):
        FrequencyTask(0.0)


def test_the_lstm_baseline_reads_the_timestamps_as_its_second_feature() -> None:
    spec = models.ModelSpec("LSTM", "lstm", 2, 4, input_extras=("timestamps",))
    x, _, extras = TASKS["async"].batch(np.random.default_rng(5), 3)
    inputs, arrays, lengths = models.model_inputs(spec, x, extras)
    assert inputs.dtype == np.float32
    assert inputs.shape == (*x.shape[:2], 2)
    assert np.array_equal(inputs[..., 0], x[..., 0])
    assert np.array_equal(inputs[..., 1], extras["timestamps"])
    assert arrays == {}, "an LSTM takes no per-step keyword"
    assert np.array_equal(lengths, extras["lengths"])
    phased = models.ModelSpec("Phased LSTM", "phased_lstm", 1, 4)
    inputs, arrays, _ = models.model_inputs(phased, x, extras)
    assert np.array_equal(inputs, x)
    assert list(arrays) == ["timestamps"]
    with pytest.raises(ValueError, match=r"input_extras \['timestamps'\] missing"):
        models.model_inputs(spec, x, {"lengths": extras["lengths"]})


def _phased_spec(**more: Any) -> models.ModelSpec:
    options = {"peepholes": True, "period_range": (1.0, 4.0), "ratio_on": 0.3, **more.pop("options", {})}
    return models.ModelSpec("Phased LSTM", "phased_lstm", 1, 4, options=options, loss="bce", **more)


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_the_readout_reads_each_rows_output_at_its_last_valid_step(backend: str) -> None:
    pytest.importorskip(backend)
    task = FrequencyTask(1.0, duration_range=(15.0, 20.0))
    x, _, extras = task.batch(np.random.default_rng(6), 3)
    trainer = models.make_trainer(backend, _phased_spec(), 0)
    padded = trainer.predict(x, extras)["output"]
    for row, n in enumerate(extras["lengths"]):
        alone = trainer.predict(x[row : row + 1, :n], {"timestamps": extras["timestamps"][row : row + 1, :n]})
        assert_relative_close(padded[row], alone["output"][0], tolerance("float32", steps=int(n)).rtol, f"row {row}")


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_evaluation_runs_the_layer_with_the_eval_options_on_the_trained_weights(backend: str) -> None:
    pytest.importorskip(backend)
    x, y, extras = FrequencyTask(1.0, duration_range=(15.0, 20.0)).batch(np.random.default_rng(7), 4)
    trained = models.make_trainer(backend, _phased_spec(options={"leak": 0.5}, eval_options={"leak": 0.0}), 0)
    trained.step(x, y, extras)
    trained.step(x, y, extras)
    closed = models.make_trainer(backend, _phased_spec(options={"leak": 0.0}), 1)  # leak 0 in every call
    closed.load_state(trained.state())
    leaky = models.make_trainer(backend, _phased_spec(options={"leak": 0.5}), 2)
    leaky.load_state(trained.state())
    at_test = trained.predict(x, extras)["output"]
    assert np.array_equal(at_test, closed.predict(x, extras)["output"])
    assert not np.allclose(at_test, leaky.predict(x, extras)["output"]), "the leak would not show"
    assert "eval_options" not in models.ModelSpec("m", "rnn", 1, 1).config(), "older checkpoints' configs resume"


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_the_quick_run_on_torch_writes_its_plots_and_a_learning_curve_per_model(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("tqdm", reason="the examples need the examples extra (tqdm, matplotlib)")
    pytest.importorskip("matplotlib", reason="the examples need the examples extra (tqdm, matplotlib)")
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--backend", "torch", "--quick", "--out", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, f"the example failed:\n{done.stdout}\n{done.stderr}"
    assert "--quick: a tiny run" in done.stdout
    for name in ("phased_lstm_frequency.png", "phased_lstm_frequency_openness.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    for condition in ("high", "low", "async"):
        for model, columns in (
            ("phased_lstm", ["update", "train_loss", "accuracy", "open", "seconds"]),
            ("lstm", ["update", "train_loss", "accuracy", "seconds"]),
        ):
            rows = _rows(tmp_path / f"phased_lstm_frequency_{model}_{condition}.csv")
            assert list(rows[0]) == columns, (model, condition)
            assert [int(r["update"]) for r in rows] == [0, 2, 4, 6, 8]  # --quick: 8 updates, 4 evaluations
            assert all(0.0 <= float(r["accuracy"]) <= 1.0 for r in rows)
            if model == "phased_lstm":  # r_on starts at 0.05: about that share of the gates is open
                assert all(0.0 < float(r["open"]) < 0.2 for r in rows)
        assert f"{condition}  " in done.stdout
