"""The example third-party backend (examples/external_backend): packaged, registered, conformant.

The package is installed for real, with ``pip install --no-deps --target``, so
its pyproject and entry point are tested as a user would meet them; then the
conformance suite runs on it in a subprocess, as its README says.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rnnspec.ops import OPS

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "external_backend"
IMPLEMENTED = ("indrnn_recurrence", "linear_recurrence")
#: Variables that would change which backends the subprocesses see, or how hypothesis runs.
_CLEARED = ("RNNSPEC_BACKEND", "RNNSPEC_BACKENDS", "RNNSPEC_STRICT_PLUGINS", "HYPOTHESIS_PROFILE")


def _env(site: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _CLEARED}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH", "")) if p)
    return env


def _run(args: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the installed example package, as site-packages would."""
    root = tmp_path_factory.mktemp("example_backend")
    # Build from a copy: setuptools writes build/ and *.egg-info beside the sources.
    source = shutil.copytree(EXAMPLE, root / "src", ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = root / "site"
    done = _run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(source)],
        cwd=root,
    )
    assert done.returncode == 0, f"pip install failed:\n{done.stdout}\n{done.stderr}"
    return target


def test_the_installed_example_registers_without_importing_its_implementation(site: Path) -> None:
    script = (
        "import sys, rnnspec\n"
        "records = {r.name: r for r in rnnspec.list_backends(load=False)}\n"
        "r = records['example']\n"
        "assert (r.distribution, r.version, r.error) == ('rnnspec-example-backend', '0.1.0', None), r\n"
        "assert 'rnnspec_example_backend.implementation' not in sys.modules, 'plugin module is not light'\n"
        "b = rnnspec.get_backend('example')\n"
        "assert b.ops == ('indrnn_recurrence', 'linear_recurrence'), b.ops\n"
        "assert 'vjp' in b.implementation.capabilities\n"
        "assert b.implementation.expected_failures == {}\n"
    )
    done = _run([sys.executable, "-c", script], cwd=site.parent, env=_env(site))
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"


def test_the_example_passes_the_conformance_suite(site: Path) -> None:
    report_path = site.parent / "report.json"
    done = _run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "--pyargs",
            "rnnspec.conformance",
            "--rnnspec-backend=example",
            "--hypothesis-profile=ci",
            f"--rnnspec-report={report_path}",
        ],
        cwd=site.parent,  # no conftest or pytest configuration of this repository applies there
        env=_env(site),
    )
    assert done.returncode == 0, f"the conformance suite failed on the example:\n{done.stdout}\n{done.stderr}"
    report: dict[str, Any] = json.loads(report_path.read_text())
    assert (report["backend"], report["version"]) == ("example", "0.1.0")
    assert report["unused_expected_failures"] == []
    by_op: dict[str, list[dict[str, Any]]] = {}
    for entry in report["results"]:
        by_op.setdefault(entry["op"], []).append(entry)
    assert set(by_op) == set(OPS), "every op of the spec has a row in the report"
    checks = {entry["check"] for entry in report["results"]}
    assert "values" in checks
    for op in IMPLEMENTED:
        assert {e["check"] for e in by_op[op]} == checks, f"{op} was not run under every check"
        for entry in by_op[op]:
            if entry["check"] == "compiled":  # NumPy has no compiler: the check is skipped, with the reason
                assert entry["outcome"] == "skipped", entry
                assert "declares no compiled mode" in entry["reason"], entry
            else:
                assert entry["outcome"] == "passed", entry
    for op in set(OPS) - set(IMPLEMENTED):
        for entry in by_op[op]:
            assert entry["outcome"] == "skipped", entry
            assert entry["reason"] == f"backend 'example' does not implement {op!r}", entry
