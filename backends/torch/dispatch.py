"""Every op of the PyTorch backend, by name, and the fast paths this installation offers.

Each op's function takes the option ``checkpoint_every`` through :mod:`.checkpointing`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import act, classic, independent, qrnn, recurrences, skip
from .checkpointing import with_checkpointing
from .fused import fast_paths_available

__all__ = ["OP_FUNCTIONS", "fast_paths_available"]

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

#: op name -> function of the normalised arguments (keywords, ``checkpoint_every`` included).
OP_FUNCTIONS: dict[str, Callable[..., Any]] = {op: with_checkpointing(op, fn) for op, fn in _FUNCTIONS.items()}
