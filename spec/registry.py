"""The backend registry: discovery through entry points, lazy loading, checks.

Discovery imports each plugin module named in the ``rnnspec.backends``
entry-point group and registers it with pluggy; a plugin that fails is
recorded, not raised, so one broken distribution never breaks the others.
What discovery reports, in each backend's :class:`BackendRecord`:

- a plugin module that raises on import, implements no hook, or whose hook
  returns no declaration: status ``"error"``, the reason in ``error``;
- two distributions claiming one name: that name is unavailable (``"error"``,
  naming both distributions);
- a distribution claiming the name of a built-in backend (one registered by
  rnnspec itself): the built-in keeps the name and works; the other plugin is
  never imported and is named in the built-in's ``warnings``;
- a plugin module slower to import than ``RNNSPEC_PLUGIN_IMPORT_BUDGET`` seconds
  (default 2): a warning (a plugin module must import its framework in ``load()``).

``RNNSPEC_STRICT_PLUGINS=1`` raises instead, for every one of these and for a
backend that fails to load. ``RNNSPEC_BACKENDS=a,b`` limits which entry points
are looked at. Loading (importing the framework and building the
implementation) happens on first :func:`get_backend` of that name, and the
loaded implementation is checked against the spec before anyone can call it.
Discovery and loading run under one re-entrant lock, so first use from several
threads loads a backend once, and a ``load()`` may itself get another backend;
a backend already loaded is returned without taking the lock.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Literal

import pluggy

from . import hookspecs
from .backend import Backend
from .conformity import check_implementation
from .errors import (
    BackendError,
    BackendLoadError,
    BackendNotFoundError,
    PluginConflictError,
    SlowPluginError,
)
from .implementation import Implementation

__all__ = ["BackendRecord", "get_backend", "list_backends", "loaded_backends"]

STRICT_ENV = "RNNSPEC_STRICT_PLUGINS"
ALLOW_ENV = "RNNSPEC_BACKENDS"
IMPORT_BUDGET_ENV = "RNNSPEC_PLUGIN_IMPORT_BUDGET"
#: Seconds a plugin module may take to import before it is reported as slow.
DEFAULT_IMPORT_BUDGET = 2.0
#: The distribution whose backends are built in: no other distribution may take their names.
BUILTIN_DISTRIBUTION = "rnnspec"

Status = Literal["ok", "not loaded", "warning", "error"]


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
    warnings
        Faults that leave it usable: a slow plugin import, another distribution
        claiming its (built-in) name, which was ignored.
    import_seconds
        How long its plugin module took to import (``None`` when it was not imported).
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
    warnings: tuple[str, ...] = ()
    import_seconds: float | None = None
    ops: tuple[str, ...] = ()
    fast_paths: dict[str, str] = field(default_factory=dict)
    framework: str = ""
    framework_version: str = ""
    device: str = ""
    description: str = ""

    @property
    def status(self) -> Status:
        """``"error"`` (unusable), ``"warning"`` (usable, with faults), ``"ok"`` (loaded) or ``"not loaded"``."""
        if self.error is not None:
            return "error"
        if self.warnings:
            return "warning"
        return "ok" if self.loaded else "not loaded"

    @property
    def reason(self) -> str | None:
        """Why the status is ``"error"`` or ``"warning"``: the error, or the warnings; else ``None``."""
        if self.error is not None:
            return self.error
        return "; ".join(self.warnings) or None


@dataclass
class _Entry:
    record: BackendRecord
    declaration: hookspecs.BackendDeclaration | None = None
    backend: Backend | None = None
    failure: BaseException | None = None
    loading: bool = False


#: Import time of each plugin module, by module name, measured when discovery first imported it:
#: a later discovery finds the module in ``sys.modules`` and would measure nothing.
_IMPORT_SECONDS: dict[str, float] = {}


def _distribution(ep: metadata.EntryPoint) -> tuple[str, str]:
    dist = ep.dist
    return (dist.metadata["Name"], dist.version) if dist is not None else ("<unknown>", "")


def _import_budget() -> float:
    raw = os.environ.get(IMPORT_BUDGET_ENV, "").strip()
    if not raw:
        return DEFAULT_IMPORT_BUDGET
    try:
        budget = float(raw)
    except ValueError:
        budget = float("nan")
    if not budget > 0:
        raise BackendError(f"{IMPORT_BUDGET_ENV}={raw!r}: expected a number of seconds > 0")
    return budget


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
        budget = _import_budget()
        claims: dict[str, list[metadata.EntryPoint]] = {}
        for ep in metadata.entry_points(group=hookspecs.ENTRY_POINT_GROUP):
            if allow and ep.name not in allow:
                continue
            claimants = claims.setdefault(ep.name, [])
            if any(_distribution(c)[0] == _distribution(ep)[0] for c in claimants):
                continue  # one distribution seen twice on sys.path
            claimants.append(ep)
        entries: dict[str, _Entry] = {}
        for name, claimants in claims.items():
            entries[name] = self._register(name, claimants, budget)
        self._entries = entries
        return entries

    def _register(self, name: str, claimants: list[metadata.EntryPoint], budget: float) -> _Entry:
        """Import and register the plugin that gets ``name``, recording what goes wrong."""
        builtin = [ep for ep in claimants if _distribution(ep)[0] == BUILTIN_DISTRIBUTION]
        ep = builtin[0] if builtin else claimants[0]
        distribution, version = _distribution(ep)
        record = BackendRecord(name=name, distribution=distribution, version=version)
        entry = _Entry(record)
        others = [c for c in claimants if c is not ep]
        if others and not builtin:
            listed = " and ".join(" ".join(_distribution(c)) for c in claimants)
            err = PluginConflictError(
                f"backend name {name!r} is claimed by {len(claimants)} distributions: {listed}; "
                "uninstall all but one of them"
            )
            if self._strict():
                raise err
            entry.failure = err
            record.error = str(err)
            return entry
        for other in others:
            other_distribution, other_version = _distribution(other)
            message = (
                f"distribution {other_distribution} {other_version} also registers a backend named {name!r} "
                f"(entry point {name} = {other.value}), the name of a built-in backend of rnnspec, "
                "which no plugin may take (rename its entry point)"
            )
            if self._strict():
                raise PluginConflictError(message)
            record.warnings += (f"{message}; it is ignored",)
        where = f"plugin {name!r} ({distribution})"
        try:
            preloaded = ep.module in sys.modules
            start = time.perf_counter()
            module = ep.load()
            seconds = time.perf_counter() - start
            if preloaded:
                seconds = _IMPORT_SECONDS.get(ep.module, seconds)
            else:
                _IMPORT_SECONDS[ep.module] = seconds
            record.import_seconds = seconds
            self.plugin_manager.register(module, name=name)
            impls = self.plugin_manager.hook.rnnspec_backend.get_hookimpls()
            mine = [i for i in impls if i.plugin_name == name]
            if not mine:
                raise BackendError(
                    f"{where}: module {module.__name__!r} implements no hook rnnspec_backend "
                    "(mark it with rnnspec.hookspecs.hookimpl)"
                )
            declaration = mine[0].function()
            if not isinstance(declaration, hookspecs.BackendDeclaration):
                raise BackendError(
                    f"{where}: hook rnnspec_backend returned {type(declaration).__name__}, "
                    "expected rnnspec.hookspecs.BackendDeclaration"
                )
        except Exception as exc:
            if self._strict():
                raise BackendLoadError(f"{where} failed to register: {exc!r}") from exc
            entry.failure = exc
            record.error = f"plugin failed to register: {_describe(exc)}"
            return entry
        if seconds > budget:
            message = (
                f"{where}: module {ep.module!r} took {seconds:.2f} s to import, over the budget of {budget:g} s "
                f"({IMPORT_BUDGET_ENV}); a plugin module is imported whenever backends are listed, "
                "so it should import its framework in load(), not at import"
            )
            if self._strict():
                raise SlowPluginError(message)
            record.warnings += (message,)
        entry.declaration = declaration
        record.description = declaration.description
        return entry

    def _load(self, entry: _Entry) -> Backend:
        if entry.backend is not None:
            return entry.backend
        record = entry.record
        if entry.failure is not None or entry.declaration is None:
            raise BackendLoadError(f"backend {record.name!r} is unavailable: {record.error}") from entry.failure
        if entry.loading:  # the same thread, back through the re-entrant lock
            raise BackendLoadError(
                f"backend {record.name!r} ({record.distribution}): its load() asked for backend {record.name!r} "
                "itself, which is still loading"
            )
        entry.loading = True
        try:
            implementation = entry.declaration.load()
            if not isinstance(implementation, Implementation):
                raise BackendError(
                    f"plugin {record.name!r} ({record.distribution}): load() returned "
                    f"{type(implementation).__name__}, expected an rnnspec.Implementation"
                )
            check_implementation(record.name, record.distribution, implementation)
            backend = Backend(record.name, implementation, version=record.version)
            ops = tuple(implementation.ops)
            fast_paths = dict(implementation.fast_paths())
            framework_version = implementation.framework_version()
            device = implementation.device()
        except Exception as exc:
            entry.failure = exc
            record.error = f"failed to load: {_describe(exc)}"
            if self._strict():
                raise BackendLoadError(f"backend {record.name!r} ({record.distribution}) {record.error}") from exc
            raise BackendLoadError(f"backend {record.name!r} is unavailable: {record.error}") from exc
        finally:
            entry.loading = False
        record.ops = ops
        record.fast_paths = fast_paths
        record.framework = implementation.framework
        record.framework_version = framework_version
        record.device = device
        record.loaded = True
        entry.backend = backend  # published last: get() reads it without the lock
        return backend

    def get(self, name: str) -> Backend:
        entries = self._entries  # the fast path: a loaded backend, no lock
        entry = entries.get(name) if entries is not None else None
        if entry is not None and entry.backend is not None:
            return entry.backend
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
            strict = self._strict()
            for entry in entries.values():
                if load and entry.failure is None and entry.backend is None:
                    if strict:
                        self._load(entry)
                        continue
                    with contextlib.suppress(BackendLoadError):  # recorded in entry.record.error
                        self._load(entry)
            return [_copy(e.record) for _, e in sorted(entries.items())]

    def loaded(self) -> list[Backend]:
        entries = self._entries  # no lock, no discovery: what is loaded now
        if entries is None:
            return []
        return [e.backend for _, e in sorted(entries.items()) if e.backend is not None]

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
    PluginConflictError, SlowPluginError
        Only with ``RNNSPEC_STRICT_PLUGINS=1``: a fault of any plugin, found
        at discovery (which the first call runs).
    """
    return _REGISTRY.get(name)


def list_backends(*, load: bool = True) -> list[BackendRecord]:
    """Return a record for every registered backend, sorted by name.

    With ``load=True`` (the default) each backend is loaded, which imports its
    framework, so that the records show whether it works, its ops and fast
    paths. ``load=False`` only reads the plugins. A faulty plugin is reported in
    its record (:attr:`BackendRecord.status` and :attr:`BackendRecord.reason`),
    never raised, unless ``RNNSPEC_STRICT_PLUGINS=1``: then the first fault
    raises (:class:`~rnnspec.errors.BackendLoadError`,
    :class:`~rnnspec.errors.PluginConflictError` or
    :class:`~rnnspec.errors.SlowPluginError`).
    """
    return _REGISTRY.records(load=load)


def loaded_backends() -> list[Backend]:
    """Return the backends loaded so far, sorted by name; discovers and loads nothing."""
    return _REGISTRY.loaded()


def _reset_for_tests() -> Any:
    """Forget discovered plugins (tests install plugin distributions on the fly)."""
    _REGISTRY.reset()
