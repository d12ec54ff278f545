"""Check "checkpointing": ``checkpoint_every=K`` changes no value and no gradient.

For every op, a case is drawn with at least two steps and a segment length K
below its time, for two to four segments (K need not divide the time: the
last segment is then shorter), and the backend runs it twice: with
``checkpoint_every=None`` and with K. Every result field and the final state,
and (with the capability "vjp") the reverse mode for the same random
cotangents of every field, must agree within the tolerance policy: the
checkpointed run is the same computation, cut into segments whose
activations the backward pass recomputes.

The check compares the backend with itself, not with the reference: the
values and gradients checks already hold the unsegmented run to the
reference, so a backend wrong everywhere fails those, and one wrong only
when it checkpoints fails this one. As there, discrete decisions (skip's gate,
ACT's halting) and relu's kink must lie clear of their thresholds, where two
orders of summation could round to different sides.
"""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import rnnspec
from rnnspec.backend import Backend

from .assertions import assert_tree_close
from .checks_common import context, dtypes_of, wide_margin
from .strategies import Limits, draw_case
from .test_gradients import relu_kink_margin
from .tolerances import DECISION_MARGIN, tolerance

__all__: list[str] = []  # a test module: pytest collects it, nothing to import

pytestmark = pytest.mark.rnnspec_check("checkpointing")

OPTION = "checkpoint_every"


@given(data=st.data())
def test_checkpointed_values_and_gradients_equal_the_unsegmented_ones(
    rnnspec_backend: Backend, op: str, data: st.DataObject
) -> None:
    """With checkpoint_every=K < time, every result field, the final state and the vjp are unchanged."""
    if OPTION in rnnspec_backend.lacking(op):
        pytest.skip(f"backend {rnnspec_backend.name!r}: its {op}() predates the option {OPTION!r}")
    time = data.draw(st.one_of(st.integers(2, Limits.max_time), st.just(Limits.long_time)), label="time")
    # Two to four segments: the last one shorter when K does not divide the time.
    every = data.draw(st.integers(-(-time // 4), time - 1), label=OPTION)
    whole = draw_case(data, op, dtypes=dtypes_of(rnnspec_backend), time=time, checkpoint_every=None)
    spec = whole.with_(options=tuple((k, every if k == OPTION else v) for k, v in whole.options))
    plain, case = whole.build(), spec.build()
    assume(wide_margin(case))
    assume(relu_kink_margin(case) > DECISION_MARGIN[spec.dtype])
    want = plain.run(rnnspec_backend)
    got = case.run(rnnspec_backend)
    where = context(rnnspec_backend, case) + f"against the same call with {OPTION}=None\n"
    assert_tree_close(got, want, tolerance(spec.dtype, steps=spec.steps), context=where)
    if "vjp" not in rnnspec_backend.implementation.capabilities:
        return
    seed = spec.seed + 1
    cotangents = case.cotangents(case.run(rnnspec.get_backend("numpy")), seed=seed)
    want_grads = plain.vjp(rnnspec_backend, cotangents)
    got_grads = case.vjp(rnnspec_backend, cotangents)
    where += f"cotangents = case.cotangents(case.run(rnnspec.get_backend('numpy')), seed={seed}), through case.vjp\n"
    assert_tree_close(got_grads, want_grads, tolerance(spec.dtype, steps=spec.steps, kind="gradient"), context=where)
