"""Pieces shared by the records of the sequence ops."""

from __future__ import annotations

from .record import StateSpec

#: The hidden state entry every recurrent layer carries.
HIDDEN_STATE = StateSpec("h", ("H",), "hidden state h_t")

#: Gradient convention shared by the smooth classic cells.
EXACT_GRADIENT = (
    "Exact reverse mode of the forward equations (backpropagation through time), with respect to x, "
    "every parameter and the initial state. Steps past a row's length receive no gradient; the "
    "frozen state passes its cotangent through unchanged."
)
