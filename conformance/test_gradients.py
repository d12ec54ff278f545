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
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import rnnspec
from rnnspec.backend import Backend

from .assertions import assert_tree_close
from .cases import Case
from .checks_common import context, dtypes_of, flip_valid, full_lengths, wide_margin
from .strategies import draw_case
from .tolerances import DECISION_MARGIN, tolerance

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
    for p, inp, out, init in zip(layers, inputs, outs, inits, strict=False):
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
        if gaps.size:
            margin = min(margin, float(gaps.min()))
    return margin


@given(data=st.data())
def test_gradients_equal_the_reference(rnnspec_backend: Backend, op: str, data: st.DataObject) -> None:
    """The backend's vjp equals the reference's for x, every param and the initial state."""
    if "vjp" not in rnnspec_backend.implementation.capabilities:
        pytest.skip(f"backend {rnnspec_backend.name!r} declares no reverse mode (capability 'vjp')")
    spec = draw_case(data, op, dtypes=dtypes_of(rnnspec_backend))
    case = spec.build()
    assume(wide_margin(case))
    assume(relu_kink_margin(case) > DECISION_MARGIN[spec.dtype])
    numpy = rnnspec.get_backend("numpy")
    seed = spec.seed + 1
    cotangents = case.cotangents(case.run(numpy), seed=seed)
    want = case.vjp(numpy, cotangents)
    got = case.vjp(rnnspec_backend, cotangents)
    where = (
        context(rnnspec_backend, case)
        + f"cotangents = case.cotangents(want, seed={seed})\n"
        + f"got_grads = case.vjp(rnnspec.get_backend({rnnspec_backend.name!r}), cotangents)\n"
        + "want_grads = case.vjp(rnnspec.get_backend('numpy'), cotangents)\n"
    )
    assert_tree_close(got, want, tolerance(spec.dtype, steps=spec.steps, kind="gradient"), context=where)
