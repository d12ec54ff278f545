"""The benchmark suite runs and writes a well-formed table, JSON and plot (timings are not checked)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import rnnspec
from rnnspec.bench import plot, report
from rnnspec.bench.rows import BEST_BACKEND, Row, compare
from rnnspec.bench.timing import Timing, alternate

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _rows() -> list[Row]:
    timings = {"ours": Timing((0.001, 0.002, 0.003)), "theirs": Timing((0.004, 0.004, 0.005))}
    met = compare("lstm/gru", "torch", "lstm", "B=1 T=2 H=3", "forward", ("ours", "theirs"), timings, at_most=1.1)
    free = compare("skip", "jax", "skip_gru", "B=1 T=2 H=3", "inference", ("ours", "theirs"), timings)
    return [met, free]


def test_compare_gives_the_ratio_of_medians_and_the_verdict() -> None:
    """ratio = median(ours) / median(baseline); met when ratio <= at_most; None without a target."""
    met, free = _rows()
    assert met["ratio"] == pytest.approx(0.5)
    assert met["met"] is True
    assert met["target"] == "<= 1.10x"
    assert free["met"] is None
    assert free["target"] == ""


def test_alternate_times_every_call_each_repeat() -> None:
    """Each callable runs warmup + repeats times and gets one time per repeat."""
    counts = {"a": 0, "b": 0}

    def bump(name: str) -> None:
        counts[name] += 1

    timings = alternate({"a": lambda: bump("a"), "b": lambda: bump("b")}, repeats=3, warmup=2)
    assert counts == {"a": 5, "b": 5}
    assert all(len(t.times) == 3 for t in timings.values())


def test_report_writes_markdown_and_json(tmp_path: Path) -> None:
    """The markdown has the header, the target summary and a table per section; the JSON round-trips."""
    meta = {
        "command": "python -m rnnspec.bench --quick",
        "date": "2026-01-01 00:00 UTC",
        "cpu": "cpu",
        "machine": "x86_64",
        "cores": 2,
        "load_average_1_5_15": [0.0, 0.0, 0.0],
        "python": "3.11",
        "numpy": np.__version__,
        "rnnspec": rnnspec.__version__,
        "device": "cpu",
    }
    backends = {"torch": {"framework": {"version": "x"}, "errors": {"skip": "Traceback: boom"}, "seconds": {}}}
    memory = [{"backend": "torch", "checkpoint_every": 10, "peak_mb": 12.5}]
    paths = report.write(tmp_path, "bench_cpu", meta, backends, _rows(), memory)
    text = paths["markdown"].read_text()
    assert "## Targets" in text
    assert "<= 1.10x: met in 1 of 1" in text
    for section in ("## lstm/gru", "## skip", "## memory"):
        assert section in text
    assert "boom" in text
    record = json.loads(paths["json"].read_text())
    assert record["meta"]["command"] == meta["command"]
    assert len(record["rows"]) == 2
    assert record["memory"] == memory


def test_report_prints_a_recorded_runs_targets_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m rnnspec.bench.report FILE``: the summary and one table line per row with a target."""
    meta = {"command": "python -m rnnspec.bench", "date": "2026-01-01 00:00 UTC"}
    path = tmp_path / "bench_cpu.json"
    path.write_text(json.dumps({"meta": meta, "backends": {}, "rows": _rows(), "memory": None}))
    assert report.main([str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("`python -m rnnspec.bench`, 2026-01-01 00:00 UTC")
    assert "- lstm/gru, <= 1.10x: met in 1 of 1" in out
    lines = [line for line in out.splitlines() if line.startswith("| lstm/gru") or line.startswith("| skip")]
    assert lines == ["| lstm/gru | torch | lstm | B=1 T=2 H=3 | forward | ours | theirs | 0.50x | <= 1.10x: met |"]


def test_a_target_asked_of_the_best_backend_is_judged_by_the_best_row() -> None:
    """A target in the best backend: the summary gives the count and the verdict of the lowest ratio's row."""
    target = f">= 50% of copy bandwidth {BEST_BACKEND}"
    fast = {"ours": Timing((0.001,)), "copy": Timing((0.001,))}
    slow = {"ours": Timing((0.009,)), "copy": Timing((0.001,))}
    rows = [
        compare("recurrences", name, "linear_recurrence", "B=1 T=2 H=3", "forward", ("ours", "copy"), t, at_most=3.0)
        for name, t in (("jax", slow), ("torch", fast))
    ]
    for row in rows:
        row["target"] = target
    assert report.summary(rows) == [
        f"- recurrences, {target}: met in 1 of 2 (by the best, torch: met); "
        "missed: jax linear_recurrence B=1 T=2 H=3 forward (9.00x)"
    ]
    rows[1]["met"] = False
    assert "(by the best, torch: MISSED)" in report.summary(rows)[0]


def test_plot_writes_a_png(tmp_path: Path) -> None:
    """The plot is a PNG file."""
    pytest.importorskip("matplotlib")
    path = plot.plot(_rows(), tmp_path / "bench.png", "test")
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_suite_runs_end_to_end(tmp_path: Path) -> None:
    """``python -m rnnspec.bench`` on one backend and section writes the table, the JSON and the plot."""
    pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    command = [sys.executable, "-m", "rnnspec.bench", "--quick", "--backends", "torch", "--sections", "classic"]
    command += ["--repeats", "1", "--out", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "bench_cpu.json").read_text())
    assert {"date", "command", "machine", "cpu", "device", "rnnspec"} <= set(record["meta"])
    assert record["backends"]["torch"]["errors"] == {}
    rows = record["rows"]
    assert {(r["case"], r["mode"]) for r in rows} == {
        (op, mode) for op in ("lstm", "gru") for mode in ("forward", "forward+backward")
    }
    assert all(r["ratio"] > 0 and r["met"] in (True, False) for r in rows)
    text = (tmp_path / "bench_cpu.md").read_text()
    assert "torch.nn.LSTM" in text
    assert "## Targets" in text
    assert (tmp_path / "bench_cpu.png").read_bytes()[:8] == PNG_MAGIC


def test_ports_and_log_space_compute_the_spec() -> None:
    """The Python-loop ports and the log-space formulation agree with the NumPy reference (torch, float32)."""
    pytest.importorskip("torch")
    from rnnspec.bench import logspace, ports
    from rnnspec.bench.framework import load

    fw = load("torch")
    reference = rnnspec.get_backend("numpy")
    rng = np.random.default_rng(0)
    x_host = rng.standard_normal((3, 7, 5)).astype(np.float32)
    x = fw.tensor(x_host)

    def check(op: str, got: object, **options: object) -> None:
        host = rnnspec.init_params(op, input_size=5, hidden_size=4, seed=1, **options)
        want = getattr(reference, op)(x_host, host, **options).outputs
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5, err_msg=op)

    def params(op: str, **options: object) -> object:
        return fw.params(rnnspec.init_params(op, input_size=5, hidden_size=4, seed=1, **options))

    check("skip_gru", ports.skip_cell(fw, x, params("skip_gru"), "gru"))
    check("skip_lstm", ports.skip_cell(fw, x, params("skip_lstm"), "lstm"))
    check("indrnn", ports.indrnn(fw, x, params("indrnn")))
    act = ports.act(fw, x, params("act", cell="gru"), 0.01, 100)
    host = rnnspec.init_params("act", input_size=5, hidden_size=4, seed=1, cell="gru")
    want = reference.act(x_host, host, cell="gru").outputs
    np.testing.assert_allclose(np.asarray(act), want, rtol=1e-4, atol=1e-5)
    a, b = rng.uniform(0.5, 1.0, (2, 9, 3)).astype(np.float32), rng.uniform(0.1, 1.0, (2, 9, 3)).astype(np.float32)
    got = logspace.linear_recurrence(fw, fw.tensor(a), fw.tensor(b))
    np.testing.assert_allclose(np.asarray(got), reference.linear_recurrence(a, b), rtol=1e-4)


def test_long_sequences_prints_a_row_per_op_with_forward_below_forward_and_backward(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from rnnspec.bench import long_sequences

    assert long_sequences.main(["numpy", "--time", "40", "--ops", "gru,linear_recurrence"]) == 0
    rows = [line.split("|")[1:4] for line in capsys.readouterr().out.splitlines() if line.startswith("| ")][1:]
    assert [r[0].strip() for r in rows] == ["gru", "linear_recurrence"]
    for _, forward, both in rows:
        assert 0.0 <= float(forward) <= float(both)


def test_every_values_and_gradients_test_of_the_suite_has_a_tier() -> None:
    from rnnspec.bench.conformance_tiers import tier_of
    from rnnspec.conformance import test_gradients, test_values

    names = [n for m in (test_values, test_gradients) for n in vars(m) if n.startswith("test_")]
    assert len(names) >= 13
    assert {n: tier_of(n) for n in names if tier_of(n) == "other"} == {}


def test_conformance_tiers_prints_a_row_per_module_with_its_seconds(capsys: pytest.CaptureFixture[str]) -> None:
    from rnnspec.bench import conformance_tiers

    args = ["numpy", "--modules", "test_inputs", "--", "-k", "linear_recurrence", "-p", "no:cacheprovider"]
    assert conformance_tiers.main(args) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| test_inputs |")]
    assert len(rows) == 1
    cells = [c.strip() for c in rows[0].strip(" |").split("|")]
    assert cells[-2] != ""  # the inputs check's test ran, under "other"
    assert float(cells[-1]) >= 0.0


def _run_file(path: Path, times: dict[str, float]) -> Path:
    rows = [
        {"section": "skip", "backend": "torch", "case": "skip_gru", "shape": "B=1", "mode": "inference", "ours": name}
        | {"ours_min_ms": ms, "ours_ms": ms * 1.1}
        for name, ms in times.items()
    ]
    path.write_text(json.dumps({"rows": rows}), encoding="utf-8")
    return path


def test_versions_gives_each_rows_least_time_after_over_before_and_the_runs_spread(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rnnspec.bench import versions

    before = [
        _run_file(tmp_path / "b1.json", {"a": 2.0, "b": 4.0}),
        _run_file(tmp_path / "b2.json", {"a": 3.0, "b": 5.0}),
    ]
    after = [
        _run_file(tmp_path / "a1.json", {"a": 2.2, "b": 3.0}),
        _run_file(tmp_path / "a2.json", {"a": 2.5, "b": 9.0}),
    ]
    found = versions.changes(before, after)
    assert [(round(r, 6), key[-1]) for r, key, _, _ in found] == [(0.75, "b"), (1.1, "a")]
    assert versions.spread(after) == pytest.approx(3.0)
    assert versions.spread(before[:1]) is None
    versions.main(["--before", *map(str, before), "--after", *map(str, after)])
    printed = capsys.readouterr().out
    assert f"geometric mean of after / before: {(0.75 * 1.1) ** 0.5:.3f}" in printed
    assert "runs of after disagree by up to 3.00x on one row" in printed
