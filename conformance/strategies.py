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

from hypothesis import strategies as st

from rnnspec.ops import OPS

from .cases import CaseSpec

__all__ = ["Limits", "draw_case", "option_values"]


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


def option_values(op: str, name: str) -> st.SearchStrategy[Any]:
    """The values drawn for option ``name`` of ``op``."""
    if op == "act" and name == "epsilon":
        return st.sampled_from([0.01, 0.1, 0.3])
    if op == "act" and name == "max_steps":
        return st.integers(1, Limits.max_ponder)
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
        window=draw("window", st.integers(1, limits.max_window)) if op == "qrnn" else 1,
        zoneout=draw("zoneout", st.booleans()) if op == "qrnn" else False,
        scale=draw("scale", st.sampled_from([0.5, 1.0, 4.0])),
        seed=draw("seed", st.integers(0, 2**32 - 1)),
    )
