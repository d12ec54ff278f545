"""Records of ``indrnn`` and its primitive ``indrnn_recurrence`` (Li et al., CVPR 2018)."""

from __future__ import annotations

from dataclasses import replace

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

__all__ = ["INDRNN", "INDRNN_RECURRENCE"]

_ACTIVATION = OptionSpec("activation", "relu", ("relu", "tanh"), "the nonlinearity act (the paper's is relu)")

INDRNN = OpSpec(
    name="indrnn",
    layer="IndRNN",
    module="independent",
    summary="Independently recurrent layer: one recurrent weight per unit, h_t = act(W x_t + b + u * h_{t-1}).",
    equations=(
        "h_t = act(W_ih x_t + b_ih + u * h_{t-1})",
        "y_t = h_t",
        dropout_equation(),
        recurrent_equation("u * h_{t-1}"),
    ),
    params=(
        ParamSpec("w_ih", ("H", "I"), "input-to-hidden weights"),
        ParamSpec("b_ih", ("H",), "input bias"),
        ParamSpec("u", ("H",), "recurrent weight of each unit (elementwise)"),
    ),
    state=(HIDDEN_STATE,),
    options=(_ACTIVATION, DROPOUT_MASK, RECURRENT_MASK, CHECKPOINT_EVERY),
    result_fields=("outputs", "state"),
    gradient=EXACT_GRADIENT + " For relu, act'(0) = 0. No projection of u happens inside the op; "
    "rnnspec.indrnn_constrain(u, bound) is applied by the caller before the forward.",
    init="indrnn",
    hints=replace(RELU_HINTS, recurrent=("u",), drawn_params=True),
)

INDRNN_RECURRENCE = OpSpec(
    name="indrnn_recurrence",
    module="recurrences",
    summary="The recurrence of IndRNN alone, over precomputed pre-activations: h_t = act(pre_t + u * h_{t-1}).",
    equations=("h_t = act(pre_t + u * h_{t-1})",),
    params=(
        ParamSpec("pre", ("B", "T", "H"), "pre-activations W x_t + b for every step"),
        ParamSpec("u", ("H",), "recurrent weight of each unit"),
        ParamSpec("initial", ("B", "H"), "h_0 (zeros when None)", required=False),
    ),
    state=(HIDDEN_STATE,),
    options=(_ACTIVATION, CHECKPOINT_EVERY),
    result_fields=("h",),
    gradient=EXACT_GRADIENT,
    kind="primitive",
    result=None,
    hints=replace(RELU_HINTS, recurrent=("u",), scaled=("pre",)),
)
