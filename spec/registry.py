"""The backend registry: discovery through entry points, lazy loading, checks.

Discovery reads the entry points of the group ``rnnspec.backends`` (metadata
only: no plugin module is imported). A plugin module is imported, registered
with pluggy and asked for its declaration only when it is needed:
:func:`get_backend` imports the one plugin it is asked for, never another, and
:func:`list_backends` imports them all. Loading (importing the framework and
building the implementation) happens on first :func:`get_backend` of that name,
and the loaded implementation is checked against the spec before anyone can
call it; every op's result is checked too (:mod:`rnnspec.result_check`).

What isolation promises: one faulty plugin never breaks another backend, nor
the program that lists backends. What goes wrong is recorded in that backend's
:class:`BackendRecord`, not raised:

- a plugin module that raises on import, implements no hook, or whose hook
  returns no declaration: status ``"error"``, the reason in ``error``. Anything
  it raises counts, ``SystemExit`` and ``KeyboardInterrupt`` included: the
  module is imported in a worker thread, where no Ctrl-C is ever delivered, so
  a ``KeyboardInterrupt`` there is the plugin's own (a real Ctrl-C reaches the
  waiting thread and interrupts it);
- a plugin module whose import, or whose hook, has not returned after
  ``RNNSPEC_PLUGIN_IMPORT_TIMEOUT`` seconds (default 30): an error; the import
  is left running in its (daemon) thread. A hang that holds the interpreter
  lock (in a C extension) cannot be bounded;
- a plugin module that calls the registry (``get_backend``, ``list_backends``)
  while it is imported: that call raises, so the plugin fails alone (a
  ``load()`` may get other backends);
- two distributions claiming one name: that name is unavailable (``"error"``,
  naming both distributions), and neither is imported;
- a distribution claiming the name of a built-in backend (one registered by
  rnnspec itself): the built-in keeps the name and works; the other plugin is
  never imported and is named in the built-in's ``warnings``;
- a plugin module slower to import than ``RNNSPEC_PLUGIN_IMPORT_BUDGET`` seconds
  (default 2): a warning (a plugin module must import its framework in ``load()``);
- a ``load()`` that raises (``SystemExit`` included), or returns an
  implementation that does not match the spec: an error;
- with ``check=True``, an op that raises on a small valid call or returns a
  result that breaks the spec: an error naming the op (``broken_ops``).

A ``load()`` runs in the calling thread, without a time limit (it imports a
framework, which may take long): a ``KeyboardInterrupt`` raised there cannot be
told from Ctrl-C, so it propagates, and is not recorded (the next
:func:`get_backend` tries again).

``RNNSPEC_STRICT_PLUGINS=1`` raises instead, for every one of these: any fault
found among the plugins stops every :func:`get_backend` and
:func:`list_backends` (all plugins are then imported at discovery), and a
backend that fails to load raises when it is got or listed.
``RNNSPEC_BACKENDS=a,b`` limits which entry points are looked at. Discovery,
registration and loading run under one re-entrant lock, so first use from
several threads loads a backend once, and a ``load()`` may itself get another
backend; a backend already loaded is returned without taking the lock.
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Literal, TypeVar

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
    SpecMismatchError,
)
from .implementation import Implementation
from .ops import OPS
from .result_check import smoke_call

__all__ = ["BackendRecord", "get_backend", "list_backends", "loaded_backends"]

STRICT_ENV = "RNNSPEC_STRICT_PLUGINS"
ALLOW_ENV = "RNNSPEC_BACKENDS"
IMPORT_BUDGET_ENV = "RNNSPEC_PLUGIN_IMPORT_BUDGET"
IMPORT_TIMEOUT_ENV = "RNNSPEC_PLUGIN_IMPORT_TIMEOUT"
#: Seconds a plugin module may take to import before it is reported as slow.
DEFAULT_IMPORT_BUDGET = 2.0
#: Seconds a plugin module's import (and then its hook) may take before the plugin is given up.
DEFAULT_IMPORT_TIMEOUT = 30.0
#: Seconds between the checks for a Ctrl-C while a plugin's code runs in its thread.
_WAIT_SLICE = 0.1
#: The distribution whose backends are built in: no other distribution may take their names.
BUILTIN_DISTRIBUTION = "rnnspec"

Status = Literal["ok", "not loaded", "not installed", "warning", "error"]
T = TypeVar("T")


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
    broken_ops
        The ops that failed the check of ``list_backends(check=True)``, with why:
        each raised on a small valid call, or returned a result that breaks the spec.
    fast_paths
        Its accelerated paths, by name, with what each does (empty until loaded).
    framework, framework_version, device
        Where it computes (empty until loaded).
    description
        The plugin's one-line description.
    missing
        Set when a module the backend requires is not installed: which one, and
        the command that installs it (not an error: a framework the user does
        not use is simply absent).
    """

    name: str
    distribution: str
    version: str
    loaded: bool = False
    error: str | None = None
    warnings: tuple[str, ...] = ()
    import_seconds: float | None = None
    ops: tuple[str, ...] = ()
    broken_ops: dict[str, str] = field(default_factory=dict)
    fast_paths: dict[str, str] = field(default_factory=dict)
    framework: str = ""
    framework_version: str = ""
    device: str = ""
    description: str = ""
    missing: str | None = None

    @property
    def status(self) -> Status:
        """``"error"`` (unusable, or an op broken), ``"not installed"`` (a module it requires is absent),
        ``"warning"`` (usable, with faults), ``"ok"`` (loaded) or ``"not loaded"``."""
        if self.error is not None or self.broken_ops:
            return "error"
        if self.missing is not None:
            return "not installed"
        if self.warnings:
            return "warning"
        return "ok" if self.loaded else "not loaded"

    @property
    def reason(self) -> str | None:
        """Why the status is ``"error"`` or ``"warning"``: the error, or the broken ops and the warnings;
        else ``None``."""
        if self.error is not None:
            return self.error
        if self.missing is not None and not self.broken_ops:
            return self.missing
        broken = tuple(f"op {op!r} is broken: {why}" for op, why in self.broken_ops.items())
        return "; ".join(broken + self.warnings) or None


@dataclass(frozen=True)
class _Fault:
    """A fault as strict mode raises it: a fresh exception each time, so tracebacks do not pile up."""

    kind: type[BackendError]
    message: str
    cause: BaseException | None = None

    def error(self) -> BackendError:
        err = self.kind(self.message)
        err.__cause__ = self.cause
        return err


@dataclass
class _Entry:
    record: BackendRecord
    #: The plugin that gets the name; None when the name is unavailable (claimed twice).
    entry_point: metadata.EntryPoint | None
    registered: bool = False
    declaration: hookspecs.BackendDeclaration | None = None
    backend: Backend | None = None
    failure: BaseException | None = None
    loading: bool = False
    checked: bool = False
    #: What strict mode raises for this plugin: faults of discovery and registration, of loading, of each op.
    faults: list[_Fault] = field(default_factory=list)
    load_fault: _Fault | None = None
    op_faults: list[_Fault] = field(default_factory=list)


#: Import time of each plugin module, by module name, measured when discovery first imported it:
#: a later discovery finds the module in ``sys.modules`` and would measure nothing.
_IMPORT_SECONDS: dict[str, float] = {}

#: ``plugin``: the name of the plugin whose module (or hook) this thread is running, while it does.
_IMPORTING = threading.local()


class _PluginRaised(Exception):
    """What a plugin's code raised (a ``BaseException`` too), carried out of its thread."""

    def __init__(self, exception: BaseException) -> None:
        super().__init__(exception)
        self.exception = exception


class _PluginTimedOut(Exception):
    """A plugin's code has not returned within the time limit."""


def _distribution(ep: metadata.EntryPoint) -> tuple[str, str]:
    dist = ep.dist
    return (dist.metadata["Name"], dist.version) if dist is not None else ("<unknown>", "")


def _seconds(variable: str, default: float) -> float:
    raw = os.environ.get(variable, "").strip()
    if not raw:
        return default
    try:
        seconds = float(raw)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0:
        raise BackendError(f"{variable}={raw!r}: expected a number of seconds > 0")
    return seconds


def _import_budget() -> float:
    return _seconds(IMPORT_BUDGET_ENV, DEFAULT_IMPORT_BUDGET)


def _import_timeout() -> float:
    return _seconds(IMPORT_TIMEOUT_ENV, DEFAULT_IMPORT_TIMEOUT)


def _refuse_while_importing(call: str) -> None:
    """Refuse a call of the registry from a plugin's module or hook, which run while the registry is busy."""
    plugin = getattr(_IMPORTING, "plugin", None)
    if plugin is not None:
        raise BackendError(
            f"rnnspec.{call} was called while the module of plugin {plugin!r} was being imported or its hook "
            "called: the registry is discovering plugins then; call it in load()"
        )


def _initializing(module: str) -> bool:
    """Whether ``module`` or a package above it is being imported right now (by any thread)."""
    parts = module.split(".")
    for end in range(1, len(parts) + 1):
        spec = getattr(sys.modules.get(".".join(parts[:end])), "__spec__", None)
        # The import system's own test (importlib._bootstrap._find_and_load) for a module still executing.
        if getattr(spec, "_initializing", False):
            return True
    return False


def _run_plugin_code(call: Callable[[], T], *, plugin: str, module: str, timeout: float) -> T:
    """Run ``call`` (a plugin's import or hook) for at most ``timeout`` seconds.

    Raises :class:`_PluginRaised` with whatever it raised and :class:`_PluginTimedOut`
    when it has not returned in time (it is left running). A Ctrl-C while waiting
    raises ``KeyboardInterrupt``, as anywhere else.
    """
    if _initializing(module):
        # The calling thread may be importing a package of the plugin (say, its __init__ gets the backend):
        # another thread would wait for that import to finish, which waits for it. Run it here, unbounded.
        return _run_here(call, plugin)
    outcome: list[tuple[bool, Any]] = []
    done = threading.Event()

    def work() -> None:
        _IMPORTING.plugin = plugin
        try:
            outcome.append((True, call()))
        except BaseException as exc:  # KeyboardInterrupt too: signals reach only the main thread, this is the plugin's
            outcome.append((False, exc))
        finally:
            done.set()

    thread = threading.Thread(target=work, name=f"rnnspec-plugin-{plugin}", daemon=True)
    try:
        thread.start()
    except RuntimeError:  # no new thread at interpreter shutdown
        return _run_here(call, plugin)
    deadline = math.inf if math.isinf(timeout) else time.monotonic() + timeout
    # Wait in short slices: the kernel may hand a Ctrl-C to the plugin's thread, and the main thread sees
    # it (as KeyboardInterrupt) only when its own wait returns.
    while not done.wait(min(_WAIT_SLICE, max(0.0, deadline - time.monotonic()))):
        if time.monotonic() >= deadline:
            raise _PluginTimedOut
    ok, value = outcome[0]
    if not ok:
        raise _PluginRaised(value)
    return value  # type: ignore[no-any-return]


def _run_here(call: Callable[[], T], plugin: str) -> T:
    previous = getattr(_IMPORTING, "plugin", None)
    _IMPORTING.plugin = plugin
    try:
        return call()
    except KeyboardInterrupt:
        raise  # in the calling thread it cannot be told from Ctrl-C
    except BaseException as exc:
        raise _PluginRaised(exc) from None
    finally:
        _IMPORTING.plugin = previous


class _Registry:
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._entries: dict[str, _Entry] | None = None
        self._budget = DEFAULT_IMPORT_BUDGET
        self._timeout = DEFAULT_IMPORT_TIMEOUT
        self.plugin_manager = pluggy.PluginManager(hookspecs.PROJECT)
        self.plugin_manager.add_hookspecs(hookspecs)

    @staticmethod
    def _strict() -> bool:
        return os.environ.get(STRICT_ENV, "") not in ("", "0")

    def _discover(self) -> dict[str, _Entry]:
        """Read the entry points (imports nothing); strict mode then registers every plugin."""
        if self._entries is None:
            self._unregister_all()
            allow = {n.strip() for n in os.environ.get(ALLOW_ENV, "").split(",") if n.strip()}
            self._budget = _import_budget()
            self._timeout = _import_timeout()
            claims: dict[str, list[metadata.EntryPoint]] = {}
            for ep in metadata.entry_points(group=hookspecs.ENTRY_POINT_GROUP):
                if allow and ep.name not in allow:
                    continue
                claimants = claims.setdefault(ep.name, [])
                if any(_distribution(c)[0] == _distribution(ep)[0] for c in claimants):
                    continue  # one distribution seen twice on sys.path
                claimants.append(ep)
            self._entries = {name: self._entry(name, claimants) for name, claimants in claims.items()}
        if self._strict():
            for entry in self._entries.values():
                self._register(entry)
            for entry in self._entries.values():
                if entry.faults:
                    raise entry.faults[0].error()
        return self._entries

    @staticmethod
    def _entry(name: str, claimants: list[metadata.EntryPoint]) -> _Entry:
        """The entry of ``name``, from the entry points that claim it."""
        builtin = [ep for ep in claimants if _distribution(ep)[0] == BUILTIN_DISTRIBUTION]
        ep = builtin[0] if builtin else claimants[0]
        distribution, version = _distribution(ep)
        record = BackendRecord(name=name, distribution=distribution, version=version)
        others = [c for c in claimants if c is not ep]
        if others and not builtin:
            listed = " and ".join(" ".join(_distribution(c)) for c in claimants)
            err = PluginConflictError(
                f"backend name {name!r} is claimed by {len(claimants)} distributions: {listed}; "
                "uninstall all but one of them"
            )
            record.error = str(err)
            return _Entry(record, None, registered=True, failure=err, faults=[_Fault(PluginConflictError, str(err))])
        entry = _Entry(record, ep)
        for other in others:
            other_distribution, other_version = _distribution(other)
            message = (
                f"distribution {other_distribution} {other_version} also registers a backend named {name!r} "
                f"(entry point {name} = {other.value}), the name of a built-in backend of rnnspec, "
                "which no plugin may take (rename its entry point)"
            )
            record.warnings += (f"{message}; it is ignored",)
            entry.faults.append(_Fault(PluginConflictError, message))
        return entry

    def _register(self, entry: _Entry) -> None:
        """Import the plugin module of ``entry``, register it and ask its hook, recording what goes wrong."""
        if entry.registered or entry.entry_point is None:
            return
        ep = entry.entry_point
        record = entry.record
        name = record.name
        where = f"plugin {name!r} ({record.distribution})"

        def import_module() -> tuple[Any, float]:
            start = time.perf_counter()
            module = ep.load()
            return module, time.perf_counter() - start

        stage = f"its module {ep.module!r} did not finish importing"
        seconds = 0.0
        try:
            preloaded = ep.module in sys.modules
            module, seconds = _run_plugin_code(import_module, plugin=name, module=ep.module, timeout=self._timeout)
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
            stage = "its hook rnnspec_backend did not return"
            declaration = _run_plugin_code(mine[0].function, plugin=name, module=ep.module, timeout=self._timeout)
            if not isinstance(declaration, hookspecs.BackendDeclaration):
                raise BackendError(
                    f"{where}: hook rnnspec_backend returned {type(declaration).__name__}, "
                    "expected rnnspec.hookspecs.BackendDeclaration"
                )
        except _PluginTimedOut:
            limit = f"{self._timeout:g} s ({IMPORT_TIMEOUT_ENV})"
            why = f"{stage} within {limit}; it is left running in a background thread"
            entry.failure = BackendLoadError(f"{where}: {why}")
            record.error = f"plugin failed to register: {why}"
            entry.faults.append(_Fault(BackendLoadError, f"{where} failed to register: {why}"))
        except _PluginRaised as raised:
            self._fail_registration(entry, raised.exception, where)
        except Exception as exc:
            self._fail_registration(entry, exc, where)
        else:
            if seconds > self._budget:
                message = (
                    f"{where}: module {ep.module!r} took {seconds:.2f} s to import, over the budget of "
                    f"{self._budget:g} s ({IMPORT_BUDGET_ENV}); a plugin module is imported whenever backends are "
                    "listed, so it should import its framework in load(), not at import"
                )
                record.warnings += (message,)
                entry.faults.append(_Fault(SlowPluginError, message))
            entry.declaration = declaration
            record.description = declaration.description
        # Not in a finally: a Ctrl-C while waiting leaves the plugin unregistered, for the next call to try again.
        entry.registered = True

    @staticmethod
    def _fail_registration(entry: _Entry, failure: BaseException, where: str) -> None:
        entry.failure = failure
        entry.record.error = f"plugin failed to register: {_describe(failure)}"
        entry.faults.append(_Fault(BackendLoadError, f"{where} failed to register: {_safe_repr(failure)}", failure))

    def _load(self, entry: _Entry) -> Backend:
        if entry.backend is not None:
            return entry.backend
        self._register(entry)
        record = entry.record
        if entry.failure is not None or entry.declaration is None:
            if entry.load_fault is not None and self._strict():
                raise entry.load_fault.error()
            raise BackendLoadError(f"backend {record.name!r} is unavailable: {record.error}") from entry.failure
        if entry.loading:  # the same thread, back through the re-entrant lock
            raise BackendLoadError(
                f"backend {record.name!r} ({record.distribution}): its load() asked for backend {record.name!r} "
                "itself, which is still loading"
            )
        absent = [m for m in entry.declaration.requires if not _installed(m)]
        if absent:
            install = entry.declaration.install
            record.missing = f"{', '.join(absent)} not installed" + (f" ({install})" if install else "")
            raise BackendLoadError(f"backend {record.name!r} is not installed: {record.missing}")
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
        except KeyboardInterrupt:
            raise  # load() runs in the calling thread, where it cannot be told from Ctrl-C: the next get tries again
        except BaseException as exc:  # SystemExit too: a plugin's load() may not end the program
            entry.failure = exc
            record.error = f"failed to load: {_describe(exc)}"
            entry.load_fault = _Fault(
                BackendLoadError, f"backend {record.name!r} ({record.distribution}) {record.error}", exc
            )
            if self._strict():
                raise entry.load_fault.error() from exc
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

    def _check_ops(self, entry: _Entry, backend: Backend) -> None:
        """Call each op of ``backend`` once, small, recording the ops that raise or return what breaks the spec."""
        if entry.checked:
            return
        for op in OPS:  # the spec's order, whatever order the plugin lists them in
            if op not in backend.ops:
                continue
            try:
                args, keywords = smoke_call(op)
                getattr(backend, op)(*backend.from_numpy(args), **backend.from_numpy(keywords))
            except KeyboardInterrupt:
                raise  # the calling thread's: it cannot be told from Ctrl-C
            except BaseException as exc:
                entry.record.broken_ops[op] = _describe(exc)
                message = (
                    str(exc)
                    if isinstance(exc, SpecMismatchError)
                    else f"backend {backend.name!r}: op {op!r} raised on a small valid call: {_describe(exc)}"
                )
                entry.op_faults.append(_Fault(SpecMismatchError, message, exc))
        entry.checked = True

    def get(self, name: str) -> Backend:
        _refuse_while_importing(f"get_backend({name!r})")
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

    def records(self, *, load: bool, check: bool) -> list[BackendRecord]:
        _refuse_while_importing("list_backends()")
        with self._lock:
            entries = self._discover()
            strict = self._strict()
            for entry in entries.values():
                self._register(entry)
                if (load or check) and entry.failure is None and entry.backend is None:
                    try:
                        self._load(entry)
                    except BackendLoadError:
                        if strict and entry.record.missing is None:  # a framework not installed is no fault
                            raise
                        # else recorded in entry.record.error
                if strict and entry.load_fault is not None:
                    raise entry.load_fault.error()
                if check and entry.backend is not None:
                    self._check_ops(entry, entry.backend)
                    if strict and entry.op_faults:
                        raise entry.op_faults[0].error()
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


def _safe_repr(exc: BaseException) -> str:
    """``repr(exc)``, or what it is when its ``repr()`` raises (a plugin's exception may)."""
    try:
        return repr(exc)
    except KeyboardInterrupt:
        raise
    except BaseException as err:
        return f"<{type(exc).__qualname__}, whose repr() raised {type(err).__qualname__}>"


def _installed(module: str) -> bool:
    """Whether ``module`` (top level) can be imported, found without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken installation counts as absent; load() would fail the same way
        return False


def _describe(exc: BaseException) -> str:
    try:  # traceback stands in for a str() that raises; the fallback is for stranger exceptions still
        return "".join(traceback.format_exception_only(type(exc), exc)).strip()
    except KeyboardInterrupt:
        raise
    except BaseException as err:
        return f"{type(exc).__qualname__}: <exception could not be formatted: {type(err).__qualname__}>"


def _copy(record: BackendRecord) -> BackendRecord:
    return BackendRecord(
        **{**record.__dict__, "fast_paths": dict(record.fast_paths), "broken_ops": dict(record.broken_ops)}
    )


_REGISTRY = _Registry()


def get_backend(name: str) -> Backend:
    """Return the backend called ``name``, loading it on first use.

    Only the plugin that registers ``name`` is imported: no other plugin can
    make this fail or hang (except with ``RNNSPEC_STRICT_PLUGINS=1``).

    Raises
    ------
    BackendNotFoundError
        No plugin registers ``name``; the message lists the available names.
    BackendLoadError
        The plugin or its framework failed to import (or did not finish within
        ``RNNSPEC_PLUGIN_IMPORT_TIMEOUT`` seconds), or its implementation does
        not match the spec; the message says why, the cause is chained.
    BackendError
        Called by a plugin module while it is imported (a ``load()`` may call it).
    PluginConflictError, SlowPluginError
        Only with ``RNNSPEC_STRICT_PLUGINS=1``: a fault of any plugin, found
        at discovery (which the first call runs).
    """
    return _REGISTRY.get(name)


def list_backends(*, load: bool = True, check: bool = False) -> list[BackendRecord]:
    """Return a record for every registered backend, sorted by name.

    Every plugin module is imported (each within ``RNNSPEC_PLUGIN_IMPORT_TIMEOUT``
    seconds). With ``load=True`` (the default) each backend is loaded, which
    imports its framework, so that the records show whether it loads, its ops
    and fast paths; status ``"ok"`` then means it loaded and its implementation
    matches the spec's signatures. ``load=False`` only reads the plugins.
    ``check=True`` also calls each op of each loaded backend once, small (which
    loads them; a few seconds for a backend that compiles each op), and records
    the ops that raise or return a result that breaks the spec in
    :attr:`BackendRecord.broken_ops` (status ``"error"``).

    A faulty plugin is reported in its record (:attr:`BackendRecord.status` and
    :attr:`BackendRecord.reason`), never raised, unless
    ``RNNSPEC_STRICT_PLUGINS=1``: then the first fault raises
    (:class:`~rnnspec.errors.BackendLoadError`,
    :class:`~rnnspec.errors.PluginConflictError`,
    :class:`~rnnspec.errors.SlowPluginError` or, for a broken op,
    :class:`~rnnspec.errors.SpecMismatchError`).
    """
    return _REGISTRY.records(load=load, check=check)


def loaded_backends() -> list[Backend]:
    """Return the backends loaded so far, sorted by name; discovers and loads nothing."""
    return _REGISTRY.loaded()


def _reset_for_tests() -> Any:
    """Forget discovered plugins (tests install plugin distributions on the fly)."""
    _REGISTRY.reset()
