"""The public/private boundary: every module of the installed package declares ``__all__``, and the names exist.

The modules are those of the packages ``pyproject.toml`` lists (``[tool.setuptools] packages``), found
where the installed package has them (an editable install maps them onto the repository's folders).
They are read, not imported: importing one may need a framework, and ``rnnspec.bench.__main__`` runs
the benchmarks. ``rnnspec`` itself is imported, for the names its ``__all__`` promises.
"""

from __future__ import annotations

import ast
import importlib.util
import pkgutil
import tomllib
from pathlib import Path

import pytest

import rnnspec

ROOT = Path(__file__).resolve().parents[1]
PACKAGES: list[str] = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"][
    "packages"
]


def _package_dirs(package: str) -> list[str]:
    spec = importlib.util.find_spec(package)
    assert spec is not None, f"package {package} is not installed"
    assert spec.submodule_search_locations is not None, f"{package} is not a package"
    return list(spec.submodule_search_locations)


def _modules() -> dict[str, Path]:
    """Every module of every listed package, by dotted name: the packages' ``__init__`` and their modules."""
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for location in _package_dirs(package):
            modules[package] = Path(location) / "__init__.py"
            for info in pkgutil.iter_modules([location]):
                if not info.ispkg:
                    modules[f"{package}.{info.name}"] = Path(location) / f"{info.name}.py"
    return modules


MODULES = _modules()


def _declared_all(tree: ast.Module) -> list[str] | None:
    """The names of the module's top-level ``__all__`` (None if it has none)."""
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign):
            targets, value = [node.target], node.value
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            assert isinstance(value, (ast.List, ast.Tuple)), "__all__ is not a literal list or tuple"
            return [ast.literal_eval(e) for e in value.elts]
    return None


def _bound_names(body: list[ast.stmt]) -> set[str]:
    """The names a module's top level binds (descending into if/try blocks)."""
    names: set[str] = set()
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
        elif isinstance(node, ast.If):
            names |= _bound_names(node.body) | _bound_names(node.orelse)
        elif isinstance(node, ast.Try):
            names |= _bound_names(node.body) | _bound_names(node.orelse) | _bound_names(node.finalbody)
            for handler in node.handlers:
                names |= _bound_names(handler.body)
    return names


def test_every_listed_package_is_found_and_every_subpackage_is_listed() -> None:
    """The walk below covers the whole package: no folder of modules is missing from ``packages``."""
    for package in PACKAGES:
        for location in _package_dirs(package):
            for info in pkgutil.iter_modules([location]):
                if info.ispkg:
                    assert f"{package}.{info.name}" in PACKAGES, f"{package}.{info.name} is not in pyproject's packages"
    assert "rnnspec" in MODULES
    assert len(MODULES) > len(PACKAGES)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_module_declares_all_and_binds_its_names(module: str) -> None:
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"), filename=str(MODULES[module]))
    names = _declared_all(tree)
    assert names is not None, f"{module} ({MODULES[module]}) declares no __all__"
    assert len(set(names)) == len(names), f"{module}.__all__ names a name twice"
    bound = _bound_names(tree.body)
    if "__getattr__" not in bound:  # a module with __getattr__ makes names on demand
        missing = sorted(set(names) - bound)
        assert not missing, f"{module}.__all__ names {missing}, which the module does not bind"


def test_every_name_of_rnnspec_all_exists() -> None:
    assert len(set(rnnspec.__all__)) == len(rnnspec.__all__), "rnnspec.__all__ names a name twice"
    missing = [name for name in rnnspec.__all__ if not hasattr(rnnspec, name)]
    assert not missing, f"rnnspec.__all__ names {missing}, which rnnspec lacks"
