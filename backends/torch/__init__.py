"""Plugin of the ``torch`` backend. Importing this module does not import torch."""

from __future__ import annotations

from rnnspec.hookspecs import BackendDeclaration, hookimpl
from rnnspec.implementation import Implementation

__all__ = ["rnnspec_backend"]


def _load() -> Implementation:
    from .implementation import TorchImplementation  # imports torch

    return TorchImplementation()


@hookimpl
def rnnspec_backend() -> BackendDeclaration:
    """Declare the PyTorch backend."""
    return BackendDeclaration(
        load=_load,
        description="PyTorch: autograd, fused RNN kernels where the spec matches",
        requires=("torch",),
        install="pip install torch --index-url https://download.pytorch.org/whl/cpu, the CPU build",
    )
