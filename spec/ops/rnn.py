"""Record of ``rnn``: the Elman recurrence with a tanh or relu activation."""

from __future__ import annotations

from .common import (
    CHECKPOINT_EVERY,
    DROPOUT_MASK,
    EXACT_GRADIENT,
    HIDDEN_STATE,
    RECURRENT_MASK,
    RELU_HINTS,
    dropout_equation,
    recurrent_equation,
)
from .record import OpSpec, OptionSpec, ParamSpec

__all__ = ["RNN"]

RNN = OpSpec(
    name="rnn",
    layer="RNN",
    module="classic",
    summary="Elman recurrent layer: h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh).",
    equations=(
        "h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)",
        "y_t = h_t",
        dropout_equation(),
        recurrent_equation(),
    ),
    params=(
        ParamSpec("w_ih", ("H", "I"), "input-to-hidden weights"),
        ParamSpec("w_hh", ("H", "H"), "hidden-to-hidden weights"),
        ParamSpec("b_ih", ("H",), "input bias"),
        ParamSpec("b_hh", ("H",), "hidden bias"),
    ),
    state=(HIDDEN_STATE,),
    options=(
        OptionSpec("activation", "tanh", ("tanh", "relu"), "the nonlinearity act"),
        DROPOUT_MASK,
        RECURRENT_MASK,
        CHECKPOINT_EVERY,
    ),
    result_fields=("outputs", "state"),
    gradient=EXACT_GRADIENT + " For relu, act'(0) = 0.",
    hints=RELU_HINTS,
)
