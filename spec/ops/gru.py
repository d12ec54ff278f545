"""Record of ``gru``: the gated recurrent unit, both reset placements."""

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
from .record import OpSpec, OptionSpec, ParamSpec

__all__ = ["GRU"]

GRU = OpSpec(
    name="gru",
    layer="GRU",
    module="classic",
    summary="Gated recurrent unit with gate blocks r, z, n (PyTorch's order).",
    equations=(
        "r = sigmoid(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)",
        "z = sigmoid(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)",
        "n = tanh(W_in x_t + b_in + r * (W_hn h_{t-1} + b_hn))    if reset_after",
        "n = tanh(W_in x_t + b_in + W_hn (r * h_{t-1}) + b_hn)    if not reset_after",
        "h_t = (1 - z) * n + z * h_{t-1}",
        "y_t = h_t",
        dropout_equation(),
        recurrent_equation("every W_h. h_{t-1}"),
    ),
    params=(
        ParamSpec("w_ih", ("3*H", "I"), "input-to-hidden weights, row blocks r, z, n"),
        ParamSpec("w_hh", ("3*H", "H"), "hidden-to-hidden weights, row blocks r, z, n"),
        ParamSpec("b_ih", ("3*H",), "input bias, blocks r, z, n"),
        ParamSpec("b_hh", ("3*H",), "hidden bias, blocks r, z, n"),
    ),
    state=(HIDDEN_STATE,),
    options=(
        OptionSpec(
            "reset_after",
            True,
            (True, False),
            "apply the reset gate after the recurrent matmul (PyTorch, cuDNN, Keras 3) or before "
            "it (Cho et al. 2014, TF1 GRUCell)",
        ),
        DROPOUT_MASK,
        RECURRENT_MASK,
        CHECKPOINT_EVERY,
    ),
    result_fields=("outputs", "state"),
    gradient=EXACT_GRADIENT,
    init="gru",
)
