"""Record of ``act``: Adaptive Computation Time (Graves 2016) over a base cell."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from ..results import ACTResult
from .common import CHECKPOINT_EVERY, RECURRENT_MASK, recurrent_equation
from .gru import GRU
from .indrnn import INDRNN
from .lstm import LSTM
from .record import CaseHints, OpSpec, OptionSpec, ParamSpec, StateSpec
from .rnn import RNN

__all__ = ["ACT", "ACT_CELLS", "MAX_STEPS_LIMIT"]

#: The cells ACT can ponder with, by the value of its ``cell`` option.
ACT_CELLS: dict[str, OpSpec] = {"rnn": RNN, "lstm": LSTM, "gru": GRU, "indrnn": INDRNN}

_HALT = (
    ParamSpec("w_halt", ("1", "H"), "halting-unit weights, read h"),
    ParamSpec("b_halt", ("1",), "halting-unit bias (initialised to 1)"),
)


def _params(options: Mapping[str, Any]) -> tuple[ParamSpec, ...]:
    base = ACT_CELLS.get(options["cell"], RNN)
    # The input gains one column: the flag, 0 on the first inner step and 1 after.
    widened = tuple(
        replace(p, shape=(p.shape[0], "I+1"), description=p.description + "; last column reads the flag")
        if p.name == "w_ih"
        else p
        for p in base.params
    )
    return widened + _HALT


def _state(options: Mapping[str, Any]) -> tuple[StateSpec, ...]:
    return ACT_CELLS.get(options["cell"], RNN).state


def _is_epsilon(value: Any) -> bool:
    # numbers.Real: NumPy scalars (np.float32(0.01)) too, as every other option of the spec takes them.
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    number = float(value)
    return 0.0 < number < 1.0 and math.isfinite(number)


#: The most inner steps a call may ask for: backends count steps in 32-bit integers (jax without x64,
#: TensorFlow's loop counters), where a larger bound overflows or wraps to no steps at all.
MAX_STEPS_LIMIT = 2**31 - 1


def _is_max_steps(value: Any) -> bool:
    if isinstance(value, bool):  # True is an Integral, but not a step count
        return False
    return isinstance(value, numbers.Integral) and 1 <= int(value) <= MAX_STEPS_LIMIT


ACT = OpSpec(
    name="act",
    layer="ACT",
    summary="Adaptive Computation Time: each step ponders the cell until the halting units sum to 1 - epsilon.",
    equations=(
        "s^0_t = s_{t-1};  s^n_t = S(s^{n-1}_t, [x_t, flag_n])    (flag_1 = 0, flag_n = 1 for n > 1)",
        "h^n_t = sigmoid(w_halt . h(s^n_t) + b_halt)",
        "N(t) = min(max_steps, min{n : not (h^1_t + ... + h^n_t < 1 - epsilon)})    (a NaN sum halts)",
        "R(t) = 1 - (h^1_t + ... + h^{N(t)-1}_t), or NaN where h^{N(t)}_t is NaN",
        "p^n_t = h^n_t for n < N(t);  p^{N(t)}_t = R(t)",
        "s_t = sum_n p^n_t s^n_t;  y_t = sum_n p^n_t h(s^n_t)",
        "ponder_cost_t = N(t) + R(t)",
        recurrent_equation("the cell's recurrent product (W_hh h; IndRNN's u * h) at every inner step"),
    ),
    params=_params({"cell": "rnn"}),
    state=RNN.state,
    options=(
        OptionSpec("cell", "rnn", tuple(ACT_CELLS), "the cell pondered (its own options at their defaults)"),
        OptionSpec(
            "epsilon",
            0.01,
            (),
            "halting threshold: stop once the halting units sum to 1 - epsilon (or their sum is NaN)",
            check=_is_epsilon,
            expected="a number in (0, 1)",
        ),
        OptionSpec(
            "max_steps",
            100,
            (),
            "the most inner steps per input step (N(t) <= max_steps), at most 2**31 - 1",
            check=_is_max_steps,
            expected="an integer in [1, 2**31 - 1]",
        ),
        RECURRENT_MASK,
        CHECKPOINT_EVERY,
    ),
    result_fields=("outputs", "state", "ponder_steps", "ponder_remainder", "ponder_cost"),
    gradient=(
        "N(t) is piecewise constant and carries no gradient; the halting units receive gradient only through "
        "the weights p^n (n < N(t)) and through R(t) = 1 - sum_{n<N} h^n, so d ponder_cost / d h^n = -1 for "
        "n < N(t) and the last unit h^{N(t)} receives none. Everything else is exact reverse mode through "
        "the inner steps. Steps past a row's length receive no gradient. A step that halts on a NaN halting "
        "unit (R(t) NaN) goes through the same formulas, so its NaN reaches the gradient."
    ),
    params_for=_params,
    state_for=_state,
    max_layers=1,
    result=ACTResult,
    init="act",
    hints=CaseHints(
        option_draws={"epsilon": (0.01, 0.1, 0.3), "max_steps": range(1, 5)},
        decision="halting",
        # With w_halt = b_halt = 0 every halting unit is 1/2: the first sum is exactly 1 - epsilon. One
        # step more than the tie needs: a comparison the wrong way round would take it.
        tie_options={"epsilon": 0.5, "max_steps": 2},
        # Halting units near 0.3 sum to 0.9 and 1.2 around 1 - epsilon.
        clear_options={"epsilon": 0.01},
        inner_steps="max_steps",
        # IndRNN's relu grows without bound under saturating weights: the other cells saturate.
        saturating={"cell": ("rnn", "lstm", "gru")},
    ),
)
