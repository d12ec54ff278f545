"""The NumPy reference whose skip_* reverse mode forgets the straight-through gradient.

The update gate u_t = round(u~_t) has zero derivative almost everywhere;
Skip RNN trains its gate through the straight-through estimator, which passes
the cotangent of u_t to u~_t unchanged. Without it the gate's own parameters
get no gradient: this mutant returns zeros for ``w_gate`` and ``b_gate``.
Values are right.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from rnnspec.reference import Reference

_GATE_PARAMS = ("w_gate", "b_gate")


class Mutant(Reference):
    """Wrong on purpose: no gradient reaches the skip gate's parameters."""

    capabilities: ClassVar[frozenset[str]] = frozenset({"vjp"})

    def vjp(self, op: str, arguments: dict[str, Any], cotangents: Mapping[str, Any]) -> dict[str, Any]:
        grads = super().vjp(op, arguments, cotangents)
        if op.startswith("skip_"):
            grads["params"] = [
                {name: np.zeros_like(g) if name in _GATE_PARAMS else g for name, g in layer.items()}
                for layer in grads["params"]
            ]
        return grads
