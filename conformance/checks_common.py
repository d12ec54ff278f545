"""Helpers shared by the checks of the suite (values, gradients, properties)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

import rnnspec
from rnnspec.backend import Backend
from rnnspec.ops import OPS
from rnnspec.reference import decision_margin, reverse_valid

from .assertions import assert_tree_close
from .cases import Case, CaseSpec, in_float64
from .frameworks import bfloat16_maker
from .strategies import TIE_OPTIONS
from .tolerances import DECISION_MARGIN, HALF, reference_tolerance

__all__ = [
    "HALF_SIZES",
    "LONG_TIME",
    "SATURATING",
    "SIZES",
    "TANH",
    "assert_gradients_match_the_reference",
    "assert_values_match_the_reference",
    "context",
    "dtypes_of",
    "flip_valid",
    "full_lengths",
    "long_case",
    "option_defaults",
    "skip_without_decision",
    "wide_margin",
]


#: Sizes of the short cases of fixed shape (jax compiles once per shape): NaN inputs, determinism,
#: saturated gates.
SIZES: dict[str, Any] = {"batch": 3, "time": 6, "input_size": 2, "hidden_size": 3, "num_layers": 1}
#: Sizes of the half-precision cases: long enough that a backend accumulating in the half format
#: drifts by more than a unit in the last place.
HALF_SIZES: dict[str, Any] = {"batch": 3, "time": 12, "input_size": 2, "hidden_size": 3}


#: The long sequences of the edge cases and of the values check.
LONG_TIME = 10_000
#: Weight scales that saturate every gate.
SATURATING = (1e3, 1e4)
#: Options that turn a relu into a tanh, which saturates.
TANH = {"activation": "tanh"}


def option_defaults(op: str, **overrides: Any) -> tuple[tuple[str, Any], ...]:
    """Every value option of ``op`` at its default, but ``overrides`` (those the op has)."""
    return tuple((opt.name, overrides.get(opt.name, opt.default)) for opt in OPS[op].value_options)


def long_case(op: str, time: int, dtype: str = "float32", **fields: Any) -> Case:
    """Batch 2 (the second row 70% long), sizes 2, act pondering at most 2 steps (unless ``fields`` say)."""
    fields = {"options": option_defaults(op, max_steps=2), "lengths": (time, time * 7 // 10), **fields}
    return CaseSpec(op, dtype, 2, time, 2, 2, **fields).build()


def skip_without_decision(op: str) -> None:
    """Skip the test for an op that makes no discrete decision (none that a ties case can put on a threshold)."""
    if op not in TIE_OPTIONS:
        pytest.skip(f"{op} makes no discrete decision")


def needs_vjp(backend: Backend) -> None:
    """Skip the test for a backend without reverse mode."""
    if "vjp" not in backend.implementation.capabilities:
        pytest.skip(f"backend {backend.name!r} declares no reverse mode (capability 'vjp')")


def _numpy_dtype(dtype: str) -> np.dtype[Any]:
    """The NumPy dtype a result of ``dtype`` comes back in (bfloat16 values are held in float32)."""
    return np.dtype("float32" if dtype == "bfloat16" else dtype)


def assert_values_match_the_reference(got: Any, case: Case, *, context: str) -> None:
    """``got`` (a result of ``case``, as NumPy) equals the reference's within the tolerance policy.

    float32 and float64 results are compared with the reference's rounded answer; half-precision
    results with its unrounded float64 answer on the same inputs (:func:`.reference_tolerance`).
    """
    s = case.spec
    numpy = rnnspec.get_backend("numpy")
    tol = reference_tolerance(s.dtype, steps=s.steps)
    if s.dtype in HALF:
        want = case.in_float64().run(numpy)
        assert_tree_close(got, want, tol, context=context, dtype=_numpy_dtype(s.dtype))
    else:
        assert_tree_close(got, case.run(numpy), tol, context=context)


def assert_gradients_match_the_reference(got: Any, case: Case, cotangents: Mapping[str, Any], *, context: str) -> None:
    """``got`` (the backend's vjp of ``case`` at ``cotangents``) equals the reference's reverse mode,
    with the gradient tolerance (half precision: against the unrounded float64 answer)."""
    s = case.spec
    numpy = rnnspec.get_backend("numpy")
    tol = reference_tolerance(s.dtype, steps=s.steps, kind="gradient")
    if s.dtype in HALF:
        want = case.in_float64().vjp(numpy, in_float64(dict(cotangents)))
        assert_tree_close(got, want, tol, context=context, dtype=_numpy_dtype(s.dtype))
    else:
        assert_tree_close(got, case.vjp(numpy, cotangents), tol, context=context)


def dtypes_of(backend: Backend) -> tuple[str, ...]:
    """The dtypes the suite draws for ``backend``: those it declares among the spec's (bfloat16 only
    where the suite can make the backend's bfloat16 arrays, see :func:`.frameworks.bfloat16_maker`)."""
    declared = backend.implementation.dtypes
    return tuple(
        d
        for d in ("float32", "float64", "float16", "bfloat16")
        if d in declared and (d != "bfloat16" or bfloat16_maker(backend) is not None)
    )


def wide_margin(case: Case) -> bool:
    """Whether the case's discrete decisions are far enough from their thresholds to compare."""
    args, kwargs = case.args, case.kwargs
    return decision_margin(case.spec.op, *args, **kwargs) > DECISION_MARGIN[case.spec.dtype]


def context(backend: Backend, case: Case, *, call: str = "run") -> str:
    """What a failure message carries beside the differences: the call and its repro.

    ``call`` is the :class:`Case` method the check ran (``run_compiled`` for the compiled check).
    """
    s = case.spec
    return (
        f"[backend {backend.name!r}, op {s.op}, options {dict(s.options)}, dtype {s.dtype}, "
        f"batch {s.batch}, time {s.time}, sizes I={s.input_size} H={s.hidden_size}, layers {s.num_layers}, "
        f"lengths {s.lengths}, reverse {s.reverse}, initial_state {s.initial_state}, seed {s.seed}]\n"
        f"repro:\n{s.repro(backend.name, call=call)}"
    )


def full_lengths(case: Case) -> np.ndarray:
    """Each row's length in the case's call, as int64 (``time`` for every row when it passes none)."""
    batch, time = case.args[0].shape[:2]  # x, or a primitive's first array (B, T, H)
    lengths = case.kwargs.get("lengths")
    if lengths is None:
        return np.full((batch,), time, dtype=np.int64)
    return np.asarray(lengths, dtype=np.int64)


def flip_valid(a: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Reverse each row's valid prefix along axis 1 (``tf.reverse_sequence``); padding stays in place.

    Its own inverse: ``flip_valid(flip_valid(a, n), n) == a``. The reference's definition.
    """
    flipped: np.ndarray = reverse_valid(a, lengths)
    return flipped
