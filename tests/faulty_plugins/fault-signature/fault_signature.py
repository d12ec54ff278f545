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
    # lengths moves to the positional parameters, after the spec's own; the keyword-only ones stay as they are.
    positional = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    lengths = signature.parameters["lengths"].replace(kind=inspect.Parameter.POSITIONAL_OR_KEYWORD)
    rest = [
        p for p in signature.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name != "lengths"
    ]
    return signature.replace(parameters=[self, *positional, lengths, *rest])


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
