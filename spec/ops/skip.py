"""Records of ``skip_rnn``, ``skip_lstm`` and ``skip_gru`` (Campos et al., ICLR 2018).

Each wraps its base cell's record with Skip RNN's state-update gate, following
the authors' code: the gate's probabilities are carried in the state, so a
chunked run continues exactly, and the binarisation has a straight-through
gradient.
"""

from __future__ import annotations

from ..results import SkipResult
from .common import recurrent_equation
from .gru import GRU
from .lstm import LSTM
from .record import CaseHints, OpSpec, ParamSpec, StateSpec
from .rnn import RNN

__all__ = ["SKIP_GRU", "SKIP_LSTM", "SKIP_RNN"]

_GATE_PARAMS = (
    ParamSpec("w_gate", ("1", "H"), "update-gate weights, read the top layer's candidate", layers="top"),
    ParamSpec("b_gate", ("1",), "update-gate bias (initialised to 1: every step used at first)", layers="top"),
    ParamSpec("h0", ("H",), "trainable initial h, used when no initial_state is passed", required=False),
)
_C0 = ParamSpec("c0", ("H",), "trainable initial c, used when no initial_state is passed", required=False)
_GATE_STATE = (
    StateSpec("update_prob", ("1",), "the last increment du~ of the update probability", layers="top", start=1.0),
    StateSpec("cum_update_prob", ("1",), "the accumulated update probability", layers="top"),
)

_EQUATIONS = (
    "u~_t = cum_{t-1} + min(update_prob_{t-1}, 1 - cum_{t-1})",
    "u_t = 1 if u~_t >= 0.5 else 0",
    "cand^k_t = S_k(s^k_{t-1}, cand^{k-1}_t)    (cand^0_t = x_t; S_k the base cell of layer k)",
    "du~_t = sigmoid(w_gate . g(cand^top_t) + b_gate)    (g: the candidate c for lstm, else h)",
    "s^k_t = u_t * cand^k_t + (1 - u_t) * s^k_{t-1}    (every state entry of every layer)",
    "update_prob_t = u_t * du~_t + (1 - u_t) * update_prob_{t-1}",
    "cum_t = (1 - u_t) * u~_t",
    "y_t = h^top_t",
    "cand^{k-1}_t * dropout_mask^{k-1}_t in place of cand^{k-1}_t for layer k > 0, with a dropout_mask",
    recurrent_equation("each base cell's recurrent product in S_k") + " (and the copy (1 - u_t) * s^k_{t-1})",
)

_GRADIENT = (
    "Reverse mode of the equations with the straight-through estimator at the binarisation: "
    "d u_t / d u~_t = 1. No stop-gradient anywhere: the gradient reaches the gate through u_t (and so "
    "through every state mix) and through update_prob and cum. min passes its gradient to update_prob "
    "when update_prob <= 1 - cum, else to cum. Steps past a row's length receive no gradient."
)


def _skip(base: OpSpec, extra_params: tuple[ParamSpec, ...]) -> OpSpec:
    return OpSpec(
        name=f"skip_{base.name}",
        module="skip",
        layer=f"Skip{base.layer}",
        summary=f"Skip RNN over {base.name}: a learnt binary state-update gate decides at each step whether "
        "the state is updated or copied.",
        equations=_EQUATIONS,
        params=base.params + _GATE_PARAMS + extra_params,
        state=base.state + _GATE_STATE,
        options=base.options,
        result_fields=("outputs", "state", "update_gate", "update_prob"),
        gradient=_GRADIENT,
        result=SkipResult,
        init="skip",
        base=base.name,
        # The gate is the decision a "ties" case places (the base's relu may be drawn too).
        hints=CaseHints(decision="skip_gate", tie_options={}, relu=base.hints.relu, saturating=base.hints.saturating),
    )


SKIP_RNN = _skip(RNN, ())
SKIP_LSTM = _skip(LSTM, (_C0,))
SKIP_GRU = _skip(GRU, ())
