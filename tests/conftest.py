"""Shared fixtures: fake backend distributions installed the way a third party would."""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import rnnspec.registry

# TensorFlow and Triton abort the process with an LLVM error when Triton is imported after TensorFlow
# (torch's dynamo imports Triton when it is installed), not in the other order: import it first.
if importlib.util.find_spec("triton") is not None:
    importlib.import_module("triton")

#: An Implementation that computes lstm by delegating to the NumPy reference.
#: Tests format it with ``{ops}`` and ``{lstm_signature}`` to break the contract on purpose.
FAKE_IMPLEMENTATION = """
import numpy as np

from rnnspec import Implementation


class FakeImplementation(Implementation):
    ops = {ops}
    framework = "fakework"

    def __init__(self):
        from rnnspec.reference import Reference

        self._reference = Reference()

    def framework_version(self):
        return "9.9"

    def is_array(self, value):
        return isinstance(value, np.ndarray)

    def asarray(self, value):
        return np.array(value)

    def asnumpy(self, value):
        return np.array(value)

    def lstm{lstm_signature}:
        return self._reference.lstm(
            x, params, lengths=lengths, initial_state=initial_state, reverse=reverse
        )
"""

SPEC_LSTM_SIGNATURE = "(self, x, params, *, lengths=None, initial_state=None, reverse=False)"


def fake_plugin_source(
    *,
    ops: tuple[str, ...] = ("lstm",),
    lstm_signature: str = SPEC_LSTM_SIGNATURE,
    load_body: str = "return FakeImplementation()",
    preamble: str = "",
) -> str:
    """Source of a plugin module whose ``load()`` runs ``load_body``.

    ``LOAD_CALLS`` counts the calls of ``load()``; ``preamble`` runs at import.
    """
    implementation = FAKE_IMPLEMENTATION.format(ops=repr(ops), lstm_signature=lstm_signature)
    return (
        textwrap.dedent(preamble)
        + implementation
        + textwrap.dedent(
            """
            import time

            from rnnspec.hookspecs import BackendDeclaration, hookimpl

            LOAD_CALLS = []


            def _load():
                LOAD_CALLS.append(time.monotonic())
            """
        )
        + textwrap.indent(textwrap.dedent(load_body), "    ")
        + textwrap.dedent(
            """


            @hookimpl
            def rnnspec_backend():
                return BackendDeclaration(load=_load, description="a fake third-party backend")
            """
        )
    )


class PluginInstaller:
    """Installs plugin distributions into directories on ``sys.path``, as pip would into site-packages."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        self.modules: list[str] = []
        self._monkeypatch = monkeypatch
        self.add_path_entry(root)

    #: The plugin source builder, here for tests that take only this fixture.
    source = staticmethod(fake_plugin_source)

    def add_path_entry(self, directory: Path) -> Path:
        """Create ``directory`` and put it first on ``sys.path`` (until the test ends)."""
        directory.mkdir(parents=True, exist_ok=True)
        self._monkeypatch.syspath_prepend(str(directory))
        importlib.invalidate_caches()
        return directory

    def install(
        self,
        backend: str,
        source: str,
        *,
        distribution: str | None = None,
        version: str = "1.0",
        into: Path | None = None,
    ) -> str:
        """Install a distribution whose entry point ``backend`` names a module of ``source``.

        ``into`` is a directory from :meth:`add_path_entry` (default: :attr:`root`).
        Returns the module's name. The registry is reset, so it rediscovers.
        """
        directory = into or self.root
        distribution = distribution or f"fake-{backend}-dist"
        module = "fake_backend_" + re.sub(r"\W", "_", f"{distribution}_{backend}").lower()
        (directory / f"{module}.py").write_text(source, encoding="utf-8")
        info = directory / f"{re.sub(r'[-.]+', '_', distribution)}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n", encoding="utf-8"
        )
        (info / "entry_points.txt").write_text(f"[rnnspec.backends]\n{backend} = {module}\n", encoding="utf-8")
        self.modules.append(module)
        importlib.invalidate_caches()
        rnnspec.registry._reset_for_tests()
        return module


@pytest.fixture
def x64() -> Iterator[None]:
    """float64 jax arrays for the duration of a test (jax makes float32 otherwise)."""
    jax = pytest.importorskip("jax")
    with jax.enable_x64(True):
        yield


@pytest.fixture
def fresh_registry() -> Iterator[None]:
    """A registry that rediscovers plugins at first use, and forgets them afterwards."""
    rnnspec.registry._reset_for_tests()
    yield
    rnnspec.registry._reset_for_tests()


@pytest.fixture
def plugin_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_registry: None) -> Iterator[PluginInstaller]:
    """Install fake backend distributions for one test, as separate distributions on ``sys.path``."""
    installer = PluginInstaller(tmp_path / "site", monkeypatch)
    yield installer
    rnnspec.registry._reset_for_tests()
    for module in installer.modules:
        sys.modules.pop(module, None)
    importlib.invalidate_caches()
