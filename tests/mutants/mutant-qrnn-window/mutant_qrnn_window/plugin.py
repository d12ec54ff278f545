"""Plugin of the ``mutant_qrnn_window`` backend, wrong on purpose: qrnn's window (K > 1) lags one step."""

from __future__ import annotations

from rnnspec.hookspecs import BackendDeclaration, hookimpl
from rnnspec.implementation import Implementation


def _load() -> Implementation:
    from .impl import Mutant

    return Mutant()


@hookimpl
def rnnspec_backend() -> BackendDeclaration:
    """Declare the mutant backend."""
    return BackendDeclaration(load=_load, description="MUTANT, wrong on purpose: qrnn's window (K > 1) lags one step")
