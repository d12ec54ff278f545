"""Plugin of the ``mutant_threshold`` backend, wrong on purpose: act halts on > 1 - epsilon, not >=."""

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
        load=_load,
        description=(
            "MUTANT, wrong on purpose: act halts when the halting units sum to > 1 - epsilon instead of >= 1 - epsilon"
        ),
    )
