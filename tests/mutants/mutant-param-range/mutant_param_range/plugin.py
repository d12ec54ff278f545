"""Plugin of the ``mutant_param_range`` backend, wrong on purpose: indrnn clamps u into [-1, 1] in the forward."""

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
            "MUTANT, wrong on purpose: indrnn clamps u into [-1, 1] inside the forward (zero gradient outside it)"
        ),
    )
