"""The QRNN character language model example (examples/qrnn_charlm.py): it runs, and it resumes exactly.

The example runs in subprocesses, as a user runs it, in quick mode with the
PyTorch backend: once straight through 12 updates, and once stopped at update 8
and resumed from its checkpoint to 12. The resumed run must start where the
checkpoint stopped, keep the curve already written, and then follow the
uninterrupted run to the same figures: the checkpoint holds everything the
training depends on (weights, Adam's moments, the data position, the carried
state). A checkpoint of another configuration is refused.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("tqdm", reason="the examples need the examples extra (tqdm, matplotlib)")
pytest.importorskip("matplotlib", reason="the examples need the examples extra (tqdm, matplotlib)")

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "qrnn_charlm.py"
#: A quick run, evaluated and checkpointed every 4 updates.
QUICK = ["--backend", "torch", "--quick", "--eval-every", "4", "--checkpoint-every", "4"]
#: The quick mode's batch and chunk length.
BATCH, SEQ = 8, 32
MODELS = ("qrnn", "lstm")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *QUICK, *args], env=env, capture_output=True, text=True, timeout=600, check=False
    )


def _ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"the example failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


#: The columns that depend on the training only, not on the clock.
_LEARNT = ("update", "chars_seen", "train_bpc", "heldout_bpc")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The straight run's folder and output, and the interrupted run's folder, first output and resumed output."""
    straight = tmp_path_factory.mktemp("straight")
    interrupted = tmp_path_factory.mktemp("interrupted")
    out = {"straight": straight, "interrupted": interrupted}
    out["straight_stdout"] = _ok(_run("--steps", "12", "--out", str(straight)))
    out["first_stdout"] = _ok(_run("--steps", "8", "--out", str(interrupted)))
    out["first_curves"] = {m: _rows(interrupted / f"qrnn_charlm_torch_{m}.csv") for m in MODELS}
    out["resumed_stdout"] = _ok(_run("--steps", "12", "--resume", "--out", str(interrupted)))
    return out


def test_the_quick_run_writes_its_plot_curves_checkpoints_and_results(runs: dict[str, object]) -> None:
    folder = runs["straight"]
    assert isinstance(folder, Path)
    assert "--quick: a tiny run" in str(runs["straight_stdout"])
    assert (folder / "qrnn_charlm_torch.png").stat().st_size > 0
    for model in MODELS:
        rows = _rows(folder / f"qrnn_charlm_torch_{model}.csv")
        assert [int(r["update"]) for r in rows] == [0, 4, 8, 12]
        assert [int(r["chars_seen"]) for r in rows] == [u * BATCH * SEQ for u in (0, 4, 8, 12)]
        assert all(math.isfinite(float(r["heldout_bpc"])) for r in rows)
        assert rows[0]["train_bpc"] == ""  # no update before the first evaluation
        seconds = [float(r["train_seconds"]) for r in rows]
        assert seconds == sorted(seconds)
        assert (folder / f"qrnn_charlm_torch_{model}.ckpt.npz").exists()
    results = json.loads((folder / "qrnn_charlm_torch.json").read_text())
    assert results["python"] == ".".join(map(str, sys.version_info[:3]))
    counts = {m["name"]: m["parameters"] for m in results["models"]}
    for model in results["models"]:
        assert model["parameters"] == model["parameters_from_spec"], model["name"]
    # The default --match units: both models as wide, the QRNN with fewer weights (3 gates, no recurrent matrix).
    widths = {m["name"]: m["hidden_size"] for m in results["models"]}
    assert widths["QRNN"] == widths["LSTM"], widths
    assert counts["QRNN"] < counts["LSTM"], counts


def test_a_resumed_run_starts_at_the_saved_update_and_follows_the_uninterrupted_run(runs: dict[str, object]) -> None:
    straight, interrupted = runs["straight"], runs["interrupted"]
    assert isinstance(straight, Path)
    assert isinstance(interrupted, Path)
    resumed = str(runs["resumed_stdout"])
    first_curves = runs["first_curves"]
    assert isinstance(first_curves, dict)
    for model in MODELS:
        assert f"{model.upper()}: resuming from update 8" in resumed
        before = first_curves[model]
        after = _rows(interrupted / f"qrnn_charlm_torch_{model}.csv")
        assert [int(r["update"]) for r in before] == [0, 4, 8]
        assert after[: len(before)] == before  # the curve so far is kept as written
        assert [int(r["update"]) for r in after[len(before) :]] == [12]
        assert float(after[-1]["train_seconds"]) >= float(before[-1]["train_seconds"])
        uninterrupted = _rows(straight / f"qrnn_charlm_torch_{model}.csv")
        assert [[r[k] for k in _LEARNT] for r in after] == [[r[k] for k in _LEARNT] for r in uninterrupted]


def test_a_finished_run_resumed_again_trains_no_further(runs: dict[str, object], tmp_path: Path) -> None:
    interrupted = runs["interrupted"]
    assert isinstance(interrupted, Path)
    stdout = _ok(_run("--steps", "12", "--resume", "--models", "qrnn", "--out", str(interrupted)))
    assert "QRNN: already trained to update 12" in stdout
    assert [int(r["update"]) for r in _rows(interrupted / "qrnn_charlm_torch_qrnn.csv")] == [0, 4, 8, 12]


def test_resuming_from_a_checkpoint_of_another_configuration_is_refused_naming_the_setting(
    runs: dict[str, object],
) -> None:
    interrupted = runs["interrupted"]
    assert isinstance(interrupted, Path)
    done = _run("--steps", "12", "--resume", "--models", "lstm", "--hidden", "40", "--out", str(interrupted))
    assert done.returncode != 0
    assert "model.hidden_size: 32 in the checkpoint, 40 now" in done.stderr


def test_match_params_gives_the_qrnn_about_the_lstms_parameter_count(tmp_path: Path) -> None:
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import qrnn_charlm

        args = qrnn_charlm.build_parser().setup(["--match", "params", "--out", str(tmp_path)]).args
        specs = {spec.name: spec for spec in qrnn_charlm.model_specs(args)}
    finally:
        sys.path.remove(str(SCRIPT.parent))
    qrnn, lstm = specs["QRNN"].parameter_count(), specs["LSTM"].parameter_count()
    assert specs["QRNN"].hidden_size > specs["LSTM"].hidden_size
    assert abs(qrnn - lstm) <= 0.1 * lstm, (qrnn, lstm)
