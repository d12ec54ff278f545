"""The NumPy reference of ``indrnn`` and its primitive ``indrnn_recurrence`` is exact.

Every VJP equals central finite differences and torch autograd of an independent loop; the
forward equals a per-unit loop in plain Python floats and obeys the properties the spec states
(the primitive on W x + b is the layer, chunking, reverse, padding, rows); edge cases and bad
calls behave as the spec says. relu cases keep every valid pre-activation away from the kink.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from helpers import (
    FD_RTOL,
    RELU_MARGIN,
    SEQUENCE_SHAPES,
    TORCH_RTOL,
    assert_relative_close,
    assert_trees_close,
    assert_trees_equal,
    central_difference,
    deep_copy,
    full_lengths,
    leaf,
    numerical_sequence_vjp,
    shape_id,
    step_order,
    valid_steps,
)
from helpers_recurrences import (
    B,
    assert_forward_and_vjp_match_torch,
    assert_missing_cotangents_count_as_zero,
    assert_vjp_matches_central_differences,
    cotangents_for,
    fill_leaves,
    flip_valid_prefix,
    indrnn_params,
    result_tree,
    scalar_indrnn,
    torch_indrnn,
    torch_indrnn_recurrence,
    torch_sequence_vjp,
    uniform_state,
)

import rnnspec.reference as reference
from rnnspec.errors import CallError, DtypeError, OptionError, ParameterError, ShapeError

ACTIVATIONS = ["relu", "tanh"]


@dataclass
class IndCase:
    """One call ``B.indrnn(x, params, activation=..., lengths=..., initial_state=..., reverse=...)``."""

    activation: str
    x: np.ndarray
    params: list[dict[str, np.ndarray]]
    lengths: np.ndarray | None
    initial_state: list[dict[str, np.ndarray]] | None
    reverse: bool

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.x.shape[0], self.x.shape[1], self.params[0]["u"].shape[0]

    def kwargs(self) -> dict[str, Any]:
        return {
            "activation": self.activation,
            "lengths": self.lengths,
            "initial_state": self.initial_state,
            "reverse": self.reverse,
        }

    def state_or_zeros(self) -> list[dict[str, np.ndarray]]:
        batch, _, hidden = self.shape
        if self.initial_state is not None:
            return self.initial_state
        return [{"h": np.zeros((batch, hidden))} for _ in self.params]

    def run(self, **overrides: Any) -> Any:
        kwargs = {**self.kwargs(), **overrides}
        return B.indrnn(kwargs.pop("x", self.x), kwargs.pop("params", self.params), **kwargs)

    def vjp(self, cotangents: dict[str, Any]) -> dict[str, Any]:
        return reference.vjp("indrnn", cotangents, self.x, self.params, **self.kwargs())

    def scalar(self, preactivations: list[float] | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
        batch, time, _ = self.shape
        initial = [s["h"] for s in self.state_or_zeros()]
        lengths = full_lengths(self.lengths, batch, time)
        return scalar_indrnn(self.x, self.params, initial, lengths, self.activation, self.reverse, preactivations)


def make_case(
    seed: int,
    activation: str,
    *,
    layers: int = 1,
    lengths: Any = None,
    with_state: bool = True,
    reverse: bool = False,
    batch: int = 3,
    time: int = 5,
    input_size: int = 3,
    hidden: int = 2,
) -> IndCase:
    """A random case; for relu, redrawn (deterministically) until every valid pre-activation is
    RELU_MARGIN away from 0 and some unit is active, both asserted again here."""
    for attempt in range(200):
        rng = np.random.default_rng([seed, attempt])
        case = IndCase(
            activation=activation,
            x=rng.uniform(-1.0, 1.0, (batch, time, input_size)),
            params=indrnn_params(rng, input_size, hidden, layers),
            lengths=None if lengths is None else np.asarray(lengths, dtype=np.int64),
            initial_state=uniform_state(rng, [{"h": (batch, hidden)}] * layers) if with_state else None,
            reverse=reverse,
        )
        if activation != "relu":
            return case
        pre: list[float] = []
        case.scalar(pre)
        if not pre or (min(abs(a) for a in pre) >= RELU_MARGIN and max(pre) > 0.0):
            return case
    raise AssertionError(f"no relu case {RELU_MARGIN} away from the kink for seed {seed}")


CASES = [
    pytest.param(activation, *shape, id=f"{activation}-{shape_id(*shape)}")
    for activation in ACTIVATIONS
    for shape in SEQUENCE_SHAPES
]


def build(activation: str, layers: int, lengths: Any, with_state: bool, reverse: bool) -> IndCase:
    seed = 500 + 10 * layers + (0 if lengths is None else lengths[0]) + (2 if reverse else 0)
    return make_case(seed, activation, layers=layers, lengths=lengths, with_state=with_state, reverse=reverse)


# -- indrnn: gradients ---------------------------------------------------------------


@pytest.mark.parametrize(("activation", "layers", "lengths", "with_state", "reverse"), CASES)
def test_indrnn_vjp_matches_central_finite_differences(
    activation: str, layers: int, lengths: Any, with_state: bool, reverse: bool
) -> None:
    case = build(activation, layers, lengths, with_state, reverse)
    if activation == "relu":
        pre: list[float] = []
        case.scalar(pre)
        assert min(abs(a) for a in pre) >= RELU_MARGIN
    _, numeric = assert_vjp_matches_central_differences(case, cotangents_for(case, layers))
    assert np.max(np.abs(numeric["params"][0]["u"])) > 1e-3


@pytest.mark.parametrize(("activation", "layers", "lengths", "with_state", "reverse"), CASES)
def test_indrnn_forward_and_vjp_match_torch_autograd(
    activation: str, layers: int, lengths: Any, with_state: bool, reverse: bool
) -> None:
    case = build(activation, layers, lengths, with_state, reverse)
    cotangents = cotangents_for(case, layers + 100)
    batch, time, _ = case.shape
    forward, grads = torch_sequence_vjp(
        torch_indrnn,
        case.x,
        case.params,
        [s["h"] for s in case.state_or_zeros()],
        "h",
        cotangents,
        activation=activation,
        lengths=full_lengths(lengths, batch, time),
        reverse=reverse,
    )
    assert_forward_and_vjp_match_torch(case, cotangents, forward, grads)


def test_indrnn_missing_cotangents_count_as_zero() -> None:
    case = build("tanh", 2, [5, 1, 3], True, False)
    assert_missing_cotangents_count_as_zero(case, cotangents_for(case, 7))


def test_indrnn_vjp_of_a_single_param_mapping_is_a_mapping() -> None:
    case = build("tanh", 1, None, True, False)
    cotangents = cotangents_for(case, 8)
    as_list = case.vjp(cotangents)
    as_mapping = reference.vjp("indrnn", cotangents, case.x, case.params[0], **case.kwargs())
    assert isinstance(as_mapping["params"], dict)
    assert_trees_equal(as_mapping["params"], as_list["params"][0], "params")


def test_relu_has_derivative_zero_at_zero() -> None:
    pre = np.array([[[0.0, 1.0], [0.0, -1.0], [0.5, 0.0]]])  # u = 0: the pre-activation is pre itself
    u = np.zeros(2)
    h = B.indrnn_recurrence(pre, u, activation="relu")
    np.testing.assert_array_equal(h, np.maximum(pre, 0.0))
    grads = reference.vjp("indrnn_recurrence", {"h": np.ones_like(pre)}, pre, u, activation="relu")
    np.testing.assert_array_equal(grads["pre"], (pre > 0).astype(np.float64))


# -- indrnn: forward properties -----------------------------------------------------------


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize(
    ("layers", "lengths", "reverse"),
    [(1, None, False), (2, [4, 0, 2], False), (2, [4, 1, 3], True)],
    ids=["L1-full-forward", "L2-len-forward", "L2-len-reverse"],
)
def test_indrnn_equals_a_per_unit_scalar_python_loop(activation: str, layers: int, lengths: Any, reverse: bool) -> None:
    case = make_case(70 + layers, activation, layers=layers, lengths=lengths, reverse=reverse, time=4, hidden=3)
    outputs, finals = case.scalar()
    result = case.run()
    assert_relative_close(result.outputs, outputs, 1e-13, "outputs")
    assert len(result.state) == layers
    for k in range(layers):
        assert sorted(result.state[k]) == ["h"]
        assert_relative_close(result.state[k]["h"], finals[k], 1e-13, f"state[{k}]")
    assert np.any(outputs != 0.0)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_indrnn_recurrence_on_w_x_plus_b_equals_indrnn(activation: str, reverse: bool) -> None:
    case = make_case(80, activation, lengths=[5, 0, 3], reverse=reverse)
    p = case.params[0]
    pre = case.x @ p["w_ih"].T + p["b_ih"]
    h0 = case.initial_state[0]["h"]
    options = {"activation": activation, "lengths": case.lengths, "reverse": reverse}
    h = B.indrnn_recurrence(pre, p["u"], h0, **options)
    result = case.run()
    assert_relative_close(h, result.outputs, 1e-14, "outputs")
    last = np.maximum(case.lengths - 1, 0) if not reverse else np.zeros(3, dtype=np.int64)
    final = np.where((case.lengths > 0)[:, None], h[np.arange(3), last], h0)
    assert_relative_close(final, result.state[0]["h"], 1e-14, "final state")
    # and the layer's VJP is the primitive's chained through pre = W x + b
    d_h = np.random.default_rng(81).normal(size=h.shape)
    layer = case.vjp({"outputs": d_h})
    prim = reference.vjp("indrnn_recurrence", {"h": d_h}, pre, p["u"], h0, **options)
    assert_relative_close(layer["params"][0]["u"], prim["u"], 1e-13, "d u")
    assert_relative_close(layer["params"][0]["b_ih"], prim["pre"].sum(axis=(0, 1)), 1e-13, "d b_ih")
    assert_relative_close(layer["params"][0]["w_ih"], np.einsum("bth,bti->hi", prim["pre"], case.x), 1e-13, "d w_ih")
    assert_relative_close(layer["x"], prim["pre"] @ p["w_ih"], 1e-13, "d x")
    assert_relative_close(layer["initial_state"][0]["h"], prim["initial"], 1e-13, "d initial")


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_indrnn_chunked_run_with_the_state_carried_equals_the_whole_run(activation: str) -> None:
    case = make_case(90, activation, layers=2, lengths=[7, 2, 0, 5], batch=4, time=7)
    whole = case.run()
    cut = 3
    first = case.run(x=case.x[:, :cut], lengths=np.minimum(case.lengths, cut))
    second = case.run(
        x=case.x[:, cut:], lengths=np.maximum(case.lengths - cut, 0), initial_state=[dict(s) for s in first.state]
    )
    # W x goes through BLAS, whose rounding may depend on the array's shape: equal to 1e-15
    assert_relative_close(np.concatenate([first.outputs, second.outputs], axis=1), whole.outputs, 1e-15, "outputs")
    assert_trees_close(list(second.state), list(whole.state), 1e-15, "state")


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_indrnn_reverse_chunked_runs_the_later_chunk_first(activation: str) -> None:
    case = make_case(91, activation, layers=2, reverse=True, time=6)
    whole = case.run()
    cut = 4
    later = case.run(x=case.x[:, cut:])
    earlier = case.run(x=case.x[:, :cut], initial_state=[dict(s) for s in later.state])
    assert_relative_close(np.concatenate([earlier.outputs, later.outputs], axis=1), whole.outputs, 1e-15, "outputs")
    assert_trees_close(list(earlier.state), list(whole.state), 1e-15, "state")


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_indrnn_reverse_equals_flipping_each_rows_valid_prefix(activation: str) -> None:
    case = make_case(92, activation, layers=2, lengths=[5, 0, 3, 1], batch=4, reverse=True)
    backward = case.run()
    forward = case.run(x=flip_valid_prefix(case.x, case.lengths), reverse=False)
    assert_relative_close(backward.outputs, flip_valid_prefix(forward.outputs, case.lengths), 1e-15, "outputs")
    assert_trees_close(list(backward.state), list(forward.state), 1e-15, "state")


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_indrnn_padding_content_never_changes_the_valid_part_or_the_state(activation: str, reverse: bool) -> None:
    case = make_case(93, activation, layers=2, lengths=[5, 0, 2], reverse=reverse)
    pad = ~valid_steps(case.lengths, 3, 5)
    x2 = case.x.copy()
    x2[pad] = 1e3
    before, after = case.run(), case.run(x=x2)
    assert_trees_close(result_tree(after), result_tree(before), 1e-15, "result")
    assert np.all(before.outputs[pad] == 0.0)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_indrnn_rows_are_independent(reverse: bool) -> None:
    case = make_case(94, "tanh", layers=2, lengths=[5, 2, 0, 4], batch=4, reverse=reverse)
    result = case.run()
    for r in range(4):
        alone = case.run(
            x=case.x[r : r + 1],
            lengths=case.lengths[r : r + 1],
            initial_state=[{"h": s["h"][r : r + 1]} for s in case.initial_state],
        )
        # W x runs through BLAS, whose rounding may depend on the batch size: equal to 1e-15
        assert_relative_close(alone.outputs[0], result.outputs[r], 1e-15, f"outputs of row {r}")
        for k in range(2):
            assert_relative_close(alone.state[k]["h"][0], result.state[k]["h"][r], 1e-15, f"state of row {r}")


# -- indrnn: edge cases -------------------------------------------------------------------


def test_indrnn_a_row_of_length_zero_keeps_its_initial_state_and_outputs_zeros() -> None:
    case = make_case(95, "relu", layers=2, lengths=[0, 5, 3])
    result = case.run()
    assert np.all(result.outputs[0] == 0.0)
    for k in range(2):
        np.testing.assert_array_equal(result.state[k]["h"][0], case.initial_state[k]["h"][0])
    cotangents = cotangents_for(case, 9)
    grads = case.vjp(cotangents)
    assert np.all(grads["x"][0] == 0.0)
    for k in range(2):
        np.testing.assert_array_equal(grads["initial_state"][k]["h"][0], cotangents["state"][k]["h"][0])


@pytest.mark.parametrize("with_state", [False, True], ids=["zeros", "state"])
def test_indrnn_time_zero_returns_the_initial_state(with_state: bool) -> None:
    case = make_case(96, "tanh", layers=2, time=0, with_state=with_state)
    result = case.run()
    assert result.outputs.shape == (3, 0, 2)
    assert_trees_equal([dict(s) for s in result.state], case.state_or_zeros(), "state")
    cotangents = cotangents_for(case, 10)
    grads = case.vjp(cotangents)
    assert grads["x"].shape == (3, 0, 3)
    assert_trees_equal([dict(s) for s in grads["initial_state"]], cotangents["state"], "d initial_state")
    for p in grads["params"]:
        assert all(np.all(v == 0.0) for v in p.values())


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_indrnn_batch_one_and_hidden_size_one_match_the_scalar_loop(activation: str) -> None:
    case = make_case(97, activation, layers=2, batch=1, hidden=1, time=6, input_size=2)
    outputs, finals = case.scalar()
    result = case.run()
    assert result.outputs.shape == (1, 6, 1)
    assert_relative_close(result.outputs, outputs, 1e-13, "outputs")
    assert_relative_close(result.state[1]["h"], finals[1], 1e-13, "state")
    cotangents = cotangents_for(case, 11)
    numeric = numerical_sequence_vjp(
        lambda x, p, s: case.run(x=x, params=p, initial_state=s), case.x, case.params, case.initial_state, cotangents
    )
    grads = case.vjp(cotangents)
    assert_trees_close(list(grads["params"]), numeric["params"], FD_RTOL, "d params")
    assert_trees_close(grads["x"], numeric["x"], FD_RTOL, "d x")


# -- indrnn_recurrence ------------------------------------------------------------------


def make_recurrence(
    seed: int, activation: str, *, batch: int = 3, time: int = 5, hidden: int = 3, with_initial: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """pre, u, initial; for relu, redrawn until every pre-activation (all steps) is RELU_MARGIN from 0."""
    for attempt in range(200):
        rng = np.random.default_rng([seed, attempt])
        pre = rng.uniform(-1.0, 1.0, (batch, time, hidden))
        u = rng.uniform(-1.0, 1.0, (hidden,))
        initial = rng.uniform(-1.0, 1.0, (batch, hidden)) if with_initial else None
        if activation != "relu":
            return pre, u, initial
        # forward and backward sweeps over full rows cover every pre-activation a valid prefix can see
        ok = True
        for reverse in (False, True):
            h = np.zeros((batch, hidden)) if initial is None else initial
            for t in step_order(time, reverse):
                a = pre[:, t] + u * h
                ok = ok and bool(np.min(np.abs(a)) >= RELU_MARGIN)
                h = np.maximum(a, 0.0)
        if ok:
            return pre, u, initial
    raise AssertionError(f"no relu recurrence {RELU_MARGIN} away from the kink for seed {seed}")


RECURRENCE_CASES = [
    pytest.param(activation, lengths, with_initial, reverse, id=f"{activation}-{name}")
    for activation in ACTIVATIONS
    for name, lengths, with_initial, reverse in [
        ("full-zeros-forward", None, False, False),
        ("full-initial-reverse", None, True, True),
    ]
] + [
    # rows of variable length: tanh, where the kink margin of a partial row needs no extra care
    pytest.param("tanh", [0, 5, 3], True, False, id="tanh-len-initial-forward"),
    pytest.param("tanh", [5, 0, 2], True, True, id="tanh-len-initial-reverse"),
]


def recurrence_pre_activations(
    pre: np.ndarray, u: np.ndarray, initial: np.ndarray | None, lengths: Any, reverse: bool
) -> np.ndarray:
    batch, time, hidden = pre.shape
    out = []
    for b, n in enumerate(full_lengths(lengths, batch, time)):
        h = np.zeros(hidden) if initial is None else initial[b]
        for t in step_order(n, reverse):
            a = pre[b, t] + u * h
            out.append(a)
            h = np.maximum(a, 0.0)
    return np.concatenate(out) if out else np.zeros(0)


@pytest.mark.parametrize(("activation", "lengths", "with_initial", "reverse"), RECURRENCE_CASES)
def test_indrnn_recurrence_vjp_matches_central_finite_differences(
    activation: str, lengths: Any, with_initial: bool, reverse: bool
) -> None:
    pre, u, initial = make_recurrence(100, activation, with_initial=with_initial)
    if activation == "relu":
        a = recurrence_pre_activations(pre, u, initial, lengths, reverse)
        assert np.min(np.abs(a)) >= RELU_MARGIN
        assert np.max(a) > 0.0
    options = {
        "activation": activation,
        "lengths": None if lengths is None else np.asarray(lengths),
        "reverse": reverse,
    }
    cot = np.random.default_rng(101).normal(size=pre.shape)
    grads = reference.vjp("indrnn_recurrence", {"h": cot}, pre, u, initial, **options)
    assert sorted(grads) == ["initial", "pre", "u"]
    pre_, u_ = pre.copy(), u.copy()
    h0_ = np.zeros((3, 3)) if initial is None else initial.copy()

    def loss() -> float:
        return float(np.sum(cot * B.indrnn_recurrence(pre_, u_, h0_, **options)))

    assert_relative_close(grads["pre"], central_difference(loss, pre_), FD_RTOL, "d pre")
    assert_relative_close(grads["u"], central_difference(loss, u_), FD_RTOL, "d u")
    assert_relative_close(grads["initial"], central_difference(loss, h0_), FD_RTOL, "d initial")
    assert np.max(np.abs(grads["u"])) > 1e-3
    assert np.all(grads["pre"][~valid_steps(lengths, 3, 5)] == 0.0)


@pytest.mark.parametrize(("activation", "lengths", "with_initial", "reverse"), RECURRENCE_CASES)
def test_indrnn_recurrence_forward_and_vjp_match_torch_autograd(
    activation: str, lengths: Any, with_initial: bool, reverse: bool
) -> None:
    pre, u, initial = make_recurrence(110, activation, with_initial=with_initial)
    options = {
        "activation": activation,
        "lengths": None if lengths is None else np.asarray(lengths),
        "reverse": reverse,
    }
    cot = np.random.default_rng(111).normal(size=pre.shape)
    h = B.indrnn_recurrence(pre, u, initial, **options)
    grads = reference.vjp("indrnn_recurrence", {"h": cot}, pre, u, initial, **options)
    tpre, tu, th0 = leaf(pre), leaf(u), leaf(np.zeros((3, 3)) if initial is None else initial)
    out = torch_indrnn_recurrence(tpre, tu, th0, activation, full_lengths(lengths, 3, 5), reverse)
    (out * torch.from_numpy(cot)).sum().backward()
    assert_relative_close(h, out.detach().numpy(), TORCH_RTOL, "h")
    assert_relative_close(grads["pre"], tpre.grad.numpy(), TORCH_RTOL, "d pre")
    assert_relative_close(grads["u"], tu.grad.numpy(), TORCH_RTOL, "d u")
    assert_relative_close(grads["initial"], th0.grad.numpy(), TORCH_RTOL, "d initial")


def test_indrnn_recurrence_chunked_run_with_the_state_carried_equals_the_whole_run() -> None:
    pre, u, initial = make_recurrence(120, "tanh", time=7)
    lengths = np.array([7, 0, 4])
    whole = B.indrnn_recurrence(pre, u, initial, activation="tanh", lengths=lengths)
    cut = 5
    n1 = np.minimum(lengths, cut)
    first = B.indrnn_recurrence(pre[:, :cut], u, initial, activation="tanh", lengths=n1)
    carried = np.where((n1 > 0)[:, None], first[np.arange(3), np.maximum(n1 - 1, 0)], initial)
    second = B.indrnn_recurrence(pre[:, cut:], u, carried, activation="tanh", lengths=np.maximum(lengths - cut, 0))
    np.testing.assert_array_equal(np.concatenate([first, second], axis=1), whole)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_indrnn_recurrence_reverse_equals_flipping_each_rows_valid_prefix(activation: str) -> None:
    pre, u, initial = make_recurrence(121, activation)
    lengths = np.array([5, 0, 2])
    backward = B.indrnn_recurrence(pre, u, initial, activation=activation, lengths=lengths, reverse=True)
    forward = B.indrnn_recurrence(flip_valid_prefix(pre, lengths), u, initial, activation=activation, lengths=lengths)
    np.testing.assert_array_equal(backward, flip_valid_prefix(forward, lengths))


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_indrnn_recurrence_padding_content_and_other_rows_never_matter(reverse: bool) -> None:
    pre, u, initial = make_recurrence(122, "tanh", batch=4)
    lengths = np.array([5, 0, 3, 1])
    options = {"activation": "tanh", "lengths": lengths, "reverse": reverse}
    h = B.indrnn_recurrence(pre, u, initial, **options)
    pad = ~valid_steps(lengths, 4, 5)
    pre2 = pre.copy()
    pre2[pad] = -1e3
    np.testing.assert_array_equal(B.indrnn_recurrence(pre2, u, initial, **options), h)
    assert np.all(h[pad] == 0.0)
    for r in range(4):
        alone = B.indrnn_recurrence(
            pre[r : r + 1], u, initial[r : r + 1], activation="tanh", lengths=lengths[r : r + 1], reverse=reverse
        )
        np.testing.assert_array_equal(alone[0], h[r])


def test_indrnn_recurrence_edge_cases_time_zero_batch_one_hidden_one() -> None:
    pre, u, initial = make_recurrence(123, "tanh", time=0)
    h = B.indrnn_recurrence(pre, u, initial, activation="tanh")
    assert h.shape == (3, 0, 3)
    grads = reference.vjp("indrnn_recurrence", {"h": h}, pre, u, initial, activation="tanh")
    assert grads["pre"].shape == (3, 0, 3)
    assert np.all(grads["u"] == 0.0)
    assert np.all(grads["initial"] == 0.0)
    pre, u, initial = make_recurrence(124, "tanh", batch=1, hidden=1)
    h = B.indrnn_recurrence(pre, u, initial, activation="tanh")
    state = float(initial[0, 0])
    for t in range(5):
        state = float(np.tanh(float(pre[0, t, 0]) + float(u[0]) * state))
        assert h[0, t, 0] == pytest.approx(state, rel=1e-15, abs=1e-15)


# -- bad calls and untouched inputs ----------------------------------------------------------


def _recurrence_args() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pre, u, initial = make_recurrence(130, "tanh")
    assert initial is not None
    return pre, u, initial


RECURRENCE_BAD_CALLS = [
    pytest.param(lambda p, u, h: B.indrnn_recurrence(p, u[:2], h), ShapeError, "u", id="u-too-short"),
    pytest.param(lambda p, u, h: B.indrnn_recurrence(p, u[None], h), ShapeError, "u", id="u-of-rank-2"),
    pytest.param(lambda p, u, h: B.indrnn_recurrence(p, u, h[:, :2]), ShapeError, "initial", id="initial-too-narrow"),
    pytest.param(lambda p, u, h: B.indrnn_recurrence(p, u, h[:1]), ShapeError, "initial", id="initial-wrong-batch"),
    pytest.param(lambda p, u, h: B.indrnn_recurrence(p[0], u, h), ShapeError, "pre", id="pre-of-rank-2"),
    pytest.param(lambda p, u, h: B.indrnn_recurrence(p.astype(np.int32), u, h), DtypeError, "pre", id="integer-pre"),
    pytest.param(
        lambda p, u, h: B.indrnn_recurrence(p, u.astype(np.float32), h), DtypeError, "u", id="u-of-another-dtype"
    ),
    pytest.param(lambda p, u, h: B.indrnn_recurrence(p, list(u), h), DtypeError, "u", id="u-a-list"),
    pytest.param(
        lambda p, u, h: B.indrnn_recurrence(p, u, h, activation="sigmoid"), OptionError, "activation", id="activation"
    ),
]


@pytest.mark.parametrize(("call", "error", "argument"), RECURRENCE_BAD_CALLS)
def test_bad_indrnn_recurrence_calls_raise_an_rnnspec_error_naming_the_argument(
    call: Any, error: type, argument: str
) -> None:
    with pytest.raises(error) as info:
        call(*_recurrence_args())
    assert isinstance(info.value, CallError)
    assert (info.value.op, info.value.argument) == ("indrnn_recurrence", argument)
    assert f"argument {argument}:" in str(info.value)


INDRNN_BAD_CALLS = [
    pytest.param(lambda c: c.run(params=[{**c.params[0], "u": c.params[0]["u"][:1]}]), ParameterError,
                 "params[0]['u']", id="u-too-short"),
    pytest.param(lambda c: c.run(params=[{**c.params[0], "u": c.params[0]["u"][None]}]), ParameterError,
                 "params[0]['u']", id="u-of-rank-2"),
    pytest.param(lambda c: c.run(params=[{k: v for k, v in c.params[0].items() if k != "u"}]), ParameterError,
                 "params[0]", id="u-missing"),
    pytest.param(lambda c: c.run(activation="gelu"), OptionError, "activation", id="activation"),
    pytest.param(lambda c: c.run(initial_state=[{"h": c.initial_state[0]["h"][:, :1]}]), ShapeError,
                 "initial_state[0]['h']", id="initial-state-too-narrow"),
    pytest.param(lambda c: c.run(initial_state=[{"c": c.initial_state[0]["h"]}]), ShapeError,
                 "initial_state[0]", id="initial-state-wrong-key"),
]  # fmt: skip


@pytest.mark.parametrize(("call", "error", "argument"), INDRNN_BAD_CALLS)
def test_bad_indrnn_calls_raise_an_rnnspec_error_naming_the_argument(call: Any, error: type, argument: str) -> None:
    case = make_case(131, "tanh")
    with pytest.raises(error) as info:
        call(case)
    assert isinstance(info.value, CallError)
    assert (info.value.op, info.value.argument) == ("indrnn", argument)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_calls_never_modify_their_inputs_and_results_never_alias_them(reverse: bool) -> None:
    case = make_case(132, "relu", layers=2, lengths=[5, 0, 3], reverse=reverse)
    cotangents = cotangents_for(case, 12)
    before = deep_copy((case.x, case.params, case.initial_state, case.lengths, cotangents))
    result = case.run()
    grads = case.vjp(cotangents)
    current = (case.x, case.params, case.initial_state, case.lengths, cotangents)
    assert_trees_equal(current, before, "inputs")
    fill_leaves([result.outputs, [dict(s) for s in result.state]], 9.0)
    fill_leaves([grads["x"], list(grads["params"]), list(grads["initial_state"])], 9.0)
    assert_trees_equal(current, before, "inputs after writing into the results")

    pre, u, initial = _recurrence_args()
    lengths = np.array([5, 0, 3])
    cot = np.ones_like(pre)
    before = deep_copy((pre, u, initial, lengths, cot))
    h = B.indrnn_recurrence(pre, u, initial, lengths=lengths, reverse=reverse)
    prim = reference.vjp("indrnn_recurrence", {"h": cot}, pre, u, initial, lengths=lengths, reverse=reverse)
    assert_trees_equal((pre, u, initial, lengths, cot), before, "primitive inputs")
    h[...] = 9.0
    for v in prim.values():
        v[...] = 9.0
    assert_trees_equal((pre, u, initial, lengths, cot), before, "primitive inputs after writing into the results")
