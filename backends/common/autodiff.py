"""What the reverse modes of the tape-based frameworks (torch, TensorFlow) share: results paired with cotangents."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["paired"]


def paired(result: Any, cotangents: Mapping[str, Any]) -> tuple[list[Any], list[Any]]:
    """A sequence op's result arrays, field by field (``state`` entry by entry), and the caller's cotangent
    of each (None where the caller gave none): what the framework's gradient call takes."""
    outs, cots = [], []
    for name, value in result._asdict().items():
        given = cotangents.get(name)
        if name == "state":
            for k, layer in enumerate(value):
                layer_ct = (given[k] if given is not None else None) or {}
                for entry, array in layer.items():
                    outs.append(array)
                    cots.append(layer_ct.get(entry))
        else:
            outs.append(value)
            cots.append(given)
    return outs, cots
