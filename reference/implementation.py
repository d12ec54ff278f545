"""The NumPy reference as a backend implementation (registered as "numpy").

Dtype policy: the reference computes every op in float64 and rounds the
results to the input's dtype (float16, float32 or float64), so its answer in a
low precision is the correctly rounded one; backends are compared to it within
the tolerance policy. bfloat16 has no NumPy dtype and is not offered here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from rnnspec.implementation import Implementation
from rnnspec.methods import spec_method
from rnnspec.ops import OPS
from rnnspec.padding import without_padding

from .act import ACTRun
from .runs import PrimitiveRun, SequenceRun, start
from .skip import SkipRun

__all__ = ["Reference"]


def _zero_past(value: np.ndarray, lengths: Any) -> np.ndarray:
    steps = np.arange(value.shape[1])[None, :] < np.asarray(lengths).astype(np.int64)[:, None]
    zeroed: np.ndarray = np.where(steps.reshape(steps.shape + (1,) * (value.ndim - 2)), value, 0).astype(value.dtype)
    return zeroed


def _start(op: str, arguments: dict[str, Any]) -> SequenceRun | PrimitiveRun | SkipRun | ACTRun:
    """The run of ``op``, on inputs whose padding is zeroed (:mod:`rnnspec.padding`)."""
    return start(op, without_padding(op, arguments, _zero_past))


class Reference(Implementation):
    """The NumPy reference implementation of every op of the spec."""

    ops: ClassVar[tuple[str, ...]] = tuple(OPS)  # every op of the spec
    dtypes: ClassVar[tuple[str, ...]] = ("float16", "float32", "float64")
    framework: ClassVar[str] = "numpy"
    capabilities: ClassVar[frozenset[str]] = frozenset({"vjp"})

    def framework_version(self) -> str:
        return np.__version__

    def vjp(self, op: str, arguments: dict[str, Any], cotangents: Mapping[str, Any]) -> dict[str, Any]:
        return _start(op, arguments).vjp(cotangents)

    def is_array(self, value: Any) -> bool:
        return isinstance(value, np.ndarray)

    def asarray(self, value: np.ndarray) -> np.ndarray:
        return np.array(value)  # a copy: results never alias the caller's arrays

    def asnumpy(self, value: Any) -> np.ndarray:
        return np.array(value)


# One method per op, each with the spec's signature: the registry's load-time check sees them
# exactly as it sees a hand-written backend's.
for _op in Reference.ops:
    setattr(Reference, _op, spec_method(_op, lambda op, arguments: _start(op, arguments).result()))
