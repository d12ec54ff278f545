"""The paper examples' recipes, checkpoints and learning-curve CSVs (examples/*.py) on torch and JAX.

A trainer's state put into a new trainer goes on to the very same losses; an
example stopped and resumed ends bitwise where an unstopped run ends; each
model writes a CSV row per evaluation; the step-size schedule decays at the
stated update; ``half_mse`` is half the MSE; ``--recipe paper --quick`` runs for
every example. TensorFlow's trainer is checked in test_tensorflow_examples_recipes.py.
"""

from __future__ import annotations

import csv
import importlib
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import assert_relative_close, assert_trees_equal

from rnnspec.conformance.tolerances import tolerance

pytest.importorskip("tqdm")
pytest.importorskip("matplotlib")

from helpers_examples import SPECS, models, restored_environment, training
from helpers_examples import batches as _batches

#: The paper examples, and the columns of their learning-curve CSVs.
CSV_COLUMNS = {
    "adding_task": ["update", "train_loss", "mse", "updates_used", "seconds"],
    "indrnn_adding": ["update", "train_loss", "mse", "learning_rate", "seconds"],
    "parity_act": ["update", "train_loss", "error", "ponder", "ponder_steps", "seconds"],
}


@pytest.fixture(autouse=True)
def _quiet_and_restored_environment() -> Iterator[None]:
    yield from restored_environment()


def _run_example(name: str, argv: list[str]) -> None:
    importlib.import_module(name).main(argv)


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _checkpoint(path: Path) -> dict[str, Any]:
    with path.open("rb") as f:
        payload: dict[str, Any] = pickle.load(f)
    return payload


def test_the_learning_rate_is_multiplied_by_the_factor_after_every_stated_number_of_updates() -> None:
    spec = models.ModelSpec("m", "rnn", 1, 1, learning_rate=2e-4, lr_decay_every=20_000, lr_decay_factor=0.1)
    rates = [models.learning_rate_at(spec, n) for n in (0, 19_999, 20_000, 39_999, 40_000)]
    np.testing.assert_allclose(rates, [2e-4, 2e-4, 2e-5, 2e-5, 2e-6], rtol=1e-12)
    assert models.learning_rate_at(models.ModelSpec("m", "rnn", 1, 1, learning_rate=1e-3), 10**6) == 1e-3


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_each_trainer_steps_with_the_schedules_size_before_and_after_each_decay(backend: str) -> None:
    pytest.importorskip(backend)
    spec = SPECS["indrnn"]  # lr 1e-3, x0.1 after every 3 updates
    trainer = models.make_trainer(backend, spec, 0)
    seen = []
    for x, y in _batches(spec, 7):
        seen.append(trainer.learning_rate())
        trainer.step(x, y)
    seen.append(trainer.learning_rate())
    expected = [1e-3] * 3 + [1e-4] * 3 + [1e-5] * 2
    np.testing.assert_allclose(seen, expected, rtol=1e-6)  # float32 in the frameworks' optimisers
    assert trainer.updates == 7


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_half_mse_is_half_the_mean_squared_error_of_the_outputs(backend: str) -> None:
    pytest.importorskip(backend)
    spec = models.ModelSpec("GRU", "gru", 2, 4, loss="half_mse")
    trainer = models.make_trainer(backend, spec, 0)
    x, y = _batches(spec, 1)[0]
    output = trainer.predict(x)["output"].astype(np.float64)
    expected = 0.5 * np.mean((output - y.astype(np.float64)) ** 2)
    assert_relative_close(trainer.step(x, y), expected, tolerance("float32", steps=x.shape[1]).rtol, "half_mse")


def test_a_model_spec_refuses_an_unknown_loss_naming_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"loss must be one of .*'half_mse'.*got 'l1'"):
        models.ModelSpec("m", "rnn", 1, 1, loss="l1")


@pytest.mark.parametrize("op", sorted(SPECS))
@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_a_trainer_given_anothers_state_goes_on_to_the_same_losses_and_weights(backend: str, op: str) -> None:
    pytest.importorskip(backend)
    spec = SPECS[op]
    batches = _batches(spec, 8)
    straight = models.make_trainer(backend, spec, 0)
    losses = [straight.step(x, y) for x, y in batches]

    first = models.make_trainer(backend, spec, 0)
    for x, y in batches[:4]:
        first.step(x, y)
    saved = pickle.loads(pickle.dumps(first.state()))  # through a file's bytes
    resumed = models.make_trainer(backend, spec, 1)  # other initial weights: all must come from the state
    resumed.load_state(saved)
    assert resumed.updates == 4
    assert resumed.learning_rate() == first.learning_rate()
    later = [resumed.step(x, y) for x, y in batches[4:]]
    assert later == losses[4:]
    assert_trees_equal(resumed.state()["net"], straight.state()["net"], f"{backend} {op} weights")


def test_an_example_trained_then_resumed_further_ends_exactly_as_one_trained_at_once(tmp_path: Path) -> None:
    once, twice = tmp_path / "once", tmp_path / "twice"
    common = ["--quick", "--checkpoint-every", "7"]
    _run_example("adding_task", [*common, "--steps", "24", "--out", str(once)])
    _run_example("adding_task", [*common, "--steps", "12", "--out", str(twice)])
    _run_example("adding_task", [*common, "--steps", "24", "--out", str(twice), "--resume"])
    for model in ("gru", "skip_gru"):
        a = _checkpoint(once / f"adding_task_{model}.ckpt")
        b = _checkpoint(twice / f"adding_task_{model}.ckpt")
        assert a["updates"] == b["updates"] == 24
        assert len(a["history"]["loss"]) == 24
        assert a["history"]["loss"] == b["history"]["loss"], model
        assert_trees_equal(b["trainer"]["net"], a["trainer"]["net"], f"{model} weights")
        assert a["rng"] == b["rng"]


def test_a_run_stopped_between_checkpoints_goes_on_from_the_last_one_to_the_same_end(tmp_path: Path) -> None:
    spec = SPECS["skip_gru"]
    x_test, y_test = _batches(spec, 1)[0]

    def draw_from(stop_at: int | None) -> Any:
        drawn = []

        def draw(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
            if stop_at is not None and len(drawn) == stop_at:
                raise KeyboardInterrupt
            drawn.append(1)
            x = rng.standard_normal((3, 5, 2)).astype(np.float32)
            return x, x[:, :2, 0].sum(axis=1, keepdims=True)

        return draw

    def evaluate(trainer: models.Trainer) -> dict[str, float]:
        result = trainer.predict(x_test)
        return {
            "mse": float(np.mean((result["output"] - y_test) ** 2)),
            "updates_used": float(result["update_gate"].mean()),
        }

    def run(folder: Path, stop_at: int | None, resume: bool) -> training.History:
        trainer = models.make_trainer("torch", spec, 0)
        rng = np.random.default_rng(0)
        history = None
        ckpt, curve = folder / "m.ckpt", folder / "m.csv"
        if resume:
            saved = training.load_checkpoint(ckpt, {"run": 1})
            trainer.load_state(saved["trainer"])
            rng.bit_generator.state = saved["rng"]
            history = saved["history"]
        return training.train(
            trainer, draw_from(stop_at), 20, rng, evaluate, 3, "mse",
            history=history, csv_path=curve, checkpoint_path=ckpt, checkpoint_every=5, config={"run": 1},
        )  # fmt: skip

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    whole = run(tmp_path / "a", None, False)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", 13, False)  # stops during update 14: the checkpoint of update 10 stands
    assert _checkpoint(tmp_path / "b" / "m.ckpt")["updates"] == 10
    resumed = run(tmp_path / "b", None, True)
    assert resumed.loss == whole.loss
    assert resumed.eval_steps == whole.eval_steps == [0, 3, 6, 9, 12, 15, 18, 20]
    rows_a, rows_b = _read_csv(tmp_path / "a" / "m.csv"), _read_csv(tmp_path / "b" / "m.csv")
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in rows_b] == [
        {k: v for k, v in r.items() if k != "seconds"} for r in rows_a
    ]


@pytest.mark.parametrize("example", sorted(CSV_COLUMNS))
def test_each_model_writes_a_csv_row_per_evaluation_with_its_examples_columns(example: str, tmp_path: Path) -> None:
    argv = ["--quick", "--out", str(tmp_path)]
    _run_example(example, argv)
    curves = sorted(tmp_path.glob(f"{example}_*.csv"))
    assert len(curves) >= 2, curves
    for path in curves:
        rows = _read_csv(path)
        assert list(rows[0]) == CSV_COLUMNS[example], path.name
        steps = int(_checkpoint(path.with_suffix(".ckpt"))["updates"])
        every = max(1, steps // 4)  # --quick: 4 evaluations besides the first
        expected = sorted({*range(0, steps + 1, every), steps})
        assert [int(r["update"]) for r in rows] == expected, path.name
        assert rows[0]["train_loss"] == "nan"
        for row, start in zip(rows[1:], expected, strict=False):
            end = int(row["update"])
            losses = _checkpoint(path.with_suffix(".ckpt"))["history"]["loss"][start:end]
            assert float(row["train_loss"]) == pytest.approx(float(np.mean(losses)), rel=1e-12)
        seconds = [float(r["seconds"]) for r in rows]
        assert seconds == sorted(seconds)


@pytest.mark.parametrize("example", sorted(CSV_COLUMNS))
def test_the_paper_recipe_runs_quick_for_each_example_on_torch(
    example: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _run_example(example, ["--recipe", "paper", "--quick", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "recipe paper:" in printed
    assert list(tmp_path.glob("*.png")), "no plot"
    assert list(tmp_path.glob(f"{example}_*.csv")), "no learning curve"


def test_models_trained_in_separate_runs_are_reported_together_by_a_resumed_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--quick", "--out", str(tmp_path), "--taus", "1e-2"]
    _run_example("parity_act", [*argv, "--models", "RNN"])
    _run_example("parity_act", [*argv, "--models", "act tau=1e-2"])
    capsys.readouterr()
    _run_example("parity_act", [*argv, "--resume"])
    printed = capsys.readouterr().out
    assert "RNN: finished" in printed
    assert "ACT tau=1e-2: finished" in printed
    table = printed[printed.index("model ") :]
    assert "RNN " in table
    assert "ACT tau=1e-2 " in table


def test_resuming_with_other_settings_is_refused_naming_each_setting_that_differs(tmp_path: Path) -> None:
    argv = ["--quick", "--out", str(tmp_path), "--models", "IndRNN"]
    _run_example("indrnn_adding", argv)
    with pytest.raises(SystemExit, match=r"spec\.learning_rate: saved 0\.001, asked 0\.01"):
        _run_example("indrnn_adding", [*argv, "--resume", "--lr", "0.01"])


def test_an_unknown_name_in_models_is_refused_naming_the_runs_models(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="'LSTMs' not among this run's models 'IndRNN', 'LSTM'"):
        _run_example("indrnn_adding", ["--quick", "--out", str(tmp_path), "--models", "LSTMs"])


def test_a_flag_overrides_the_recipe_and_quick_and_the_settings_say_where_each_value_came_from(tmp_path: Path) -> None:
    parity_act = importlib.import_module("parity_act")
    paper = parity_act.build_parser().setup(["--recipe", "paper", "--out", str(tmp_path), "--quick"])
    assert (paper.args.bits, paper.args.batch, paper.args.clip) == (6, 32, 0.0)  # --quick's sizes, the recipe's clip
    assert paper.args.lr == pytest.approx(parity_act.PAPER_LR * 32 / parity_act.PAPER_BATCH)  # scaled with the batch
    given = parity_act.build_parser().setup(
        ["--recipe", "paper", "--out", str(tmp_path), "--batch", "64", "--lr", "0.5"]
    )
    assert (given.args.batch, given.args.lr, given.args.bits) == (64, 0.5, 16)
    settings = given.settings()
    assert "--batch 64 (flag)" in settings
    assert "--lr 0.5 (flag)" in settings
    assert "--bits 16," in settings
