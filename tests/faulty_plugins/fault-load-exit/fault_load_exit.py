"""Plugin of the ``fault_load_exit`` backend, faulty on purpose: its ``load()`` calls ``sys.exit``.

The plugin module itself is sound; the framework "gives up" when loaded.
"""

from __future__ import annotations

import sys

from rnnspec.hookspecs import BackendDeclaration, hookimpl
from rnnspec.implementation import Implementation

#: The exit status load() asks for; the registry's report must carry it.
EXIT_STATUS = 3


def _load() -> Implementation:
    sys.exit(EXIT_STATUS)


@hookimpl
def rnnspec_backend() -> BackendDeclaration:
    """Declare the backend."""
    return BackendDeclaration(load=_load, description="a backend whose load() calls sys.exit")
