"""The NumPy reference with an off-by-one in gru's lengths.

gru treats every row as one step shorter than its length (``lengths - 1``,
clipped at 0): the last valid step is dropped from the outputs and the final
state. Calls without ``lengths`` are right. The reverse mode is that of the
same wrong function.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from rnnspec.reference import Reference
from rnnspec.results import SequenceResult


def short_by_one(lengths: Any) -> Any:
    """``lengths - 1`` clipped at 0, or ``None``."""
    if lengths is None:
        return None
    return np.maximum(np.asarray(lengths) - 1, 0)


class Mutant(Reference):
    """Wrong on purpose: gru stops one step before each row's length."""

    capabilities: ClassVar[frozenset[str]] = frozenset({"vjp"})

    def gru(
        self,
        x: Any,
        params: Any,
        *,
        reset_after: bool = True,
        lengths: Any = None,
        initial_state: Any = None,
        reverse: bool = False,
        checkpoint_every: int | None = None,
    ) -> SequenceResult:
        return super().gru(
            x,
            params,
            reset_after=reset_after,
            lengths=short_by_one(lengths),
            initial_state=initial_state,
            reverse=reverse,
            checkpoint_every=checkpoint_every,
        )

    def vjp(self, op: str, arguments: dict[str, Any], cotangents: Mapping[str, Any]) -> dict[str, Any]:
        if op == "gru":
            arguments = {**arguments, "lengths": short_by_one(arguments["lengths"])}
        return super().vjp(op, arguments, cotangents)
