"""CONTRIBUTING.md and the pre-commit configuration say what the repository does.

The pre-commit hooks run the commands of noxfile.py's ``lint`` and ``typecheck`` sessions (what CI
runs), every file the checklist for adding a sequence op names exists (a path with a placeholder
such as ``<op>``: its folder), and the checklist names at most 12 files (issue #20).
"""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
CONTRIBUTING = ROOT / "CONTRIBUTING.md"
PRE_COMMIT = ROOT / ".pre-commit-config.yaml"
NOXFILE = ROOT / "noxfile.py"

#: The most files the checklist may name for a new sequence op with its tests (issue #20).
MOST_FILES = 12


def _session_commands(name: str) -> list[list[str]]:
    """The commands ``session.run(...)`` of noxfile.py's session function ``name``, their literal arguments only."""
    tree = ast.parse(NOXFILE.read_text(encoding="utf-8"))
    function = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
    commands = []
    for node in ast.walk(function):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "run"
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "session"
        ):
            commands.append([a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)])
    return commands


def _hooks() -> dict[str, dict[str, Any]]:
    """The pre-commit hooks by id."""
    config = yaml.safe_load(PRE_COMMIT.read_text(encoding="utf-8"))
    return {hook["id"]: hook for repo in config["repos"] for hook in repo["hooks"]}


def _checklist() -> str:
    text = CONTRIBUTING.read_text(encoding="utf-8")
    match = re.search(r"<!-- checklist:start -->(.*?)<!-- checklist:end -->", text, re.S)
    assert match, "CONTRIBUTING.md has no checklist between <!-- checklist:start --> and <!-- checklist:end -->"
    return match.group(1)


def _checklist_files() -> list[str]:
    """The files the checklist's steps name: the bold code spans (``**`path`**``), in order, each once."""
    return list(dict.fromkeys(re.findall(r"\*\*`([^`]+)`\*\*", _checklist())))


def _checklist_paths() -> list[str]:
    """Every repository path the checklist mentions in a code span: the files of its steps and the others."""
    spans = re.findall(r"`([^`\s]+)`", _checklist())
    return list(dict.fromkeys(s for s in spans if "/" in s and re.search(r"\.(py|md|ya?ml|toml)$", s)))


def test_the_pre_commit_ruff_hooks_run_the_lint_sessions_commands() -> None:
    lint = _session_commands("lint")
    hooks = _hooks()
    check, format_ = (shlex.split(hooks[name]["entry"]) for name in ("ruff-check", "ruff-format"))
    # The session checks the whole tree; the hooks fix the staged files (pre-commit passes their names).
    assert check == [*next(c for c in lint if c[:2] == ["ruff", "check"])[:-1], "--fix"], check
    assert format_ == next(c for c in lint if c[:2] == ["ruff", "format"])[:2], format_
    assert all(hooks[name].get("language") == "system" for name in ("ruff-check", "ruff-format"))


def test_the_pre_commit_mypy_hook_runs_the_typecheck_sessions_command() -> None:
    mypy = [c for c in _session_commands("typecheck") if c and c[0] == "mypy"]
    assert len(mypy) == 1, mypy
    hook = _hooks()["mypy"]
    assert hook["language"] == "system"
    assert hook["pass_filenames"] is False
    assert " ".join(mypy[0]) in hook["entry"], (mypy[0], hook["entry"])
    # The session type-checks the package as installed, with the installed copy on MYPYPATH.
    install = [c for c in _session_commands("typecheck") if "--target" in c]
    assert install
    assert all(arg in hook["entry"] for arg in ("--no-deps", "--target", "MYPYPATH=")), hook["entry"]


def test_the_checklist_for_a_new_sequence_op_names_files() -> None:
    files = _checklist_files()
    assert files, "the checklist names no file (in bold code spans)"
    assert "spec/ops/<op>.py" in files, files
    assert any(f.startswith("tests/") for f in files), files


def test_every_path_the_checklist_names_exists_or_its_folder_does_for_a_placeholder() -> None:
    missing = []
    for path in _checklist_paths():
        target = ROOT / path
        if "<" in path:
            target = ROOT / path.split("<")[0]
            target = target if path.split("<")[0].endswith("/") else target.parent
        if not target.exists():
            missing.append(path)
    assert not missing, f"CONTRIBUTING.md's checklist names paths that do not exist: {missing}"


def test_the_checklist_names_at_most_twelve_files_for_a_new_sequence_op() -> None:
    files = _checklist_files()
    assert len(files) <= MOST_FILES, f"the checklist names {len(files)} files, more than {MOST_FILES}: {files}"
