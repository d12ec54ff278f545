"""The one tolerance policy of the conformance suite.

A backend's result ``a`` agrees with the reference's ``b`` when their NaN
positions are equal, their infinities are equal (position and sign), and every
finite entry satisfies ``|a - b| <= atol + rtol * |b|``. NaN and inf are never
masked or replaced before comparing.

The tolerances depend on

- the dtype: the base pair below;
- the length of the recurrence: errors compound over the steps a value went
  through (a Keras user measured float32 drift from 3e-7 to 2e-5 over 81
  steps), so both grow by ``1 + sqrt(steps)``;
- the kind: reverse-mode results run the recurrence twice and sum many
  products, so gradients get ``GRADIENT_FACTOR`` times the value tolerances.
  A gradient also gets, in every entry, the rounding of sums over the steps
  whose terms are as large as the array's largest entry: twice (two passes)
  ``UNIT_ROUNDOFF[dtype]`` times ``1 + steps`` times that magnitude (the
  bound of a sum of that many terms grows linearly; ``Tolerance.spread``).
  Where a cotangent explodes (H = 1, 40 steps, inputs of scale 4: entries of
  1e5 to 1e7 beside entries below 1), float32 loses 1e-6 of the largest in
  the small ones to cancellation, in every correct backend alike (torch and
  jax agree with each other there, not with the reference); a float64
  gradient gets 1e-14 of it.

The reference computes in float64 and rounds to the input dtype, so a
float64 backend is held to near machine precision, while a float32 backend is
allowed its own accumulated rounding.

Half precision. float16 and bfloat16 are optional (a backend lists them in
``Implementation.dtypes``); a backend that declares one must accumulate in
float32 or better and return the input dtype (``spec/ops/sequence.md``,
"Dtypes"). The suite gives the reference exactly the backend's inputs
(float16 arrays, or float32 arrays holding bfloat16 values, NumPy having no
bfloat16) and compares the backend with the reference's *unrounded* answer:
the reference run in float64 on those same half-rounded inputs. A backend
that accumulates in float32 returns the rounding of a value within float32's
tolerance of that answer, so each entry must satisfy

    |a - b| <= atol32 + rtol32 * |b| + 0.5 * ulp(a, b)

with ``atol32``, ``rtol32`` float32's tolerance for the same steps and kind
(:func:`reference_tolerance`), and ``ulp(a, b)`` the spacing of the half
format at the larger of ``|a|`` and ``|b|`` (the output rounding: half a unit
in the last place, about ``4.9e-4`` relative for float16 and ``3.9e-3`` for
bfloat16). A backend that carries its state or sums its products in the half
format drifts by a unit or more within a few steps, and fails. Where the
answer overflows the half format, the expected entry is its rounding (inf).

Comparisons of a backend with itself (the properties, checkpointing) keep
the per-dtype base pairs below for half precision: a chunked run rounds its
carried state to the half format at the chunk boundary, as the caller's own
chunked run would, so the two runs may differ by rounding that compounds.

Discrete decisions (skip's gate, ACT's halting) are compared only at least
``DECISION_MARGIN[dtype]`` from their thresholds; for the half formats that
is float32's margin, the precision the decisions are computed in. On cases
built to land exactly on a threshold in every correct arithmetic (the
``ties`` cases) they are compared without a margin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = [
    "BASE",
    "DECISION_MARGIN",
    "GRADIENT_FACTOR",
    "HALF",
    "UNIT_ROUNDOFF",
    "Tolerance",
    "reference_tolerance",
    "tolerance",
]


@dataclass(frozen=True)
class Tolerance:
    """A relative and an absolute tolerance, and a number of units in the last place of ``ulp_dtype``.

    An entry ``a`` agrees with ``b`` when
    ``|a - b| <= atol + rtol * |b| + ulps * ulp(a, b) + spread * max|b|``,
    ``ulp(a, b)`` the spacing of ``ulp_dtype`` at the larger magnitude (see :func:`ulp`) and
    ``max|b|`` the largest finite magnitude in the expected array.
    """

    rtol: float
    atol: float
    ulps: float = 0.0
    ulp_dtype: str | None = None
    spread: float = 0.0


#: Base tolerances of one step, per dtype.
BASE: dict[str, Tolerance] = {
    "float64": Tolerance(rtol=1e-10, atol=1e-12),
    "float32": Tolerance(rtol=2e-5, atol=2e-6),
    "float16": Tolerance(rtol=5e-3, atol=1e-3),
    "bfloat16": Tolerance(rtol=4e-2, atol=1e-2),
}

#: The half-precision formats: significand bits after the point, smallest normal exponent, largest finite value.
HALF: dict[str, tuple[int, int, float]] = {
    "float16": (10, -14, 65504.0),
    "bfloat16": (7, -126, 3.3895313892515355e38),
}

#: The unit roundoff of each dtype (half the spacing at 1): a gradient's ``spread`` per step factor.
UNIT_ROUNDOFF: dict[str, float] = {"float64": 2.0**-53, "float32": 2.0**-24, "float16": 2.0**-11, "bfloat16": 2.0**-8}

#: How much looser gradients are than values.
GRADIENT_FACTOR = 10.0


def tolerance(dtype: str, *, steps: int, kind: Literal["value", "gradient"] = "value") -> Tolerance:
    """The tolerance for a result of ``dtype`` that went through ``steps`` recurrence steps.

    ``steps`` counts every application of a cell along the longest path: time
    steps times layers, times the inner steps for ACT.
    """
    base = BASE[dtype]
    grow = 1.0 + math.sqrt(max(steps, 0))
    if kind == "value":
        return Tolerance(rtol=base.rtol * grow, atol=base.atol * grow)
    factor = grow * GRADIENT_FACTOR
    spread = 2.0 * UNIT_ROUNDOFF[dtype] * (1.0 + max(steps, 0))
    return Tolerance(rtol=base.rtol * factor, atol=base.atol * factor, spread=spread)


def reference_tolerance(dtype: str, *, steps: int, kind: Literal["value", "gradient"] = "value") -> Tolerance:
    """The tolerance of a comparison with the reference: :func:`tolerance`, except for the half formats,
    which are held to float32's tolerance plus half a unit of their own last place, against the
    reference's unrounded float64 answer (see the module docstring)."""
    if dtype not in HALF:
        return tolerance(dtype, steps=steps, kind=kind)
    base = tolerance("float32", steps=steps, kind=kind)
    return Tolerance(rtol=base.rtol, atol=base.atol, ulps=0.5, ulp_dtype=dtype, spread=base.spread)


def ulp(magnitude: np.ndarray, dtype: str) -> np.ndarray:
    """The spacing of the half format ``dtype`` at each ``|magnitude|`` (its subnormal spacing below
    the normal range); inf where the magnitude is not finite."""
    bits, min_exponent, _ = HALF[dtype]
    m = np.abs(np.asarray(magnitude, dtype=np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        exponent = np.floor(np.log2(np.where(m > 0, m, 2.0**min_exponent)))
    exponent = np.maximum(exponent, min_exponent)
    return np.where(np.isfinite(m), np.exp2(exponent - bits), np.inf)


def round_overflow(expected: np.ndarray, dtype: str) -> np.ndarray:
    """``expected`` with the entries that overflow the half format ``dtype`` replaced by their
    rounding (signed inf): what a correctly rounded result holds there."""
    bits, _, largest = HALF[dtype]
    # Past the largest finite value plus half its spacing, round-to-nearest gives inf.
    limit = largest + 0.5 * np.exp2(np.floor(np.log2(largest)) - bits)
    b = np.asarray(expected, dtype=np.float64)
    return np.where(np.abs(b) >= limit, np.copysign(np.inf, b), b)


#: The narrowest distance of a discrete decision (skip's u~ from 0.5, ACT's halting sum from
#: 1 - epsilon) from its threshold at which two correct backends of this dtype must still agree.
#: Cases closer than this are not compared on values (the suite rejects their draws); the
#: decisions themselves are compared exactly on the cases that are.
DECISION_MARGIN: dict[str, float] = {"float64": 1e-6, "float32": 1e-3, "float16": 1e-3, "bfloat16": 1e-3}
