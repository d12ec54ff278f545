"""The pytest plugin of the conformance suite (entry point ``pytest11: rnnspec``).

It does nothing unless a backend is named with ``--rnnspec-backend=NAME`` or
``RNNSPEC_BACKEND=NAME``. Then it

- loads that backend, failing the run at once if it does not load;
- prints a header with the backend, its distribution, framework and device;
- parametrises the suite's checks over the backend's ops, and lists every op
  the backend does not implement as skipped, with the reason;
- marks the entries of the backend's expected-failure manifest (and of
  ``--rnnspec-xfails=FILE``) as strict xfails, refusing entries without a
  reason and reporting entries that match nothing;
- prints a summary table (op x check) and, with ``--rnnspec-report=PATH``,
  writes it as JSON.

Hypothesis profiles: ``ci`` (derandomised, few examples), ``dev`` (the
default) and ``thorough``; choose with ``--hypothesis-profile`` or the
environment variable ``HYPOTHESIS_PROFILE`` (the option wins). The large tier
of the values and gradients checks runs :func:`large_examples` cases per op
and size under the profile, their targeted tests (ties, range edges, half
precision) :func:`targeted_examples` cases per op.
"""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings

import rnnspec
from rnnspec.backend import Backend
from rnnspec.ops import OPS

__all__ = ["CHECKS", "LARGE_EXAMPLES", "TARGETED_EXAMPLES", "active_profile", "large_examples", "targeted_examples"]

BACKEND_ENV = "RNNSPEC_BACKEND"
_HERE = Path(__file__).resolve().parent
_RESULTS = pytest.StashKey[dict[tuple[str, str], dict[str, Any]]]()
_MANIFEST = pytest.StashKey[dict[str, str]]()
_USED = pytest.StashKey[set[str]]()
_BACKEND = pytest.StashKey[Backend]()

#: The checks of the suite, by marker name, with what each asserts.
CHECKS: dict[str, str] = {
    "values": "every result field and the final state equal the reference's within the tolerance policy: drawn, "
    "large, ties, range edges, NaN inputs, half precision, 10,000 steps and saturated gates in float64",
    "gradients": "the backend's reverse mode equals rnnspec.reference.vjp for x, params and initial state",
    "properties": "metamorphic properties: chunked == whole, reverse, padding, row independence, op identities",
    "compiled": "the values check again, under the backend's compiler (jax.jit, tf.function, torch.compile)",
    "checkpointing": "checkpoint_every=K changes no value and no gradient of the backend's own unsegmented run",
    "errors": "every invalid call raises the reference's rnnspec error class, naming op, argument, values, backend",
    "inputs": "no call, forward or reverse mode, modifies its inputs (x, params, lengths, state, cotangents) or "
    "returns arrays aliasing them",
    "edge_cases": "on the backend alone: 10,000 steps and saturated gates stay finite, bitwise repeatability on CPU",
}

_BASE = settings(
    deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
# ci skips the explain phase: on a failure it reruns the test hundreds of times (seconds per
# failing op); the failure message carries the case's repro either way.
settings.register_profile(
    "ci", _BASE, max_examples=5, derandomize=True, phases=[p for p in Phase if p is not Phase.explain]
)
settings.register_profile("dev", _BASE, max_examples=25)
settings.register_profile("thorough", _BASE, max_examples=300)

#: Cases per op and size of the large tier (long sequences, large batches), per profile: each costs
#: about a second of the reference's time, and on jax and TensorFlow a compilation.
LARGE_EXAMPLES = {"ci": 1, "dev": 1, "thorough": 4}
#: Cases per op of the targeted tests (ties, range edges, half precision), per profile: each case is
#: built to show one thing, so fewer are drawn than of the general tests.
TARGETED_EXAMPLES = {"ci": 2, "dev": 5, "thorough": 50}
PROFILE_ENV = "HYPOTHESIS_PROFILE"


def active_profile() -> str:
    """The name of the hypothesis profile the suite runs under (without hypothesis' ``-with-...`` suffixes)."""
    return settings.get_current_profile_name().split("-with-")[0]


def large_examples() -> int:
    """Cases per op and size of the large tier under the active profile (1 for a profile of your own)."""
    return LARGE_EXAMPLES.get(active_profile(), 1)


def targeted_examples() -> int:
    """Cases per op of a targeted test under the active profile (2 for a profile of your own)."""
    return TARGETED_EXAMPLES.get(active_profile(), 2)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("rnnspec", "rnnspec conformance suite")
    group.addoption(
        "--rnnspec-backend", default=None, help=f"run the conformance suite on this backend (or ${BACKEND_ENV})"
    )
    group.addoption("--rnnspec-report", default=None, metavar="PATH", help="write the summary table as JSON")
    group.addoption(
        "--rnnspec-xfails",
        default=None,
        metavar="FILE",
        help='JSON {"check:op": "reason"} of expected failures, added to the backend\'s own manifest',
    )


def backend_name(config: pytest.Config) -> str | None:
    """The backend the suite runs on, or ``None`` (then the plugin stays inert)."""
    name = config.getoption("--rnnspec-backend") or os.environ.get(BACKEND_ENV)
    return str(name) if name else None


def _manifest(config: pytest.Config, backend: Backend) -> dict[str, str]:
    entries = dict(getattr(backend.implementation, "expected_failures", {}) or {})
    path = config.getoption("--rnnspec-xfails")
    if path:
        try:
            extra = json.loads(Path(path).read_text())
        except (OSError, ValueError) as err:
            raise pytest.UsageError(f"--rnnspec-xfails={path}: cannot read it as JSON: {err}") from err
        if not isinstance(extra, dict):
            raise pytest.UsageError(f'--rnnspec-xfails={path}: expected a JSON object {{"check:op": "reason"}}')
        entries.update(extra)
    for pattern, reason in entries.items():
        if not isinstance(pattern, str) or ":" not in pattern or pattern.split(":", 1)[0] not in CHECKS:
            raise pytest.UsageError(
                f"rnnspec expected-failure entry {pattern!r}: expected 'check:op' with check among {sorted(CHECKS)}"
            )
        if not isinstance(reason, str) or not reason.strip():
            raise pytest.UsageError(f"rnnspec expected-failure entry {pattern!r} has no reason; a reason is mandatory")
    return entries


def pytest_configure(config: pytest.Config) -> None:
    name = backend_name(config)
    config.addinivalue_line("markers", "rnnspec_check(name): the conformance check a test belongs to")
    if name is None:
        return
    # Hypothesis loads the profile of --hypothesis-profile itself, but does not read $HYPOTHESIS_PROFILE:
    # without the option, load the variable's profile, or dev.
    if config.getoption("hypothesis_profile", None) is None:
        profile = os.environ.get(PROFILE_ENV) or "dev"
        try:
            settings.load_profile(profile)
        except Exception as err:  # hypothesis' InvalidArgument, for a profile never registered
            raise pytest.UsageError(f"rnnspec conformance: ${PROFILE_ENV}={profile}: {err}") from err
    try:
        backend = rnnspec.get_backend(name)
    except rnnspec.RnnspecError as err:
        raise pytest.UsageError(f"rnnspec conformance: backend {name!r} did not load: {err}") from err
    config.stash[_BACKEND] = backend
    config.stash[_MANIFEST] = _manifest(config, backend)
    config.stash[_USED] = set()
    config.stash[_RESULTS] = {}
    config.pluginmanager.register(_Tally(config), "rnnspec-conformance-tally")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    # The suite's own test modules are collected only when a backend is named.
    if backend_name(config) is None and _HERE in collection_path.resolve().parents:
        return True
    return None


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    if _BACKEND not in config.stash:
        return None
    b = config.stash[_BACKEND]
    impl = b.implementation
    return [
        f"rnnspec conformance: backend {b.name!r} {b.version} (rnnspec {rnnspec.__version__})",
        f"  framework {impl.framework} {impl.framework_version()}, device {impl.device()}, "
        f"dtypes {', '.join(impl.dtypes)}, capabilities {', '.join(sorted(impl.capabilities)) or '-'}",
        f"  expected failures: {len(config.stash[_MANIFEST])}",
    ]


@pytest.fixture(scope="session")
def rnnspec_backend(request: pytest.FixtureRequest) -> Backend:
    """The backend under test."""
    if _BACKEND not in request.config.stash:
        pytest.skip("no rnnspec backend named (--rnnspec-backend or RNNSPEC_BACKEND)")
    return request.config.stash[_BACKEND]


@pytest.fixture(scope="session", params=["float16", "bfloat16"])
def rnnspec_half_dtype(request: pytest.FixtureRequest, rnnspec_backend: Backend) -> str:
    """A half-precision dtype the backend declares (a test using it skips for one it does not)."""
    from .checks_common import dtypes_of

    dtype = str(request.param)
    if dtype not in rnnspec_backend.implementation.dtypes:
        pytest.skip(f"backend {rnnspec_backend.name!r} does not declare {dtype} (optional)")
    if dtype not in dtypes_of(rnnspec_backend):
        pytest.skip(f"the suite cannot make {dtype} arrays of framework {rnnspec_backend.implementation.framework!r}")
    return dtype


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "op" not in metafunc.fixturenames or _BACKEND not in metafunc.config.stash:
        return
    if _HERE not in Path(str(metafunc.definition.path)).resolve().parents:
        return  # only the suite's own checks are parametrised over the ops
    backend = metafunc.config.stash[_BACKEND]
    params = []
    for op in OPS:
        marks = []
        if op not in backend.ops:
            marks.append(pytest.mark.skip(reason=f"backend {backend.name!r} does not implement {op!r}"))
        params.append(pytest.param(op, id=op, marks=marks))
    metafunc.parametrize("op", params)


def _check_of(item: pytest.Item) -> str | None:
    marker = item.get_closest_marker("rnnspec_check")
    return str(marker.args[0]) if marker else None


def _op_of(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    return None if callspec is None else callspec.params.get("op")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _MANIFEST not in config.stash:
        return
    manifest, used = config.stash[_MANIFEST], config.stash[_USED]
    for item in items:
        check, op = _check_of(item), _op_of(item)
        if check is None or op is None:
            continue
        for pattern, reason in manifest.items():
            if fnmatch.fnmatchcase(f"{check}:{op}", pattern):
                item.add_marker(pytest.mark.xfail(reason=reason, strict=True))
                used.add(pattern)


#: How bad each outcome of a cell is: a cell shows the worst outcome of its tests. A skip is the
#: mildest, so a check whose tests partly apply to an op shows what the applicable ones did.
_SEVERITY = {"skipped": 0, "passed": 1, "expected failure": 2, "failed (xpass)": 3, "failed": 4}
_XPASS_STRICT = "[XPASS(strict)] "


def _outcome(report: pytest.TestReport) -> tuple[str, str]:
    if hasattr(report, "wasxfail"):
        return ("expected failure" if report.skipped else "failed (xpass)"), str(report.wasxfail)
    if report.failed and isinstance(report.longrepr, str) and report.longrepr.startswith(_XPASS_STRICT):
        # A strict xfail that passed: pytest reports a plain failure, without wasxfail.
        return "failed (xpass)", report.longrepr.removeprefix(_XPASS_STRICT)
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        return "skipped", reason.removeprefix("Skipped: ")
    return report.outcome, ""


#: The name of the user property under which a test's report carries its (op, check) outcome.
_PROPERTY = "rnnspec_conformance"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    check, op = _check_of(item), _op_of(item)
    if check is None or op is None or _RESULTS not in item.config.stash:
        return report
    if report.when == "call" or (report.when == "setup" and not report.passed):
        outcome, reason = _outcome(report)
        entry = {"op": op, "check": check, "test": item.originalname, "outcome": outcome, "reason": reason}  # type: ignore[attr-defined]
        # On the report, not in this process's stash: under pytest-xdist the report travels from the
        # worker that ran the test to the controller, which prints the summary.
        report.user_properties.append((_PROPERTY, entry))
    return report


def _tally(config: pytest.Config, entry: Mapping[str, str]) -> None:
    """Add one test's outcome to its (op, check) cell, and note the manifest entries it matched."""
    key = (entry["op"], entry["check"])
    cell = config.stash[_RESULTS].setdefault(key, {"outcome": "skipped", "reason": "", "tests": []})
    outcome, reason = entry["outcome"], entry["reason"]
    cell["tests"].append({"test": entry["test"], "outcome": outcome, "reason": reason})
    # Several tests may make up one check: the cell shows the worst outcome, a skip counting least.
    if not cell["tests"][1:] or _SEVERITY.get(outcome, 4) > _SEVERITY.get(cell["outcome"], 4):
        cell["outcome"], cell["reason"] = outcome, reason


class _Tally:
    """Collects the outcomes from the reports, in the process that prints the summary.

    Under pytest-xdist that is the controller, which collects no tests: the
    workers send it the manifest entries their collection matched
    (``workeroutput``, read when each worker goes down).
    """

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        for name, entry in report.user_properties:
            if name == _PROPERTY and isinstance(entry, Mapping):
                _tally(self.config, entry)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        output = getattr(self.config, "workeroutput", None)  # set on an xdist worker only
        if output is not None:
            used: set[str] = self.config.stash[_USED]
            output[_PROPERTY] = sorted(used)

    @pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist, which may not be installed
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        self.config.stash[_USED].update(getattr(node, "workeroutput", {}).get(_PROPERTY, ()))


def _cell(result: Mapping[str, Any]) -> str:
    skipped = sum(t["outcome"] == "skipped" for t in result["tests"])
    if result["outcome"] != "skipped" and skipped:
        return f"{result['outcome']} ({skipped} skipped)"
    return str(result["outcome"])


def summary(results: Mapping[tuple[str, str], Mapping[str, Any]]) -> list[str]:
    """The op x check table, one line per op."""
    checks = [c for c in CHECKS if any(k[1] == c for k in results)]
    ops = [op for op in OPS if any(k[0] == op for k in results)]
    width = max([len(op) for op in ops] + [2])
    cells = {key: _cell(result) for key, result in results.items()}
    column = max([len(c) for c in cells.values()] + [len(c) for c in checks] + [16])
    lines = [("op".ljust(width) + "  " + "  ".join(c.ljust(column) for c in checks)).rstrip()]
    for op in ops:
        row = [cells.get((op, c), "-").ljust(column) for c in checks]
        lines.append((op.ljust(width) + "  " + "  ".join(row)).rstrip())
    # Every reason once: skips (capability, not applicable), expected failures, xpasses.
    reasons = sorted(
        {f"{t['outcome']}: {t['reason']}" for result in results.values() for t in result["tests"] if t["reason"]}
    )
    # Which tests made a cell fail: a check is made of several tests (values: drawn, large, ties, ...).
    failures = sorted(
        {
            f"{t['outcome']}: {check}:{op} in {t['test']}"
            for (op, check), result in results.items()
            for t in result["tests"]
            if t["outcome"].startswith("failed")
        }
    )
    notes = [*reasons, *failures]
    return [*lines, "", *notes] if notes else lines


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if _RESULTS not in config.stash:
        return
    results = config.stash[_RESULTS]
    backend = config.stash[_BACKEND]
    terminalreporter.section(f"rnnspec conformance of backend {backend.name!r}")
    for line in summary(results):
        terminalreporter.write_line(line)
    manifest: dict[str, str] = config.stash[_MANIFEST]
    used: set[str] = config.stash[_USED]
    unused = sorted(set(manifest) - used)
    for pattern in unused:
        terminalreporter.write_line(f"expected-failure entry {pattern!r} matched no check: remove it")
    path = config.getoption("--rnnspec-report")
    if path:
        payload = {
            "backend": backend.name,
            "version": backend.version,
            "framework": backend.implementation.framework,
            "framework_version": backend.implementation.framework_version(),
            "device": backend.implementation.device(),
            "results": [{"op": op, "check": check, **result} for (op, check), result in sorted(results.items())],
            "unused_expected_failures": unused,
        }
        Path(path).write_text(json.dumps(payload, indent=2))
        terminalreporter.write_line(f"report written to {path}")
