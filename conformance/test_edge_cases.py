"""Check "edge_cases": numerical edge cases, on the backend alone or against the reference.

- Long sequences: 10,000 steps of every op in float32 (batch 2, sizes 2; act
  with ``max_steps=2``) stay finite forward, and backward where the backend
  declares ``vjp``.
- Saturated gates: weights scaled by 1e3 to 1e4 drive every sigmoid and tanh
  to 0, 1 or -1; values and gradients stay finite (the ops with a relu take
  their tanh instead, which saturates; ``linear_recurrence`` has no gate).
- NaN in the input: a NaN at one valid step of one row (of ``x``, or of a
  primitive's first array) never raises, reaches no other row, and lands
  where the reference puts it: its NaN positions, and every other value within
  the value tolerance, are the reference's. The reference's policy is what its
  arithmetic gives: a NaN makes the rest of its row's recurrence NaN (for
  ``linear_recurrence`` and ``indrnn_recurrence``, the rest of its unit), a NaN
  halting unit never reaches the threshold (act ponders ``max_steps``), a NaN
  update probability never opens the skip gate. A NaN in the padding past a
  row's length changes nothing.
- Determinism: on the CPU, the same call twice gives bitwise-equal results and
  gradients.
- Half precision: a backend declaring float16 or bfloat16 returns that dtype
  and agrees with the reference (computed in float64 from the same
  half-precision inputs) within the tolerance of :mod:`.tolerances`, values and
  gradients.

The short cases share one set of sizes (:data:`SIZES`): jax compiles once per shape.

Each test reports under the check of what it compares: the tests on the backend
alone under "edge_cases"; those comparing with the reference under "values" or
"gradients" (NaN positions, half precision); the NaN in the padding, a
property of the backend with itself, under "properties".
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import rnnspec
from rnnspec.backend import Backend
from rnnspec.ops import OPS
from rnnspec.results import SkipResult
from rnnspec.tree import tree_leaves

from .assertions import assert_tree_close, flatten
from .cases import Case, CaseSpec
from .checks_common import context, dtypes_of, full_lengths, wide_margin
from .strategies import draw_case
from .tolerances import tolerance

pytestmark = pytest.mark.rnnspec_check("edge_cases")

#: Sizes of the short cases.
SIZES: dict[str, Any] = {"batch": 3, "time": 6, "input_size": 2, "hidden_size": 3, "num_layers": 1}
#: Sizes of the half-precision cases: short enough that skip's and act's decisions usually lie far
#: enough from their thresholds for bfloat16 (DECISION_MARGIN), which the cases of SIZES rarely do.
HALF_SIZES: dict[str, Any] = {**SIZES, "batch": 1, "time": 3, "initial_state": False}
#: The long sequences, forward and backward.
LONG_TIME = 10_000
#: Weight scales that saturate every gate.
SATURATING = (1e3, 1e4)
#: Options that turn a relu into a tanh, which saturates.
TANH = {"activation": "tanh"}


def _primitive(op: str) -> bool:
    return OPS[op].kind == "primitive"


def _non_finite(tree: Any) -> list[str]:
    return [path for path, leaf in flatten(tree).items() if not np.all(np.isfinite(np.asarray(leaf, np.float64)))]


def _with_first(case: Case, first: np.ndarray) -> Case:
    """``case`` with ``x`` (or a primitive's first array) replaced."""
    return Case(case.spec, (first, *case.args[1:]), dict(case.kwargs))


def _option_defaults(op: str, **overrides: Any) -> tuple[tuple[str, Any], ...]:
    return tuple((opt.name, overrides.get(opt.name, opt.default)) for opt in OPS[op].value_options)


# -- long sequences -------------------------------------------------------------------


def _long_case(op: str, time: int) -> Case:
    """float32, batch 2 (the second row 70% long), sizes 2, act pondering at most 2 steps."""
    options = _option_defaults(op, max_steps=2)
    lengths = (time, time * 7 // 10)
    return CaseSpec(op, "float32", 2, time, 2, 2, lengths=lengths, options=options).build()


def test_ten_thousand_steps_stay_finite(rnnspec_backend: Backend, op: str) -> None:
    """float32 over T = 10,000: every field of the result is finite."""
    case = _long_case(op, LONG_TIME)
    bad = _non_finite(case.run(rnnspec_backend))
    assert not bad, f"non-finite values in {bad}\n{context(rnnspec_backend, case)}"


def test_ten_thousand_steps_backward_stay_finite(rnnspec_backend: Backend, op: str) -> None:
    """float32 over T = 10,000: every gradient is finite."""
    if "vjp" not in rnnspec_backend.implementation.capabilities:
        pytest.skip(f"backend {rnnspec_backend.name!r} declares no reverse mode (capability 'vjp')")
    case = _long_case(op, LONG_TIME)
    grads = case.vjp(rnnspec_backend, case.cotangents(case.run(rnnspec_backend), seed=1))
    bad = _non_finite(grads)
    assert not bad, f"non-finite gradients in {bad}\n{context(rnnspec_backend, case)}"


# -- saturated gates ------------------------------------------------------------------


@given(data=st.data())
def test_saturated_gates_give_finite_values_and_gradients(
    rnnspec_backend: Backend, op: str, data: st.DataObject
) -> None:
    """Weights of 1e3 to 1e4 times their usual size: every result and gradient is finite."""
    if op == "linear_recurrence":
        pytest.skip("linear_recurrence has no gate: its multipliers are the caller's")
    fixed: dict[str, Any] = {k: v for k, v in TANH.items() if any(o.name == k for o in OPS[op].options)}
    if op == "act":
        fixed["cell"] = data.draw(st.sampled_from(["rnn", "lstm", "gru"]), label="cell")
    spec = draw_case(data, op, dtypes=("float32",), **SIZES, **fixed, scale=data.draw(st.sampled_from(SATURATING)))
    case = spec.build()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NumPy's overflow in exp, which the op must absorb
        result = case.run(rnnspec_backend)
        bad = _non_finite(result)
        assert not bad, f"non-finite values in {bad}\n{context(rnnspec_backend, case)}"
        if "vjp" in rnnspec_backend.implementation.capabilities:
            bad = _non_finite(case.vjp(rnnspec_backend, case.cotangents(result, seed=spec.seed + 1)))
            assert not bad, f"non-finite gradients in {bad}\n{context(rnnspec_backend, case)}"


# -- NaN in the input -----------------------------------------------------------------


def _rows_with_nan(tree: Any) -> dict[str, list[int]]:
    """The batch rows holding a NaN, per leaf (every result field is batch-first)."""
    out = {}
    for path, leaf in flatten(tree).items():
        a = np.asarray(leaf, dtype=np.float64)
        if a.ndim:
            out[path] = sorted({int(i) for i in np.argwhere(np.isnan(a.reshape(a.shape[0], -1)))[:, 0]})
    return out


def _quiet_run(case: Case, backend: Backend) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NumPy's invalid-value warnings on NaN
        return case.run(backend)


@pytest.mark.rnnspec_check("values")
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
    first = clean.args[0].copy()
    unit = data.draw(st.integers(0, first.shape[2] - 1), label="feature")
    first[row, step, unit] = np.nan
    case = _with_first(clean, first)
    where = context(rnnspec_backend, clean) + f"with x[{row}, {step}, {unit}] = NaN (a primitive: its first array)\n"
    want = _quiet_run(case, rnnspec.get_backend("numpy"))
    got = _quiet_run(case, rnnspec_backend)
    for name, result in (("the reference", want), (f"backend {rnnspec_backend.name!r}", got)):
        spread = {path: rows for path, rows in _rows_with_nan(result).items() if set(rows) - {row}}
        assert not spread, f"{name}: a NaN in row {row} reached other rows: {spread}\n{where}"
    outputs = np.asarray(want if _primitive(op) else want.outputs, np.float64)
    column = outputs[row, step, unit] if _primitive(op) else outputs[row, step]
    assert np.isnan(column).any(), f"the reference's output at the NaN's step is not NaN: {column}\n{where}"
    if isinstance(want, SkipResult) and np.asarray(want.update_gate)[row, step] == 0:
        # A skipped step's input: the reference's u*S + (1-u)*s carries its NaN on, a backend that
        # skips the cell never reads it. The spec leaves the row open (sequence page); the others must agree.
        others = [r for r in range(spec.batch) if r != row]
        got, want = _rows(got, others), _rows(want, others)
    assert_tree_close(got, want, tolerance(spec.dtype, steps=spec.steps), context=where)


def _rows(result: Any, rows: list[int]) -> dict[str, np.ndarray]:
    """The batch ``rows`` of every batch-first leaf of ``result``."""
    return {path: np.asarray(leaf)[rows] for path, leaf in flatten(result).items()}


@pytest.mark.rnnspec_check("properties")
@given(data=st.data())
def test_a_nan_in_the_padding_changes_nothing(rnnspec_backend: Backend, op: str, data: st.DataObject) -> None:
    """A NaN past a row's length is never read: the result equals the call without it."""
    row = data.draw(st.integers(0, SIZES["batch"] - 1), label="row")
    lengths = data.draw(st.lists(st.integers(0, SIZES["time"]), min_size=SIZES["batch"], max_size=SIZES["batch"]))
    lengths[row] = data.draw(st.integers(0, SIZES["time"] - 1), label="length of the row")
    spec = draw_case(data, op, dtypes=("float32",), **SIZES, lengths=tuple(lengths), has_lengths=True)
    clean = spec.build()
    step = data.draw(st.integers(lengths[row], SIZES["time"] - 1), label="step")
    first = clean.args[0].copy()
    first[row, step, :] = np.nan
    where = context(rnnspec_backend, clean) + f"with x[{row}, {step}, :] = NaN, past the row's length\n"
    got = _quiet_run(_with_first(clean, first), rnnspec_backend)
    assert_tree_close(got, clean.run(rnnspec_backend), tolerance(spec.dtype, steps=spec.steps), context=where)


# -- determinism ----------------------------------------------------------------------


def _assert_bitwise_equal(first: Any, second: Any, what: str, where: str) -> None:
    a, b = flatten(first), flatten(second)
    assert list(a) == list(b), f"{what}: the structure changed between two calls\n{where}"
    differ = [p for p in a if np.asarray(a[p]).tobytes() != np.asarray(b[p]).tobytes()]
    assert not differ, f"{what}: two identical calls differ bitwise in {differ}\n{where}"


@given(data=st.data())
def test_the_same_call_twice_gives_bitwise_equal_results_on_cpu(
    rnnspec_backend: Backend, op: str, data: st.DataObject
) -> None:
    """Forward and reverse mode, each called twice with the same arguments: the same bits."""
    if rnnspec_backend.implementation.device() != "cpu":
        pytest.skip(f"backend {rnnspec_backend.name!r} computes on {rnnspec_backend.implementation.device()}")
    spec = draw_case(data, op, dtypes=("float32",), **SIZES)
    case = spec.build()
    where = context(rnnspec_backend, case)
    first = case.run(rnnspec_backend)
    _assert_bitwise_equal(first, case.run(rnnspec_backend), "values", where)
    if "vjp" in rnnspec_backend.implementation.capabilities:
        cotangents = case.cotangents(first, seed=spec.seed + 1)
        grads = case.vjp(rnnspec_backend, cotangents)
        _assert_bitwise_equal(grads, case.vjp(rnnspec_backend, cotangents), "gradients", where)


# -- half precision -------------------------------------------------------------------


@pytest.fixture(scope="session", params=["float16", "bfloat16"])
def half(request: pytest.FixtureRequest, rnnspec_backend: Backend) -> str:
    """A half-precision dtype the backend declares (the test skips for one it does not)."""
    dtype = str(request.param)
    if dtype not in rnnspec_backend.implementation.dtypes:
        pytest.skip(f"backend {rnnspec_backend.name!r} does not declare {dtype} (optional)")
    if dtype not in dtypes_of(rnnspec_backend):
        pytest.skip(f"the suite cannot make {dtype} arrays of framework {rnnspec_backend.implementation.framework!r}")
    return dtype


def _result_dtypes(backend: Backend, case: Case) -> set[str]:
    args, kwargs = case.call_args(backend)
    result = getattr(backend, case.spec.op)(*args, **kwargs)
    impl = backend.implementation
    return {impl.dtype_name(leaf) for leaf in tree_leaves(result) if impl.is_array(leaf)}


@pytest.mark.rnnspec_check("values")
@given(data=st.data())
def test_half_precision_returns_its_dtype_and_agrees_with_the_reference(
    rnnspec_backend: Backend, op: str, half: str, data: st.DataObject
) -> None:
    """float16 / bfloat16 in, the same dtype out, within the dtype's tolerance of the reference."""
    spec = draw_case(data, op, dtypes=(half,), **HALF_SIZES)
    case = spec.build()
    assume(wide_margin(case))
    where = context(rnnspec_backend, case)
    dtypes = _result_dtypes(rnnspec_backend, case) - {"int32", "int64", "bool"}
    assert dtypes == {half}, f"a {half} call returned arrays of dtype {sorted(dtypes)}\n{where}"
    want = case.run(rnnspec.get_backend("numpy"))
    assert_tree_close(case.run(rnnspec_backend), want, tolerance(half, steps=spec.steps), context=where)


@pytest.mark.rnnspec_check("gradients")
@given(data=st.data())
def test_half_precision_gradients_agree_with_the_reference(
    rnnspec_backend: Backend, op: str, half: str, data: st.DataObject
) -> None:
    """Backend.vjp of a float16 / bfloat16 call, within the dtype's gradient tolerance of the reference."""
    if "vjp" not in rnnspec_backend.implementation.capabilities:
        pytest.skip(f"backend {rnnspec_backend.name!r} declares no reverse mode (capability 'vjp')")
    spec = draw_case(data, op, dtypes=(half,), **HALF_SIZES)
    case = spec.build()
    assume(wide_margin(case))
    numpy = rnnspec.get_backend("numpy")
    cotangents = case.cotangents(case.run(numpy), seed=spec.seed + 1)
    tol = tolerance(half, steps=spec.steps, kind="gradient")
    want = case.vjp(numpy, cotangents)
    assert_tree_close(case.vjp(rnnspec_backend, cotangents), want, tol, context=context(rnnspec_backend, case))
