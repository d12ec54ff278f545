"""Padding past each row's length never reaches a value or a gradient.

A sequence op with ``lengths`` computes as if the steps past each row's length
held zeros: a NaN or an infinity there (what a padded batch often holds, from a
division by a zero count or ``-inf`` fill) must not reach the outputs, the
final state or any cotangent. Masking by multiplication keeps a NaN (``0 * nan``
is NaN), and a masked step still feeds the parameters' gradients through the
cell's products, so every implementation zeroes the padding of the per-step
inputs before the op reads them. The rule is the same for every backend and
lives here, framework-free; each backend brings its ``zero_past(value,
lengths)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .memo import memoized
from .ops import OPS

__all__ = ["ZeroPast", "padded_inputs", "without_padding"]

#: A framework's ``zero_past(value, lengths)``: ``value`` (batch, time, ...) with the steps at or past each
#: row's length set to zero, out of place; ``lengths`` is not None.
ZeroPast = Callable[[Any, Any], Any]


@memoized  # read on every call of every op
def padded_inputs(op: str) -> tuple[str, ...]:
    """The per-step inputs of ``op`` whose padding is zeroed: its record's ``per_step`` but the array
    options of a fixed set of values (qrnn's ``zoneout_mask`` only selects between two values of the cell's
    own); those of any value (Phased LSTM's ``timestamps``) are zeroed as ``x`` is."""
    spec = OPS[op]
    fixed = {o.name for o in spec.options if o.kind == "array" and o.values is not None}
    return tuple(name for name in spec.per_step if name not in fixed)


def without_padding(op: str, arguments: Mapping[str, Any], zero_past: ZeroPast) -> dict[str, Any]:
    """The normalised ``arguments`` of ``op`` with the padding of its per-step inputs zeroed.

    A call without ``lengths`` comes back unchanged (a shallow copy).
    """
    out = dict(arguments)
    lengths = arguments.get("lengths")
    if lengths is None:
        return out
    for name in padded_inputs(op):
        value = out.get(name)
        if isinstance(value, (tuple, list)):  # an array option, normalised to one array per layer
            out[name] = tuple(zero_past(v, lengths) for v in value)
        elif value is not None:
            out[name] = zero_past(value, lengths)
    return out
