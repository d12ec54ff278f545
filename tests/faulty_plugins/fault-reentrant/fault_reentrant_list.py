"""Plugin of the ``fault_reentrant_list`` backend, faulty on purpose: it lists backends at import.

The registry is in the middle of discovering plugins when it imports this
module; calling it back must fail for this plugin alone, never corrupt what the
registry holds for the others.
"""

from __future__ import annotations

import rnnspec
from rnnspec.hookspecs import BackendDeclaration, hookimpl
from rnnspec.implementation import Implementation

OTHERS = [r.name for r in rnnspec.list_backends(load=False)]


def _load() -> Implementation:
    from rnnspec.reference import Reference

    return Reference()


@hookimpl
def rnnspec_backend() -> BackendDeclaration:
    """Declare the backend."""
    return BackendDeclaration(load=_load, description="the reference, after listing the others at import")
