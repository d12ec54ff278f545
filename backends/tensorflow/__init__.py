"""Plugin of the ``tensorflow`` backend. Importing this module does not import tensorflow."""

from __future__ import annotations

from rnnspec.hookspecs import BackendDeclaration, hookimpl
from rnnspec.implementation import Implementation

__all__ = ["rnnspec_backend"]


def _load() -> Implementation:
    from .implementation import TensorflowImplementation  # imports tensorflow

    return TensorflowImplementation()


@hookimpl
def rnnspec_backend() -> BackendDeclaration:
    """Declare the TensorFlow backend."""
    return BackendDeclaration(
        load=_load,
        description="TensorFlow: GradientTape, tf.function(jit_compile=True), Keras 3",
        requires=("tensorflow", "keras"),
        install="pip install tensorflow-cpu",
    )
