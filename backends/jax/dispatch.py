"""Every op of the JAX backend, by name, with the options ``jax.jit`` must treat as static.

Each op's function takes the option ``checkpoint_every`` through :mod:`.checkpointing`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rnnspec.ops import OPS

from . import act, classic, independent, qrnn, recurrences, skip
from .checkpointing import with_checkpointing

__all__ = ["OP_FUNCTIONS", "STATIC_OPTIONS"]

#: op name -> pure function of jax arrays and the normalised arguments (keywords), returning the op's result.
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

#: op name -> the same, taking ``checkpoint_every`` too (a static option: it shapes the program).
OP_FUNCTIONS: dict[str, Callable[..., Any]] = {op: with_checkpointing(op, fn) for op, fn in _FUNCTIONS.items()}

#: op name -> the keyword arguments that are Python values (strings, booleans, numbers), static under
#: ``jax.jit``: the op's value options and ``reverse``. Arrays (``zoneout_mask``, ``lengths``) are traced.
STATIC_OPTIONS: dict[str, tuple[str, ...]] = {
    op: (*(o.name for o in OPS[op].options if o.kind == "value"), "reverse") for op in OP_FUNCTIONS
}
