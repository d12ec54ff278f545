"""Plugin of a ``fault_twice`` backend, faulty on purpose: fault-twice-b claims the same name."""

from __future__ import annotations

from rnnspec.hookspecs import BackendDeclaration, hookimpl
from rnnspec.implementation import Implementation


def _load() -> Implementation:
    from rnnspec.reference import Reference

    return Reference()


@hookimpl
def rnnspec_backend() -> BackendDeclaration:
    """Declare the backend (one of two under the name ``fault_twice``)."""
    return BackendDeclaration(load=_load, description="fault-twice-a: the reference, under a name taken twice")
