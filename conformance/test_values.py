"""Check "values": every result field equals the reference's, within the tolerance policy."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import rnnspec
from rnnspec.backend import Backend

from .assertions import assert_tree_close
from .checks_common import context, dtypes_of, wide_margin
from .strategies import draw_case
from .tolerances import tolerance

pytestmark = pytest.mark.rnnspec_check("values")


@given(data=st.data())
def test_results_equal_the_reference(rnnspec_backend: Backend, op: str, data: st.DataObject) -> None:
    """Every field of the result, and the final state, equal the reference's."""
    spec = draw_case(data, op, dtypes=dtypes_of(rnnspec_backend))
    case = spec.build()
    assume(wide_margin(case))
    want = case.run(rnnspec.get_backend("numpy"))
    got = case.run(rnnspec_backend)
    assert_tree_close(got, want, tolerance(spec.dtype, steps=spec.steps), context=context(rnnspec_backend, case))
