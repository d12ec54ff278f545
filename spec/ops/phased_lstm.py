"""Record of ``phased_lstm``: the Phased LSTM (Neil, Pfeiffer and Liu, NeurIPS 2016).

An LSTM whose state updates pass through a periodic time gate of each unit,
opened by the timestamp of each step; with its own initialisation (the paper's
and TF1's ``PhasedLSTMCell``'s periods, phases and open ratio), defined here
beside the record.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import OptionError
from .common import CHECKPOINT_EVERY, DROPOUT_MASK, RECURRENT_MASK, dropout_equation, recurrent_equation
from .lstm import LSTM
from .record import CaseHints, InitScheme, OpSpec, OptionSpec, ParamSpec

__all__ = ["PHASED_LSTM", "PHASED_LSTM_INIT"]

_PEEPHOLE = ParamSpec(
    "w_peephole", ("3*H",), "peephole weights p_i, p_f, p_o, each read elementwise on the cell state, blocks i, f, o"
)
_TIME_GATE = (
    ParamSpec("tau", ("H",), "period tau of each unit's time gate"),
    ParamSpec("s", ("H",), "phase shift s of each unit's time gate"),
    ParamSpec(
        "r_on",
        ("H",),
        "open ratio r_on of each unit's time gate: the fraction of a period it is open",
        trainable="trainable_ratio_on",
    ),
)


def _params(options: Mapping[str, Any]) -> tuple[ParamSpec, ...]:
    peepholes = (_PEEPHOLE,) if options.get("peepholes") is True else ()
    return LSTM.params + peepholes + _TIME_GATE


def _is_leak(value: Any) -> bool:
    # numbers.Real: NumPy scalars too, as every other option of the spec takes them; True is no leak.
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    return 0.0 <= float(value) <= 1.0


# -- initialisation: the paper's and TF1's PhasedLSTMCell's --------------------------------------

#: The init options: the range of the periods (log-uniform) and the open ratio every unit starts with.
_INIT_DEFAULTS: dict[str, Any] = {"period_range": (1.0, 1000.0), "ratio_on": 0.05}


def _twin(rng: np.random.Generator) -> np.random.Generator:
    """A generator in ``rng``'s state that draws what ``rng`` would draw next, without advancing ``rng``."""
    twin = np.random.Generator(type(rng.bit_generator)(0))
    twin.bit_generator.state = rng.bit_generator.state
    return twin


def _periods(rng: np.random.Generator, shape: tuple[int, ...], options: Mapping[str, Any]) -> np.ndarray:
    low, high = options["period_range"]
    periods: np.ndarray = np.exp(rng.uniform(math.log(low), math.log(high), size=shape))
    return periods


def _draw(
    rng: np.random.Generator, name: str, shape: tuple[int, ...], dims: Mapping[str, int], options: Mapping[str, Any]
) -> np.ndarray:
    # The LSTM's weights, biases and the peepholes as PyTorch draws an LSTM's: U(-1/sqrt(H), 1/sqrt(H)).
    # tau ~ exp(U(log low, log high)) and s ~ U(0, tau), as the paper and TF1; r_on = ratio_on. s needs the tau
    # of its layer, drawn just before it: tau is drawn by a twin of the generator (rng does not move), and s
    # draws that tau again then its fraction of it, advancing rng past both, so that the stream is the one of
    # drawing tau, then s, from rng itself.
    if name == "tau":
        return _periods(_twin(rng), shape, options)
    if name == "s":
        twin = _twin(rng)
        tau = _periods(twin, shape, options)
        phase: np.ndarray = twin.uniform(0.0, 1.0, size=shape) * tau
        rng.uniform(size=(2, *shape))  # past tau's and s's draws
        return phase
    if name == "r_on":
        return np.full(shape, float(options["ratio_on"]))
    bound = 1.0 / math.sqrt(dims["H"])
    return rng.uniform(-bound, bound, size=shape)


def _is_finite_real(value: Any) -> bool:
    return not isinstance(value, bool | np.bool_) and isinstance(value, numbers.Real) and math.isfinite(value)


def _init_dims(options: Mapping[str, Any], given: frozenset[str]) -> dict[str, int]:
    pair = options["period_range"]
    if not (
        isinstance(pair, tuple | list)
        and len(pair) == 2
        and all(_is_finite_real(v) for v in pair)
        and 0.0 < pair[0] <= pair[1]
    ):
        expected = "a pair (low, high) of finite numbers with 0 < low <= high (tau ~ exp(U(log low, log high)))"
        raise OptionError("init_params", "period_range", expected, repr(pair))
    ratio = options["ratio_on"]
    if not (_is_finite_real(ratio) and 0.0 < ratio <= 1.0):
        raise OptionError("init_params", "ratio_on", "a number in (0, 1] (the open ratio r_on)", repr(ratio))
    return {}


#: Phased LSTM's initialisation (Neil et al. 2016; TF1's ``PhasedLSTMCell``): the periods log-uniform over
#: ``period_range``, each phase shift uniform over its period, every open ratio at ``ratio_on``.
PHASED_LSTM_INIT = InitScheme(_draw, _INIT_DEFAULTS, _init_dims)

_GRADIENT = (
    "Exact reverse mode of the forward equations (backpropagation through time), with respect to x, every "
    "parameter (tau, s and r_on included) and the initial state, with two conventions at the gate's "
    "non-smooth points. The modulo's floor is a constant: d((t - s) mod tau)/ds = -1 and "
    "d((t - s) mod tau)/dtau = -floor((t - s) / tau), so d phi/d tau = -(t - s) / tau^2, also at the jumps "
    "where phi wraps from near 1 to 0. At a kink of k (phi = r_on / 2, phi = r_on, phi = 0) the gradient is "
    "that of the branch the forward's comparisons select (phi < r_on / 2, then phi < r_on, else closed): the "
    "falling branch at phi = r_on / 2, the closed branch at phi = r_on, the rising branch at phi = 0. The "
    "comparisons themselves carry no gradient (none reaches r_on through the breakpoints). timestamps is data, "
    "a constant of the op: no gradient reaches it (vjp returns none for it, as for lengths). Steps past a row's "
    "length receive no gradient; the frozen state passes its cotangent through unchanged."
)

PHASED_LSTM = OpSpec(
    name="phased_lstm",
    layer="PhasedLSTM",
    summary="Phased LSTM: an LSTM whose state updates are gated by a periodic time gate of each unit, opened "
    "by each step's timestamp.",
    equations=(
        "[i, f, g, o] = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh",
        "i = sigmoid(i + p_i * c_{t-1});  f = sigmoid(f + p_f * c_{t-1})    (p = 0 without peepholes)",
        "c~_t = f * c_{t-1} + i * tanh(g)",
        "h~_t = sigmoid(o + p_o * c~_t) * tanh(c~_t)",
        "phi_t = ((timestamps_t - s) mod tau) / tau    (floor modulo: a mod tau = a - tau * floor(a / tau))",
        "k_t = 2 * phi_t / r_on            if phi_t < r_on / 2",
        "k_t = 2 - 2 * phi_t / r_on        else if phi_t < r_on",
        "k_t = leak * phi_t                else",
        "c_t = k_t * c~_t + (1 - k_t) * c_{t-1}",
        "h_t = k_t * h~_t + (1 - k_t) * h_{t-1}",
        "y_t = h_t",
        dropout_equation(),
        recurrent_equation(),
    ),
    params=_params({}),
    state=LSTM.state,
    options=(
        OptionSpec(
            "timestamps",
            None,
            (),
            "the time of each step, (batch, time) of x's dtype, not decreasing along each row's valid prefix "
            "(ties allowed); the gate reads each step's own timestamp, in either direction",
            kind="array",
            shape=("B", "T"),
            required=True,
            nondecreasing=True,
        ),
        OptionSpec(
            "leak",
            1e-3,
            (),
            "alpha, the slope of the closed gate (k = leak * phi): the paper's and TF1's 1e-3 in training, 0 at "
            "inference",
            check=_is_leak,
            expected="a number in [0, 1]",
        ),
        OptionSpec(
            "peepholes",
            False,
            (False, True),
            "the paper's peephole connections: the gates i, f read c_{t-1} and o reads c~_t through w_peephole",
        ),
        DROPOUT_MASK,
        RECURRENT_MASK,
        CHECKPOINT_EVERY,
    ),
    result_fields=("outputs", "state"),
    gradient=_GRADIENT,
    params_for=_params,
    init=PHASED_LSTM_INIT,
    hints=CaseHints(
        option_draws={"leak": (0.0, 1e-3, 0.25)},
        clock="timestamps",
        # Periods that are powers of two, shifts and open ratios in eighths: with timestamps in eighths every
        # phase is exact, and many land on 0, r_on / 2 and r_on (negative shifts: phases of negative t - s).
        grid_params={
            "tau": (0.5, 1.0, 2.0, 4.0),
            "s": (-0.75, 0.0, 0.125, 0.5, 1.375, 3.0),
            "r_on": (0.125, 0.25, 0.5, 0.75, 1.0),
        },
    ),
)
