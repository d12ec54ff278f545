"""Pieces shared by the records of the sequence ops."""

from __future__ import annotations

import numbers
from typing import Any

from .record import CaseHints, OptionSpec, StateSpec

__all__ = ["CHECKPOINT_EVERY", "EXACT_GRADIENT", "HIDDEN_STATE", "RELU_HINTS"]

#: The hidden state entry every recurrent layer carries.
HIDDEN_STATE = StateSpec("h", ("H",), "hidden state h_t")

#: Gradient convention shared by the smooth classic cells.
EXACT_GRADIENT = (
    "Exact reverse mode of the forward equations (backpropagation through time), with respect to x, "
    "every parameter and the initial state. Steps past a row's length receive no gradient; the "
    "frozen state passes its cotangent through unchanged."
)


def _is_checkpoint_every(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, bool):  # True is an Integral, but not a number of steps
        return False
    return isinstance(value, numbers.Integral) and int(value) >= 1


#: Gradient checkpointing, an option of every op: the memory/compute trade of the reverse mode.
CHECKPOINT_EVERY = OptionSpec(
    "checkpoint_every",
    None,
    (None,),
    "gradient checkpointing: keep the state every K steps and recompute each segment of K steps during the "
    "backward pass (same values and gradients, less memory; None keeps every step)",
    check=_is_checkpoint_every,
    expected="None or an integer >= 1",
)

#: Case hints of an op whose ``activation`` may be a relu: a ``"ties"`` case puts its pre-activations on
#: the kink at 0; the saturated-gates checks pin tanh, which saturates (a relu grows without bound).
RELU_HINTS = CaseHints(
    tie_options={"activation": "relu"}, relu=("activation", "relu"), saturating={"activation": ("tanh",)}
)
