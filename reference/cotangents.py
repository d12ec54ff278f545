"""Reading the cotangents a caller passes to ``vjp``: checked, float64, zeros where absent."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rnnspec.errors import ShapeError, UnknownArgumentError

from .activations import Array

__all__ = ["check_keys", "cotangent", "read_sequence_cotangents"]


def check_keys(op: str, argument: str, given: Mapping[str, Any], allowed: Sequence[str]) -> None:
    """Refuse keys that are not among ``allowed``."""
    for key in given:
        if key not in allowed:
            raise UnknownArgumentError(op, argument, f"keys among {sorted(allowed)}", f"a key {key!r}", backend="numpy")


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
    """Cotangents of a sequence op's result fields.

    ``"outputs"`` is shaped like ``outputs``, ``"state"`` is one mapping per
    layer shaped like ``state``, and any other field is ``(batch, time)``.
    """
    if not isinstance(cotangents, Mapping):
        raise ShapeError(op, "cotangents", f"a mapping with keys among {list(fields)}", type(cotangents).__name__)
    check_keys(op, "cotangents", cotangents, fields)
    read: dict[str, Any] = {}
    for field in fields:
        if field == "state":
            continue
        want = outputs.shape if field == "outputs" else outputs.shape[:2]
        value = cotangents.get(field)
        read[field] = np.zeros(want) if value is None else cotangent(op, f"cotangents[{field!r}]", value, want)
    d_state = [{k: np.zeros_like(v) for k, v in s.items()} for s in state]
    given = cotangents.get("state")
    if given is not None:
        if isinstance(given, Mapping) and len(d_state) == 1:
            given = (given,)
        if not isinstance(given, Sequence) or len(given) != len(d_state):
            expected = f"a sequence of {len(d_state)} mapping(s), one per layer"
            raise ShapeError(op, "cotangents['state']", expected, type(given).__name__, backend="numpy")
        for k, entry in enumerate(given):
            check_keys(op, f"cotangents['state'][{k}]", entry, list(d_state[k]))
            for name, value in entry.items():
                arg = f"cotangents['state'][{k}][{name!r}]"
                d_state[k][name] = cotangent(op, arg, value, d_state[k][name].shape)
    read["state"] = d_state
    return read
