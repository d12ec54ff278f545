"""Hypothesis strategies of conformance cases, every draw labelled.

:func:`draw_case` draws a :class:`~rnnspec.conformance.cases.CaseSpec` from a
hypothesis ``data`` object, one labelled draw per field, so a falsifying
example reads as ``Draw 3 (time): 0``. Backend authors can reuse it in their
own tests::

    @given(data=st.data())
    def test_my_lstm(data):
        spec = draw_case(data, "lstm", dtypes=("float32",))
        case = spec.build()
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import strategies as st

from rnnspec.ops import OPS

from .cases import CaseSpec, Clock

#: The ways a case draws the timestamps of an op with a clock (:attr:`.CaseSpec.clock`).
CLOCKS: tuple[Clock, ...] = ("regular", "irregular", "ties")

__all__ = [
    "CLOCKS",
    "LARGE_SIZES",
    "RANGE_EDGES",
    "TARGETED_SIZES",
    "LargeSize",
    "Limits",
    "draw_case",
    "draw_ties_case",
    "large_case",
    "option_values",
]


@dataclass(frozen=True)
class Limits:
    """Bounds of the drawn sizes (the ``ci`` profile keeps them small)."""

    max_batch: int = 3
    max_time: int = 6
    long_time: int = 40
    max_size: int = 4
    max_layers: int = 2
    max_window: int = 3
    max_ponder: int = 4
    #: The widest range of IndRNN's ``u`` and ``linear_recurrence``'s ``a`` (on sequences of at most ``max_time``).
    max_recurrent_bound: float = 2.0
    #: The bias shift that saturates the gates (:attr:`.CaseSpec.bias`).
    saturating_bias: float = 4.0


#: The ops with a recurrent weight whose range :attr:`.CaseSpec.recurrent_bound` sets (their records' hints).
RECURRENT_BOUND_OPS = tuple(name for name, spec in OPS.items() if spec.hints.recurrent)
#: The ops with cell biases that :attr:`.CaseSpec.bias` shifts: the sequence ops (a primitive's are the caller's).
BIASED_OPS = tuple(name for name, spec in OPS.items() if spec.kind == "sequence")

#: Fixed edges of the parameters' ranges that the values and gradients checks always visit, by name:
#: recurrent weights up to 2 in magnitude (the recurrence grows, over a short sequence), and biases
#: shifted by 4 over 40 steps (saturated gates; LSTM's cell c grows past 10).
RANGE_EDGES: dict[str, dict[str, Any]] = {
    "recurrent weights up to 2": {"time": Limits.max_time, "recurrent_bound": Limits.max_recurrent_bound},
    "biases shifted by 4": {"time": Limits.long_time, "bias": Limits.saturating_bias},
}
#: The fixed sizes of the targeted cases (ties, range edges): one compiled program per option set on jax.
TARGETED_SIZES: dict[str, Any] = {"batch": 4, "input_size": 2, "hidden_size": 3}


def option_values(op: str, name: str) -> st.SearchStrategy[Any]:
    """The values drawn for option ``name`` of ``op``: its record's hint for an option over a range,
    else its allowed values."""
    hint = OPS[op].hints.option_draws.get(name)
    if isinstance(hint, range):
        return st.integers(hint.start, hint.stop - 1)
    if hint is not None:
        return st.sampled_from(list(hint))
    return st.sampled_from(OPS[op].option(name).allowed)


def draw_case(
    data: st.DataObject,
    op: str,
    *,
    dtypes: Sequence[str],
    limits: Limits = Limits(),
    **fixed: Any,
) -> CaseSpec:
    """Draw a case of ``op``; ``fixed`` pins fields (``reverse=False``, ``lengths=None``...)."""
    spec = OPS[op]

    def draw(name: str, strategy: st.SearchStrategy[Any]) -> Any:
        return fixed[name] if name in fixed else data.draw(strategy, label=name)

    options = []
    for opt in spec.options:
        if opt.kind == "value":
            options.append((opt.name, draw(opt.name, option_values(op, opt.name))))
    batch = draw("batch", st.integers(1, limits.max_batch))
    time = draw("time", st.one_of(st.integers(0, limits.max_time), st.just(limits.long_time)))
    primitive = spec.kind == "primitive"
    layers_max = spec.max_layers or limits.max_layers
    has_lengths = draw("has_lengths", st.booleans())
    lengths = (
        fixed.get("lengths")
        if "lengths" in fixed
        else (
            tuple(data.draw(st.lists(st.integers(0, time), min_size=batch, max_size=batch), label="lengths"))
            if has_lengths
            else None
        )
    )
    short = time <= limits.max_time
    recurrent_bound = draw(
        "recurrent_bound",
        st.sampled_from([1.0, limits.max_recurrent_bound]) if short and spec.hints.recurrent else st.just(1.0),
    )
    bias = draw("bias", st.sampled_from([0.0, limits.saturating_bias]) if spec.kind == "sequence" else st.just(0.0))
    return CaseSpec(
        op=op,
        dtype=draw("dtype", st.sampled_from(list(dtypes))),
        batch=batch,
        time=time,
        input_size=1 if primitive else draw("input_size", st.integers(1, limits.max_size)),
        hidden_size=draw("hidden_size", st.integers(1, limits.max_size)),
        num_layers=1 if primitive else draw("num_layers", st.integers(1, min(layers_max, limits.max_layers))),
        lengths=lengths,
        initial_state=draw("initial_state", st.booleans()),
        reverse=draw("reverse", st.booleans()),
        options=tuple(options),
        window=draw("window", st.integers(1, limits.max_window)) if spec.init_sizes else 1,
        zoneout=draw("zoneout", st.booleans()) if _optional_arrays(op) else False,
        masks=draw("masks", st.booleans()) if any(o.dropout for o in spec.array_options) else False,
        clock=draw("clock", st.sampled_from(CLOCKS)) if spec.hints.clock else "regular",
        scale=draw("scale", st.sampled_from([0.5, 1.0, 4.0])),
        seed=draw("seed", st.integers(0, 2**32 - 1)),
        recurrent_bound=recurrent_bound,
        bias=bias,
        decisions=fixed.get("decisions", "drawn"),
    )


def _optional_arrays(op: str) -> bool:
    """Whether ``op`` has array options a call may leave out (qrnn's zoneout mask; not a required clock)."""
    return any(not o.required for o in OPS[op].array_options)


#: The ops with a discrete decision that a ``"ties"`` case puts on its threshold, and the options that
#: decision needs (their records' hints): the skip gate, ACT's halting, a relu's kink (relu'(0) = 0).
TIE_OPTIONS: dict[str, dict[str, Any]] = {
    name: dict(spec.hints.tie_options) for name, spec in OPS.items() if spec.hints.tie_options is not None
}


def draw_ties_case(data: st.DataObject, op: str, *, dtypes: Sequence[str]) -> CaseSpec:
    """Draw a ``"ties"`` case of ``op`` (one of :data:`TIE_OPTIONS`): its decisions on their thresholds."""
    fixed = {"time": Limits.max_time, **TARGETED_SIZES, **TIE_OPTIONS[op]}
    return draw_case(data, op, dtypes=dtypes, decisions="ties", bias=0.0, **fixed)


@dataclass(frozen=True)
class LargeSize:
    """The sizes of a case of the large tier."""

    name: str
    batch: int
    time: int
    hidden_size: int


#: The large tier: sizes across every size threshold of the built-in backends. The small cases lie
#: below all of them (batch <= 3, time <= 40): torch's chunked scan from 48 steps and its per-update
#: projection from batch 32, TensorFlow's graph from 64 steps and its reads by chunks of 32 (8 from
#: 4096 entries a step), its classic loops' four steps per iteration from 48 (57 leaves one over),
#: jax's and TensorFlow's row buckets from batch 8. The first size lies above
#: every threshold, with chunks that do not divide the time; the second between them (48 <= T < 64,
#: 8 <= B < 32).
LARGE_SIZES = (
    LargeSize("B40xT1100", batch=40, time=1100, hidden_size=8),
    LargeSize("B12xT57", batch=12, time=57, hidden_size=4),
)


def large_case(op: str, size: LargeSize, seed: int, *, dtypes: Sequence[str]) -> CaseSpec:
    """A case of the large tier: ``size``'s shape, everything else chosen from ``seed``.

    Each row's length is drawn between half the time and the whole, then one row is made full and
    one empty, in no order (unsorted lengths). Decisions are kept clear of their thresholds
    (``decisions="clear"``): over thousands of steps drawn ones would come within rounding of one.
    """
    spec = OPS[op]
    rng = np.random.default_rng([seed, size.batch, size.time])
    options = []
    for opt in spec.value_options:
        hint = spec.hints.option_draws.get(opt.name)
        if opt.name in spec.hints.clear_options:
            value: Any = spec.hints.clear_options[opt.name]
        elif isinstance(hint, range):
            value = int(rng.integers(hint.start, hint.stop))
        elif hint is not None:
            value = hint[int(rng.integers(len(hint)))]
        else:
            value = opt.allowed[int(rng.integers(len(opt.allowed)))]
        options.append((opt.name, value))
    lengths = rng.integers(size.time // 2, size.time + 1, size.batch)
    full, empty = rng.choice(size.batch, 2, replace=False)
    lengths[full], lengths[empty] = size.time, 0
    primitive = spec.kind == "primitive"
    layers = 1 if primitive else int(rng.integers(1, min(spec.max_layers or Limits.max_layers, Limits.max_layers) + 1))
    return CaseSpec(
        op=op,
        dtype=str(rng.choice(list(dtypes))),
        batch=size.batch,
        time=size.time,
        input_size=1 if primitive else 3,
        hidden_size=size.hidden_size,
        num_layers=layers,
        lengths=tuple(int(n) for n in lengths),
        initial_state=bool(rng.integers(2)),
        reverse=bool(rng.integers(2)),
        options=tuple(options),
        window=int(rng.integers(1, Limits.max_window + 1)) if spec.init_sizes else 1,
        zoneout=bool(rng.integers(2)) if _optional_arrays(op) else False,
        clock=CLOCKS[int(rng.integers(len(CLOCKS)))] if spec.hints.clock else "regular",
        seed=seed,
        decisions="clear",
    )
