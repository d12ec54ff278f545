"""The NumPy reference with ACT halting weights that sum to 0.97 instead of 1.

ACT's mean-field output and state are sums over the inner steps weighted by
the halting probabilities, which the remainder R(t) makes sum to exactly 1.
This mutant's weights sum to 0.97 (as if 3% of the remainder went missing):
its outputs and final state are the reference's times 0.97. The ponder
results are right. The reverse mode is that of the same wrong function.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from rnnspec.reference import Reference
from rnnspec.results import ACTResult

WEIGHT_SUM = 0.97


def _scaled(a: Any) -> Any:
    if a is None:
        return None
    a = np.asarray(a)
    return (a * WEIGHT_SUM).astype(a.dtype)


def _scaled_state(state: Any) -> Any:
    if state is None:
        return None
    return tuple({k: _scaled(v) for k, v in layer.items()} for layer in state)


class Mutant(Reference):
    """Wrong on purpose: act's weights over the inner steps sum to 0.97."""

    capabilities: ClassVar[frozenset[str]] = frozenset({"vjp"})

    def act(
        self,
        x: Any,
        params: Any,
        *,
        cell: str = "rnn",
        epsilon: float = 0.01,
        max_steps: int = 100,
        lengths: Any = None,
        initial_state: Any = None,
        reverse: bool = False,
        checkpoint_every: int | None = None,
    ) -> ACTResult:
        result = super().act(
            x,
            params,
            cell=cell,
            epsilon=epsilon,
            max_steps=max_steps,
            lengths=lengths,
            initial_state=initial_state,
            reverse=reverse,
            checkpoint_every=checkpoint_every,
        )
        return result._replace(outputs=_scaled(result.outputs), state=_scaled_state(result.state))

    def vjp(self, op: str, arguments: dict[str, Any], cotangents: Mapping[str, Any]) -> dict[str, Any]:
        if op == "act":
            cotangents = dict(cotangents)
            if "outputs" in cotangents:
                cotangents["outputs"] = _scaled(cotangents["outputs"])
            if "state" in cotangents:
                cotangents["state"] = _scaled_state(cotangents["state"])
        return super().vjp(op, arguments, cotangents)
