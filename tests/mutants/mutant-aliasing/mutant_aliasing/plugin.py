"""Plugin of the ``mutant_aliasing`` backend, wrong on purpose: skip_rnn with T = 0 returns initial_state's arrays."""

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
            "skip_rnn with T = 0 returns the caller's initial_state arrays themselves as its state"
        ),
    )
