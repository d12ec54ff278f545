"""Plugin of the ``mutant_batch_order`` backend, wrong on purpose: gru's final state left sorted by length."""

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
            "gru with batch >= 8 and unsorted lengths returns its final state sorted by descending length"
        ),
    )
