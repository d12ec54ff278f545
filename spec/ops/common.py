"""Pieces shared by the records of the sequence ops."""

from __future__ import annotations

import numbers
from typing import Any

from .record import CaseHints, OptionSpec, StateSpec

__all__ = [
    "CHECKPOINT_EVERY",
    "DROPOUT_MASK",
    "EXACT_GRADIENT",
    "HIDDEN_STATE",
    "RECURRENT_MASK",
    "RELU_HINTS",
    "dropout_equation",
    "recurrent_equation",
]

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

#: Dropout between stacked layers (torch.nn's ``dropout``): the input of layer k > 0 is y^{k-1} * mask.
DROPOUT_MASK = OptionSpec(
    "dropout_mask",
    None,
    (),
    "None, or one array (batch, time, H) of x's dtype per boundary between layers (layers - 1 of them; a single "
    "array stands for every boundary): the input of layer k > 0 is the outputs of layer k - 1 times the mask, "
    "whose entries the caller draws in training (0 or 1 / (1 - p)) and passes None in evaluation",
    kind="array",
    shape=("B", "T", "H"),
    per_layer=True,
    between_layers=True,
    dropout=True,
)

#: Recurrent dropout with one mask shared over time (Keras' ``recurrent_dropout``): the h_{t-1} that enters the
#: recurrent matmul is h_{t-1} * mask; the state update reads the unmasked state.
RECURRENT_MASK = OptionSpec(
    "recurrent_mask",
    None,
    (),
    "None, or an array (batch, H) of x's dtype, or one per layer: the h_{t-1} that enters the recurrent "
    "product is h_{t-1} * mask at every step (one mask shared over time); the state update reads the unmasked "
    "state. The caller draws it in training (0 or 1 / (1 - p)) and passes None in evaluation",
    kind="array",
    shape=("B", "H"),
    per_layer=True,
    dropout=True,
)


def dropout_equation(below: str = "y^{k-1}_t") -> str:
    """The equation line of ``dropout_mask``: what layer k > 0 reads, given what the layer below hands up."""
    return f"x_t = {below} * dropout_mask^{{k-1}}_t    (layer k > 0 with a dropout_mask; else x_t = {below})"


def recurrent_equation(product: str = "W_hh h_{t-1}") -> str:
    """The equation line of ``recurrent_mask``: which product reads the masked state."""
    return (
        f"with a recurrent_mask, {product} reads h_{{t-1}} * recurrent_mask^k (one mask for every step); "
        "the state update reads h_{t-1}"
    )


#: Case hints of an op whose ``activation`` may be a relu: a ``"ties"`` case puts its pre-activations on
#: the kink at 0; the saturated-gates checks pin tanh, which saturates (a relu grows without bound).
RELU_HINTS = CaseHints(
    tie_options={"activation": "relu"}, relu=("activation", "relu"), saturating={"activation": ("tanh",)}
)
