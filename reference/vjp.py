"""Reverse mode of every op: ``rnnspec.reference.vjp``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rnnspec.backend import Backend

from .implementation import Reference

__all__ = ["vjp"]

_BACKEND = Backend("numpy", Reference(), version="reference")


def vjp(op: str, cotangents: Mapping[str, Any], *args: Any, **options: Any) -> dict[str, Any]:
    """Reverse mode of ``op`` at the call ``op(*args, **options)``, hand-derived in float64.

    The same as ``rnnspec.get_backend("numpy").vjp``; see :meth:`rnnspec.Backend.vjp`
    for the cotangents and the returned structure. Arrays have the input's
    dtype; the arithmetic is float64.
    """
    return _BACKEND.vjp(op, cotangents, *args, **options)
