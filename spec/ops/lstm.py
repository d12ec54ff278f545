"""Record of ``lstm``: the long short-term memory layer, PyTorch's layout."""

from __future__ import annotations

from .common import (
    CHECKPOINT_EVERY,
    DROPOUT_MASK,
    EXACT_GRADIENT,
    HIDDEN_STATE,
    RECURRENT_MASK,
    dropout_equation,
    recurrent_equation,
)
from .record import OpSpec, ParamSpec, StateSpec

__all__ = ["LSTM"]

LSTM = OpSpec(
    name="lstm",
    layer="LSTM",
    module="classic",
    summary="Long short-term memory layer with gate blocks i, f, g, o (PyTorch's order).",
    equations=(
        "[i, f, g, o] = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh",
        "c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g)",
        "h_t = sigmoid(o) * tanh(c_t)",
        "y_t = h_t",
        dropout_equation(),
        recurrent_equation(),
    ),
    params=(
        ParamSpec("w_ih", ("4*H", "I"), "input-to-hidden weights, row blocks i, f, g, o"),
        ParamSpec("w_hh", ("4*H", "H"), "hidden-to-hidden weights, row blocks i, f, g, o"),
        ParamSpec("b_ih", ("4*H",), "input bias, blocks i, f, g, o"),
        ParamSpec("b_hh", ("4*H",), "hidden bias, blocks i, f, g, o"),
    ),
    state=(HIDDEN_STATE, StateSpec("c", ("H",), "cell state c_t")),
    options=(DROPOUT_MASK, RECURRENT_MASK, CHECKPOINT_EVERY),
    result_fields=("outputs", "state"),
    gradient=EXACT_GRADIENT,
    init="lstm",
)
