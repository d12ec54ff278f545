"""Plugin of the ``fault_reentrant_get`` backend, faulty on purpose: it gets a backend at import.

The registry is in the middle of discovering plugins when it imports this
module; calling it back must fail for this plugin alone, never corrupt what the
registry holds for the others.
"""

from __future__ import annotations

import rnnspec
from rnnspec.hookspecs import BackendDeclaration, hookimpl
from rnnspec.implementation import Implementation

REFERENCE = rnnspec.get_backend("numpy")


def _load() -> Implementation:
    return REFERENCE.implementation


@hookimpl
def rnnspec_backend() -> BackendDeclaration:
    """Declare the backend."""
    return BackendDeclaration(load=_load, description="the reference, got at import")
