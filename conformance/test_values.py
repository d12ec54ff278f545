"""Check "values": every result field equals the reference's, within the tolerance policy.

- Drawn cases: small shapes, every option, dtype and optional argument.
- The large tier: shapes across every size threshold of the built-in backends
  (:data:`.strategies.LARGE_SIZES`: up to 1,100 steps and 40 rows with unsorted
  lengths), :func:`.plugin.large_examples` cases per op and size.
- Ties: every discrete decision of the spec (skip's ``u~ >= 0.5``, ACT's
  ``sum >= 1 - epsilon``) built to land exactly on its threshold in any correct
  arithmetic, compared without a margin.
- The edges of the parameters' ranges (:data:`.strategies.RANGE_EDGES`).
- The edge cases' long and saturated calls, in float64: 10,000 steps (decisions
  kept clear of their thresholds), weights scaled by 1e3 to 1e4.
- A NaN in the input lands where the reference puts it, and no other row sees it.
- Half precision: a backend declaring float16 or bfloat16 returns that dtype,
  and its values are the rounding of float32-accurate ones (:mod:`.tolerances`).
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import rnnspec
from rnnspec.backend import Backend
from rnnspec.ops import OPS
from rnnspec.results import SkipResult
from rnnspec.tree import tree_leaves

from .assertions import assert_tree_close, flatten
from .cases import Case
from .checks_common import (
    HALF_SIZES,
    LONG_TIME,
    SATURATING,
    SIZES,
    assert_values_match_the_reference,
    context,
    dtypes_of,
    full_lengths,
    long_case,
    option_defaults,
    skip_without_decision,
    wide_margin,
)
from .plugin import large_examples, targeted_examples
from .strategies import (
    LARGE_SIZES,
    RANGE_EDGES,
    TARGETED_SIZES,
    LargeSize,
    draw_case,
    draw_ties_case,
    large_case,
)
from .tolerances import reference_tolerance

__all__: list[str] = []  # a test module: pytest collects it, nothing to import

pytestmark = pytest.mark.rnnspec_check("values")


@given(data=st.data())
def test_results_equal_the_reference(rnnspec_backend: Backend, op: str, data: st.DataObject) -> None:
    """Every field of the result, and the final state, equal the reference's."""
    spec = draw_case(data, op, dtypes=dtypes_of(rnnspec_backend))
    case = spec.build()
    assume(wide_margin(case))
    assert_values_match_the_reference(case.run(rnnspec_backend), case, context=context(rnnspec_backend, case))


@pytest.mark.parametrize("size", LARGE_SIZES, ids=lambda size: size.name)
@settings(max_examples=large_examples())
@given(seed=st.integers(0, 2**32 - 1))
def test_large_shapes_equal_the_reference(rnnspec_backend: Backend, op: str, size: LargeSize, seed: int) -> None:
    """Long sequences and large batches with unsorted lengths: every field equals the reference's."""
    spec = large_case(op, size, seed, dtypes=dtypes_of(rnnspec_backend))
    case = spec.build()
    assume(wide_margin(case))
    assert_values_match_the_reference(case.run(rnnspec_backend), case, context=context(rnnspec_backend, case))


#: Open ratios of a gate at inference: 3/16 leaves about a tenth of the (row, step, unit) entries open with
#: the cases' grid periods and timestamps, some of them on the breakpoint r_on / 2 (the open-units paths of a
#: backend, such as torch's up to a quarter of the entries open); 1 leaves every unit open.
INFERENCE_OPEN_RATIOS = (0.1875, 1.0)


@pytest.mark.parametrize("open_ratio", INFERENCE_OPEN_RATIOS, ids=("mostly-closed", "all-open"))
@settings(max_examples=targeted_examples())
@given(seed=st.integers(0, 2**32 - 1))
def test_a_time_gate_at_inference_mostly_closed_or_all_open_equals_the_reference(
    rnnspec_backend: Backend, op: str, open_ratio: float, seed: int
) -> None:
    """An op with a clock, with leak 0 (the paper's inference) and every unit's open ratio at 3/16 or at 1, over
    the large tier's unsorted lengths and stacks: every field equals the reference's."""
    spec = OPS[op]
    if (
        not spec.hints.clock
        or "leak" not in {o.name for o in spec.value_options}
        or "r_on" not in {p.name for p in spec.params}
    ):
        pytest.skip(f"{op} has no time gate")
    drawn = large_case(op, LARGE_SIZES[-1], seed, dtypes=dtypes_of(rnnspec_backend))
    options = tuple((name, 0.0 if name == "leak" else value) for name, value in drawn.options)
    case = replace(drawn, options=options).build()
    for layer in case.args[1]:
        layer["r_on"][...] = open_ratio
    assert_values_match_the_reference(case.run(rnnspec_backend), case, context=context(rnnspec_backend, case))


@settings(max_examples=targeted_examples())
@given(data=st.data())
def test_decisions_exactly_on_their_thresholds_follow_the_spec(
    rnnspec_backend: Backend, op: str, data: st.DataObject
) -> None:
    """Skip's u~ = 0.5 updates, ACT's halting sum = 1 - epsilon halts: the values are the reference's."""
    skip_without_decision(op)
    case = draw_ties_case(data, op, dtypes=dtypes_of(rnnspec_backend)).build()
    assert_values_match_the_reference(case.run(rnnspec_backend), case, context=context(rnnspec_backend, case))


@pytest.mark.parametrize("edge", list(RANGE_EDGES))
@settings(max_examples=targeted_examples())
@given(data=st.data())
def test_parameters_at_the_edges_of_their_range_equal_the_reference(
    rnnspec_backend: Backend, op: str, edge: str, data: st.DataObject
) -> None:
    """|u| and |a| up to 2, biases shifted into saturation (|c| past 10): the values are the reference's."""
    spec = draw_case(data, op, dtypes=dtypes_of(rnnspec_backend), **TARGETED_SIZES, **RANGE_EDGES[edge])
    case = spec.build()
    assume(wide_margin(case))
    assert_values_match_the_reference(case.run(rnnspec_backend), case, context=context(rnnspec_backend, case))


# -- the edge cases' calls, in float64 ------------------------------------------------


def test_ten_thousand_steps_equal_the_reference_in_float64(rnnspec_backend: Backend, op: str) -> None:
    """float64 over T = 10,000, with the decisions kept clear of their thresholds: the reference's values."""
    fields: dict[str, Any] = {"decisions": "clear"}
    clear = OPS[op].hints.clear_options  # the options the clear decisions assume (ACT's epsilon)
    if clear:
        fields["options"] = option_defaults(op, max_steps=2, **clear)
    case = long_case(op, LONG_TIME, "float64", **fields)
    where = context(rnnspec_backend, case)
    assert wide_margin(case), f"the suite's clear decisions came within a margin of a threshold\n{where}"
    assert_values_match_the_reference(case.run(rnnspec_backend), case, context=where)


@given(data=st.data())
def test_saturated_gates_equal_the_reference_in_float64(rnnspec_backend: Backend, op: str, data: st.DataObject) -> None:
    """Weights of 1e3 to 1e4 times their usual size, in float64 (where no pre-activation loses its small
    part to rounding): the reference's values."""
    saturating = OPS[op].hints.saturating
    if saturating is None:
        pytest.skip(f"{op} has no gate: its multipliers are the caller's")
    fixed: dict[str, Any] = {k: v for k, (v, *more) in saturating.items() if not more}
    scale = data.draw(st.sampled_from(SATURATING), label="scale")
    case = draw_case(data, op, dtypes=("float64",), **SIZES, **fixed, scale=scale).build()
    assume(wide_margin(case))
    assert_values_match_the_reference(quiet_run(case, rnnspec_backend), case, context=context(rnnspec_backend, case))


# -- NaN in the input -----------------------------------------------------------------


def _rows_with_nan(tree: Any) -> dict[str, list[int]]:
    """The batch rows holding a NaN, per leaf (every result field is batch-first)."""
    out = {}
    for path, leaf in flatten(tree).items():
        a = np.asarray(leaf, dtype=np.float64)
        if a.ndim:
            out[path] = sorted({int(i) for i in np.argwhere(np.isnan(a.reshape(a.shape[0], -1)))[:, 0]})
    return out


def quiet_run(case: Case, backend: Backend) -> Any:
    """``case.run(backend)`` without NumPy's invalid-value warnings (a NaN input makes them)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return case.run(backend)


def _rows(result: Any, rows: list[int]) -> dict[str, np.ndarray]:
    """The batch ``rows`` of every batch-first leaf of ``result``."""
    return {path: np.asarray(leaf)[rows] for path, leaf in flatten(result).items()}


@given(data=st.data())
def test_a_nan_in_x_reaches_only_its_row_where_the_reference_puts_it(
    rnnspec_backend: Backend, op: str, data: st.DataObject
) -> None:
    """One NaN at a valid step: no error, no NaN in another row, the reference's NaN positions and values."""
    spec = draw_case(data, op, dtypes=("float32",), **SIZES)
    clean = spec.build()
    assume(wide_margin(clean))  # the decisions before the NaN must be the reference's
    lengths = full_lengths(clean)
    rows = [r for r in range(spec.batch) if lengths[r] > 0]
    assume(rows)
    row = data.draw(st.sampled_from(rows), label="row")
    step = data.draw(st.integers(0, int(lengths[row]) - 1), label="step")
    unit = data.draw(st.integers(0, clean.args[0].shape[2] - 1), label="feature")
    spec = spec.with_(nan_at=(row, step, unit))
    case = spec.build()
    where = context(rnnspec_backend, case)
    want = quiet_run(case, rnnspec.get_backend("numpy"))
    got = quiet_run(case, rnnspec_backend)
    for name, result in (("the reference", want), (f"backend {rnnspec_backend.name!r}", got)):
        spread = {path: rows for path, rows in _rows_with_nan(result).items() if set(rows) - {row}}
        assert not spread, f"{name}: a NaN in row {row} reached other rows: {spread}\n{where}"
    primitive = OPS[op].kind == "primitive"
    outputs = np.asarray(want if primitive else want.outputs, np.float64)
    column = outputs[row, step, unit] if primitive else outputs[row, step]
    assert np.isnan(column).any(), f"the reference's output at the NaN's step is not NaN: {column}\n{where}"
    if isinstance(want, SkipResult) and np.asarray(want.update_gate)[row, step] == 0:
        # A skipped step's input: the reference's u*S + (1-u)*s carries its NaN on, a backend that
        # skips the cell never reads it. The spec leaves the row open (sequence page); the others must agree.
        others = [r for r in range(spec.batch) if r != row]
        got, want = _rows(got, others), _rows(want, others)
    assert_tree_close(got, want, reference_tolerance(spec.dtype, steps=spec.steps), context=where)


# -- half precision -------------------------------------------------------------------


def _result_dtypes(backend: Backend, case: Case) -> set[str]:
    args, kwargs = case.call_args(backend)
    result = getattr(backend, case.spec.op)(*args, **kwargs)
    impl = backend.implementation
    return {impl.dtype_name(leaf) for leaf in tree_leaves(result) if impl.is_array(leaf)}


@settings(max_examples=targeted_examples())
@given(data=st.data())
def test_half_precision_returns_its_dtype_and_rounds_float32_accurate_values(
    rnnspec_backend: Backend, op: str, rnnspec_half_dtype: str, data: st.DataObject
) -> None:
    """float16 / bfloat16 in, the same dtype out, within half a unit of the last place (and float32's
    tolerance) of the reference's unrounded answer."""
    half = rnnspec_half_dtype
    spec = draw_case(data, op, dtypes=(half,), **HALF_SIZES)
    case = spec.build()
    assume(wide_margin(case))
    where = context(rnnspec_backend, case)
    dtypes = _result_dtypes(rnnspec_backend, case) - {"int32", "int64", "bool"}
    assert dtypes == {half}, f"a {half} call returned arrays of dtype {sorted(dtypes)}\n{where}"
    assert_values_match_the_reference(case.run(rnnspec_backend), case, context=where)
