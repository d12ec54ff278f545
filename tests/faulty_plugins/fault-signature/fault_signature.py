"""Plugin of the ``fault_signature`` backend, faulty on purpose: its lstm takes ``lengths`` positionally.

The method's signature is the spec's own with one change (``lengths`` is not
keyword-only), so that it stays wrong in exactly that way as the spec grows.
The implementation is built in ``load()``, which keeps the plugin module light.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

from rnnspec.backend import op_signature
from rnnspec.hookspecs import BackendDeclaration, hookimpl
from rnnspec.implementation import Implementation


def _positional_lengths(signature: inspect.Signature) -> inspect.Signature:
    self = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    parameters = [
        p.replace(kind=inspect.Parameter.POSITIONAL_OR_KEYWORD) if p.name == "lengths" else p
        for p in signature.parameters.values()
    ]
    return signature.replace(parameters=[self, *parameters])


def _load() -> Implementation:
    from rnnspec.reference import Reference

    spec_lstm = vars(Reference)["lstm"]

    def lstm(self: Reference, *args: Any, **kwargs: Any) -> Any:
        return spec_lstm(self, *args, **kwargs)

    lstm.__signature__ = _positional_lengths(op_signature("lstm"))  # type: ignore[attr-defined]

    class PositionalLengths(Reference):
        """The reference, whose lstm breaks the spec's signature: ``lengths`` is not keyword-only."""

        ops: ClassVar[tuple[str, ...]] = ("lstm",)

    PositionalLengths.lstm = lstm  # type: ignore[attr-defined]
    return PositionalLengths()


@hookimpl
def rnnspec_backend() -> BackendDeclaration:
    """Declare the backend."""
    return BackendDeclaration(load=_load, description="the reference's lstm, with lengths positional")
