"""Every op of the TensorFlow backend, by name.

Each op's function takes the option ``checkpoint_every`` through :mod:`.checkpointing`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import act, classic, independent, qrnn, recurrences, skip
from .checkpointing import with_checkpointing

__all__ = ["OP_FUNCTIONS"]

#: op name -> function of the normalised arguments (keywords), returning the op's result.
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "rnn": classic.rnn,
    "lstm": classic.lstm,
    "gru": classic.gru,
    "skip_rnn": skip.skip_rnn,
    "skip_lstm": skip.skip_lstm,
    "skip_gru": skip.skip_gru,
    "act": act.act,
    "indrnn": independent.indrnn,
    "indrnn_recurrence": recurrences.indrnn_recurrence,
    "qrnn": qrnn.qrnn,
    "linear_recurrence": recurrences.linear_recurrence,
}

#: op name -> the same, taking ``checkpoint_every`` too.
OP_FUNCTIONS: dict[str, Callable[..., Any]] = {op: with_checkpointing(op, fn) for op, fn in _FUNCTIONS.items()}
