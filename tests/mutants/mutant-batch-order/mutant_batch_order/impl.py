"""The NumPy reference with a "packed fast path" for gru that forgets to unsort the final state.

A packed-sequence path (``pack_padded_sequence(..., enforce_sorted=False)``)
sorts the rows by descending length, runs, and must put the rows back in the
caller's order. This one restores the outputs but not the final state: when
``batch >= 8`` and ``lengths`` are given and not already in descending order,
row ``i`` of every state entry of every layer is the state of the row with
the ``i``-th longest length (a stable sort, ties in the caller's order). The
outputs are right.

Calls with ``batch < 8``, without ``lengths`` or with lengths already sorted
descending are the reference's. The reverse mode (``vjp``) is the reference's,
right: only the values are wrong.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from rnnspec.reference import Reference
from rnnspec.results import SequenceResult

#: The smallest batch that takes the packed path.
MIN_BATCH = 8


def packed_order(lengths: Any, batch: int) -> np.ndarray | None:
    """The rows by descending length (stable), where the packed path runs and that order is not
    the caller's; ``None`` where the call is right."""
    if lengths is None or batch < MIN_BATCH:
        return None
    lengths = np.asarray(lengths, dtype=np.int64)
    if np.all(lengths[:-1] >= lengths[1:]):
        return None  # already sorted: nothing to unsort
    return np.argsort(-lengths, kind="stable")


class Mutant(Reference):
    """Wrong on purpose: gru's final state stays in packed (descending-length) row order."""

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
        result = super().gru(
            x,
            params,
            reset_after=reset_after,
            lengths=lengths,
            initial_state=initial_state,
            reverse=reverse,
            checkpoint_every=checkpoint_every,
        )
        order = packed_order(lengths, np.shape(x)[0])
        if order is None:
            return result
        state = tuple({k: np.asarray(v)[order] for k, v in layer.items()} for layer in result.state)
        return result._replace(state=state)
