"""Plugin of the ``jax`` backend. Importing this module does not import jax."""

from __future__ import annotations

from rnnspec.hookspecs import BackendDeclaration, hookimpl
from rnnspec.implementation import Implementation

__all__ = ["rnnspec_backend"]


def _load() -> Implementation:
    from .implementation import JaxImplementation  # imports jax

    return JaxImplementation()


@hookimpl
def rnnspec_backend() -> BackendDeclaration:
    """Declare the JAX backend."""
    return BackendDeclaration(
        load=_load,
        description="JAX: jit, vmap and grad; lax.scan loops, Pallas kernels on GPU",
        requires=("jax",),
        install="pip install jax flax",
    )
