"""The layering of the package: the conformance suite uses only the reference's public API."""

from __future__ import annotations

import ast
from pathlib import Path

import rnnspec.reference

ROOT = Path(__file__).resolve().parents[1]
CONFORMANCE = ROOT / "conformance"


def _reference_imports(path: Path) -> list[tuple[int, str, tuple[str, ...]]]:
    """``(line, module, names)`` of every import of ``rnnspec.reference`` or a module under it in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name, ()) for a in node.names if a.name.startswith("rnnspec.reference")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module is not None:
            if node.module == "rnnspec" and any(a.name == "reference" for a in node.names):
                found.append((node.lineno, "rnnspec.reference", ()))
            elif node.module.startswith("rnnspec.reference"):
                found.append((node.lineno, node.module, tuple(a.name for a in node.names)))
    return found


def test_the_conformance_suite_imports_no_private_module_of_the_reference() -> None:
    private = [
        f"{path.name}:{line}: {module}"
        for path in sorted(CONFORMANCE.glob("*.py"))
        for line, module, _ in _reference_imports(path)
        if module != "rnnspec.reference"
    ]
    assert not private, f"conformance modules import the reference's private modules: {private}"


def test_the_conformance_suite_imports_only_the_public_names_of_the_reference() -> None:
    public = set(rnnspec.reference.__all__)
    outside = [
        f"{path.name}:{line}: {name}"
        for path in sorted(CONFORMANCE.glob("*.py"))
        for line, module, names in _reference_imports(path)
        for name in names
        if module == "rnnspec.reference" and name not in public
    ]
    assert not outside, f"conformance modules import names outside rnnspec.reference.__all__: {outside}"


def test_the_import_check_sees_every_form_of_a_private_import(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from rnnspec.reference.stack import reverse_valid\n"
        "import rnnspec.reference.runs\n"
        "def f():\n    from rnnspec.reference import vjp\n",
        encoding="utf-8",
    )
    modules = [module for _, module, _ in _reference_imports(probe)]
    assert modules == ["rnnspec.reference.stack", "rnnspec.reference.runs", "rnnspec.reference"]
