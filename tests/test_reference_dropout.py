"""The reference's dropout masks are exact: ``dropout_mask`` between stacked layers and ``recurrent_mask`` on
the state the recurrent product reads.

Every VJP with masks equals central finite differences (no gradient reaches a mask), a mask of ones
equals no mask bitwise, and an LSTM with both masks equals an independent NumPy loop written from the
page's equations.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from helpers import FD_RTOL, assert_trees_close, assert_trees_equal, logit, numerical_sequence_vjp, sigmoid

import rnnspec.reference as reference
from rnnspec import get_backend, init_params
from rnnspec.ops import OPS

BATCH, TIME, INPUT, HIDDEN = 2, 3, 2, 3
REFERENCE = get_backend("numpy")

#: (op, value options, layers): every op with a mask, both GRU resets, ACT over the cells with a state mix.
CASES = [
    ("rnn", {"activation": "tanh"}, 2),
    ("lstm", {}, 2),
    ("gru", {"reset_after": True}, 2),
    ("gru", {"reset_after": False}, 2),
    ("indrnn", {"activation": "tanh"}, 2),
    ("qrnn", {"mode": "fo"}, 3),
    ("phased_lstm", {"peepholes": True}, 2),
    ("skip_lstm", {}, 2),
    ("skip_gru", {"reset_after": False}, 2),
    ("act", {"cell": "gru", "max_steps": 2}, 1),
    ("act", {"cell": "indrnn", "max_steps": 2}, 1),
]


def _dropout(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """A dropout mask of rate 0.3: zeros and the scale 1 / 0.7."""
    return np.where(rng.random(shape) < 0.3, 0.0, 1.0 / 0.7)


def _masks(op: str, layers: int, rng: np.random.Generator, fill: float | None = None) -> dict[str, Any]:
    """The op's masks: drawn, or filled with ``fill``."""
    names = {o.name for o in OPS[op].options}

    def make(shape: tuple[int, ...]) -> np.ndarray:
        return _dropout(rng, shape) if fill is None else np.full(shape, fill)

    masks: dict[str, Any] = {}
    if "dropout_mask" in names:
        masks["dropout_mask"] = tuple(make((BATCH, TIME, HIDDEN)) for _ in range(layers - 1))
    if "recurrent_mask" in names:
        masks["recurrent_mask"] = tuple(make((BATCH, HIDDEN)) for _ in range(layers))
    return masks


def _call(op: str, options: dict[str, Any], layers: int, seed: int) -> tuple[np.ndarray, list[Any], dict[str, Any]]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((BATCH, TIME, INPUT))
    init = {k: v for k, v in options.items() if k in ("peepholes", "cell")}  # the options the layout follows
    params = init_params(
        op, input_size=INPUT, hidden_size=HIDDEN, num_layers=layers, seed=seed, dtype="float64", **init
    )
    params = [dict(p) for p in params]
    kwargs = dict(options)
    if op.startswith("skip_"):
        # Every step updates, far from the binarisation's threshold: there the straight-through gradient is
        # the gradient, and central differences can check it.
        params[-1]["b_gate"] = np.array([30.0])
    if op == "act":
        # Halting units near 0.3 never reach 1 - epsilon in two steps: N(t) = 2 everywhere, smoothly.
        params[0]["w_halt"] = np.zeros_like(params[0]["w_halt"])
        params[0]["b_halt"] = np.array([logit(0.3)])
    if op == "phased_lstm":
        kwargs["timestamps"] = np.cumsum(rng.uniform(0.1, 0.4, (BATCH, TIME)), axis=1)
    if op == "indrnn":
        for p in params:
            p["w_ih"] = rng.standard_normal(p["w_ih"].shape)
    kwargs.update(_masks(op, layers, rng))
    kwargs["lengths"] = np.array([TIME, TIME - 1])
    return x, params, kwargs


def _cotangents(op: str, result: Any, rng: np.random.Generator) -> dict[str, Any]:
    """Cotangents of the outputs and the cells' state entries (the skip gate's state, a straight-through
    path, excluded)."""
    cell_state = {s.name for s in OPS[OPS[op].base or op].state} if op != "act" else {"h", "c"}
    return {
        "outputs": rng.standard_normal(np.shape(result.outputs)),
        "state": [
            {k: rng.standard_normal(np.shape(v)) if k in cell_state else np.zeros(np.shape(v)) for k, v in s.items()}
            for s in result.state
        ],
    }


@pytest.mark.parametrize(("op", "options", "layers"), CASES, ids=lambda v: str(v))
def test_the_vjp_with_drawn_masks_matches_central_differences(op: str, options: dict[str, Any], layers: int) -> None:
    x, params, kwargs = _call(op, options, layers, seed=3)
    result = getattr(REFERENCE, op)(x, params, **kwargs)
    cotangents = _cotangents(op, result, np.random.default_rng(4))
    initial = [{k: np.asarray(v, dtype=np.float64) for k, v in s.items()} for s in result.state]
    # The skip gate's state is a straight-through input: its cotangent is not a derivative, so the skip ops
    # start from their own start state.
    given = not op.startswith("skip_")

    def call(x: np.ndarray, params: list[dict[str, np.ndarray]], state: list[dict[str, np.ndarray]]) -> Any:
        return getattr(REFERENCE, op)(x, params, initial_state=state if given else None, **kwargs)

    numeric = numerical_sequence_vjp(call, x, params, initial if given else [], cotangents)
    state = initial if given else None
    grads = reference.vjp(op, cotangents, x, params, initial_state=state, **kwargs)
    assert_trees_close(grads["x"], numeric["x"], FD_RTOL, f"{op} d x")
    assert_trees_close(grads["params"], numeric["params"], FD_RTOL, f"{op} d params")
    if given:
        assert_trees_close(grads["initial_state"], numeric["initial_state"], FD_RTOL, f"{op} d initial_state")


@pytest.mark.parametrize(("op", "options", "layers"), CASES, ids=lambda v: str(v))
def test_masks_of_ones_equal_no_masks_bitwise(op: str, options: dict[str, Any], layers: int) -> None:
    x, params, kwargs = _call(op, options, layers, seed=5)
    plain = {k: v for k, v in kwargs.items() if k not in ("dropout_mask", "recurrent_mask")}
    ones = {**plain, **_masks(op, layers, np.random.default_rng(0), fill=1.0)}
    without = getattr(REFERENCE, op)(x, params, **plain)
    assert_trees_equal(getattr(REFERENCE, op)(x, params, **ones), without, f"{op} with masks of ones")
    cotangents = _cotangents(op, without, np.random.default_rng(6))
    want = reference.vjp(op, cotangents, x, params, **plain)
    assert_trees_equal(reference.vjp(op, cotangents, x, params, **ones), want, f"{op} vjp with masks of ones")


def test_a_single_dropout_mask_stands_for_every_boundary_and_is_aligned_with_x_under_reverse() -> None:
    x, params, kwargs = _call("gru", {"reset_after": True}, 3, seed=7)
    mask = kwargs["dropout_mask"][0]
    lengths = kwargs["lengths"]
    for reverse in (False, True):
        one = REFERENCE.gru(x, params, **{**kwargs, "dropout_mask": mask, "reverse": reverse})
        two = REFERENCE.gru(x, params, **{**kwargs, "dropout_mask": (mask, mask), "reverse": reverse})
        assert_trees_equal(one, two, f"reverse={reverse}")
    # Reversed: the mask's step t gates the step that reads x[:, t], as for x itself.
    flipped = [reference.reverse_valid(a, lengths) for a in (x, mask)]
    forward = REFERENCE.gru(flipped[0], params, **{**kwargs, "dropout_mask": flipped[1]})
    backward = REFERENCE.gru(x, params, **{**kwargs, "dropout_mask": mask, "reverse": True})
    np.testing.assert_array_equal(reference.reverse_valid(forward.outputs, lengths), backward.outputs)


def test_an_lstm_with_both_masks_equals_an_independent_numpy_loop() -> None:
    x, params, kwargs = _call("lstm", {}, 2, seed=9)
    del kwargs["lengths"]
    drop, rec = kwargs["dropout_mask"], kwargs["recurrent_mask"]
    inp = x
    finals = []
    for k, p in enumerate(params):
        if k > 0:
            inp = inp * drop[k - 1]
        h, c = np.zeros((BATCH, HIDDEN)), np.zeros((BATCH, HIDDEN))
        outs = []
        for t in range(TIME):
            a = inp[:, t] @ p["w_ih"].T + p["b_ih"] + (h * rec[k]) @ p["w_hh"].T + p["b_hh"]
            i, f, g, o = (a[:, j * HIDDEN : (j + 1) * HIDDEN] for j in range(4))
            c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
            h = sigmoid(o) * np.tanh(c)
            outs.append(h)
        inp = np.stack(outs, axis=1)
        finals.append({"h": h, "c": c})
    got = REFERENCE.lstm(x, params, **kwargs)
    assert_trees_close(got.outputs, inp, FD_RTOL, "outputs")
    assert_trees_close([dict(s) for s in got.state], finals, FD_RTOL, "state")
