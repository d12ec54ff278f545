"""The benchmark suite runs and writes a well-formed table, JSON and plot (timings are not checked)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers_bench import assert_timed_updates_train

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
    for cell in ("gru", "rnn"):
        act = ports.act(fw, x, params("act", cell=cell), 0.01, 100, cell=cell)
        host = rnnspec.init_params("act", input_size=5, hidden_size=4, seed=1, cell=cell)
        want = reference.act(x_host, host, cell=cell).outputs
        np.testing.assert_allclose(np.asarray(act), want, rtol=1e-4, atol=1e-5, err_msg=cell)
    for layers, window in ((2, 1), (2, 2), (1, 3)):  # indrnn stacked; qrnn fo, Salesforce's loop
        stack = rnnspec.init_params("indrnn", input_size=5, hidden_size=4, num_layers=layers, seed=1)
        want = reference.indrnn(x_host, stack).outputs
        np.testing.assert_allclose(np.asarray(ports.indrnn(fw, x, fw.params(stack))), want, rtol=1e-4, atol=1e-5)
        stack = rnnspec.init_params("qrnn", input_size=5, hidden_size=4, num_layers=layers, seed=1, window=window)
        want = reference.qrnn(x_host, stack, mode="fo").outputs
        got = ports.qrnn(fw, x, fw.params(stack))
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5, err_msg=f"qrnn window {window}")
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


def test_update_floor_runs_each_layers_matmuls_and_an_fma_pass_each_way() -> None:
    """The update floor: every layer's matmul floor, then one FMA over its activations (twice in training)."""
    pytest.importorskip("torch")
    from rnnspec.bench import ports
    from rnnspec.bench.framework import load

    fw = load("torch")
    batch, steps, hidden = 2, 5, 4
    layers = [ports.FloorLayer(3, hidden, 1, 0), ports.FloorLayer(hidden, hidden, 1, 0)]
    arrays = ports.update_floor_arrays(fw, batch, steps, layers)
    assert [tuple(a["activations"].shape) for a in arrays] == [(batch * steps, hidden)] * 2
    calls: list[str] = []
    matmul, fma = fw.matmul_t, fw.fma
    fw.matmul_t = lambda x, w: calls.append("matmul") or matmul(x, w)  # type: ignore[method-assign]
    fw.fma = lambda a, b, c: calls.append("fma") or fma(a, b, c)  # type: ignore[method-assign]
    ports.update_floor(fw, arrays, training=False)
    assert calls == ["matmul", "fma"] * 2  # no recurrent matmul: the input projection alone
    calls.clear()
    ports.update_floor(fw, arrays, training=True)
    assert calls == ["matmul", "matmul", "matmul", "fma", "fma"] * 2  # no dW_hh without a recurrent matmul
    act = ports.update_floor_arrays(fw, batch, 1, [ports.FloorLayer(3, hidden, 1, 3)])
    assert tuple(act[0]["activations"].shape) == (batch * 3, hidden)  # ACT: every inner step's activations


def test_training_cases_follow_the_papers_at_full_size_and_shrink_with_quick() -> None:
    """The full sizes are the issue's; every quick case is smaller; the floor reads each op's layers."""
    from rnnspec.bench import training
    from rnnspec.bench.sizes import FULL, QUICK

    full = {case.net.op: case for case in training.cases(FULL)}
    assert {
        op: (c.task.batch, c.task.steps, c.task.hidden, c.task.features, c.task.layers) for op, c in full.items()
    } == {
        "skip_gru": (256, 50, 110, 2, 1),
        "indrnn": (50, 1000, 128, 2, 2),
        "act": (128, 1, 128, 8, 1),
        "qrnn": (16, 1024, 256, 256, 1),
    }
    assert (full["skip_gru"].net.native, full["skip_gru"].native_target) == ("GRU", 1.10)
    assert (full["indrnn"].net.native, full["indrnn"].net.activation, full["indrnn"].floor_target) == (
        "RNN",
        "relu",
        1.20,
    )
    assert (full["act"].net.native, full["act"].net.loss, full["act"].net.kwargs["cell"]) == ("RNN", "bce", "rnn")
    assert (full["qrnn"].net.native, full["qrnn"].port_target, full["qrnn"].modes) == (
        None,
        0.70,
        ("forward", "update"),
    )
    for case in training.cases(QUICK):
        big = full[case.net.op].task
        assert case.task.batch * case.task.steps * case.task.hidden < big.batch * big.steps * big.hidden
    floors = {op: training.floor_layers(case.net, 7) for op, case in full.items()}
    assert floors["skip_gru"] == [(2, 110, 3, 7)]
    assert floors["indrnn"] == [(2, 128, 1, 7), (128, 128, 1, 7)]
    assert floors["act"] == [(9, 128, 1, 7)]  # the flag input
    assert floors["qrnn"] == [(512, 256, 3, 7)]  # the window of 2 steps, one projection


def test_training_data_are_the_papers_tasks() -> None:
    """Adding tasks: two markers, the target their values' sum; parity: the target is the parity of the ones."""
    from rnnspec.bench import training
    from rnnspec.bench.sizes import Task

    rng = np.random.default_rng(0)
    task = Task(batch=64, steps=20, hidden=8, features=2)
    for data, low, high in ((training.skip_adding, -0.5, 0.5), (training.indrnn_adding, 0.0, 1.0)):
        x, y = data(rng, task)
        assert x.shape == (64, 20, 2)
        assert y.shape == (64, 1)
        assert x.dtype == y.dtype == np.float32
        assert np.all(x[:, :, 1].sum(axis=1) == 2)
        assert low <= x[:, :, 0].min()
        assert x[:, :, 0].max() <= high
        np.testing.assert_allclose((x[:, :, 0] * x[:, :, 1]).sum(axis=1), y[:, 0], rtol=1e-5, atol=1e-6)
        second = np.argmax(x[:, ::-1, 1], axis=1)  # steps from the end to the last marker
        assert np.all(second < 10)  # in the last half
    assert np.all(np.argmax(training.skip_adding(rng, task)[0][:, :, 1], axis=1) < 2)  # first 10%
    x, y = training.parity(rng, Task(batch=64, steps=1, hidden=8, features=8))
    assert x.shape == (64, 1, 8)
    assert np.all((np.abs(x) > 0).sum(axis=2) >= 1)
    np.testing.assert_array_equal(y[:, 0], (x[:, 0] == 1.0).sum(axis=1) % 2)


def _tiny_sizes() -> Any:
    from dataclasses import replace

    from rnnspec.bench.sizes import QUICK, Task

    return replace(
        QUICK,
        repeats=1,
        skip_adding=Task(batch=2, steps=3, hidden=4, features=2),
        indrnn_adding=Task(batch=2, steps=3, hidden=4, features=2, layers=2),
        act_parity=Task(batch=2, steps=1, hidden=4, features=3),
        qrnn_layer=Task(batch=2, steps=4, hidden=4, features=3),
    )


def test_training_section_compares_rnnspec_with_the_layer_the_loop_and_the_floor() -> None:
    """Each case's rows, in torch: rnnspec against torch.nn's layer, the Python loop and the floor, the targets
    on the rows the issue sets them on, the floor's distance in the notes (timings are not checked)."""
    pytest.importorskip("torch")
    from rnnspec.bench import training
    from rnnspec.bench.framework import load

    rows = training.training(load("torch"), _tiny_sizes())
    got = [(r["case"], r["mode"], r["baseline"], r["target"]) for r in rows]
    assert got == [
        ("skip_gru adding task", "update", "torch.nn.GRU", "<= 1.10x torch.nn.GRU"),
        ("skip_gru adding task", "update", "Python loop", ""),
        ("skip_gru adding task", "update", "floor", ""),
        ("indrnn adding problem", "update", "torch.nn.RNN", ""),
        ("indrnn adding problem", "update", "Python loop", ""),
        ("indrnn adding problem", "update", "floor", "<= 1.20x the floor"),
        ("act parity", "update", "torch.nn.RNN", ""),
        ("act parity", "update", "Python loop", ""),
        ("act parity", "update", "floor", ""),
        ("qrnn fo window 2", "forward", "Salesforce loop", "<= 0.70x the Salesforce loop"),
        ("qrnn fo window 2", "forward", "floor", ""),
        ("qrnn fo window 2", "update", "Salesforce loop", "<= 0.70x the Salesforce loop"),
        ("qrnn fo window 2", "update", "floor", ""),
    ]
    for row in rows:
        assert row["section"] == "training"
        assert row["ours"] == f"rnnspec {row['case'].split()[0]}"
        assert row["ratio"] > 0
        assert row["met"] is (None if not row["target"] else row["ratio"] <= float(row["target"][3:7]))
        assert ("the floor" in row["note"]) if row["baseline"] != "floor" else row["note"].startswith("floor: ")
    assert "mean ponder" in rows[6]["note"]
    assert "update rate" in rows[0]["note"]


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_the_timed_updates_train_the_model(backend: str) -> None:
    """Each timed update is an Adam step: on one batch, the loss it returns falls (rnnspec's layer, the
    framework's own, and a Python-loop port through ``adam``)."""
    pytest.importorskip(backend)
    if backend == "jax":
        pytest.importorskip("flax")
    assert_timed_updates_train(backend)


def test_python_loops_target_two_times_faster_in_training() -> None:
    """python_loops: forward rows keep the 3x target; forward+backward rows ask <= 0.5x the port (issue 21)."""
    pytest.importorskip("torch")
    from dataclasses import replace

    from rnnspec.bench.cases import python_loops
    from rnnspec.bench.framework import load

    sizes = replace(_tiny_sizes(), port=(2, 3, 4), training=True)
    targets = {(r["case"], r["mode"], r["target"]) for r in python_loops(load("torch"), sizes) if r["met"] is not None}
    assert targets == {
        (op, mode, words)
        for op in ("skip_gru", "act")
        for mode, words in (
            ("forward", ">= 3x faster (ratio <= 0.33x)"),
            ("forward+backward", "<= 0.50x the Python-loop port"),
        )
    }
