"""The NumPy reference of ``qrnn`` (Bradbury et al. 2016) is exact.

Every VJP equals central finite differences and torch autograd of an independent
implementation (gates from ``torch.nn.functional.conv1d``, a per-step pooling loop), for every
pooling mode, windows 1 to 3, zoneout masks, stacks, variable lengths and both directions.
Each layer's state is ``{"c", "x_prev"}``: x_prev, the layer's last K-1 inputs in processing order,
is the left context of the window; its gradient is checked like every other input's.
The forward obeys the properties the spec states: pooling is ``linear_recurrence`` on the gates,
f = 0 copies z, a mask of ones keeps the state, chunked runs equal whole runs (every window,
both directions), reverse, padding, rows. Edge cases and bad calls behave as the spec says.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from helpers import (
    TORCH_RTOL,
    assert_relative_close,
    assert_trees_close,
    assert_trees_equal,
    deep_copy,
    full_lengths,
    shape_id,
    sigmoid,
    step_order,
    valid_steps,
)
from helpers_recurrences import (
    QRNN_GATES,
    B,
    assert_forward_and_vjp_match_torch,
    assert_missing_cotangents_count_as_zero,
    assert_vjp_matches_central_differences,
    cotangents_for,
    fill_leaves,
    flip_valid_prefix,
    qrnn_params,
    random_mask,
    result_tree,
    torch_qrnn,
    torch_state_vjp,
    uniform_state,
)

import rnnspec.reference as reference
from rnnspec.errors import CallError, DtypeError, OptionError, ParameterError, ShapeError

MODES = ["f", "fo", "ifo"]
WINDOWS = [1, 2, 3]


@dataclass
class QCase:
    """One call ``B.qrnn(x, params, mode=..., zoneout_mask=..., lengths=..., initial_state=..., reverse=...)``."""

    mode: str
    x: np.ndarray
    params: list[dict[str, np.ndarray]]
    zoneout_mask: Any = None
    lengths: np.ndarray | None = None
    initial_state: list[dict[str, np.ndarray]] | None = None
    reverse: bool = False

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.x.shape[0], self.x.shape[1], self.params[0]["b"].shape[0] // len(QRNN_GATES[self.mode])

    @property
    def layers(self) -> int:
        return len(self.params)

    def kwargs(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "zoneout_mask": self.zoneout_mask,
            "lengths": self.lengths,
            "initial_state": self.initial_state,
            "reverse": self.reverse,
        }

    def masks(self) -> list[np.ndarray | None]:
        """Each layer's mask (a single array serves every layer)."""
        if self.zoneout_mask is None:
            return [None] * self.layers
        if isinstance(self.zoneout_mask, np.ndarray):
            return [self.zoneout_mask] * self.layers
        return list(self.zoneout_mask)

    def state_or_zeros(self) -> list[dict[str, np.ndarray]]:
        if self.initial_state is not None:
            return self.initial_state
        batch, _, hidden = self.shape
        return [{k: np.zeros(shape) for k, shape in s.items()} for s in state_shapes(batch, hidden, self.params)]

    def run(self, **overrides: Any) -> Any:
        kwargs = {**self.kwargs(), **overrides}
        return B.qrnn(kwargs.pop("x", self.x), kwargs.pop("params", self.params), **kwargs)

    def vjp(self, cotangents: dict[str, Any]) -> dict[str, Any]:
        return reference.vjp("qrnn", cotangents, self.x, self.params, **self.kwargs())


def state_shapes(batch: int, hidden: int, params: list[dict[str, np.ndarray]]) -> list[dict[str, tuple[int, ...]]]:
    """Each layer's state shapes: c (B, H) and x_prev (B, K-1, I), I the layer's input size."""
    return [{"c": (batch, hidden), "x_prev": (batch, p["w"].shape[2] - 1, p["w"].shape[1])} for p in params]


def random_state(rng: np.random.Generator, batch: int, hidden: int, params: list[dict[str, np.ndarray]]) -> Any:
    """A random initial state (c and x_prev) for every layer."""
    return uniform_state(rng, state_shapes(batch, hidden, params))


def make_case(
    seed: int,
    mode: str,
    window: int,
    *,
    layers: int = 1,
    lengths: Any = None,
    with_state: bool = True,
    reverse: bool = False,
    mask: str | None = None,
    batch: int = 3,
    time: int = 5,
    input_size: int = 3,
    hidden: int = 2,
) -> QCase:
    """A random case. ``mask``: None, ``"single"`` (one array for every layer) or ``"per-layer"``."""
    rng = np.random.default_rng([seed, window, MODES.index(mode)])
    masks = None
    if mask == "single":
        masks = random_mask(rng, (batch, time, hidden))
    elif mask == "per-layer":
        masks = [random_mask(rng, (batch, time, hidden)) for _ in range(layers)]
    x = rng.uniform(-1.0, 1.0, (batch, time, input_size))
    params = qrnn_params(rng, mode, input_size, hidden, window, layers)
    return QCase(
        mode=mode,
        x=x,
        params=params,
        zoneout_mask=masks,
        lengths=None if lengths is None else np.asarray(lengths, dtype=np.int64),
        initial_state=random_state(rng, batch, hidden, params) if with_state else None,
        reverse=reverse,
    )


#: (layers, lengths, given initial state, reverse, zoneout mask): stacks, a 0-length and a full row.
SHAPES = [
    (1, None, False, False, None),
    (2, [0, 5, 3], True, False, "single"),
    (2, [5, 0, 2], True, True, "per-layer"),
    (1, [3, 5, 0], True, True, "single"),
    (2, None, False, True, "per-layer"),
]
CASES = [
    pytest.param(
        mode,
        window,
        *shape,
        id=f"{mode}-K{window}-{shape_id(*shape[:4])}-{shape[4] or 'nomask'}",
    )
    for mode in MODES
    for window in WINDOWS
    for shape in SHAPES
]


def build(
    mode: str, window: int, layers: int, lengths: Any, with_state: bool, reverse: bool, mask: str | None
) -> QCase:
    seed = 700 + 10 * layers + (0 if lengths is None else lengths[0]) + (2 if reverse else 0)
    return make_case(
        seed, mode, window, layers=layers, lengths=lengths, with_state=with_state, reverse=reverse, mask=mask
    )


# -- gradients ---------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "window", "layers", "lengths", "with_state", "reverse", "mask"), CASES)
def test_vjp_matches_central_finite_differences(
    mode: str, window: int, layers: int, lengths: Any, with_state: bool, reverse: bool, mask: str | None
) -> None:
    case = build(mode, window, layers, lengths, with_state, reverse, mask)
    grads, numeric = assert_vjp_matches_central_differences(case, cotangents_for(case, layers))
    for k in range(layers):
        assert grads["initial_state"][k]["x_prev"].shape == (3, window - 1, case.params[k]["w"].shape[1])
        if window > 1:
            assert np.max(np.abs(numeric["initial_state"][k]["x_prev"])) > 1e-3, "x_prev must matter"


@pytest.mark.parametrize(("mode", "window", "layers", "lengths", "with_state", "reverse", "mask"), CASES)
def test_forward_and_vjp_match_torch_autograd(
    mode: str, window: int, layers: int, lengths: Any, with_state: bool, reverse: bool, mask: str | None
) -> None:
    case = build(mode, window, layers, lengths, with_state, reverse, mask)
    cotangents = cotangents_for(case, layers + 100)
    batch, time, _ = case.shape
    forward, grads = torch_state_vjp(
        torch_qrnn,
        case.x,
        case.params,
        case.state_or_zeros(),
        cotangents,
        mode=mode,
        masks=case.masks(),
        lengths=full_lengths(lengths, batch, time),
        reverse=reverse,
    )
    assert_forward_and_vjp_match_torch(case, cotangents, forward, grads)


def test_missing_cotangents_count_as_zero() -> None:
    case = make_case(1, "ifo", 2, layers=2, lengths=[5, 1, 3], mask="per-layer")
    assert_missing_cotangents_count_as_zero(case, cotangents_for(case, 7))


def test_vjp_of_a_single_param_mapping_is_a_mapping() -> None:
    case = make_case(2, "fo", 2)
    cotangents = cotangents_for(case, 8)
    as_mapping = reference.vjp("qrnn", cotangents, case.x, case.params[0], **case.kwargs())
    assert isinstance(as_mapping["params"], dict)
    assert_trees_equal(as_mapping["params"], case.vjp(cotangents)["params"][0], "params")


# -- forward properties ---------------------------------------------------------------------


def numpy_gates(x: np.ndarray, p: dict[str, np.ndarray], mode: str, x_prev: np.ndarray) -> dict[str, np.ndarray]:
    """Pre-activation gate blocks of a causal convolution (forward direction), by explicit loops over
    the window; the steps before the first read ``x_prev`` (step -j is ``x_prev[:, K-1-j]``)."""
    batch, time, _ = x.shape
    window = p["w"].shape[2]
    pre = np.broadcast_to(p["b"], (batch, time, p["b"].shape[0])).copy()
    for t in range(time):
        for k in range(window):
            source = t - window + 1 + k
            read = x[:, source] if source >= 0 else x_prev[:, window - 1 + source]
            pre[:, t] += read @ p["w"][:, :, k].T
    return dict(zip(QRNN_GATES[mode], np.split(pre, len(QRNN_GATES[mode]), axis=2), strict=True))


def last_valid(h: np.ndarray, lengths: np.ndarray, initial: np.ndarray) -> np.ndarray:
    """h at each row's last valid step, or ``initial`` for an empty row."""
    picked = h[np.arange(h.shape[0]), np.maximum(lengths - 1, 0)]
    return np.where((lengths > 0)[:, None], picked, initial)


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("mode", MODES)
def test_pooling_equals_linear_recurrence_on_the_same_gates(mode: str, window: int) -> None:
    case = make_case(3, mode, window, lengths=[5, 0, 3], mask="single", time=5)
    p, mask, c0 = case.params[0], case.zoneout_mask, case.initial_state[0]["c"]
    gates = numpy_gates(case.x, p, mode, case.initial_state[0]["x_prev"])
    z = np.tanh(gates["z"])
    f = np.where(mask == 1, 1.0, sigmoid(gates["f"]))
    addend = sigmoid(gates["i"]) * z if mode == "ifo" else (1.0 - f) * z
    c = B.linear_recurrence(f, addend, c0, lengths=case.lengths)
    h = c if mode == "f" else sigmoid(gates["o"]) * c
    result = case.run()
    assert_relative_close(result.outputs, h, 1e-13, "outputs")
    assert_relative_close(result.state[0]["c"], last_valid(c, case.lengths, c0), 1e-13, "state c")
    assert np.any(mask[valid_steps(case.lengths, 3, 5)] == 1.0), "the mask must act on some valid step"


@pytest.mark.parametrize("window", [1, 2])
@pytest.mark.parametrize("mode", MODES)
def test_a_forget_gate_of_zero_copies_z(mode: str, window: int) -> None:
    """f = sigmoid(-1e3) = 0: c_t = z_t (modes f, fo); ifo has no (1 - f) factor: c_t = i_t z_t."""
    case = make_case(4, mode, window, lengths=[5, 0, 2])
    hidden = case.shape[2]
    p = {k: v.copy() for k, v in case.params[0].items()}
    p["b"][hidden : 2 * hidden] = -1e3
    gates = numpy_gates(case.x, p, mode, case.initial_state[0]["x_prev"])
    z = np.tanh(gates["z"])
    c = z if mode != "ifo" else sigmoid(gates["i"]) * z
    c = np.where(valid_steps(case.lengths, 3, 5)[:, :, None], c, 0.0)
    h = c if mode == "f" else sigmoid(gates["o"]) * c
    result = case.run(params=[p])
    assert_relative_close(result.outputs, h, 1e-14, "outputs")
    assert_relative_close(result.state[0]["c"], last_valid(c, case.lengths, case.initial_state[0]["c"]), 1e-14, "c")
    if mode == "f":
        np.testing.assert_array_equal(result.state[0]["c"][2], result.outputs[2, 1])


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("mode", ["f", "fo"])
def test_a_zoneout_mask_of_all_ones_keeps_the_initial_state(mode: str, reverse: bool) -> None:
    case = make_case(5, mode, 2, layers=2, lengths=[5, 0, 3], reverse=reverse)
    ones = np.ones((3, 5, 2))
    result = case.run(zoneout_mask=ones)
    valid = valid_steps(case.lengths, 3, 5)
    top_c0 = case.initial_state[1]["c"]
    for k in range(2):
        np.testing.assert_array_equal(result.state[k]["c"], case.initial_state[k]["c"])
    o = result.outputs / np.where(valid[:, :, None], top_c0[:, None], 1.0)  # h = o * c0 (o = 1 in mode f)
    if mode == "f":
        np.testing.assert_array_equal(result.outputs, np.where(valid[:, :, None], top_c0[:, None], 0.0))
        o = np.ones_like(o)
    else:
        assert np.all((o[valid] > 0.0) & (o[valid] < 1.0))
    # no gradient reaches z or f (every f is 1, and (1 - f) z is 0): the z and f rows get none.
    # The final x_prev (each layer's last inputs) is left out of the loss: it reads x and c0 directly.
    cotangents = cotangents_for(case, 9)
    for s in cotangents["state"]:
        s["x_prev"] = np.zeros_like(s["x_prev"])
    grads = reference.vjp("qrnn", cotangents, case.x, case.params, **{**case.kwargs(), "zoneout_mask": ones})
    for k in range(2):
        np.testing.assert_array_equal(grads["params"][k]["w"][:4], 0.0)
        np.testing.assert_array_equal(grads["params"][k]["b"][:4], 0.0)
    d_out = np.where(valid[:, :, None], cotangents["outputs"], 0.0)
    if mode == "f":  # the outputs are c0 of the top layer: nothing below matters
        np.testing.assert_array_equal(grads["params"][0]["w"], 0.0)
        np.testing.assert_array_equal(grads["x"], 0.0)
        np.testing.assert_array_equal(grads["initial_state"][0]["c"], cotangents["state"][0]["c"])
        d_top = cotangents["state"][1]["c"] + d_out.sum(axis=1)
    else:  # h = o * c0
        d_top = cotangents["state"][1]["c"] + (d_out * o).sum(axis=1)
        assert np.any(grads["x"] != 0.0), "o still reads x"
    assert_relative_close(grads["initial_state"][1]["c"], d_top, 1e-14, "d initial_state[1]")


def test_in_ifo_mode_a_mask_of_ones_still_adds_i_times_z() -> None:
    """The spec's equations set f = 1, so c_t = c_{t-1} + i z: ifo has no (1 - f) to zero."""
    case = make_case(6, "ifo", 2, lengths=[5, 0, 3])
    ones = np.ones((3, 5, 2))
    gates = numpy_gates(case.x, case.params[0], "ifo", case.initial_state[0]["x_prev"])
    added = np.where(valid_steps(case.lengths, 3, 5)[:, :, None], sigmoid(gates["i"]) * np.tanh(gates["z"]), 0.0)
    c = case.initial_state[0]["c"][:, None] + np.cumsum(added, axis=1)
    result = case.run(zoneout_mask=ones)
    assert_relative_close(result.outputs, np.where(added != 0.0, sigmoid(gates["o"]) * c, 0.0), 1e-13, "outputs")
    assert_relative_close(result.state[0]["c"], c[:, -1], 1e-13, "state")


def test_a_single_mask_array_is_the_same_mask_for_every_layer() -> None:
    case = make_case(7, "fo", 2, layers=3, lengths=[5, 2, 0], mask="single", reverse=True)
    as_list = case.run(zoneout_mask=[case.zoneout_mask] * 3)
    assert_trees_equal(result_tree(case.run()), result_tree(as_list), "result")
    cotangents = cotangents_for(case, 10)
    grads = reference.vjp(
        "qrnn", cotangents, case.x, case.params, **{**case.kwargs(), "zoneout_mask": (case.zoneout_mask,) * 3}
    )
    assert_trees_equal(case.vjp(cotangents), grads, "vjp")


def run_in_chunks(
    case: QCase, cuts: list[int], *, carry_x_prev: bool = True
) -> tuple[np.ndarray, list[dict[str, np.ndarray]]]:
    """Run ``case`` chunk by chunk along time (split at ``cuts``), each chunk starting from the state
    left by the chunk processed before it: the earlier chunk forward, the later one in reverse.
    Without ``carry_x_prev`` each chunk gets zeros for x_prev instead (c is still carried).
    Returns the outputs put back in time order and the last state."""
    bounds = [0, *cuts, case.x.shape[1]]
    spans = list(itertools.pairwise(bounds))
    state, outputs = case.initial_state, {}
    for start, end in reversed(spans) if case.reverse else spans:
        result = case.run(
            x=case.x[:, start:end],
            lengths=np.clip(case.lengths - start, 0, end - start),
            zoneout_mask=[m[:, start:end] for m in case.zoneout_mask],
            initial_state=state,
        )
        outputs[start] = result.outputs
        state = [dict(s) for s in result.state]
        if not carry_x_prev:
            state = [{**s, "x_prev": np.zeros_like(s["x_prev"])} for s in state]
    return np.concatenate([outputs[start] for start, _ in spans], axis=1), state


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("mode", MODES)
def test_chunked_run_with_the_state_carried_equals_the_whole_run(mode: str, window: int, reverse: bool) -> None:
    """x_prev carries the K-1 inputs the window needs across a chunk boundary, for every K.

    Chunks of 1, 2 and 4 steps: with K = 3 the 1-step chunk is shorter than K-1, so the x_prev it
    passes on still holds an input from before it. The lengths end rows inside chunks, at a
    boundary, and at zero; the initial state is random; two layers, per-layer zoneout masks.
    """
    case = make_case(
        8, mode, window, layers=2, lengths=[7, 2, 0, 5, 1, 3], mask="per-layer", batch=6, time=7, reverse=reverse
    )
    whole = case.run()
    outputs, state = run_in_chunks(case, [1, 3])
    # the gates go through einsum (BLAS), whose rounding may depend on the shape: equal to 1e-15
    assert_relative_close(outputs, whole.outputs, 1e-15, "outputs")
    assert_trees_close(state, [dict(s) for s in whole.state], 1e-15, "state")
    for k in range(2):  # x_prev is copied from the inputs, never computed
        np.testing.assert_array_equal(state[k]["x_prev"], whole.state[k]["x_prev"], err_msg=f"x_prev[{k}]")
    if window > 1:  # not vacuous: dropping the carried inputs changes the steps whose window spans a boundary
        dropped, _ = run_in_chunks(case, [1, 3], carry_x_prev=False)
        assert np.max(np.abs(dropped - whole.outputs)) > 1e-6


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("window", WINDOWS)
def test_the_final_x_prev_is_each_layers_last_inputs_in_processing_order(window: int, reverse: bool) -> None:
    """Per row of length L: the last K-1 of [x_prev..., x_0, ..., x_{L-1}] (reverse: x_{L-1}, ..., x_0),
    so rows shorter than K-1 keep part of the initial x_prev. Layer 1's inputs are layer 0's outputs."""
    case = make_case(19, "fo", window, layers=2, lengths=[5, 0, 1, 2], batch=4, reverse=reverse)
    result = case.run()
    inputs = [case.x, case.run(params=case.params[:1], initial_state=case.initial_state[:1]).outputs]
    for k in range(2):
        x_prev = case.initial_state[k]["x_prev"]
        for r, n in enumerate(case.lengths):
            steps = step_order(n, reverse)
            seen = [x_prev[r, j] for j in range(window - 1)] + [inputs[k][r, t] for t in steps]
            want = np.array(seen[len(seen) - (window - 1) :]).reshape(window - 1, inputs[k].shape[2])
            np.testing.assert_array_equal(result.state[k]["x_prev"][r], want, err_msg=f"layer {k}, row {r}")


@pytest.mark.parametrize("window", WINDOWS)
def test_reverse_equals_flipping_each_rows_valid_prefix(window: int) -> None:
    case = make_case(10, "ifo", window, layers=2, lengths=[5, 0, 3, 1], batch=4, mask="per-layer", reverse=True)
    backward = case.run()
    forward = case.run(
        x=flip_valid_prefix(case.x, case.lengths),
        zoneout_mask=[flip_valid_prefix(m, case.lengths) for m in case.zoneout_mask],
        reverse=False,
    )
    assert_relative_close(backward.outputs, flip_valid_prefix(forward.outputs, case.lengths), 1e-15, "outputs")
    assert_trees_close(list(backward.state), list(forward.state), 1e-15, "state")


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("window", [1, 3])
def test_padding_content_never_changes_the_valid_part_or_the_state(window: int, reverse: bool) -> None:
    case = make_case(11, "fo", window, layers=2, lengths=[5, 0, 2], mask="single", reverse=reverse)
    pad = ~valid_steps(case.lengths, 3, 5)
    x2, mask2 = case.x.copy(), case.zoneout_mask.copy()
    x2[pad] = 1e3
    mask2[pad] = 1.0 - mask2[pad]
    before, after = case.run(), case.run(x=x2, zoneout_mask=mask2)
    assert_trees_close(result_tree(after), result_tree(before), 1e-15, "result")
    assert np.all(before.outputs[pad] == 0.0)
    cotangents = cotangents_for(case, 12)
    got = reference.vjp("qrnn", cotangents, x2, case.params, **{**case.kwargs(), "zoneout_mask": mask2})
    want = case.vjp(cotangents)
    assert_trees_close(got["params"], want["params"], 1e-14, "d params")
    assert_trees_close(got["x"], want["x"], 1e-14, "d x")


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_rows_are_independent(reverse: bool) -> None:
    case = make_case(12, "ifo", 3, layers=2, lengths=[5, 2, 0, 4], batch=4, mask="per-layer", reverse=reverse)
    result = case.run()
    for r in range(4):
        alone = case.run(
            x=case.x[r : r + 1],
            lengths=case.lengths[r : r + 1],
            zoneout_mask=[m[r : r + 1] for m in case.zoneout_mask],
            initial_state=[{k: v[r : r + 1] for k, v in s.items()} for s in case.initial_state],
        )
        assert_relative_close(alone.outputs[0], result.outputs[r], 1e-15, f"outputs of row {r}")
        for k in range(2):
            for name in ("c", "x_prev"):
                got, want = alone.state[k][name][0], result.state[k][name][r]
                assert_relative_close(got, want, 1e-15, f"state {name} of layer {k}, row {r}")


# -- edge cases ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_a_row_of_length_zero_keeps_its_initial_state_and_outputs_zeros(mode: str) -> None:
    case = make_case(13, mode, 3, layers=2, lengths=[0, 5, 3], mask="single")
    result = case.run()
    assert np.all(result.outputs[0] == 0.0)
    for k in range(2):
        for name in ("c", "x_prev"):
            np.testing.assert_array_equal(result.state[k][name][0], case.initial_state[k][name][0])
    cotangents = cotangents_for(case, 13)
    grads = case.vjp(cotangents)
    assert np.all(grads["x"][0] == 0.0)
    for k in range(2):
        for name in ("c", "x_prev"):
            np.testing.assert_array_equal(grads["initial_state"][k][name][0], cotangents["state"][k][name][0])


@pytest.mark.parametrize("with_state", [False, True], ids=["zeros", "state"])
@pytest.mark.parametrize("window", [1, 3])
def test_time_zero_returns_the_initial_state(window: int, with_state: bool) -> None:
    case = make_case(14, "ifo", window, layers=2, time=0, with_state=with_state, mask="per-layer")
    assert case.zoneout_mask[0].shape == (3, 0, 2)
    result = case.run()
    assert result.outputs.shape == (3, 0, 2)
    assert_trees_equal([dict(s) for s in result.state], case.state_or_zeros(), "state")
    cotangents = cotangents_for(case, 14)
    grads = case.vjp(cotangents)
    assert grads["x"].shape == (3, 0, 3)
    assert_trees_equal([dict(s) for s in grads["initial_state"]], cotangents["state"], "d initial_state")
    for k, p in enumerate(grads["params"]):
        assert p["w"].shape == case.params[k]["w"].shape
        assert np.all(p["w"] == 0.0)
        assert np.all(p["b"] == 0.0)


@pytest.mark.parametrize("mode", MODES)
def test_batch_one_and_hidden_size_one_match_torch(mode: str) -> None:
    case = make_case(15, mode, 2, layers=2, batch=1, hidden=1, time=4, input_size=2, mask="single", reverse=True)
    cotangents = cotangents_for(case, 15)
    forward, grads = torch_state_vjp(
        torch_qrnn,
        case.x,
        case.params,
        case.initial_state,
        cotangents,
        mode=mode,
        masks=case.masks(),
        lengths=full_lengths(None, 1, 4),
        reverse=True,
    )
    result = case.run()
    assert result.outputs.shape == (1, 4, 1)
    assert_trees_close(result_tree(result), forward, TORCH_RTOL, "forward")
    ours = case.vjp(cotangents)
    assert_trees_close(list(ours["params"]), grads["params"], TORCH_RTOL, "d params")
    assert_trees_close(list(ours["initial_state"]), grads["initial_state"], TORCH_RTOL, "d initial_state")
    assert_trees_close(ours["x"], grads["x"], TORCH_RTOL, "d x")


@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["float32", "float16"])
def test_low_precision_result_is_the_float64_result_rounded(dtype: type) -> None:
    case = make_case(16, "ifo", 2, layers=2, lengths=[5, 0, 3], mask="single")
    low = {
        "x": case.x.astype(dtype),
        "params": [{k: v.astype(dtype) for k, v in p.items()} for p in case.params],
        "initial_state": [{k: v.astype(dtype) for k, v in s.items()} for s in case.initial_state],
        "zoneout_mask": case.zoneout_mask.astype(dtype),
    }
    got = case.run(**low)
    want = case.run(
        x=low["x"].astype(np.float64),
        params=[{k: v.astype(np.float64) for k, v in p.items()} for p in low["params"]],
        initial_state=[{k: v.astype(np.float64) for k, v in s.items()} for s in low["initial_state"]],
    )
    assert got.outputs.dtype == dtype
    assert got.state[1]["c"].dtype == dtype
    assert got.state[1]["x_prev"].dtype == dtype
    np.testing.assert_array_equal(got.outputs, want.outputs.astype(dtype))
    for k in range(2):
        for name in ("c", "x_prev"):
            np.testing.assert_array_equal(got.state[k][name], want.state[k][name].astype(dtype))


# -- bad calls and untouched inputs -------------------------------------------------------------


def _two_layer_case() -> QCase:
    return make_case(17, "fo", 2, layers=2, lengths=[5, 0, 3], mask="per-layer")


def _with_x_prev(case: QCase, layer: int, x_prev: np.ndarray) -> list[dict[str, np.ndarray]]:
    """The case's initial state with layer ``layer``'s x_prev replaced."""
    state = [dict(s) for s in case.initial_state]
    state[layer]["x_prev"] = x_prev
    return state


BAD_CALLS = [
    pytest.param(lambda c: c.run(zoneout_mask=c.zoneout_mask[0][:, :4]), ShapeError, "zoneout_mask",
                 id="mask-too-short-in-time"),
    pytest.param(lambda c: c.run(zoneout_mask=np.ones((3, 5, 3))), ShapeError, "zoneout_mask",
                 id="mask-too-wide"),
    pytest.param(lambda c: c.run(zoneout_mask=[c.zoneout_mask[0], np.ones((3, 5, 1))]), ShapeError,
                 "zoneout_mask[1]", id="second-layer-mask-misshapen"),
    pytest.param(lambda c: c.run(zoneout_mask=c.zoneout_mask[0].astype(np.float32)), DtypeError, "zoneout_mask",
                 id="mask-of-another-dtype"),
    pytest.param(lambda c: c.run(zoneout_mask=c.zoneout_mask[0] == 1), DtypeError, "zoneout_mask",
                 id="boolean-mask"),
    pytest.param(lambda c: c.run(zoneout_mask=[c.zoneout_mask[0], c.zoneout_mask[1].astype(np.int64)]), DtypeError,
                 "zoneout_mask[1]", id="integer-mask-of-layer-1"),
    pytest.param(lambda c: c.run(zoneout_mask=np.full((3, 5, 2), 1.5)), OptionError, "zoneout_mask",
                 id="mask-values-above-1"),
    pytest.param(lambda c: c.run(zoneout_mask=np.full((3, 5, 2), np.nan)), OptionError, "zoneout_mask",
                 id="mask-values-nan"),
    pytest.param(lambda c: c.run(zoneout_mask=[c.zoneout_mask[0], -c.zoneout_mask[1]]), OptionError,
                 "zoneout_mask[1]", id="negative-ones-in-layer-1"),
    pytest.param(lambda c: c.run(zoneout_mask=[c.zoneout_mask[0]]), ShapeError, "zoneout_mask",
                 id="one-mask-for-two-layers"),
    pytest.param(lambda c: c.run(zoneout_mask=[*c.zoneout_mask, c.zoneout_mask[0]]), ShapeError, "zoneout_mask",
                 id="three-masks-for-two-layers"),
    pytest.param(lambda c: c.run(zoneout_mask=c.zoneout_mask[0].tolist()), ShapeError, "zoneout_mask",
                 id="mask-a-nested-list"),
    pytest.param(lambda c: c.run(zoneout_mask=0.5), ShapeError, "zoneout_mask", id="mask-a-float"),
    pytest.param(lambda c: c.run(mode="x"), OptionError, "mode", id="mode-x"),
    pytest.param(lambda c: c.run(mode="FO"), OptionError, "mode", id="mode-upper-case"),
    pytest.param(lambda c: c.run(mode="ifo"), ParameterError, "params[0]['w']", id="params-of-another-mode"),
    pytest.param(lambda c: c.run(params=[{**c.params[0], "w": c.params[0]["w"][:, :, 0]}, c.params[1]]),
                 ParameterError, "params[0]['w']", id="w-of-rank-2"),
    pytest.param(lambda c: c.run(params=[{**c.params[0], "w": c.params[0]["w"][:5]}, c.params[1]]),
                 ParameterError, "params[0]['w']", id="w-rows-not-3H"),
    pytest.param(lambda c: c.run(params=[c.params[0], {**c.params[1], "w": c.params[1]["w"][:, :1]}]),
                 ParameterError, "params[1]['w']", id="second-layer-w-not-reading-H"),
    pytest.param(lambda c: c.run(initial_state=[{"h": s["c"]} for s in c.initial_state]), ShapeError,
                 "initial_state[0]", id="state-named-h"),
    pytest.param(lambda c: c.run(initial_state=[{"c": s["c"]} for s in c.initial_state]), ShapeError,
                 "initial_state[0]", id="state-without-x_prev"),
    pytest.param(lambda c: c.run(initial_state=_with_x_prev(c, 1, np.zeros((3, 2, 2)))), ShapeError,
                 "initial_state[1]['x_prev']", id="x_prev-of-window-3-for-window-2"),
    pytest.param(lambda c: c.run(initial_state=_with_x_prev(c, 0, np.zeros((3, 1, 2)))), ShapeError,
                 "initial_state[0]['x_prev']", id="x_prev-of-layer-0-not-reading-I"),
    pytest.param(lambda c: c.run(initial_state=_with_x_prev(c, 0, np.zeros((3, 3)))), ShapeError,
                 "initial_state[0]['x_prev']", id="x_prev-of-rank-2"),
    pytest.param(lambda c: c.run(initial_state=_with_x_prev(c, 1, np.zeros((3, 1, 2), np.float32))), DtypeError,
                 "initial_state[1]['x_prev']", id="x_prev-of-another-dtype"),
    pytest.param(lambda c: c.run(x=c.x.astype(np.int64)), DtypeError, "x", id="integer-x"),
]  # fmt: skip


@pytest.mark.parametrize(("call", "error", "argument"), BAD_CALLS)
def test_bad_calls_raise_an_rnnspec_error_naming_the_argument(call: Any, error: type, argument: str) -> None:
    case = _two_layer_case()
    with pytest.raises(error) as info:
        call(case)
    assert isinstance(info.value, CallError)
    assert (info.value.op, info.value.argument) == ("qrnn", argument)
    assert f"argument {argument}:" in str(info.value)


def test_a_good_call_of_the_bad_call_fixture_succeeds() -> None:
    result = _two_layer_case().run()
    assert result.outputs.shape == (3, 5, 2)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_calls_never_modify_their_inputs_and_results_never_alias_them(reverse: bool) -> None:
    case = make_case(18, "ifo", 3, layers=2, lengths=[5, 0, 3], mask="per-layer", reverse=reverse)
    cotangents = cotangents_for(case, 18)
    current = (case.x, case.params, case.initial_state, case.zoneout_mask, case.lengths, cotangents)
    before = deep_copy(current)
    result = case.run()
    grads = case.vjp(cotangents)
    assert_trees_equal(current, before, "inputs")
    fill_leaves([result.outputs, [dict(s) for s in result.state]], 9.0)
    fill_leaves([grads["x"], list(grads["params"]), list(grads["initial_state"])], 9.0)
    assert_trees_equal(current, before, "inputs after writing into the results")
