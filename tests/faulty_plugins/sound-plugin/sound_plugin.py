"""Plugin of the ``sound`` backend: the NumPy reference under another name, with nothing wrong."""

from __future__ import annotations

from rnnspec.hookspecs import BackendDeclaration, hookimpl
from rnnspec.implementation import Implementation


def _load() -> Implementation:
    from rnnspec.reference import Reference

    return Reference()


@hookimpl
def rnnspec_backend() -> BackendDeclaration:
    """Declare the backend."""
    return BackendDeclaration(load=_load, description="the NumPy reference, beside the faulty plugins")
