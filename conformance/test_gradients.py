"""Check "gradients": the backend's reverse mode equals the reference's.

For every op, ``Backend.vjp`` (the backend's own autodiff) and the NumPy
reference's hand-written reverse mode get the same random cotangents on every
field of the result (outputs, every state entry of every layer, and
update_gate / update_prob / ponder_* where the op has them), and must return
the same cotangents of x, every parameter and the initial state (for the
primitives: of a, b, initial / pre, u, initial) within the gradient tolerance.

Discontinuities. A gradient is compared only where it is well defined for both
implementations:

- discrete decisions (skip's u_t, ACT's N(t)) must lie at least
  ``DECISION_MARGIN[dtype]`` from their thresholds (:func:`wide_margin`), as in
  the values check;
- relu has a kink at 0, where the spec fixes relu'(0) = 0 but a pre-activation
  within rounding of 0 may fall on either side in two correct backends. For
  ``rnn`` with relu, ``indrnn`` and ``indrnn_recurrence`` with relu, the
  pre-activations are replayed cheaply from the reference's public outputs
  (:func:`relu_kink_margin`) and draws with one within ``DECISION_MARGIN[dtype]``
  of 0 are rejected. ``act`` with ``cell="indrnn"`` (and ``skip_rnn`` with relu)
  ponder / gate inner states no result exposes, so they are not replayed: their
  drawn arrays are continuous random floats, so a pre-activation at exactly 0
  has probability zero, and one within a backend's rounding of 0 (about 1e-7
  relative in float32, which moves at most that one unit's derivative) is rare
  enough over the few hundred pre-activations of a case not to matter.

The ties cases put these points exactly where the spec decides them: a relu's
pre-activation exactly 0 (relu'(0) = 0), skip's ``u~ = 0.5`` and
``update_prob = 1 - cum`` (min passes its gradient to ``update_prob``), ACT's
halting sum exactly ``1 - epsilon``; there the gradients are compared too.
The large tier, the edges of the parameters' ranges and half precision are
checked as in the values check.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import rnnspec
from rnnspec.backend import Backend

from .cases import Case
from .checks_common import (
    HALF_SIZES,
    assert_gradients_match_the_reference,
    context,
    dtypes_of,
    flip_valid,
    full_lengths,
    needs_vjp,
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
from .tolerances import DECISION_MARGIN

__all__: list[str] = []  # a test module: pytest collects it, nothing to import

pytestmark = pytest.mark.rnnspec_check("gradients")


def _relu_layers(case: Case) -> bool:
    options = dict(case.spec.options)
    return case.spec.op in ("rnn", "indrnn", "indrnn_recurrence") and options.get("activation") == "relu"


def relu_kink_margin(case: Case) -> float:
    """The smallest ``|pre-activation|`` of a relu over the valid steps, replayed from the reference.

    Each layer's pre-activation at step t (in processing order) is recomputed in
    float64 from its input and its own output at step t-1, which the reference
    returns (layer k's outputs are those of the stack of layers 0..k). ``inf``
    for ops without a relu that can be replayed this way.
    """
    if not _relu_layers(case):
        return float("inf")
    case = case.in_float64()  # exact inputs, unrounded outputs: a half-precision case replays exactly too
    numpy = rnnspec.get_backend("numpy")
    op, kwargs = case.spec.op, case.kwargs
    lengths, reverse = full_lengths(case), kwargs["reverse"]
    if op == "indrnn_recurrence":
        pre, u, initial = case.args
        outs = [numpy.indrnn_recurrence(pre, u, initial, **kwargs)]
        inits = [None if initial is None else {"h": initial}]
        layers: list[Any] = [{"u": u}]
        inputs = [pre]
    else:
        x, params = case.args
        state = kwargs.get("initial_state")
        outs, inputs, layers, inits = [], [x], list(params), []
        for k in range(len(params)):
            sub = dict(kwargs, initial_state=None if state is None else state[: k + 1])
            outs.append(getattr(numpy, op)(x, params[: k + 1], **sub).outputs)
            inputs.append(outs[-1])
            inits.append(None if state is None else state[k])
    valid = np.arange(case.args[0].shape[1])[None, :] < lengths[:, None]
    margin = float("inf")
    with np.errstate(all="ignore"):  # a half-precision case may overflow to inf, and inf * 0 is NaN
        for p, inp, out, init in zip(layers, inputs, outs, inits, strict=False):
            margin = min(margin, _layer_kink_margin(op, p, inp, out, init, lengths, valid, reverse))
    return margin


def _layer_kink_margin(
    op: str,
    p: Any,
    inp: Any,
    out: Any,
    init: Any,
    lengths: np.ndarray,
    valid: np.ndarray,
    reverse: bool,
) -> float:
    """The smallest finite ``|pre-activation|`` of one layer over the valid steps (``inf`` if none is
    finite: where a value overflowed, its neighbours are inf or NaN in every backend alike)."""
    xin, h = (np.asarray(a, dtype=np.float64) for a in (inp, out))
    if reverse:
        xin, h = flip_valid(xin, lengths), flip_valid(h, lengths)
    h0 = np.zeros((h.shape[0], h.shape[2])) if init is None else np.asarray(init["h"], dtype=np.float64)
    h_prev = np.concatenate([h0[:, None], h[:, :-1]], axis=1)
    q = {k: np.asarray(v, dtype=np.float64) for k, v in p.items()}
    if op == "rnn":
        a = xin @ q["w_ih"].T + q["b_ih"] + h_prev @ q["w_hh"].T + q["b_hh"]
    elif op == "indrnn":
        a = xin @ q["w_ih"].T + q["b_ih"] + q["u"] * h_prev
    else:
        a = xin + q["u"] * h_prev
    gaps = np.abs(a)[valid]
    gaps = gaps[np.isfinite(gaps)]
    return float(gaps.min()) if gaps.size else float("inf")


def check_gradients(backend: Backend, case: Case) -> None:
    """The backend's vjp of ``case`` equals the reference's, at random cotangents of every result field."""
    seed = case.spec.seed + 1
    cotangents = case.cotangents(case.run(rnnspec.get_backend("numpy")), seed=seed)
    got = case.vjp(backend, cotangents)
    where = (
        context(backend, case)
        + f"cotangents = case.cotangents(want, seed={seed})\n"
        + f"got_grads = case.vjp(rnnspec.get_backend({backend.name!r}), cotangents)\n"
        + "want_grads = case.vjp(rnnspec.get_backend('numpy'), cotangents)\n"
    )
    assert_gradients_match_the_reference(got, case, cotangents, context=where)


@given(data=st.data())
def test_gradients_equal_the_reference(rnnspec_backend: Backend, op: str, data: st.DataObject) -> None:
    """The backend's vjp equals the reference's for x, every param and the initial state."""
    needs_vjp(rnnspec_backend)
    spec = draw_case(data, op, dtypes=dtypes_of(rnnspec_backend))
    case = spec.build()
    assume(wide_margin(case))
    assume(relu_kink_margin(case) > DECISION_MARGIN[spec.dtype])
    check_gradients(rnnspec_backend, case)


@pytest.mark.parametrize("size", LARGE_SIZES, ids=lambda size: size.name)
@settings(max_examples=large_examples())
@given(seed=st.integers(0, 2**32 - 1))
def test_large_shapes_have_the_reference_gradients(
    rnnspec_backend: Backend, op: str, size: LargeSize, seed: int
) -> None:
    """Long sequences and large batches with unsorted lengths: the vjp equals the reference's."""
    needs_vjp(rnnspec_backend)
    case = large_case(op, size, seed, dtypes=dtypes_of(rnnspec_backend)).build()
    assume(wide_margin(case))
    assume(relu_kink_margin(case) > DECISION_MARGIN[case.spec.dtype])
    check_gradients(rnnspec_backend, case)


@settings(max_examples=targeted_examples())
@given(data=st.data())
def test_gradients_exactly_at_the_thresholds_follow_the_spec(
    rnnspec_backend: Backend, op: str, data: st.DataObject
) -> None:
    """relu'(0) = 0, skip's u~ = 0.5 updates and min's tie goes to update_prob, ACT halts at 1 - epsilon."""
    needs_vjp(rnnspec_backend)
    skip_without_decision(op)
    check_gradients(rnnspec_backend, draw_ties_case(data, op, dtypes=dtypes_of(rnnspec_backend)).build())


@pytest.mark.parametrize("edge", list(RANGE_EDGES))
@settings(max_examples=targeted_examples())
@given(data=st.data())
def test_gradients_at_the_edges_of_the_parameters_range_equal_the_reference(
    rnnspec_backend: Backend, op: str, edge: str, data: st.DataObject
) -> None:
    """|u| and |a| up to 2, biases shifted into saturation: the vjp equals the reference's."""
    needs_vjp(rnnspec_backend)
    case = draw_case(data, op, dtypes=dtypes_of(rnnspec_backend), **TARGETED_SIZES, **RANGE_EDGES[edge]).build()
    assume(wide_margin(case))
    assume(relu_kink_margin(case) > DECISION_MARGIN[case.spec.dtype])
    check_gradients(rnnspec_backend, case)


@settings(max_examples=targeted_examples())
@given(data=st.data())
def test_half_precision_gradients_round_float32_accurate_ones(
    rnnspec_backend: Backend, op: str, rnnspec_half_dtype: str, data: st.DataObject
) -> None:
    """Backend.vjp of a float16 / bfloat16 call: the rounding of float32-accurate gradients."""
    needs_vjp(rnnspec_backend)
    case = draw_case(data, op, dtypes=(rnnspec_half_dtype,), **HALF_SIZES).build()
    assume(wide_margin(case))
    assume(relu_kink_margin(case) > DECISION_MARGIN[case.spec.dtype])
    check_gradients(rnnspec_backend, case)
