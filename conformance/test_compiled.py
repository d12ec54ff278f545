"""Check "compiled": the values check again, with the op under the backend's compiler."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from rnnspec.backend import Backend

from .checks_common import assert_values_match_the_reference, context, dtypes_of, wide_margin
from .strategies import draw_case

__all__: list[str] = []  # a test module: pytest collects it, nothing to import

pytestmark = pytest.mark.rnnspec_check("compiled")


@pytest.fixture(scope="session")
def compiling_backend(rnnspec_backend: Backend) -> Backend:
    """The backend under test, when it declares a compiled mode."""
    if "compile" not in rnnspec_backend.implementation.capabilities:
        pytest.skip(f"backend {rnnspec_backend.name!r} declares no compiled mode (capability 'compile')")
    return rnnspec_backend


@given(data=st.data())
def test_compiled_results_equal_the_reference(compiling_backend: Backend, op: str, data: st.DataObject) -> None:
    """Every field of the compiled op's result equals the reference's."""
    spec = draw_case(data, op, dtypes=dtypes_of(compiling_backend))
    case = spec.build()
    assume(wide_margin(case))
    where = context(compiling_backend, case, call="run_compiled")
    assert_values_match_the_reference(case.run_compiled(compiling_backend), case, context=where)
