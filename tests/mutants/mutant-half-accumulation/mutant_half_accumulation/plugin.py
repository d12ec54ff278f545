"""Plugin of the ``mutant_half_accumulation`` backend, wrong on purpose: linear_recurrence carries float16 state."""

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
            "MUTANT, wrong on purpose: "
            "linear_recurrence rounds its carried state to float16 at every step (float16 inputs)"
        ),
    )
