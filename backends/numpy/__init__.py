"""Plugin of the ``numpy`` backend: the NumPy reference, registered like any other."""

from __future__ import annotations

from rnnspec.hookspecs import BackendDeclaration, hookimpl
from rnnspec.implementation import Implementation

__all__ = ["rnnspec_backend"]


def _load() -> Implementation:
    from rnnspec.reference import Reference

    return Reference()


@hookimpl
def rnnspec_backend() -> BackendDeclaration:
    """Declare the NumPy reference backend."""
    return BackendDeclaration(load=_load, description="NumPy reference: the executable spec, float64 inside")
