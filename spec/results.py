"""The result types every backend returns.

Results are NamedTuples, so they unpack like PyTorch's ``(output, h_n)`` and are
pytrees in JAX and nests in TensorFlow without registration.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

__all__ = ["ACTResult", "LayerState", "SequenceResult", "SkipResult", "State"]

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


class SkipResult(NamedTuple):
    """Result of ``skip_rnn``, ``skip_lstm`` and ``skip_gru``.

    Attributes
    ----------
    outputs
        ``(batch, time, hidden)``: the top layer's h at every step (copied on
        skipped steps); zero past a row's length.
    state
        The final state, one mapping per layer; the top layer's also holds
        ``update_prob`` and ``cum_update_prob`` (batch, 1), so feeding it back
        continues the gate exactly.
    update_gate
        ``(batch, time)``: u_t in {0, 1}; zero past a row's length.
    update_prob
        ``(batch, time)``: u~_t, the probability u_t was drawn from; zero past a row's length.
    """

    outputs: Any
    state: State
    update_gate: Any
    update_prob: Any


class ACTResult(NamedTuple):
    """Result of ``act``.

    Attributes
    ----------
    outputs
        ``(batch, time, hidden)``: the mean-field output y_t; zero past a row's length.
    state
        The final (mean-field) state, one mapping (one layer).
    ponder_steps
        ``(batch, time)``: N(t), the inner steps taken; zero past a row's length.
    ponder_remainder
        ``(batch, time)``: R(t); zero past a row's length.
    ponder_cost
        ``(batch, time)``: N(t) + R(t), the ponder cost; zero past a row's length.
    """

    outputs: Any
    state: State
    ponder_steps: Any
    ponder_remainder: Any
    ponder_cost: Any
