"""Plugin of the ``mutant_compiled`` backend, wrong on purpose: its compiled lstm scales the outputs by 1.01."""

from __future__ import annotations

from rnnspec.hookspecs import BackendDeclaration, hookimpl
from rnnspec.implementation import Implementation


def _load() -> Implementation:
    from .impl import Mutant

    return Mutant()


@hookimpl
def rnnspec_backend() -> BackendDeclaration:
    """Declare the mutant backend."""
    return BackendDeclaration(
        load=_load, description="MUTANT, wrong on purpose: its compiled lstm scales the outputs by 1.01"
    )
