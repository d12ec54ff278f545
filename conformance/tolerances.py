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

The reference computes in float64 and rounds to the input dtype, so a
float64 backend is held to near machine precision, while a float32 backend is
allowed its own accumulated rounding.

Half precision. float16 and bfloat16 are optional (a backend lists them in
``Implementation.dtypes``); a backend that declares one must accumulate in
float32 or better and return the input dtype (``spec/ops/sequence.md``,
"Dtypes"). The suite gives the reference exactly the backend's inputs: float16
arrays, or float32 arrays holding bfloat16 values (NumPy has no bfloat16), and
the reference's float64 answer rounded to the input dtype is the correctly
rounded one. A backend's result must then lie within

- float16: ``rtol = 5e-3``, ``atol = 1e-3`` per step (about 5 units in the last
  place of float16's 11-bit significand, whose unit is ``2**-10 ~ 9.8e-4``);
- bfloat16: ``rtol = 4e-2``, ``atol = 1e-2`` per step (about 5 units in the last
  place of its 8-bit significand, ``2**-7 ~ 7.8e-3``);

each grown by ``1 + sqrt(steps)``, and ten times that for gradients: for a
6-step float16 case, values within ``rtol ~ 1.7e-2`` and gradients within
``rtol ~ 1.7e-1``. Their discrete decisions (skip's gate, ACT's halting) are
compared only at least ``DECISION_MARGIN[dtype]`` (5e-2, 1e-1) from their
thresholds. The "values", "gradients", "properties" and "compiled" checks draw
the half dtypes a backend declares among the others; the "edge_cases" check
runs each one on every op, and checks that the result has the input dtype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

__all__ = ["BASE", "DECISION_MARGIN", "GRADIENT_FACTOR", "Tolerance", "tolerance"]


@dataclass(frozen=True)
class Tolerance:
    """A relative and an absolute tolerance."""

    rtol: float
    atol: float


#: Base tolerances of one step, per dtype.
BASE: dict[str, Tolerance] = {
    "float64": Tolerance(rtol=1e-10, atol=1e-12),
    "float32": Tolerance(rtol=2e-5, atol=2e-6),
    "float16": Tolerance(rtol=5e-3, atol=1e-3),
    "bfloat16": Tolerance(rtol=4e-2, atol=1e-2),
}

#: How much looser gradients are than values.
GRADIENT_FACTOR = 10.0


def tolerance(dtype: str, *, steps: int, kind: Literal["value", "gradient"] = "value") -> Tolerance:
    """The tolerance for a result of ``dtype`` that went through ``steps`` recurrence steps.

    ``steps`` counts every application of a cell along the longest path: time
    steps times layers, times the inner steps for ACT.
    """
    base = BASE[dtype]
    grow = 1.0 + math.sqrt(max(steps, 0))
    factor = grow * (GRADIENT_FACTOR if kind == "gradient" else 1.0)
    return Tolerance(rtol=base.rtol * factor, atol=base.atol * factor)


#: The narrowest distance of a discrete decision (skip's u~ from 0.5, ACT's halting sum from
#: 1 - epsilon) from its threshold at which two correct backends of this dtype must still agree.
#: Cases closer than this are not compared on values (the suite rejects their draws); the
#: decisions themselves are compared exactly on the cases that are.
DECISION_MARGIN: dict[str, float] = {"float64": 1e-6, "float32": 1e-3, "float16": 5e-2, "bfloat16": 1e-1}
