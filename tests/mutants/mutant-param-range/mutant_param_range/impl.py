"""The NumPy reference with indrnn clamping its recurrent weight inside the forward.

The spec's ``indrnn`` computes with the ``u`` it is given; the constraint on
``u`` is a projection the caller applies to the parameter before the forward
(``spec/ops/indrnn.md``, "Conventions"). This mutant does what the spec
rejects: it clamps ``u`` into ``[-1, 1]`` inside the forward of every layer
(``u.clamp(-1, 1)`` in the graph). Its reverse mode is that of the clamped
function: the gradient of a ``u`` entry outside ``[-1, 1]`` is zero (the clamp's
derivative; entries at exactly -1 or 1 keep theirs, as ``torch.clamp`` does),
the other gradients are the reference's at the clamped ``u``.

Wherever every ``|u| <= 1``, values and gradients are the reference's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from rnnspec.reference import Reference
from rnnspec.results import SequenceResult

#: The clamp's bound.
BOUND = 1.0


def clamped(params: Any) -> list[dict[str, Any]]:
    """New layer mappings with ``u`` clamped into ``[-BOUND, BOUND]`` (the caller's arrays untouched)."""
    out = []
    for layer in params:
        u = np.asarray(layer["u"])
        out.append({**layer, "u": np.clip(u, -BOUND, BOUND).astype(u.dtype)})
    return out


class Mutant(Reference):
    """Wrong on purpose: indrnn clamps u into [-1, 1] in the forward, and differentiates the clamp."""

    capabilities: ClassVar[frozenset[str]] = frozenset({"vjp"})

    def indrnn(
        self,
        x: Any,
        params: Any,
        *,
        activation: str = "relu",
        lengths: Any = None,
        initial_state: Any = None,
        reverse: bool = False,
        checkpoint_every: int | None = None,
    ) -> SequenceResult:
        return super().indrnn(
            x,
            clamped(params),
            activation=activation,
            lengths=lengths,
            initial_state=initial_state,
            reverse=reverse,
            checkpoint_every=checkpoint_every,
        )

    def vjp(self, op: str, arguments: dict[str, Any], cotangents: Mapping[str, Any]) -> dict[str, Any]:
        if op != "indrnn":
            return super().vjp(op, arguments, cotangents)
        grads = super().vjp(op, {**arguments, "params": clamped(arguments["params"])}, cotangents)
        layers = []
        for layer, given in zip(grads["params"], arguments["params"], strict=True):
            inside = np.abs(np.asarray(given["u"])) <= BOUND
            layers.append({**layer, "u": np.where(inside, layer["u"], np.zeros_like(layer["u"]))})
        grads["params"] = layers
        return grads
