"""Check "edge_cases": numerical edge cases, on the backend alone or against the reference.

- Long sequences: 10,000 steps of every op in float32 (batch 2, sizes 2; act
  with ``max_steps=2``) stay finite, forward and, where the backend declares
  ``vjp``, backward.
- Saturated gates: weights scaled by 1e3 to 1e4 drive every sigmoid and tanh
  to 0, 1 or -1; in float32 values and gradients stay finite (the ops with a
  relu take their tanh instead, which saturates; ``linear_recurrence`` has no
  gate).
- Determinism: on the CPU, the same call twice gives bitwise-equal results and
  gradients.

Every test here looks at the backend alone. The same long and saturated calls
compared with the reference (in float64), NaN inputs and half precision are in
the values and gradients checks; a NaN in the padding, a property of the
backend with itself, is in the properties check. The short cases share one set
of sizes (:data:`.checks_common.SIZES`): jax compiles once per shape.
"""

from __future__ import annotations

__all__: list[str] = []  # a test module: pytest collects it, nothing to import

import warnings
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rnnspec.backend import Backend
from rnnspec.ops import OPS

from .assertions import flatten
from .checks_common import LONG_TIME, SATURATING, SIZES, context, long_case
from .strategies import draw_case

pytestmark = pytest.mark.rnnspec_check("edge_cases")


def _non_finite(tree: Any) -> list[str]:
    return [path for path, leaf in flatten(tree).items() if not np.all(np.isfinite(np.asarray(leaf, np.float64)))]


def test_ten_thousand_steps_stay_finite(rnnspec_backend: Backend, op: str) -> None:
    """float32 over T = 10,000: every field of the result is finite."""
    case = long_case(op, LONG_TIME)
    bad = _non_finite(case.run(rnnspec_backend))
    assert not bad, f"non-finite values in {bad}\n{context(rnnspec_backend, case)}"


def test_ten_thousand_steps_backward_stay_finite(rnnspec_backend: Backend, op: str) -> None:
    """float32 over T = 10,000: every gradient is finite."""
    if "vjp" not in rnnspec_backend.implementation.capabilities:
        pytest.skip(f"backend {rnnspec_backend.name!r} declares no reverse mode (capability 'vjp')")
    case = long_case(op, LONG_TIME)
    grads = case.vjp(rnnspec_backend, case.cotangents(case.run(rnnspec_backend), seed=1))
    bad = _non_finite(grads)
    assert not bad, f"non-finite gradients in {bad}\n{context(rnnspec_backend, case)}"


# -- saturated gates ------------------------------------------------------------------


@given(data=st.data())
def test_saturated_gates_give_finite_values_and_gradients(
    rnnspec_backend: Backend, op: str, data: st.DataObject
) -> None:
    """Weights of 1e3 to 1e4 times their usual size: every result and gradient is finite."""
    saturating = OPS[op].hints.saturating
    if saturating is None:
        pytest.skip(f"{op} has no gate: its multipliers are the caller's")
    # Options pinned (one value: tanh, which saturates) or drawn (ACT's cells but IndRNN's relu).
    fixed: dict[str, Any] = {k: v for k, (v, *more) in saturating.items() if not more}
    for name, values in saturating.items():
        if len(values) > 1:
            fixed[name] = data.draw(st.sampled_from(list(values)), label=name)
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


# -- a NaN halting unit ---------------------------------------------------------------


def test_act_with_a_nan_in_x_halts_that_row_at_once_however_large_max_steps(rnnspec_backend: Backend, op: str) -> None:
    """act with ``max_steps = 10**6`` and a NaN in ``x`` returns: from the NaN's step on, its row halts
    at the first inner step with NaN remainder, cost and outputs (act's page, "A NaN halting unit");
    the rest equals the call without the NaN. Under ``sum >= 1 - epsilon`` the row would ponder
    every one of the 10**6 inner steps."""
    from .assertions import assert_tree_close  # (imported here: this check was added at the end of the file)
    from .checks_common import option_defaults
    from .tolerances import tolerance

    if OPS[op].hints.decision != "halting":
        pytest.skip("halting belongs to act only")
    clean = long_case(op, 3, options=option_defaults(op, max_steps=10**6))  # the second row is 2 steps long
    poisoned = clean.spec.with_(nan_at=(0, 1, 0)).build()
    where = context(rnnspec_backend, poisoned)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NumPy's invalid-value warnings on the NaN
        got, want = poisoned.run(rnnspec_backend), clean.run(rnnspec_backend)
    steps = np.asarray(got.ponder_steps, np.float64)
    assert np.array_equal(steps[0, 1:], [1.0, 1.0]), f"ponder_steps of the NaN's row: {steps[0]}\n{where}"
    for name in ("ponder_remainder", "ponder_cost", "outputs"):
        field = np.asarray(getattr(got, name), np.float64)
        assert np.isnan(field[0, 1:]).all(), f"{name} of the NaN's row from its step on is not NaN\n{where}"
    # The other row, and the NaN's row before its step, as without the NaN (the backend against itself).

    def unaffected(result: Any) -> dict[str, Any]:
        fields = ("outputs", "ponder_steps", "ponder_remainder", "ponder_cost")
        part: dict[str, Any] = {
            f: (np.asarray(getattr(result, f))[1], np.asarray(getattr(result, f))[0, :1]) for f in fields
        }
        part["state"] = {k: np.asarray(v)[1] for k, v in result.state[0].items()}
        return part

    tol = tolerance(clean.spec.dtype, steps=clean.spec.time * 4)
    assert_tree_close(unaffected(got), unaffected(want), tol, context=where)
