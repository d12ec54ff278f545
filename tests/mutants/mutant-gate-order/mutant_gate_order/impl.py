"""The NumPy reference with the lstm gate blocks i and f swapped.

A classic porting bug: reading a layout whose blocks come in another order
(TF1's i, j, f, o, say) as PyTorch's i, f, g, o. Every weight and bias of
every layer has its first two row blocks exchanged before the reference runs;
the reverse mode is that of the same wrong function.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from rnnspec.reference import Reference
from rnnspec.results import SequenceResult

_SWAPPED = ("w_ih", "w_hh", "b_ih", "b_hh")


def swap_i_f(params: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each layer's params with row blocks i and f exchanged (its own inverse)."""
    out = []
    for layer in params:
        layer = dict(layer)
        for name in _SWAPPED:
            a = np.asarray(layer[name])
            h = a.shape[0] // 4
            layer[name] = np.concatenate([a[h : 2 * h], a[:h], a[2 * h :]], axis=0)
        out.append(layer)
    return out


class Mutant(Reference):
    """Wrong on purpose: lstm reads its gates in the order f, i, g, o."""

    capabilities: ClassVar[frozenset[str]] = frozenset({"vjp"})

    def lstm(
        self,
        x: Any,
        params: Any,
        *,
        lengths: Any = None,
        initial_state: Any = None,
        reverse: bool = False,
        checkpoint_every: int | None = None,
    ) -> SequenceResult:
        return super().lstm(
            x,
            swap_i_f(params),
            lengths=lengths,
            initial_state=initial_state,
            reverse=reverse,
            checkpoint_every=checkpoint_every,
        )

    def vjp(self, op: str, arguments: dict[str, Any], cotangents: Mapping[str, Any]) -> dict[str, Any]:
        if op != "lstm":
            return super().vjp(op, arguments, cotangents)
        grads = super().vjp(op, {**arguments, "params": swap_i_f(arguments["params"])}, cotangents)
        grads["params"] = swap_i_f(grads["params"])  # back to the caller's layout: the chain rule of the swap
        return grads
