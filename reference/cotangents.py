"""Reading the cotangents a caller passes to ``vjp``: float64, zeros where absent.

:meth:`rnnspec.Backend.vjp` has checked them against the result's structure and
shapes (:mod:`rnnspec.cotangents`) and hands over the given fields only, the
state as one mapping per layer. The shape check below is a defence for a
caller of :meth:`Reference.vjp` that skips the ``Backend``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rnnspec.errors import ShapeError

from .activations import Array

__all__ = ["cotangent", "read_sequence_cotangents"]


def cotangent(op: str, argument: str, value: Any, want: tuple[int, ...]) -> Array:
    """``value`` as float64 of shape ``want``."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != want:
        raise ShapeError(op, argument, f"shape {want}", f"shape {arr.shape}", backend="numpy")
    return arr


def read_sequence_cotangents(
    op: str,
    cotangents: Mapping[str, Any],
    fields: Sequence[str],
    outputs: Array,
    state: Sequence[Mapping[str, Array]],
) -> dict[str, Any]:
    """Cotangents of a sequence op's result fields, zeros for those not given.

    ``"outputs"`` is shaped like ``outputs``, ``"state"`` is one mapping per
    layer shaped like ``state``, and any other field is ``(batch, time)``.
    """
    read: dict[str, Any] = {}
    for field in fields:
        if field == "state":
            continue
        want = outputs.shape if field == "outputs" else outputs.shape[:2]
        value = cotangents.get(field)
        read[field] = np.zeros(want) if value is None else cotangent(op, f"cotangents[{field!r}]", value, want)
    d_state = [{k: np.zeros_like(v) for k, v in s.items()} for s in state]
    for k, entries in enumerate(cotangents.get("state") or ()):
        for name, value in entries.items():
            arg = f"cotangents['state'][{k}][{name!r}]"
            d_state[k][name] = cotangent(op, arg, value, d_state[k][name].shape)
    read["state"] = d_state
    return read
