"""The plugin module of the example backend.

It is named by the entry point ``example = rnnspec_example_backend.plugin`` in
the group ``rnnspec.backends``. rnnspec imports it whenever it lists backends,
so it imports nothing heavy: the implementation (for a real backend, its
framework) is imported inside :func:`_load`, on the backend's first use.
"""

from __future__ import annotations

from rnnspec.hookspecs import BackendDeclaration, hookimpl
from rnnspec.implementation import Implementation


def _load() -> Implementation:
    from .implementation import ExampleImplementation

    return ExampleImplementation()


@hookimpl
def rnnspec_backend() -> BackendDeclaration:
    """Declare the example backend."""
    return BackendDeclaration(
        load=_load, description="example third-party backend: linear_recurrence and indrnn_recurrence, NumPy"
    )
