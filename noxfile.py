"""Sessions for rnnspec. Run ``nox -l`` to list them; ``nox -R`` reuses venvs locally.

Every session installs what it needs into its own venv; torch comes as the
CPU build (``torch==2.13.0``), which pip finds locally.
"""

from __future__ import annotations

import shutil

import nox

nox.options.default_venv_backend = "venv"  # pip, not uv: uv would fetch a CUDA torch
nox.options.sessions = ["tests", "lint", "typecheck"]

PYTHON = "3.11"
TORCH_CPU = "torch==2.13.0"


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run the test suite (torch is a test-only dependency). ``nox -s tests -- -k lstm`` forwards args."""
    session.install("-e", ".[test]", TORCH_CPU)
    # pytest exits 5 when it collects nothing; nox treats any non-zero exit as failure.
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """Lint and check formatting with ruff."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """Type-check the package with mypy --strict, as installed (the source folders map onto rnnspec.*)."""
    session.install("mypy", "numpy", "pluggy")
    shutil.rmtree("build", ignore_errors=True)  # setuptools would reuse stale copies from an earlier build
    site = f"{session.create_tmp()}/site"
    session.run("python", "-m", "pip", "install", "-q", "--no-deps", "--upgrade", "--target", site, ".")
    session.run("mypy", "--config-file", "pyproject.toml", "-p", "rnnspec", env={"MYPYPATH": site})


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """The main job: list the backends and run the quick start on the NumPy reference."""
    session.install(".")
    session.run("rnnspec", "backends")
    session.run("python", "examples/quickstart.py")
