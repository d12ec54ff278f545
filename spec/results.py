"""The result types every backend returns.

Results are NamedTuples, so they unpack like PyTorch's ``(output, h_n)`` and are
pytrees in JAX and nests in TensorFlow without registration.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

__all__ = ["LayerState", "SequenceResult", "State"]

#: The state of one layer: named entries such as ``{"h": ..., "c": ...}``.
LayerState = Mapping[str, Any]
#: A sequence op's state: one :data:`LayerState` per layer, bottom layer first.
State = tuple[LayerState, ...]


class SequenceResult(NamedTuple):
    """Result of ``rnn``, ``lstm`` and ``gru``.

    Attributes
    ----------
    outputs
        ``(batch, time, hidden)``: the top layer's output at every step; zero
        past a row's length.
    state
        The final state, one mapping per layer, in exactly the structure
        ``initial_state`` accepts: feed it back to continue the sequence.
    """

    outputs: Any
    state: State
