"""The conformance suite bites: deliberately wrong backends fail it, where they are wrong.

Each mutant under ``tests/mutants/`` is a separate distribution: the NumPy
reference with one classic bug. They are pip-installed once into a temporary
directory, and the suite runs on each in a subprocess, exactly as a backend
author runs it (``pytest --pyargs rnnspec.conformance --rnnspec-backend=NAME``).
Every run must fail, on the broken op and check, while the ops the mutant does
not touch pass: a suite that fails everything would prove nothing. One mutant
is right everywhere but under its own compiler, which only the ``compiled``
check sees; and a right backend that compiles passes every check of every op.

A backend without the capability "compile" has no compiled mode to test: on
it, every cell of the ``compiled`` check is skipped, each test with the reason
``backend 'NAME' declares no compiled mode (capability 'compile')``, and that
skip is what "right" means for those cells (:func:`right_outcome`).

The other tests hold the pytest plugin to its promises: inert without a
backend, a header and a summary table with one, a JSON report, usage errors
for unknown backends and bad expected-failure entries, unused entries
reported, matching entries turning failures into expected failures.

The long runs go side by side; still, the file takes about a minute on two
cores, so its tests carry the ``mutants`` marker, which the project's default
test run deselects. Run them with ``nox -s conformance-mutants`` or
``pytest -m mutants tests/test_conformance_bites.py`` (the pip install needs
setuptools in the environment).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rnnspec
from rnnspec.conformance.plugin import CHECKS
from rnnspec.ops import OPS

pytestmark = pytest.mark.mutants

MUTANTS_DIR = Path(__file__).resolve().parent / "mutants"
ENTRY_POINT_GROUP = "rnnspec.backends"

# Exit codes of pytest (pytest.ExitCode), spelled out for the reader of a failure.
PASSED, FAILED, USAGE_ERROR, NO_TESTS = 0, 1, 4, 5

#: Variables of the outer run that would change what the inner pytest does.
_SCRUBBED = (
    "RNNSPEC_BACKEND",
    "RNNSPEC_BACKENDS",
    "RNNSPEC_STRICT_PLUGINS",
    "PYTEST_ADDOPTS",
    "PYTEST_PLUGINS",
    "PYTEST_DISABLE_PLUGIN_AUTOLOAD",
    "PYTEST_CURRENT_TEST",
    "HYPOTHESIS_PROFILE",
    "PIP_USER",
    "PIP_TARGET",
    "PIP_PREFIX",
)


@dataclass(frozen=True)
class Mutant:
    """A wrong backend and where the suite must catch it.

    Attributes
    ----------
    distribution
        Its directory under ``tests/mutants`` (and distribution name).
    backend
        Its entry point's name.
    breaks
        The ``(check, op)`` cells that must fail.
    partners
        Other ops whose *properties* may fail with it: a property that relates
        two ops (skip with an open gate == its base op) sees the broken one.
    whole_suite
        Run every op (else only the broken ops and ``rnn``, which no mutant but
        the gate-order one touches, to keep the time down).
    compiles
        It declares the capability "compile" (else its ``compiled`` cells are
        skipped, with the capability reason).
    """

    distribution: str
    backend: str
    breaks: tuple[tuple[str, str], ...]
    partners: tuple[str, ...] = ()
    whole_suite: bool = False
    compiles: bool = False

    @property
    def ops(self) -> set[str]:
        """The ops the mutant breaks."""
        return {op for _, op in self.breaks}

    @property
    def wrong_values(self) -> set[str]:
        """The ops whose values it breaks: the only ones (with the partners) whose properties may fail."""
        return {op for check, op in self.breaks if check == "values"}

    @property
    def run_ops(self) -> tuple[str, ...] | None:
        """The ops its run keeps (``None``: all)."""
        return None if self.whole_suite else (*sorted(self.ops), UNTOUCHED)


#: An op the restricted runs add, to show that they fail only where the mutant is wrong.
UNTOUCHED = "rnn"

MUTANTS = (
    Mutant(
        "mutant-gate-order",
        "mutant_gate_order",
        breaks=(("values", "lstm"), ("gradients", "lstm")),
        partners=("skip_lstm",),
        whole_suite=True,
    ),
    Mutant(
        "mutant-lengths",
        "mutant_lengths",
        breaks=(("values", "gru"), ("gradients", "gru")),
        partners=("skip_gru",),
    ),
    Mutant(
        "mutant-straight-through",
        "mutant_straight_through",
        breaks=(("gradients", "skip_rnn"), ("gradients", "skip_lstm"), ("gradients", "skip_gru")),
    ),
    Mutant("mutant-act-weights", "mutant_act_weights", breaks=(("values", "act"), ("gradients", "act"))),
    Mutant(
        "mutant-qrnn-window",
        "mutant_qrnn_window",
        breaks=(("values", "qrnn"), ("gradients", "qrnn")),
    ),
    # Right eagerly and in reverse mode, wrong once compiled: its compiled lstm scales the outputs
    # by 1.01. The whole suite runs, so that every other op's compiled check is seen to pass.
    Mutant("mutant-compiled", "mutant_compiled", breaks=(("compiled", "lstm"),), whole_suite=True, compiles=True),
    # Each is right but in a regime of its own, one the suite did not draw before it looked for it:
    # T >= 64 steps (lstm), batch >= 8 with unsorted lengths (gru), a float16 carried state
    # (linear_recurrence), a halting sum exactly at 1 - epsilon (act), |u| > 1 (indrnn), T = 0 with
    # an initial state (skip_rnn, whose result aliases it).
    Mutant("mutant-long-time", "mutant_long_time", breaks=(("values", "lstm"),)),
    Mutant("mutant-batch-order", "mutant_batch_order", breaks=(("values", "gru"),)),
    Mutant("mutant-half-accumulation", "mutant_half_accumulation", breaks=(("values", "linear_recurrence"),)),
    Mutant("mutant-threshold", "mutant_threshold", breaks=(("values", "act"), ("gradients", "act"))),
    Mutant("mutant-param-range", "mutant_param_range", breaks=(("values", "indrnn"), ("gradients", "indrnn"))),
    Mutant("mutant-aliasing", "mutant_aliasing", breaks=(("inputs", "skip_rnn"),)),
)


def names_a_test_of(output: str, op: str) -> bool:
    """Whether ``output`` names a test of ``op``: its id ``[op]``, or ``op`` among the dash-separated
    parts of an id, for a test parametrised beyond the op (``[gru-B12xT57]``; ``skip_gru`` is not ``gru``)."""
    return re.search(rf"\[(?:[^\]\n]*-)?{re.escape(op)}(?:-[^\]\n]*)?\]", output) is not None


def no_compiled_mode(backend: str) -> str:
    """The reason of the compiled check's skips on a backend without the capability "compile"."""
    return f"backend {backend!r} declares no compiled mode (capability 'compile')"


def right_outcome(check: str, *, compiles: bool) -> str:
    """What a cell of ``check`` reads where the backend is right: passed, except that the
    compiled check of a backend that declares no compiled mode is skipped."""
    return "skipped" if check == "compiled" and not compiles else "passed"


def assert_compiled_skips(run: Run, backend: str, *, compiles: bool) -> None:
    """The capability skip, exactly where it belongs: without "compile", every test of every
    compiled cell is skipped with the capability reason; with it, no test gives that reason."""
    reason = no_compiled_mode(backend)
    for (check, op), result in run.results.items():
        tests = [(t["outcome"], t["reason"]) for t in result["tests"]]
        if check == "compiled" and not compiles:
            assert tests, f"compiled:{op} ran no test\n{run.table()}"
            assert tests == [("skipped", reason)] * len(tests), f"compiled:{op}: {tests}\n{run.table()}"
            assert (result["outcome"], result["reason"]) == ("skipped", reason), f"compiled:{op}: {result}"
        else:
            assert ("skipped", reason) not in tests, f"{check}:{op}: {tests}\n{run.table()}"
    if not compiles:
        assert f"skipped: {reason}" in run.stdout, run.table()  # listed under the table, once
    else:
        assert "declares no compiled mode" not in run.output, run.table()


# -- running pytest in a subprocess ----------------------------------------------


@dataclass
class Run:
    """What one pytest subprocess did."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    report_path: Path | None = None
    _report: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    @property
    def report(self) -> dict[str, Any]:
        """The ``--rnnspec-report`` JSON."""
        if self._report is None:
            assert self.report_path is not None, "no report asked for"
            assert self.report_path.exists(), f"no report written\n{self}"
            self._report = json.loads(self.report_path.read_text())
        return self._report

    @property
    def results(self) -> dict[tuple[str, str], dict[str, Any]]:
        """``{(check, op): result}`` from the report (outcome, reason and the tests of the cell)."""
        return {(r["check"], r["op"]): r for r in self.report["results"]}

    @property
    def cells(self) -> dict[tuple[str, str], str]:
        """``{(check, op): outcome}`` from the report."""
        return {cell: result["outcome"] for cell, result in self.results.items()}

    def table(self) -> str:
        """The summary section of the output (the table and what follows), for failure messages."""
        start = self.stdout.find("rnnspec conformance of backend")
        return self.stdout[start:] if start >= 0 else self.stdout[-3000:]

    def table_rows(self) -> dict[str, list[str]]:
        """The summary table, ``{first word: words}`` per line, from its header line (``op ...``) on."""
        rows: dict[str, list[str]] = {}
        for line in self.table().splitlines()[1:]:
            words = line.split()
            if words and (rows or words[0] == "op"):
                rows.setdefault(words[0], words)
        return rows

    def table_cells(self) -> dict[str, dict[str, str]]:
        """The summary table, ``{op: {check: cell text}}``, cut at the columns of its header line."""
        lines = self.table().splitlines()
        header = next(i for i, line in enumerate(lines) if line.split()[:1] == ["op"])
        names = lines[header].split()[1:]
        starts = [lines[header].index(f" {name}") + 1 for name in names]
        table: dict[str, dict[str, str]] = {}
        for line in lines[header + 1 :]:
            if not line.strip():
                break
            bounds = zip(starts, [*starts[1:], None], strict=True)
            table[line.split()[0]] = {name: line[a:b].strip() for name, (a, b) in zip(names, bounds, strict=True)}
        return table

    def __str__(self) -> str:
        return (
            f"pytest {' '.join(self.args)}\nexit code {self.returncode}\n"
            f"--- stdout (end) ---\n{self.stdout[-6000:]}\n--- stderr (end) ---\n{self.stderr[-3000:]}"
        )


def run_pytest(
    *args: str,
    cwd: Path,
    site: Path | None = None,
    ops: tuple[str, ...] | None = None,
    env: Mapping[str, str] | None = None,
    report: bool = False,
) -> Run:
    """Run pytest in a fresh interpreter in ``cwd`` (no ini file there), with ``site`` on the path.

    ``ops`` keeps the suite's tests of those ops only; ``report`` asks for the JSON report.
    """
    environ = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    # The runs go in parallel: one thread each keeps them from fighting over the cores.
    environ.update({"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    environ.update(env or {})
    argv = ["-p", "no:cacheprovider", *args]
    paths = [] if site is None else [str(site)]
    if ops is not None:
        paths.insert(0, str(_filter_dir(cwd)))
        environ["RNNSPEC_BITE_OPS"] = ",".join(ops)
        argv += ["-p", "rnnspec_bite_ops"]
    if paths:
        environ["PYTHONPATH"] = os.pathsep.join([*paths, environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    report_path = cwd / "report.json" if report else None
    if report_path is not None:
        argv.append(f"--rnnspec-report={report_path}")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", *argv],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    return Run(argv, proc.returncode, proc.stdout, proc.stderr, report_path)


def _filter_dir(cwd: Path) -> Path:
    directory = cwd / "bite_plugins"
    directory.mkdir(exist_ok=True)
    (directory / "rnnspec_bite_ops.py").write_text(OPS_FILTER)
    return directory


def suite(backend: str, *extra: str) -> list[str]:
    """The arguments of a conformance run on ``backend``."""
    return ["--pyargs", "rnnspec.conformance", f"--rnnspec-backend={backend}", "--hypothesis-profile=ci", *extra]


#: A pytest plugin (``-p rnnspec_bite_ops``) that keeps the suite's tests of the ops in
#: $RNNSPEC_BITE_OPS: exact, where ``-k`` would also match test names that mention an op.
OPS_FILTER = """
import os


def pytest_collection_modifyitems(config, items):
    ops = set(os.environ["RNNSPEC_BITE_OPS"].split(","))
    keep, drop = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        op = callspec.params.get("op") if callspec is not None else None
        (keep if op is None or op in ops else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
"""


#: pip builds the mutants with the setuptools at hand, from their sources, with no index.
PIP_OFFLINE = ("--no-deps", "--no-build-isolation", "--no-index")


def install_module_backend(site: Path, distribution: str, backend: str, source: str) -> Path:
    """Install a backend written as one plugin module into ``site``, with a hand-written dist-info:
    a distribution without a build, found through its entry point like any other."""
    site.mkdir(parents=True, exist_ok=True)
    module = distribution.replace("-", "_")
    (site / f"{module}.py").write_text(source)
    info = site / f"{module}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{backend} = {module}\n")
    return site


def write_xfails(directory: Path, entries: Mapping[str, str]) -> str:
    """Write an ``--rnnspec-xfails`` file; returns the option."""
    path = directory / "xfails.json"
    path.write_text(json.dumps(dict(entries)))
    return f"--rnnspec-xfails={path}"


# -- fixtures --------------------------------------------------------------------


@pytest.fixture(scope="module")
def mutant_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every mutant, pip-installed (from a copy of its sources) into one directory."""
    if importlib.util.find_spec("setuptools") is None:  # pip builds the mutants with it, offline
        pytest.fail("these tests pip-install the mutants without build isolation: install setuptools")
    root = tmp_path_factory.mktemp("mutants")
    sources = []
    for mutant in MUTANTS:
        # A copy: building in place would leave build/ and *.egg-info in the repository.
        source = root / "src" / mutant.distribution
        shutil.copytree(
            MUTANTS_DIR / mutant.distribution,
            source,
            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"),
        )
        sources.append(str(source))
    site = root / "site"
    environ = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    pip = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", *PIP_OFFLINE]
    proc = subprocess.run(
        [*pip, "--target", str(site), *sources],
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, f"pip install of the mutants failed:\n{proc.stdout}\n{proc.stderr}"
    return site


#: A right backend that compiles: the reference, with a "compiler" that runs the op method.
COMPILING_BACKEND = '''
from rnnspec.hookspecs import BackendDeclaration, hookimpl
from rnnspec.reference import Reference


class Compiling(Reference):
    """The reference, with a compiled mode that is a plain wrapper of each op method."""

    capabilities = frozenset({"vjp", "compile"})

    def compile(self, op):
        return lambda **kw: getattr(self, op)(**kw)


@hookimpl
def rnnspec_backend():
    return BackendDeclaration(load=Compiling, description="the reference, with a compiled mode")
'''

#: The long runs, by key; the tests that read one are parametrised with its key as ``run_key``.
#: The whole-suite runs come first, so that the short ones fill the gaps beside them.
LONG_RUNS = (
    *(m.backend for m in MUTANTS if m.whole_suite),
    "numpy",
    "compiling",
    *(m.backend for m in MUTANTS if not m.whole_suite),
    "xfail",
)
_BY_BACKEND = {m.backend: m for m in MUTANTS}


def _long_run(key: str, site: Path, cwd: Path) -> Run:
    if key == "numpy":
        return run_pytest(*suite("numpy"), cwd=cwd, report=True)
    if key == "compiling":
        compiling_site = install_module_backend(cwd / "site", "compiling-backend", "compiling", COMPILING_BACKEND)
        return run_pytest(*suite("compiling"), cwd=cwd, site=compiling_site, report=True)
    if key == "xfail":
        # The gate-order mutant's lstm failures, declared: the run passes. Only lstm and rnn run
        # (skip_lstm's open-gate identity also sees the broken lstm).
        xfails = write_xfails(
            cwd,
            {
                "values:lstm": "mutant: lstm gates i and f swapped",
                "gradients:lstm": "mutant: lstm gates i and f swapped (reverse mode)",
            },
        )
        return run_pytest(*suite("mutant_gate_order", xfails), cwd=cwd, site=site, ops=("lstm", "rnn"), report=True)
    mutant = _BY_BACKEND[key]
    return run_pytest(*suite(key), cwd=cwd, site=site, ops=mutant.run_ops, report=True)


@pytest.fixture(scope="module")
def suite_runs(
    request: pytest.FixtureRequest, mutant_site: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Future[Run]]]:
    """The long runs that the selected tests need, started at once, side by side."""
    wanted = set()
    for item in request.session.items:
        callspec = getattr(item, "callspec", None)
        if getattr(item, "module", None) is request.module and callspec is not None and "run_key" in callspec.params:
            wanted.add(callspec.params["run_key"])
    keys = [key for key in LONG_RUNS if key in wanted]
    with ThreadPoolExecutor(max_workers=max(1, min(len(keys), os.cpu_count() or 2))) as pool:
        yield {key: pool.submit(_long_run, key, mutant_site, tmp_path_factory.mktemp(key)) for key in keys}


@pytest.fixture
def run_of(suite_runs: dict[str, Future[Run]], run_key: str) -> Run:
    """The finished long run of this test."""
    return suite_runs[run_key].result()


# -- the mutants -------------------------------------------------------------------


def test_mutants_are_installable_backend_distributions(mutant_site: Path) -> None:
    """Each mutant is a distribution whose entry point in "rnnspec.backends" names its plugin module."""
    installed = {d.metadata["Name"]: d for d in metadata.distributions(path=[str(mutant_site)])}
    assert sorted(installed) == sorted(m.distribution for m in MUTANTS)
    for mutant in MUTANTS:
        project = tomllib.loads((MUTANTS_DIR / mutant.distribution / "pyproject.toml").read_text())
        declared = project["project"]["entry-points"][ENTRY_POINT_GROUP]
        assert declared == {mutant.backend: f"{mutant.backend}.plugin"}
        entry_points = installed[mutant.distribution].entry_points.select(group=ENTRY_POINT_GROUP)
        assert [(ep.name, ep.value) for ep in entry_points] == [(mutant.backend, f"{mutant.backend}.plugin")]


@pytest.mark.parametrize(("mutant", "run_key"), [pytest.param(m, m.backend, id=m.distribution) for m in MUTANTS])
def test_the_suite_fails_a_mutant_where_it_is_wrong(mutant: Mutant, run_key: str, run_of: Run) -> None:
    """The suite fails on the mutant: on the cells it breaks, and not on the ops it leaves alone."""
    run = run_of
    assert run.returncode == FAILED, f"the suite did not fail on {mutant.backend}\n{run}"
    assert run.report["backend"] == mutant.backend
    cells = run.cells
    where = f"\n{run.table()}"
    ran = {op for _, op in cells}
    assert ran == (set(OPS) if mutant.whole_suite else set(mutant.run_ops or ())), where
    for check, op in mutant.breaks:
        assert cells.get((check, op)) == "failed", f"{check}:{op} should have failed on {mutant.backend}{where}"
        assert names_a_test_of(run.stdout, op), f"no test of {op} named{where}"  # the short summary's failure
    failed = {cell for cell, outcome in cells.items() if outcome not in ("passed", "skipped")}
    # values, gradients and compiled compare each op with the reference on its own: exactly the
    # broken cells fail.
    assert {cell for cell in failed if cell[0] != "properties"} == set(mutant.breaks), where
    # A property may relate two ops: it fails on an op whose values are broken or on its partner,
    # nowhere else (the properties check runs the op methods alone: not vjp, not the compiler).
    assert {op for check, op in failed if check == "properties"} <= mutant.wrong_values | set(mutant.partners), where
    # The compiled check is skipped, with the capability reason, exactly when the mutant declares
    # no compiled mode.
    assert_compiled_skips(run, mutant.backend, compiles=mutant.compiles)
    # Specific: every op the mutant leaves alone passed every check (but a capability skip).
    untouched = sorted(ran - mutant.ops - set(mutant.partners))
    assert untouched, where
    for op in untouched:
        outcomes = {check: cells.get((check, op)) for check in CHECKS}
        assert outcomes == {check: right_outcome(check, compiles=mutant.compiles) for check in CHECKS}, (
            f"{op}: {outcomes}{where}"
        )
    # And on a broken op, the checks other than the broken ones and properties are right too.
    for op in sorted(mutant.ops):
        others = [check for check in CHECKS if check != "properties" and (check, op) not in mutant.breaks]
        outcomes = {check: cells.get((check, op)) for check in others}
        assert outcomes == {check: right_outcome(check, compiles=mutant.compiles) for check in others}, (
            f"{op}: {outcomes}{where}"
        )


@pytest.mark.parametrize("run_key", ["compiling"])
def test_a_right_backend_that_compiles_passes_every_check(run_key: str, run_of: Run) -> None:
    """The reference with a compiled mode (a plain wrapper of each op method) passes the whole
    suite: the compiled check runs, and passes, on every op, and nothing is skipped as a whole."""
    run = run_of
    assert run.returncode == PASSED, str(run)
    assert "capabilities compile, vjp" in run.stdout
    cells = run.cells
    assert cells == {(check, op): "passed" for check in CHECKS for op in OPS}, run.table()
    assert_compiled_skips(run, "compiling", compiles=True)
    compiled_tests = {
        op: [t["outcome"] for t in r["tests"]] for (check, op), r in run.results.items() if check == "compiled"
    }
    assert compiled_tests == {op: ["passed"] for op in OPS}, compiled_tests  # not a skip hidden in a pass
    table = run.table_cells()
    assert {op: row["compiled"] for op, row in table.items()} == dict.fromkeys(OPS, "passed"), run.table()


@pytest.mark.parametrize("run_key", ["xfail"])
def test_a_matching_entry_turns_a_mutant_failure_into_an_expected_failure(run_key: str, run_of: Run) -> None:
    """Entries of --rnnspec-xfails that match the mutant's failures make them strict xfails: the run passes."""
    run = run_of
    assert run.returncode == PASSED, str(run)
    results = {(r["check"], r["op"]): r for r in run.report["results"]}
    reason = "mutant: lstm gates i and f swapped"
    assert (results[("values", "lstm")]["outcome"], results[("values", "lstm")]["reason"]) == (
        "expected failure",
        reason,
    )
    assert results[("gradients", "lstm")]["outcome"] == "expected failure"
    # Without "compile", lstm's compiled check is skipped for its capability, not expected to fail.
    assert results[("compiled", "lstm")]["outcome"] == right_outcome("compiled", compiles=False)
    rnn = {check: results[(check, "rnn")]["outcome"] for check in CHECKS}
    assert rnn == {check: right_outcome(check, compiles=False) for check in CHECKS}
    assert_compiled_skips(run, "mutant_gate_order", compiles=False)
    assert run.report["unused_expected_failures"] == []
    # The run's xfails are exactly the tests of lstm's values and gradients checks that the mutant fails.
    lstm_tests = [t for check in ("values", "gradients") for t in results[(check, "lstm")]["tests"]]
    xfailed = sum(t["outcome"] == "expected failure" for t in lstm_tests)
    assert xfailed >= 2
    assert f"{xfailed} xfailed" in run.stdout
    assert f"expected failure: {reason}" in run.stdout  # under the table
    assert "expected failures: 2" in run.stdout  # the header counts the manifest


def test_an_expected_failure_that_passes_fails_the_run(tmp_path: Path) -> None:
    """The entries are strict: an entry on a check that passes fails the run, shown as an xpass."""
    xfails = write_xfails(tmp_path, {"values:linear_recurrence": "believed broken"})
    run = run_pytest(*suite("numpy", xfails), cwd=tmp_path, ops=("linear_recurrence",), report=True)
    assert run.returncode == FAILED, str(run)
    assert "XPASS(strict)" in run.stdout
    results = {(r["check"], r["op"]): r for r in run.report["results"]}
    cell = results[("values", "linear_recurrence")]
    assert (cell["outcome"], cell["reason"]) == ("failed (xpass)", "believed broken")
    assert results[("gradients", "linear_recurrence")]["outcome"] == "passed"


# -- the plugin --------------------------------------------------------------------


@pytest.mark.parametrize("run_key", ["numpy"])
def test_the_numpy_backend_passes_with_a_header_a_table_and_a_report(run_key: str, run_of: Run) -> None:
    """The reference passes its own suite; the header names it, the table and the JSON list every op."""
    run = run_of
    assert run.returncode == PASSED, str(run)
    header = f"rnnspec conformance: backend 'numpy' {run.report['version']} (rnnspec {rnnspec.__version__})"
    assert header in run.stdout
    assert f"framework numpy {np.__version__}, device cpu" in run.stdout
    assert "capabilities vjp" in run.stdout
    assert "rnnspec conformance of backend 'numpy'" in run.stdout
    rows = run.table_rows()
    assert rows["op"] == ["op", *CHECKS], run.table()
    cells = run.table_cells()
    for op in OPS:
        # "passed", or "passed (1 skipped)" where a test of the check does not apply (bfloat16 on NumPy).
        values_and_gradients = [cells.get(op, {}).get(check, "").split(" (")[0] for check in ("values", "gradients")]
        assert values_and_gradients == ["passed", "passed"], f"{op} is not passed in the table\n{run.table()}"
    report = run.report
    assert report["backend"] == "numpy"
    assert report["framework"] == "numpy"
    assert report["framework_version"] == np.__version__
    assert report["device"] == "cpu"
    assert report["unused_expected_failures"] == []
    for check in ("values", "gradients"):
        assert {r["op"] for r in report["results"] if r["check"] == check} == set(OPS), check
    assert {r["outcome"] for r in report["results"]} <= {"passed", "skipped"}
    assert all(r["outcome"] == "passed" for r in report["results"] if r["check"] in ("values", "gradients"))
    # NumPy has no compiler: the compiled check is there for every op, and skipped for the capability.
    assert {r["op"] for r in report["results"] if r["check"] == "compiled"} == set(OPS)
    assert_compiled_skips(run, "numpy", compiles=False)
    table = run.table_cells()
    assert {op: row["compiled"] for op, row in table.items()} == dict.fromkeys(OPS, "skipped"), run.table()


def test_without_a_backend_the_suite_collects_nothing(tmp_path: Path) -> None:
    """No backend named: the suite's modules are not collected, nothing is loaded or written."""
    report = tmp_path / "report.json"
    run = run_pytest("--pyargs", "rnnspec.conformance", f"--rnnspec-report={report}", cwd=tmp_path)
    assert run.returncode == NO_TESTS, str(run)
    assert "collected 0 items" in run.stdout
    assert "rnnspec conformance" not in run.output
    assert not report.exists()


def test_the_plugin_adds_nothing_to_an_ordinary_run(tmp_path: Path) -> None:
    """In an unrelated project the plugin is loaded (its options exist) but changes no outcome."""
    (tmp_path / "test_plain.py").write_text(
        textwrap.dedent(
            """
            import pytest

            @pytest.fixture
            def op():
                return "not an rnnspec op"

            def test_uses_a_fixture_called_op(op):
                assert op == "not an rnnspec op"

            @pytest.mark.parametrize("n", [1, 2])
            def test_values(n):
                assert n > 0

            @pytest.mark.xfail(reason="an ordinary expected failure", strict=True)
            def test_ordinary_xfail():
                assert False
            """
        )
    )
    run = run_pytest("-W", "error", "-rA", cwd=tmp_path)
    assert run.returncode == PASSED, str(run)
    assert "3 passed, 1 xfailed" in run.stdout
    assert "rnnspec conformance" not in run.output
    help_run = run_pytest("--help", cwd=tmp_path)
    assert "--rnnspec-backend" in help_run.stdout  # the plugin is there, and inert


def test_the_backend_can_be_named_by_the_environment(tmp_path: Path) -> None:
    """RNNSPEC_BACKEND=NAME works like --rnnspec-backend=NAME."""
    run = run_pytest(
        "--pyargs",
        "rnnspec.conformance",
        "--hypothesis-profile=ci",
        cwd=tmp_path,
        ops=("linear_recurrence",),
        env={"RNNSPEC_BACKEND": "numpy"},
        report=True,
    )
    assert run.returncode == PASSED, str(run)
    assert "rnnspec conformance: backend 'numpy'" in run.stdout
    assert {r["op"] for r in run.report["results"]} == {"linear_recurrence"}


def test_an_unknown_backend_is_a_usage_error_naming_it(tmp_path: Path) -> None:
    run = run_pytest(*suite("no_such_backend"), cwd=tmp_path)
    assert run.returncode == USAGE_ERROR, str(run)
    assert "backend 'no_such_backend' did not load" in run.stderr
    assert "available backends" in run.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param('{"values:lstm": ""}', "'values:lstm' has no reason", id="empty-reason"),
        pytest.param('{"values:lstm": "   "}', "'values:lstm' has no reason", id="blank-reason"),
        pytest.param('{"values:lstm": null}', "'values:lstm' has no reason", id="null-reason"),
        pytest.param('{"lstm": "a reason"}', "expected 'check:op'", id="no-check"),
        pytest.param('{"speed:lstm": "a reason"}', "expected 'check:op'", id="unknown-check"),
        pytest.param('["values:lstm"]', "expected a JSON object", id="not-an-object"),
        pytest.param('{"values:lstm": "a reason",', "cannot read it as JSON", id="not-json"),
        pytest.param(None, "cannot read it as JSON", id="missing-file"),
    ],
)
def test_a_bad_expected_failure_file_is_a_usage_error(tmp_path: Path, text: str | None, message: str) -> None:
    """An --rnnspec-xfails entry without a reason or not of the form check:op, or a file that is
    not a JSON object, stops the run with a usage error (not an internal error)."""
    path = tmp_path / "xfails.json"
    if text is not None:
        path.write_text(text)
    run = run_pytest(*suite("numpy", f"--rnnspec-xfails={path}"), cwd=tmp_path)
    assert run.returncode == USAGE_ERROR, str(run)
    assert message in run.stderr
    assert "INTERNALERROR" not in run.output


MANIFEST_BACKEND = '''
from rnnspec.hookspecs import BackendDeclaration, hookimpl
from rnnspec.reference import Reference


class WithManifest(Reference):
    """The reference, with an expected-failure manifest that gives no reason."""

    expected_failures = {"values:lstm": ""}


@hookimpl
def rnnspec_backend():
    return BackendDeclaration(load=WithManifest, description="declares an expected failure without a reason")
'''


def test_a_backend_manifest_entry_without_a_reason_is_a_usage_error(tmp_path: Path) -> None:
    """Implementation.expected_failures is held to the same rule as --rnnspec-xfails."""
    site = install_module_backend(tmp_path / "site", "manifest-backend", "with_manifest", MANIFEST_BACKEND)
    run = run_pytest(*suite("with_manifest"), cwd=tmp_path, site=site)
    assert run.returncode == USAGE_ERROR, str(run)
    assert "'values:lstm' has no reason" in run.stderr


def test_an_unused_expected_failure_entry_is_reported(tmp_path: Path) -> None:
    """An entry that matches no check does not fail the run, but the summary and the report name it."""
    xfails = write_xfails(tmp_path, {"values:no_such_op": "stale entry", "values:lstm": "matches a deselected test"})
    run = run_pytest(*suite("numpy", xfails), cwd=tmp_path, ops=("linear_recurrence",), report=True)
    assert run.returncode == PASSED, str(run)
    assert "expected-failure entry 'values:no_such_op' matched no check: remove it" in run.stdout
    assert run.report["unused_expected_failures"] == ["values:no_such_op"]


def test_under_pytest_xdist_the_table_and_report_are_those_of_a_run_in_one_process(tmp_path: Path) -> None:
    """The workers' outcomes and matched manifest entries reach the controller, which prints the summary."""
    pytest.importorskip("xdist")
    xfails = {"values:no_such_op": "stale entry", "values:lstm": "matches a deselected test"}
    runs = {}
    for name, extra in (("one", ()), ("xdist", ("-n", "2"))):
        (tmp_path / name).mkdir()
        options = (write_xfails(tmp_path / name, xfails), *extra)
        runs[name] = run_pytest(*suite("numpy", *options), cwd=tmp_path / name, ops=OPS_OF_KIND, report=True)
    one, xdist = runs["one"], runs["xdist"]
    assert (one.returncode, xdist.returncode) == (PASSED, PASSED), str(xdist)
    assert "2 workers" in xdist.stdout, xdist.stdout[-2000:]
    assert xdist.table_cells() == one.table_cells(), xdist.table()
    assert set(xdist.table_cells()) == set(OPS_OF_KIND)
    assert xdist.report["unused_expected_failures"] == ["values:no_such_op"]

    def outcomes(run: Run) -> dict[tuple[str, str], list[tuple[str, str]]]:
        return {
            (r["op"], r["check"]): sorted((t["test"], t["outcome"]) for t in r["tests"]) for r in run.report["results"]
        }

    assert outcomes(xdist) == outcomes(one)


#: One op of each kind: a primitive and a sequence op (the xdist run's ops).
OPS_OF_KIND = ("linear_recurrence", "indrnn")
