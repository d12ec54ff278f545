"""Plugin of the ``mutant_long_time`` backend, wrong on purpose: lstm zeroes its cell state every 64 steps."""

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
            "MUTANT, wrong on purpose: lstm with T >= 64 zeroes its cell state c at the start of every 64-step chunk"
        ),
    )
