"""The plugin hooks a backend distribution implements.

A backend is a module named by an entry point in the group
``rnnspec.backends``; the entry point's name is the backend's name. The module
implements :func:`rnnspec_backend` with the ``hookimpl`` marker::

    # my_backend/plugin.py  (entry point:  mybackend = my_backend.plugin)
    from rnnspec.hookspecs import BackendDeclaration, hookimpl

    @hookimpl
    def rnnspec_backend() -> BackendDeclaration:
        return BackendDeclaration(load=_load, description="...")

    def _load():
        from my_backend.impl import MyImplementation   # the framework is imported here
        return MyImplementation()

Keep the plugin module light: it is imported to list backends; the framework
should be imported only inside ``load``. A plugin module that takes longer than
``RNNSPEC_PLUGIN_IMPORT_BUDGET`` seconds (default 2) to import is reported with
a warning by ``rnnspec backends`` and ``rnnspec.list_backends()``, and refused
under ``RNNSPEC_STRICT_PLUGINS=1``; one whose import (or hook) has not returned
after ``RNNSPEC_PLUGIN_IMPORT_TIMEOUT`` seconds (default 30) is given up, as
unavailable. The module is imported in a worker thread, and may not call
``rnnspec.get_backend`` or ``rnnspec.list_backends`` (``load`` may). The name
``numpy``, and any other name that rnnspec itself registers, is taken: a plugin
that claims it is ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pluggy

from .implementation import Implementation

__all__ = ["PROJECT", "BackendDeclaration", "hookimpl", "hookspec", "rnnspec_backend"]

PROJECT = "rnnspec"
ENTRY_POINT_GROUP = "rnnspec.backends"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@dataclass(frozen=True)
class BackendDeclaration:
    """What a plugin tells the registry about its backend.

    Attributes
    ----------
    load
        Called once, on first use, to import the framework and build the
        :class:`~rnnspec.implementation.Implementation`.
    description
        One line for ``rnnspec backends``.
    requires
        The top-level modules ``load`` imports that may be absent (the
        framework: ``("torch",)``). When one is not installed the backend is
        listed as "not installed", not as an error, and ``load`` is not called.
    install
        The command that installs them, shown with "not installed"
        (``'pip install "rnnspec[torch]"'``).
    """

    load: Callable[[], Implementation]
    description: str = ""
    requires: tuple[str, ...] = ()
    install: str = ""


@hookspec(firstresult=True)
def rnnspec_backend() -> BackendDeclaration:  # type: ignore[empty-body]
    """Declare the backend this plugin provides."""
