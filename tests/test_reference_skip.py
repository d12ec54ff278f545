"""The NumPy reference of ``skip_rnn``, ``skip_lstm`` and ``skip_gru`` is exact.

Its forward equals an independent row-by-row loop; its VJP equals torch autograd of that
loop with the straight-through binarisation ``u = u~ + detach(bin(u~) - u~)`` within 1e-10,
and central differences of the smooth function ``u = u~ + c`` (c frozen at the base point:
same value, straight-through derivative) within 1e-7. Targeted tests pin the conventions at
the discrete points (straight-through, ties at 1/2); properties (an open gate is the base
cell, padding, chunking, rows), edge cases, the budget loss, ``init_params`` and bad calls
behave as the spec says.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from helpers import (
    EPS,
    FD_RTOL,
    TORCH_RTOL,
    assert_relative_close,
    assert_trees_close,
    assert_trees_equal,
    central_difference,
    valid_steps,
    variant_id,
)
from helpers_adaptive import (
    GATE_STATE,
    MARGIN,
    SKIP_VARIANTS,
    STATE_NAMES,
    TORCH,
    B,
    SkipCase,
    Trace,
    assert_fields_match,
    cell_params,
    fields_of,
    inner_product,
    make_skip_case,
    reference_vjp,
    skip_cotangents,
    skip_forward,
    skip_margins,
    skip_params,
    take_rows,
    torch_vjp,
)

import rnnspec
import rnnspec.reference as reference
from rnnspec.errors import OptionError, ParameterError, ShapeError
from rnnspec.results import SkipResult

#: (layers, lengths, given initial state, reverse, trainable h0/c0): stacks, 0-length and full rows.
SHAPES = [
    (1, None, False, False, False),
    (3, [0, 5, 3], True, False, False),
    (2, [5, 0, 2], True, True, False),
    (2, [3, 5, 0], False, True, True),
    (1, [5, 1, 4], False, False, True),
]
CASES = [
    pytest.param(
        variant,
        *shape,
        id=f"{variant_id(variant)}-L{shape[0]}-{'len' if shape[1] else 'full'}-{'state' if shape[2] else 'default'}"
        f"-{'reverse' if shape[3] else 'forward'}{'-h0' if shape[4] else ''}",
    )
    for variant in SKIP_VARIANTS
    for shape in SHAPES
]
ARGS = ("variant", "layers", "lengths", "with_state", "reverse", "trainable")


def build_case(
    variant: tuple[str, dict[str, Any]], layers: int, lengths: Any, with_state: bool, reverse: bool, trainable: bool
) -> SkipCase:
    op, options = variant
    seed = 3000 + 10 * layers + (0 if lengths is None else lengths[0]) + 2 * reverse + 4 * trainable
    case = make_skip_case(
        seed,
        op,
        options,
        layers=layers,
        lengths=lengths,
        with_state=with_state,
        reverse=reverse,
        trainable_initial_state=trainable,
    )
    assert min(skip_margins(case)) >= MARGIN
    return case


# -- forward and reverse mode against independent implementations ------------------------


@pytest.mark.parametrize(ARGS, CASES)
def test_forward_matches_an_independent_row_by_row_loop(
    variant: tuple[str, dict[str, Any]], layers: int, lengths: Any, with_state: bool, reverse: bool, trainable: bool
) -> None:
    case = build_case(variant, layers, lengths, with_state, reverse, trainable)
    result = case.run()
    assert isinstance(result, SkipResult)
    assert_fields_match(result, case.loop(), 1e-12, "reference vs loop")
    batch, time, _ = case.shape
    valid = valid_steps(case.lengths, batch, time)
    gate = result.update_gate
    assert set(np.unique(gate[valid])) == {0.0, 1.0}, "the case must both update and skip"
    assert np.all(gate[~valid] == 0.0)
    assert np.all(result.update_prob[~valid] == 0.0)
    assert np.all(result.outputs[~valid] == 0.0)
    # u = 1 exactly where u~ >= 1/2
    np.testing.assert_array_equal(gate[valid], (result.update_prob[valid] >= 0.5).astype(np.float64))
    assert [sorted(s) for s in result.state] == [sorted(STATE_NAMES[case.base])] * (layers - 1) + [
        sorted([*STATE_NAMES[case.base], *GATE_STATE])
    ]


@pytest.mark.parametrize(ARGS, CASES)
def test_vjp_matches_torch_autograd_with_a_straight_through_binarisation(
    variant: tuple[str, dict[str, Any]], layers: int, lengths: Any, with_state: bool, reverse: bool, trainable: bool
) -> None:
    case = build_case(variant, layers, lengths, with_state, reverse, trainable)
    cotangents = skip_cotangents(np.random.default_rng(layers + 7), case)
    torch_result, torch_grads = torch_vjp(case, cotangents)
    assert_fields_match(case.run(), torch_result, 1e-12, "reference vs torch forward")
    grads = reference_vjp(case, cotangents)
    assert_trees_close(grads, torch_grads, TORCH_RTOL, "vjp")
    assert np.any(grads["params"][-1]["w_gate"] != 0.0)
    if trainable and not with_state:
        assert all(np.any(p["h0"] != 0.0) for p in grads["params"])
    # steps past a row's length receive no gradient
    batch, time, _ = case.shape
    assert np.all(grads["x"][~valid_steps(case.lengths, batch, time)] == 0.0)


@pytest.mark.parametrize(ARGS, CASES)
def test_vjp_matches_central_differences_of_the_frozen_offset_function(
    variant: tuple[str, dict[str, Any]], layers: int, lengths: Any, with_state: bool, reverse: bool, trainable: bool
) -> None:
    case = build_case(variant, layers, lengths, with_state, reverse, trainable)
    u_margin, min_margin, relu_margin = skip_margins(case)
    assert u_margin >= MARGIN
    assert min_margin >= MARGIN
    assert relu_margin >= MARGIN
    trace = Trace()
    case.loop(trace=trace)
    offsets = trace.offsets
    # the frozen function has the op's value at the base point
    assert_fields_match(case.loop(offsets=offsets), case.run(), 1e-12, "frozen vs reference")
    cotangents = skip_cotangents(np.random.default_rng(layers + 11), case)
    x = case.x.copy()
    params = [{k: v.copy() for k, v in p.items()} for p in case.params]
    state = None if case.initial_state is None else [{k: v.copy() for k, v in s.items()} for s in case.initial_state]

    def loss() -> float:
        return float(inner_product(cotangents, case.loop(x=x, params=params, initial_state=state, offsets=offsets)))

    numeric: dict[str, Any] = {
        "x": central_difference(loss, x, EPS),
        "params": [{k: central_difference(loss, v, EPS) for k, v in p.items()} for p in params],
    }
    grads = dict(reference_vjp(case, cotangents))
    if state is None:
        # the defaults are constants; their cotangents are checked against torch
        del grads["initial_state"]
    else:
        numeric["initial_state"] = [{k: central_difference(loss, v, EPS) for k, v in s.items()} for s in state]
    assert np.max(np.abs(numeric["x"])) > 1e-3
    assert np.max(np.abs(numeric["params"][-1]["w_gate"])) > 1e-6
    assert_trees_close(grads, numeric, FD_RTOL, "vjp vs central differences")


# -- the conventions at the discrete points -------------------------------------------------


def two_step_case() -> tuple[SkipCase, float, np.ndarray]:
    """skip_rnn, one row, two steps, default initial state: u_1 = 1; returns (case, du~_1, candidate h_1)."""
    rng = np.random.default_rng(5)
    params = skip_params(rng, "skip_rnn", 2, 3, 1)
    case = SkipCase("skip_rnn", {"activation": "tanh"}, rng.uniform(-1.0, 1.0, (1, 2, 2)), params)
    p = params[0]
    h1 = np.tanh(p["w_ih"] @ case.x[0, 0] + p["b_ih"] + p["b_hh"])  # h_0 = 0
    du1 = float(1.0 / (1.0 + np.exp(-(p["w_gate"] @ h1 + p["b_gate"])[0])))
    return case, du1, h1


def test_an_update_gate_cotangent_reaches_the_gate_params_only_through_straight_through() -> None:
    # u~_2 = cum_1 + min(update_prob_1, 1 - cum_1) = 0 + du~_1 after the update u_1 = 1, and the
    # gate parameters act on nothing else that the update_gate field reads: without the
    # straight-through estimator (d u / d u~ = 0) their gradient would be zero.
    case, du1, h1 = two_step_case()
    result = case.run()
    np.testing.assert_array_equal(result.update_gate, [[1.0, float(du1 >= 0.5)]])
    np.testing.assert_allclose(result.update_prob, [[1.0, du1]], rtol=1e-14)
    grads = reference_vjp(case, {"update_gate": np.array([[0.0, 1.0]])})
    slope = du1 * (1.0 - du1)
    assert slope > 0.1
    assert_relative_close(grads["params"][0]["b_gate"], [slope], 1e-13, "d b_gate")
    assert_relative_close(grads["params"][0]["w_gate"], slope * h1[None, :], 1e-13, "d w_gate")
    # d u_1 = (du~_1 - update_prob_0) - u~_1 = du~_1 - 2 reaches u~_1 (ST again) and, through
    # min's tie at the defaults (1 <= 1 - 0 sends it to update_prob), both gate entries.
    gate_state = grads["initial_state"][0]
    assert_relative_close(gate_state["update_prob"], [[du1 - 2.0]], 1e-13, "d update_prob_0")
    assert_relative_close(gate_state["cum_update_prob"], [[du1 - 2.0]], 1e-13, "d cum_0")
    # a cotangent on u~_2 (the update_prob field) is the same as one on u_2
    via_prob = reference_vjp(case, {"update_prob": np.array([[0.0, 1.0]])})
    assert_trees_close(via_prob, grads, 1e-14, "update_prob field vs update_gate field")


def test_the_first_update_gate_depends_on_the_initial_gate_state_alone() -> None:
    case, _, _ = two_step_case()
    grads = reference_vjp(case, {"update_gate": np.array([[1.0, 0.0]])})
    for name, value in grads["params"][0].items():
        assert np.all(value == 0.0), name
    assert np.all(grads["x"] == 0.0)
    assert_relative_close(grads["initial_state"][0]["update_prob"], [[1.0]], 0.0, "d update_prob_0")
    assert_relative_close(grads["initial_state"][0]["cum_update_prob"], [[1.0]], 0.0, "d cum_0")


def test_u_tilde_exactly_one_half_updates_and_just_below_skips() -> None:
    rng = np.random.default_rng(6)
    params = skip_params(rng, "skip_rnn", 2, 3, 1)
    x = rng.uniform(-1.0, 1.0, (4, 1, 2))
    h_prev = rng.uniform(-1.0, 1.0, (4, 3))
    below = float(np.nextafter(0.5, 0.0))
    # u~ = cum + min(update_prob, 1 - cum): 0.5, 0.25 + 0.25, just below 0.5, and 0 + 1 (the defaults)
    prob = np.array([[0.5], [0.25], [below], [1.0]])
    cum = np.array([[0.0], [0.25], [0.0], [0.0]])
    state = [{"h": h_prev, "update_prob": prob, "cum_update_prob": cum}]
    result = B.skip_rnn(x, params, initial_state=state)
    np.testing.assert_array_equal(result.update_prob[:, 0], [0.5, 0.5, below, 1.0])
    np.testing.assert_array_equal(result.update_gate[:, 0], [1.0, 1.0, 0.0, 1.0])  # ties go up, not to even
    p = params[0]
    cand = np.tanh(x[:, 0] @ p["w_ih"].T + p["b_ih"] + h_prev @ p["w_hh"].T + p["b_hh"])
    du = 1.0 / (1.0 + np.exp(-(cand @ p["w_gate"].T + p["b_gate"])))
    final = result.state[0]
    updated = [0, 1, 3]
    np.testing.assert_allclose(final["h"][updated], cand[updated], rtol=1e-14)
    np.testing.assert_array_equal(final["h"][2], h_prev[2])  # a skip copies the state
    np.testing.assert_allclose(final["update_prob"][updated], du[updated], rtol=1e-14)
    np.testing.assert_array_equal(final["cum_update_prob"][updated], 0.0)
    np.testing.assert_array_equal(final["update_prob"][2], [below])
    np.testing.assert_array_equal(final["cum_update_prob"][2], [below])


# -- properties ---------------------------------------------------------------------------


BASE_OPS = {"skip_rnn": "rnn", "skip_lstm": "lstm", "skip_gru": "gru"}


@pytest.mark.parametrize(("with_h0", "reverse"), [(False, False), (True, True)], ids=["zeros-forward", "h0-reverse"])
@pytest.mark.parametrize("variant", SKIP_VARIANTS, ids=variant_id)
def test_a_gate_forced_open_is_the_stacked_base_cell(
    variant: tuple[str, dict[str, Any]], with_h0: bool, reverse: bool
) -> None:
    op, options = variant
    rng = np.random.default_rng(7)
    params = skip_params(rng, op, 3, 2, 2, trainable_initial_state=with_h0)
    params[-1]["b_gate"] = np.array([100.0])  # du~ = sigmoid(100 + w . g) rounds to 1: u~ = 1 at every step
    x = rng.uniform(-1.0, 1.0, (3, 4, 3))
    lengths = np.array([4, 0, 2])
    result = getattr(B, op)(x, params, **options, lengths=lengths, reverse=reverse)
    base_params = [{k: v for k, v in p.items() if k in ("w_ih", "w_hh", "b_ih", "b_hh")} for p in params]
    names = STATE_NAMES[op.removeprefix("skip_")]
    base_state = [{n: np.tile(p[f"{n}0"], (3, 1)) if with_h0 else np.zeros((3, 2)) for n in names} for p in params]
    base = getattr(B, BASE_OPS[op])(
        x, base_params, **options, lengths=lengths, initial_state=base_state, reverse=reverse
    )
    valid = valid_steps(lengths, 3, 4)
    np.testing.assert_array_equal(result.update_gate, valid.astype(np.float64))
    np.testing.assert_array_equal(result.update_prob, valid.astype(np.float64))
    np.testing.assert_allclose(result.outputs, base.outputs, rtol=0, atol=1e-15)
    for k in range(2):
        for n in names:
            np.testing.assert_allclose(result.state[k][n], base.state[k][n], rtol=0, atol=1e-15)
    np.testing.assert_array_equal(result.state[-1]["update_prob"], np.ones((3, 1)))
    np.testing.assert_array_equal(result.state[-1]["cum_update_prob"], np.zeros((3, 1)))


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("variant", SKIP_VARIANTS, ids=variant_id)
def test_padding_content_never_changes_the_valid_part_or_its_gradient(
    variant: tuple[str, dict[str, Any]], reverse: bool
) -> None:
    case = build_case(variant, 2, [5, 0, 2], True, reverse, False)
    padded = case.x.copy()
    valid = valid_steps(case.lengths, 3, 5)
    padded[~valid] = np.random.default_rng(8).uniform(-5.0, 5.0, padded[~valid].shape)
    assert_trees_equal(fields_of(case.run(x=padded)), fields_of(case.run()), "result")
    cotangents = skip_cotangents(np.random.default_rng(9), case)
    other = SkipCase(case.op, case.options, padded, case.params, case.lengths, case.initial_state, reverse)
    assert_trees_equal(reference_vjp(other, cotangents), reference_vjp(case, cotangents), "vjp")


@pytest.mark.parametrize("split", [1, 3])
@pytest.mark.parametrize("variant", SKIP_VARIANTS, ids=variant_id)
def test_a_chunked_run_carrying_the_gate_state_equals_the_whole_run(
    variant: tuple[str, dict[str, Any]], split: int
) -> None:
    case = build_case(variant, 2, [5, 0, 2], False, False, True)
    whole = fields_of(case.run())
    lengths = case.lengths
    first = case.run(x=case.x[:, :split], lengths=np.minimum(lengths, split))
    second = case.run(x=case.x[:, split:], lengths=np.maximum(lengths - split, 0), initial_state=first.state)
    np.testing.assert_array_equal(np.concatenate([first.outputs, second.outputs], axis=1), whole["outputs"])
    for name in ("update_gate", "update_prob"):
        np.testing.assert_array_equal(
            np.concatenate([getattr(first, name), getattr(second, name)], axis=1), whole[name]
        )
    assert_trees_equal(fields_of(second)["state"], whole["state"], "final state")
    carried = first.state[-1]
    assert np.any(carried["update_prob"] != 1.0) or np.any(carried["cum_update_prob"] != 0.0), "trivial gate state"


@pytest.mark.parametrize("variant", SKIP_VARIANTS, ids=variant_id)
def test_a_reversed_run_is_the_reversed_second_chunk_then_the_reversed_first(
    variant: tuple[str, dict[str, Any]],
) -> None:
    case = build_case(variant, 1, None, True, True, False)
    whole = case.run()
    late = case.run(x=case.x[:, 2:])
    early = case.run(x=case.x[:, :2], initial_state=late.state)
    np.testing.assert_array_equal(np.concatenate([early.outputs, late.outputs], axis=1), whole.outputs)
    np.testing.assert_array_equal(np.concatenate([early.update_gate, late.update_gate], axis=1), whole.update_gate)
    assert_trees_equal(fields_of(early)["state"], fields_of(whole)["state"], "final state")


@pytest.mark.parametrize("variant", SKIP_VARIANTS, ids=variant_id)
def test_rows_are_independent(variant: tuple[str, dict[str, Any]]) -> None:
    case = build_case(variant, 2, [5, 0, 2], True, True, False)
    whole = fields_of(case.run())
    cotangents = skip_cotangents(np.random.default_rng(10), case)
    grads = reference_vjp(case, cotangents)
    for b in range(3):
        rows = slice(b, b + 1)
        alone = case.run(x=case.x[rows], lengths=case.lengths[rows], initial_state=take_rows(case.initial_state, rows))
        assert_trees_close(fields_of(alone), take_rows(whole, rows), 1e-13, f"row {b}")
        row_state = take_rows(case.initial_state, rows)
        row_case = SkipCase(case.op, case.options, case.x[rows], case.params, case.lengths[rows], row_state, True)
        row_grads = reference_vjp(row_case, take_rows(cotangents, rows))
        assert_trees_close(row_grads["x"], grads["x"][rows], 1e-13, f"d x row {b}")
        assert_trees_close(row_grads["initial_state"], take_rows(grads["initial_state"], rows), 1e-13, f"row {b}")


# -- edge cases -----------------------------------------------------------------------------


@pytest.mark.parametrize("variant", SKIP_VARIANTS, ids=variant_id)
def test_time_zero_returns_the_initial_state_and_passes_its_cotangent_through(
    variant: tuple[str, dict[str, Any]],
) -> None:
    case = build_case(variant, 2, None, False, False, True)
    x = np.zeros((3, 0, 3))
    result = case.run(x=x)
    assert result.outputs.shape == (3, 0, 2)
    assert result.update_gate.shape == result.update_prob.shape == (3, 0)
    assert_trees_equal(fields_of(result)["state"], case.default_state(), "state of the defaults")
    given = case.default_state()
    given[-1]["update_prob"] = np.full((3, 1), 0.3)
    assert_trees_equal(fields_of(case.run(x=x, initial_state=given))["state"], given, "given state")
    rng = np.random.default_rng(12)
    cot_state = [{k: rng.normal(size=v.shape) for k, v in s.items()} for s in given]
    grads = reference.vjp(case.op, {"state": cot_state}, x, case.params, **case.options)
    assert_trees_equal(list(grads["initial_state"]), cot_state, "d initial_state")
    assert grads["x"].shape == (3, 0, 3)
    for p, d, c in zip(case.params, grads["params"], cot_state, strict=True):
        for name in p:
            if name in ("h0", "c0"):
                np.testing.assert_allclose(d[name], c[name[0]].sum(axis=0), rtol=1e-15)
            else:
                assert np.all(d[name] == 0.0), name


@pytest.mark.parametrize("variant", SKIP_VARIANTS, ids=variant_id)
def test_a_row_of_length_zero_keeps_its_initial_state_and_zero_fields(variant: tuple[str, dict[str, Any]]) -> None:
    case = build_case(variant, 2, [0, 5, 3], True, False, False)
    result = fields_of(case.run())
    assert_trees_equal(take_rows(result["state"], [0]), take_rows(case.initial_state, [0]), "row 0 state")
    for name in ("outputs", "update_gate", "update_prob"):
        assert np.all(result[name][0] == 0.0), name


@pytest.mark.parametrize("variant", SKIP_VARIANTS, ids=variant_id)
def test_batch_one_and_hidden_size_one_match_the_loop_and_torch(variant: tuple[str, dict[str, Any]]) -> None:
    op, options = variant
    case = make_skip_case(40, op, options, batch=1, time=6, input_size=2, hidden=1, layers=2, with_state=True)
    result = case.run()
    assert result.outputs.shape == (1, 6, 1)
    assert result.state[-1]["update_prob"].shape == (1, 1)
    assert_fields_match(result, case.loop(), 1e-12, "loop")
    cotangents = skip_cotangents(np.random.default_rng(11), case)
    _, torch_grads = torch_vjp(case, cotangents)
    assert_trees_close(reference_vjp(case, cotangents), torch_grads, TORCH_RTOL, "vjp")


# -- the budget loss ------------------------------------------------------------------------


def test_budget_loss_is_lambda_times_the_batch_mean_of_the_update_count() -> None:
    gate = np.array([[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    loss = rnnspec.skip_budget_loss(gate, 1e-4)
    assert isinstance(loss, np.ndarray | np.floating)
    assert float(loss) == pytest.approx(1e-4 * (3 + 1 + 4) / 3, rel=1e-15)
    assert float(rnnspec.skip_budget_loss(gate, 0)) == 0.0
    torch_loss = rnnspec.skip_budget_loss(torch.from_numpy(gate), 1e-4)
    assert isinstance(torch_loss, torch.Tensor)
    assert torch_loss.shape == ()
    assert float(torch_loss) == pytest.approx(1e-4 * 8 / 3, rel=1e-15)
    result = build_case(SKIP_VARIANTS[2], 1, [5, 1, 4], False, False, True).run()
    expected = 0.5 * result.update_gate.sum() / 3
    assert float(rnnspec.skip_budget_loss(result.update_gate, 0.5)) == pytest.approx(expected, rel=1e-15)


def test_budget_loss_gradient_reaches_the_gate_through_straight_through_end_to_end_in_torch() -> None:
    case = build_case(SKIP_VARIANTS[0], 2, [5, 1, 4], False, False, True)
    lam = 0.25
    x = torch.tensor(case.x, requires_grad=True)
    params = [{k: torch.tensor(v, requires_grad=True) for k, v in p.items()} for p in case.params]
    out = skip_forward(TORCH, case.op, case.options, x, params, case.lengths, None, False)
    loss = rnnspec.skip_budget_loss(out["update_gate"], lam)
    loss.backward()
    w_gate = params[-1]["w_gate"].grad
    assert w_gate is not None
    assert torch.any(w_gate != 0)
    # the same gradient as the reference's VJP with the loss's cotangent lambda / batch on every u_t
    grads = reference_vjp(case, {"update_gate": np.full((3, 5), lam / 3)})
    assert_relative_close(x.grad.numpy(), grads["x"], TORCH_RTOL, "d x")
    for p, d in zip(params, grads["params"], strict=True):
        for name, value in p.items():
            assert_relative_close(value.grad.numpy(), d[name], TORCH_RTOL, f"d {name}")


@pytest.mark.parametrize("shape", [(5,), (2, 3, 1), ()])
def test_budget_loss_refuses_an_update_gate_not_of_rank_two(shape: tuple[int, ...]) -> None:
    with pytest.raises(ShapeError) as info:
        rnnspec.skip_budget_loss(np.ones(shape), 1e-4)
    assert info.value.argument == "update_gate"


@pytest.mark.parametrize("cost", [-1e-5, math.nan, math.inf, True, "0.1", None])
def test_budget_loss_refuses_a_cost_that_is_not_a_finite_non_negative_number(cost: Any) -> None:
    with pytest.raises(OptionError) as info:
        rnnspec.skip_budget_loss(np.ones((2, 3)), cost)
    assert info.value.argument == "cost_per_sample"


# -- init_params ----------------------------------------------------------------------------


@pytest.mark.parametrize("trainable", [False, True], ids=["plain", "trainable_initial_state"])
@pytest.mark.parametrize("variant", SKIP_VARIANTS, ids=variant_id)
def test_init_params_gives_a_unit_gate_bias_and_zero_initial_state_the_op_accepts(
    variant: tuple[str, dict[str, Any]], trainable: bool
) -> None:
    op, options = variant
    base = op.removeprefix("skip_")
    gates = {"rnn": 1, "lstm": 4, "gru": 3}[base]
    params = rnnspec.init_params(
        op, input_size=3, hidden_size=4, num_layers=3, seed=1, trainable_initial_state=trainable, **options
    )
    assert len(params) == 3
    for k, p in enumerate(params):
        expected = {"w_ih", "w_hh", "b_ih", "b_hh"}
        if trainable:
            expected |= {f"{n}0" for n in STATE_NAMES[base]}
        if k == 2:
            expected |= {"w_gate", "b_gate"}
        assert set(p) == expected, k
        assert p["w_ih"].shape == (gates * 4, 3 if k == 0 else 4)
        assert all(v.dtype == np.float32 for v in p.values())
        for n in STATE_NAMES[base]:
            if trainable:
                np.testing.assert_array_equal(p[f"{n}0"], np.zeros(4, dtype=np.float32))
    np.testing.assert_array_equal(params[-1]["b_gate"], np.ones(1, dtype=np.float32))
    assert params[-1]["w_gate"].shape == (1, 4)
    bound = 1.0 / np.sqrt(4)
    assert np.all(np.abs(params[-1]["w_gate"]) <= bound)
    assert np.any(params[-1]["w_gate"] != 0.0)
    x = np.random.default_rng(2).uniform(-1.0, 1.0, (2, 5, 3)).astype(np.float32)
    result = getattr(B, op)(x, params, **options)
    assert result.outputs.dtype == np.float32
    assert result.outputs.shape == (2, 5, 4)
    assert np.all(result.update_gate[:, 0] == 1.0)  # u~_1 = 1
    wide = rnnspec.init_params(op, input_size=3, hidden_size=4, num_layers=3, seed=1, dtype="float64", **options)
    assert getattr(B, op)(x.astype(np.float64), wide, **options).outputs.dtype == np.float64


def test_init_params_refuses_a_trainable_initial_state_that_is_not_a_bool() -> None:
    with pytest.raises(OptionError) as info:
        rnnspec.init_params("skip_gru", input_size=3, hidden_size=4, trainable_initial_state="yes")
    assert info.value.argument == "trainable_initial_state"


# -- bad calls ------------------------------------------------------------------------------


def lstm_case() -> SkipCase:
    return build_case(SKIP_VARIANTS[2], 2, None, False, False, False)


def test_missing_w_gate_on_the_top_layer_names_that_layer() -> None:
    case = lstm_case()
    params = [dict(p) for p in case.params]
    del params[1]["w_gate"]
    with pytest.raises(ParameterError, match="w_gate") as info:
        B.skip_lstm(case.x, params)
    assert info.value.argument == "params[1]"


def test_w_gate_on_a_lower_layer_is_an_unknown_key() -> None:
    case = lstm_case()
    params = [dict(p) for p in case.params]
    params[0]["w_gate"] = params[1]["w_gate"]
    with pytest.raises(ParameterError, match="unknown key 'w_gate'") as info:
        B.skip_lstm(case.x, params)
    assert info.value.argument == "params[0]"


def test_an_initial_state_without_the_gate_entries_on_the_top_layer_is_refused() -> None:
    case = lstm_case()
    state = case.default_state()
    del state[1]["update_prob"]
    with pytest.raises(ShapeError, match="update_prob") as info:
        B.skip_lstm(case.x, case.params, initial_state=state)
    assert info.value.argument == "initial_state[1]"
    state = case.default_state()
    state[0]["cum_update_prob"] = state[1]["cum_update_prob"]
    with pytest.raises(ShapeError) as info:
        B.skip_lstm(case.x, case.params, initial_state=state)
    assert info.value.argument == "initial_state[0]"


def test_a_gate_weight_of_the_wrong_width_is_refused() -> None:
    case = lstm_case()
    params = [dict(p) for p in case.params]
    params[1]["w_gate"] = np.zeros((1, 3))
    with pytest.raises(ParameterError) as info:
        B.skip_lstm(case.x, params)
    assert info.value.argument == "params[1]['w_gate']"


def test_a_lower_layer_of_another_cell_layout_is_refused() -> None:
    case = lstm_case()
    params = [cell_params(np.random.default_rng(0), "gru", 3, 2), case.params[1]]
    with pytest.raises(ParameterError) as info:
        B.skip_lstm(case.x, params)
    assert info.value.argument.startswith("params[0]")
