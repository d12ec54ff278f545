"""Plugin of the ``fault_slow`` backend, faulty on purpose: slow to import, slow to load.

Importing it sleeps ``IMPORT_SECONDS`` (as a plugin module that imports its
framework at import would); ``load()`` sleeps ``LOAD_SECONDS`` and records each
call in ``LOAD_CALLS``, so that a test can count the loads.
"""

from __future__ import annotations

import threading
import time

from rnnspec.hookspecs import BackendDeclaration, hookimpl
from rnnspec.implementation import Implementation

IMPORT_SECONDS = 0.5
LOAD_SECONDS = 0.3
#: The name of the thread of each ``load()`` call.
LOAD_CALLS: list[str] = []

time.sleep(IMPORT_SECONDS)


def _load() -> Implementation:
    from rnnspec.reference import Reference

    LOAD_CALLS.append(threading.current_thread().name)
    time.sleep(LOAD_SECONDS)
    return Reference()


@hookimpl
def rnnspec_backend() -> BackendDeclaration:
    """Declare the backend."""
    return BackendDeclaration(load=_load, description="the reference, slow to import and to load")
