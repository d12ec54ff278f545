"""The NumPy reference with skip_rnn handing back the caller's initial state on an empty sequence.

A result holds new arrays, never the caller's (the reference's results never
alias its arguments). With ``T = 0`` steps the final state equals the
initial state, and a shortcut returns the very arrays the caller passed as
``initial_state`` as the result's ``state`` (the same objects, in the
reference's structure), instead of new arrays: a caller that then updates the
state in place also changes its own initial state. The values are right.

Calls with ``T > 0``, or without ``initial_state``, are the reference's; so is
the reverse mode (``vjp``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from rnnspec.reference import Reference
from rnnspec.results import SkipResult


class Mutant(Reference):
    """Wrong on purpose: skip_rnn with T = 0 returns the initial-state arrays themselves."""

    capabilities: ClassVar[frozenset[str]] = frozenset({"vjp"})

    def skip_rnn(
        self,
        x: Any,
        params: Any,
        *,
        activation: str = "tanh",
        lengths: Any = None,
        initial_state: Any = None,
        reverse: bool = False,
        checkpoint_every: int | None = None,
    ) -> SkipResult:
        result = super().skip_rnn(
            x,
            params,
            activation=activation,
            lengths=lengths,
            initial_state=initial_state,
            reverse=reverse,
            checkpoint_every=checkpoint_every,
        )
        if initial_state is None or np.shape(x)[1] != 0:
            return result
        # The shortcut: nothing ran, so hand back what came in (the caller's arrays, not copies).
        state = tuple({k: given[k] for k in layer} for layer, given in zip(result.state, initial_state, strict=True))
        return result._replace(state=state)
