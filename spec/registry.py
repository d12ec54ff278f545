"""The backend registry: discovery through entry points, lazy loading, checks.

Discovery imports each plugin module named in the ``rnnspec.backends``
entry-point group and registers it with pluggy; a plugin that fails is
recorded, not raised (unless ``RNNSPEC_STRICT_PLUGINS=1``), so one broken
distribution never breaks the others. ``RNNSPEC_BACKENDS=a,b`` limits which
entry points are looked at. Loading (importing the framework and building the
implementation) happens on first :func:`get_backend` of that name, and the
loaded implementation is checked against the spec before anyone can call it.
All of it runs under one lock, so first use from several threads is safe.
"""

from __future__ import annotations

import contextlib
import os
import threading
import traceback
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from . import hookspecs
from .backend import Backend
from .conformity import check_implementation
from .errors import (
    BackendError,
    BackendLoadError,
    BackendNotFoundError,
    PluginConflictError,
)
from .implementation import Implementation

__all__ = ["BackendRecord", "get_backend", "list_backends"]

STRICT_ENV = "RNNSPEC_STRICT_PLUGINS"
ALLOW_ENV = "RNNSPEC_BACKENDS"


@dataclass
class BackendRecord:
    """What the registry knows of one backend, as :func:`list_backends` reports it.

    Attributes
    ----------
    name
        The backend's name (its entry point's name).
    distribution, version
        The distribution that registered it, and that distribution's version.
    loaded
        Whether the backend is loaded and usable.
    error
        Why it is not usable: the plugin's or the framework's error, else ``None``.
    ops
        The spec ops it implements (empty until loaded).
    fast_paths
        Its accelerated paths, by name, with what each does (empty until loaded).
    framework, framework_version, device
        Where it computes (empty until loaded).
    description
        The plugin's one-line description.
    """

    name: str
    distribution: str
    version: str
    loaded: bool = False
    error: str | None = None
    ops: tuple[str, ...] = ()
    fast_paths: dict[str, str] = field(default_factory=dict)
    framework: str = ""
    framework_version: str = ""
    device: str = ""
    description: str = ""


@dataclass
class _Entry:
    record: BackendRecord
    declaration: hookspecs.BackendDeclaration | None = None
    backend: Backend | None = None
    failure: BaseException | None = None


class _Registry:
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._entries: dict[str, _Entry] | None = None
        self.plugin_manager = pluggy.PluginManager(hookspecs.PROJECT)
        self.plugin_manager.add_hookspecs(hookspecs)

    @staticmethod
    def _strict() -> bool:
        return os.environ.get(STRICT_ENV, "") not in ("", "0")

    def _discover(self) -> dict[str, _Entry]:
        if self._entries is not None:
            return self._entries
        self._unregister_all()  # what a discovery cut short by a strict failure left registered
        allow = {n.strip() for n in os.environ.get(ALLOW_ENV, "").split(",") if n.strip()}
        entries: dict[str, _Entry] = {}
        for ep in metadata.entry_points(group=hookspecs.ENTRY_POINT_GROUP):
            if allow and ep.name not in allow:
                continue
            dist = ep.dist
            record = BackendRecord(
                name=ep.name,
                distribution=dist.metadata["Name"] if dist is not None else "<unknown>",
                version=dist.version if dist is not None else "",
            )
            if ep.name in entries:
                first = entries[ep.name].record
                if first.distribution == record.distribution:
                    continue  # one distribution seen twice on sys.path
                err = PluginConflictError(
                    f"backend name {ep.name!r} is claimed by two distributions: "
                    f"{first.distribution} {first.version} and {record.distribution} {record.version}; "
                    f"uninstall one, or limit plugins with {ALLOW_ENV}"
                )
                if self._strict():
                    raise err
                entries[ep.name].failure = err
                first.error = str(err)
                first.loaded = False
                continue
            entry = entries[ep.name] = _Entry(record)
            try:
                module = ep.load()
                self.plugin_manager.register(module, name=ep.name)
                impls = self.plugin_manager.hook.rnnspec_backend.get_hookimpls()
                mine = [i for i in impls if i.plugin_name == ep.name]
                if not mine:
                    raise BackendError(
                        f"plugin {ep.name!r} ({record.distribution}): module {module.__name__!r} "
                        "implements no hook rnnspec_backend (mark it with rnnspec.hookspecs.hookimpl)"
                    )
                declaration = mine[0].function()
                if not isinstance(declaration, hookspecs.BackendDeclaration):
                    raise BackendError(
                        f"plugin {ep.name!r} ({record.distribution}): hook rnnspec_backend returned "
                        f"{type(declaration).__name__}, expected rnnspec.hookspecs.BackendDeclaration"
                    )
            except Exception as exc:
                if self._strict():
                    raise BackendLoadError(
                        f"plugin {ep.name!r} ({record.distribution}) failed to register: {exc!r}"
                    ) from exc
                entry.failure = exc
                record.error = f"plugin failed to register: {_describe(exc)}"
                continue
            entry.declaration = declaration
            record.description = declaration.description
        self._entries = entries
        return entries

    def _load(self, entry: _Entry) -> Backend:
        if entry.backend is not None:
            return entry.backend
        record = entry.record
        if entry.failure is not None or entry.declaration is None:
            raise BackendLoadError(f"backend {record.name!r} is unavailable: {record.error}") from entry.failure
        try:
            implementation = entry.declaration.load()
            if not isinstance(implementation, Implementation):
                raise BackendError(
                    f"plugin {record.name!r} ({record.distribution}): load() returned "
                    f"{type(implementation).__name__}, expected an rnnspec.Implementation"
                )
            check_implementation(record.name, record.distribution, implementation)
        except Exception as exc:
            entry.failure = exc
            record.error = f"failed to load: {_describe(exc)}"
            if self._strict():
                raise BackendLoadError(f"backend {record.name!r} ({record.distribution}) {record.error}") from exc
            raise BackendLoadError(f"backend {record.name!r} is unavailable: {record.error}") from exc
        entry.backend = Backend(record.name, implementation, version=record.version)
        record.loaded = True
        record.ops = tuple(implementation.ops)
        record.fast_paths = dict(implementation.fast_paths())
        record.framework = implementation.framework
        record.framework_version = implementation.framework_version()
        record.device = implementation.device()
        return entry.backend

    def get(self, name: str) -> Backend:
        with self._lock:
            entries = self._discover()
            if name not in entries:
                known = sorted(entries)
                hint = (
                    f"; {ALLOW_ENV} limits the search to {os.environ[ALLOW_ENV]!r}" if os.environ.get(ALLOW_ENV) else ""
                )
                raise BackendNotFoundError(f"no backend named {name!r}; available backends: {known}{hint}")
            return self._load(entries[name])

    def records(self, *, load: bool) -> list[BackendRecord]:
        with self._lock:
            entries = self._discover()
            for entry in entries.values():
                if load and entry.failure is None and entry.backend is None:
                    with contextlib.suppress(BackendLoadError):  # recorded in entry.record.error
                        self._load(entry)
            return [_copy(e.record) for _, e in sorted(entries.items())]

    def _unregister_all(self) -> None:
        for name, _ in list(self.plugin_manager.list_name_plugin()):
            self.plugin_manager.unregister(name=name)

    def reset(self) -> None:
        with self._lock:
            self._unregister_all()
            self._entries = None


def _describe(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


def _copy(record: BackendRecord) -> BackendRecord:
    return BackendRecord(**{**record.__dict__, "fast_paths": dict(record.fast_paths)})


_REGISTRY = _Registry()


def get_backend(name: str) -> Backend:
    """Return the backend called ``name``, loading it on first use.

    Raises
    ------
    BackendNotFoundError
        No plugin registers ``name``; the message lists the available names.
    BackendLoadError
        The plugin or its framework failed to import, or its implementation
        does not match the spec; the message says why, the cause is chained.
    """
    return _REGISTRY.get(name)


def list_backends(*, load: bool = True) -> list[BackendRecord]:
    """Return a record for every registered backend, sorted by name.

    With ``load=True`` (the default) each backend is loaded, which imports its
    framework, so that the records show whether it works, its ops and fast
    paths. ``load=False`` only reads the plugins.
    """
    return _REGISTRY.records(load=load)


def _reset_for_tests() -> Any:
    """Forget discovered plugins (tests install plugin distributions on the fly)."""
    _REGISTRY.reset()
