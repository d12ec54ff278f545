"""Check "values": every result field equals the reference's, within the tolerance policy."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import rnnspec
from rnnspec.backend import Backend
from rnnspec.reference import decision_margin

from .assertions import assert_tree_close
from .cases import Case
from .strategies import draw_case
from .tolerances import DECISION_MARGIN, tolerance

pytestmark = pytest.mark.rnnspec_check("values")


def dtypes_of(backend: Backend) -> tuple[str, ...]:
    """The dtypes the suite draws for ``backend``: those it declares among the spec's."""
    return tuple(d for d in ("float32", "float64", "float16", "bfloat16") if d in backend.implementation.dtypes)


def wide_margin(case: Case) -> bool:
    """Whether the case's discrete decisions are far enough from their thresholds to compare."""
    args, kwargs = case.args, case.kwargs
    return decision_margin(case.spec.op, *args, **kwargs) > DECISION_MARGIN[case.spec.dtype]


def context(backend: Backend, case: Case) -> str:
    """What a failure message carries beside the differences: the call and its repro."""
    s = case.spec
    return (
        f"[backend {backend.name!r}, op {s.op}, options {dict(s.options)}, dtype {s.dtype}, "
        f"batch {s.batch}, time {s.time}, sizes I={s.input_size} H={s.hidden_size}, layers {s.num_layers}, "
        f"lengths {s.lengths}, reverse {s.reverse}, initial_state {s.initial_state}, seed {s.seed}]\n"
        f"repro:\n{s.repro(backend.name)}"
    )


@given(data=st.data())
def test_results_equal_the_reference(rnnspec_backend: Backend, op: str, data: st.DataObject) -> None:
    """Every field of the result, and the final state, equal the reference's."""
    spec = draw_case(data, op, dtypes=dtypes_of(rnnspec_backend))
    case = spec.build()
    assume(wide_margin(case))
    want = case.run(rnnspec.get_backend("numpy"))
    got = case.run(rnnspec_backend)
    assert_tree_close(got, want, tolerance(spec.dtype, steps=spec.steps), context=context(rnnspec_backend, case))
