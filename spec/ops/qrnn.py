"""Records of ``qrnn`` (Bradbury et al. 2016) and its pooling primitive ``linear_recurrence``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .common import CHECKPOINT_EVERY, DROPOUT_MASK, EXACT_GRADIENT, dropout_equation
from .record import CaseHints, OpSpec, OptionSpec, ParamSpec, StateSpec

__all__ = ["LINEAR_RECURRENCE", "QRNN", "QRNN_GATES"]

#: Gate blocks of each pooling mode, in row order of ``w`` and ``b``.
QRNN_GATES: dict[str, tuple[str, ...]] = {"f": ("z", "f"), "fo": ("z", "f", "o"), "ifo": ("z", "f", "i", "o")}


def _gate_count(options: Mapping[str, Any]) -> dict[str, int]:
    mode = options.get("mode", "fo")
    return {"G": len(QRNN_GATES[mode])} if mode in QRNN_GATES else {}


QRNN = OpSpec(
    name="qrnn",
    layer="QRNN",
    summary="Quasi-recurrent layer: gates from a causal convolution of window K, then f-, fo- or ifo-pooling.",
    equations=(
        "[z, f, (i), (o)] = conv1d([x_prev, x], w)_t + b    (x_prev: the K-1 inputs before the first step)",
        "z = tanh(z); f, i, o = sigmoid(f), sigmoid(i), sigmoid(o)",
        "f = f + (1 - f) * zoneout_mask    (f = 1 exactly where zoneout_mask = 1; f where it is 0)",
        "c_t = f * c_{t-1} + (1 - f) * z    (modes f, fo)",
        "c_t = f * c_{t-1} + i * z          (mode ifo)",
        "h_t = c_t (mode f);  h_t = o * c_t (modes fo, ifo)",
        "y_t = h_t",
        dropout_equation(),
    ),
    params=(
        ParamSpec("w", ("G*H", "I", "K"), "convolution weights in Conv1d layout, row blocks z, f, [i], [o]"),
        ParamSpec("b", ("G*H",), "convolution bias, blocks z, f, [i], [o]"),
    ),
    state=(
        StateSpec("c", ("H",), "pooling state c_t"),
        StateSpec(
            "x_prev",
            ("K-1", "I"),
            "the layer's last K-1 inputs (zeros at the start), read by the window of the next chunk",
        ),
    ),
    options=(
        OptionSpec("mode", "fo", ("f", "fo", "ifo"), "the pooling: f, fo or ifo"),
        OptionSpec(
            "zoneout_mask",
            None,
            (),
            "None, or an array (batch, time, H) of x's dtype with entries m in [0, 1], or one per layer: f "
            "becomes f + (1 - f) * m, so a 1 sets f to 1 (modes f and fo then keep the previous state; mode ifo "
            "adds i * z to it) and a 0 leaves f. Zoneout with probability p: a Bernoulli(p) mask drawn in "
            "training, a mask filled with p (the expected f) in evaluation",
            kind="array",
            shape=("B", "T", "H"),
            per_layer=True,
            values=(0.0, 1.0),
        ),
        DROPOUT_MASK,
        CHECKPOINT_EVERY,
    ),
    result_fields=("outputs", "state"),
    gradient=EXACT_GRADIENT
    + " The zoneout mask m is a constant: no gradient reaches it, and f receives (1 - m) times the cotangent"
    " of f + (1 - f) * m (none where m = 1).",
    fixed_dims=_gate_count,
    init="uniform_conv_fan_in",
    init_sizes={"K": "window"},
)

LINEAR_RECURRENCE = OpSpec(
    name="linear_recurrence",
    module="recurrences",
    summary="First-order elementwise linear recurrence h_t = a_t * h_{t-1} + b_t (QRNN pooling).",
    equations=("h_t = a_t * h_{t-1} + b_t",),
    params=(
        ParamSpec("a", ("B", "T", "H"), "multipliers a_t"),
        ParamSpec("b", ("B", "T", "H"), "addends b_t"),
        ParamSpec("initial", ("B", "H"), "h_0 (zeros when None)", required=False),
    ),
    state=(StateSpec("h", ("H",), "h_t"),),
    options=(CHECKPOINT_EVERY,),
    result_fields=("h",),
    gradient=EXACT_GRADIENT,
    kind="primitive",
    result=None,
    # No gate: the multipliers a are the caller's, drawn within the recurrent bound.
    hints=CaseHints(recurrent=("a",), saturating=None),
)
