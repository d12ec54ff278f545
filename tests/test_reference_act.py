"""The NumPy reference of ``act`` (Adaptive Computation Time) is exact.

Its forward equals an independent loop that ponders one row and one input step at a time;
its VJP equals torch autograd of that loop (N decided from plain floats, R = 1 - sum_{n<N} h^n
in the graph) within 1e-10, and central differences of the reference's own forward within
1e-7 where every halting sum keeps a margin from 1 - epsilon (so N is constant nearby).
Targeted tests pin the remainder path and the halting count; properties (weights sum to 1,
max_steps=1 is one cell step on [x, 0], padding, chunking, rows), edge cases,
``init_params`` and bad calls behave as the spec says.
"""

from __future__ import annotations

from typing import Any

import helpers_nan_halting as nan_cases
import numpy as np
import pytest
from helpers import (
    EPS,
    FD_RTOL,
    TORCH_RTOL,
    assert_relative_close,
    assert_trees_close,
    assert_trees_equal,
    central_difference,
    valid_steps,
)
from helpers_adaptive import (
    ACT_CELLS,
    MARGIN,
    STATE_NAMES,
    ACTCase,
    B,
    Trace,
    act_cotangents,
    act_margins,
    assert_fields_match,
    cell_params,
    fields_of,
    inner_product,
    make_act_case,
    reference_vjp,
    take_rows,
    torch_vjp,
)

import rnnspec
import rnnspec.reference as reference
from rnnspec.errors import OptionError, ParameterError, ShapeError
from rnnspec.results import ACTResult

#: (max_steps, epsilon, lengths, given initial state, reverse, halting-bias range, time).
#: The last one ponders tens of steps and reaches the cap of 100 on some.
CONFIGS = [
    (1, 0.01, None, False, False, (-1.0, 1.0), 4),
    (3, 0.01, [0, 4, 2], True, False, (-2.0, 0.5), 4),
    (3, 0.3, [4, 1, 3], True, True, (-2.0, 0.5), 4),
    (100, 0.5, [4, 0, 3], False, True, (-3.0, -2.0), 4),
    (100, 0.01, [2, 2, 0], True, False, (-5.5, -4.0), 2),
]
CASES = [
    pytest.param(
        cell,
        *config,
        id=f"{cell}-M{config[0]}-eps{config[1]}-{'len' if config[2] else 'full'}"
        f"-{'state' if config[3] else 'zeros'}-{'reverse' if config[4] else 'forward'}",
    )
    for cell in ACT_CELLS
    for config in CONFIGS
]
#: Central differences skip the config that ponders ~100 steps: its long chains make the +-EPS
#: truncation error reach the 1e-7 bound (and cost seconds); torch autograd covers it, and the
#: configs with max_steps=3 stop at the cap too.
FD_CASES = [case for case in CASES if case.values[1] != 100 or case.values[6][1] > -3.0]
ARGS = ("cell", "max_steps", "epsilon", "lengths", "with_state", "reverse", "halt_bias", "time")


def reaches_cap(max_steps: int, halt_bias: tuple[float, float]) -> bool:
    """Whether a config's case is drawn so that max_steps forces some valid step's stop and not all."""
    return max_steps == 3 or halt_bias[1] < -3.0


def build_case(
    cell: str,
    max_steps: int,
    epsilon: float,
    lengths: Any,
    with_state: bool,
    reverse: bool,
    halt_bias: tuple[float, float],
    time: int,
) -> ACTCase:
    seed = 5000 + max_steps + (0 if lengths is None else 10 * lengths[0]) + 2 * reverse
    case = make_act_case(
        seed,
        cell,
        epsilon=epsilon,
        max_steps=max_steps,
        time=time,
        lengths=lengths,
        with_state=with_state,
        reverse=reverse,
        halt_bias=halt_bias,
        require_cap=reaches_cap(max_steps, halt_bias),
    )
    assert min(act_margins(case)) >= MARGIN
    return case


# -- forward and reverse mode against independent implementations ------------------------


@pytest.mark.parametrize(ARGS, CASES)
def test_forward_matches_an_independent_row_by_row_loop(
    cell: str,
    max_steps: int,
    epsilon: float,
    lengths: Any,
    with_state: bool,
    reverse: bool,
    halt_bias: tuple[float, float],
    time: int,
) -> None:
    case = build_case(cell, max_steps, epsilon, lengths, with_state, reverse, halt_bias, time)
    result = case.run()
    assert isinstance(result, ACTResult)
    trace = Trace()
    assert_fields_match(result, case.loop(trace=trace), 1e-12, "reference vs loop")
    batch = case.shape[0]
    valid = valid_steps(case.lengths, batch, time)
    steps, remainder, cost = result.ponder_steps, result.ponder_remainder, result.ponder_cost
    assert np.all(steps[valid] >= 1)
    assert np.all(steps[valid] <= max_steps)
    np.testing.assert_array_equal(steps, np.round(steps))
    assert np.all(remainder[valid] > epsilon)
    assert np.all(remainder[valid] <= 1.0)
    np.testing.assert_array_equal(cost, steps + remainder)
    for name in ("ponder_steps", "ponder_remainder", "ponder_cost", "outputs"):
        assert np.all(getattr(result, name)[~valid] == 0.0), name
    # the weights p^n of every valid step are positive and sum to 1, also at the cap
    assert len(trace.weights) == valid.sum()
    for (b, t), weights in trace.weights.items():
        assert len(weights) == steps[b, t]
        assert all(w > 0.0 for w in weights)
        assert abs(sum(weights) - 1.0) <= 1e-15 * len(weights)  # rounding of the running sums
    if max_steps == 100:
        assert np.max(steps) > 3, "the case must ponder"
    if reaches_cap(max_steps, halt_bias):
        assert any(trace.capped.values()), "max_steps must force some stop"
        assert np.any(steps[valid] < max_steps), "some step must halt before max_steps"
    for (b, t), capped in trace.capped.items():
        if capped:
            assert steps[b, t] == max_steps


@pytest.mark.parametrize(ARGS, CASES)
def test_vjp_matches_torch_autograd_with_the_halting_count_held_constant(
    cell: str,
    max_steps: int,
    epsilon: float,
    lengths: Any,
    with_state: bool,
    reverse: bool,
    halt_bias: tuple[float, float],
    time: int,
) -> None:
    case = build_case(cell, max_steps, epsilon, lengths, with_state, reverse, halt_bias, time)
    cotangents = act_cotangents(np.random.default_rng(max_steps + 1), case)
    torch_result, torch_grads = torch_vjp(case, cotangents)
    assert_fields_match(case.run(), torch_result, 1e-12, "reference vs torch forward")
    grads = reference_vjp(case, cotangents)
    assert_trees_close(grads, torch_grads, TORCH_RTOL, "vjp")
    if max_steps > 1:
        assert np.any(grads["params"]["w_halt"] != 0.0)
    else:
        # N = 1: p^1 = R = 1 whatever h^1, so the halting unit receives nothing
        assert np.all(grads["params"]["w_halt"] == 0.0)
        assert np.all(grads["params"]["b_halt"] == 0.0)
    assert np.all(grads["x"][~valid_steps(case.lengths, case.shape[0], time)] == 0.0)


@pytest.mark.parametrize(ARGS, FD_CASES)
def test_vjp_matches_central_differences_of_the_reference_forward(
    cell: str,
    max_steps: int,
    epsilon: float,
    lengths: Any,
    with_state: bool,
    reverse: bool,
    halt_bias: tuple[float, float],
    time: int,
) -> None:
    case = build_case(cell, max_steps, epsilon, lengths, with_state, reverse, halt_bias, time)
    halting_margin, relu_margin = act_margins(case)
    assert halting_margin >= MARGIN
    assert relu_margin >= MARGIN
    cotangents = act_cotangents(np.random.default_rng(max_steps + 2), case)
    x = case.x.copy()
    params = {k: v.copy() for k, v in case.params.items()}
    state = [{k: v.copy() for k, v in case.state_or_zeros()[0].items()}]
    base_steps = case.run().ponder_steps

    def loss() -> float:
        result = case.run(x=x, params=params, initial_state=state)
        np.testing.assert_array_equal(result.ponder_steps, base_steps)  # N constant under the +-EPS steps
        return float(inner_product(cotangents, result))

    numeric = {
        "x": central_difference(loss, x, EPS),
        "params": {k: central_difference(loss, v, EPS) for k, v in params.items()},
        "initial_state": [{k: central_difference(loss, v, EPS) for k, v in state[0].items()}],
    }
    assert np.max(np.abs(numeric["x"])) > 1e-3
    if reaches_cap(max_steps, halt_bias):
        assert np.any(base_steps == max_steps), "the cap must be reached"
    assert_trees_close(reference_vjp(case, cotangents), numeric, FD_RTOL, "vjp vs central differences")


# -- the conventions at the discrete points -------------------------------------------------


def one_step_case(cell: str, halted_after: int, seed: int) -> ACTCase:
    """One row, one input step, zero initial state, N = ``halted_after`` with a margin."""
    for attempt in range(200):
        rng = np.random.default_rng([seed, attempt])
        params = cell_params(rng, cell, 3, 2)
        params["w_halt"] = rng.uniform(-1.0, 1.0, (1, 2))
        params["b_halt"] = np.array([6.0]) if halted_after == 1 else rng.uniform(-0.5, 0.5, (1,))
        case = ACTCase(cell, 0.01, 10, rng.uniform(-1.0, 1.0, (1, 1, 2)), params)
        result = case.run()
        informative = np.min(np.abs(result.outputs)) > 0.05  # a relu cell must not be all off
        if result.ponder_steps[0, 0] == halted_after and informative and min(act_margins(case)) >= MARGIN:
            return case
    raise AssertionError("no one-step case")


def test_the_ponder_cost_reaches_the_halting_units_before_the_last_with_slope_minus_one() -> None:
    # N = 2: ponder_cost = 2 + R = 3 - h^1, so d cost / d h^1 = -1 and h^2 gets nothing:
    # d b_halt = -h^1 (1 - h^1) and d w_halt = -h^1 (1 - h^1) h(s^1).
    case = one_step_case("rnn", 2, 1)
    p = case.params
    s1 = np.tanh(p["w_ih"] @ np.append(case.x[0, 0], 0.0) + p["b_ih"] + p["b_hh"])  # flag 0, h_0 = 0
    h1 = 1.0 / (1.0 + np.exp(-(p["w_halt"] @ s1 + p["b_halt"])[0]))
    result = case.run()
    assert result.ponder_steps[0, 0] == 2
    assert_relative_close(result.ponder_remainder, [[1.0 - h1]], 1e-14, "R")
    assert_relative_close(result.ponder_cost, [[3.0 - h1]], 1e-14, "cost")
    grads = reference_vjp(case, {"ponder_cost": np.ones((1, 1))})
    slope = h1 * (1.0 - h1)
    assert slope > 0.1
    assert_relative_close(grads["params"]["b_halt"], [-slope], 1e-13, "d b_halt")
    assert_relative_close(grads["params"]["w_halt"], -slope * s1[None, :], 1e-13, "d w_halt")
    # ponder_remainder has the same gradient: the cost is N + R and N is constant
    assert_trees_close(reference_vjp(case, {"ponder_remainder": np.ones((1, 1))}), grads, 1e-15, "R vs cost")


@pytest.mark.parametrize("cell", ACT_CELLS)
def test_halting_at_the_first_step_gives_the_halting_unit_no_gradient(cell: str) -> None:
    # N = 1: R = 1 and p^1 = 1 whatever h^1: neither the cost nor the outputs reach the halting unit.
    case = one_step_case(cell, 1, 2)
    result = case.run()
    np.testing.assert_array_equal(result.ponder_remainder, [[1.0]])
    np.testing.assert_array_equal(result.ponder_cost, [[2.0]])
    cost_only = reference_vjp(case, {"ponder_cost": np.ones((1, 1))})
    for name, value in cost_only["params"].items():
        assert np.all(value == 0.0), name
    assert np.all(cost_only["x"] == 0.0)
    outputs = reference_vjp(case, {"outputs": np.ones((1, 1, 2))})
    assert np.all(outputs["params"]["w_halt"] == 0.0)
    assert np.all(outputs["params"]["b_halt"] == 0.0)
    assert np.any(outputs["params"]["w_ih"] != 0.0)


@pytest.mark.parametrize("cell", ACT_CELLS)
def test_the_halting_count_carries_no_gradient_and_ignores_tiny_perturbations(cell: str) -> None:
    case = build_case(cell, *CONFIGS[2])
    halting_margin, _ = act_margins(case)
    assert halting_margin >= MARGIN
    grads = reference_vjp(case, {"ponder_steps": np.ones(case.x.shape[:2])})
    assert np.all(grads["x"] == 0.0)
    for tree in (grads["params"], grads["initial_state"][0]):
        for name, value in tree.items():
            assert np.all(value == 0.0), name
    base = case.run().ponder_steps
    rng = np.random.default_rng(13)
    for _ in range(5):
        params = {k: v + rng.uniform(-1e-7, 1e-7, v.shape) for k, v in case.params.items()}
        x = case.x + rng.uniform(-1e-7, 1e-7, case.x.shape)
        np.testing.assert_array_equal(case.run(x=x, params=params).ponder_steps, base)
    # a large change of the halting bias does change it (the comparison above can fail)
    shifted = {**case.params, "b_halt": case.params["b_halt"] + 3.0}
    assert np.any(case.run(params=shifted).ponder_steps != base)


@pytest.mark.parametrize(
    ("b_halt", "max_steps", "steps"),
    [(5.0, 10, 1), (1.0, 10, 2), (-2.0, 100, 9), (-2.0, 3, 3), (-6.0, 100, 100)],
    ids=["halt-at-once", "two-steps", "nine-steps", "capped-at-3", "capped-at-100"],
)
def test_weights_sum_to_one_on_a_cell_whose_inner_states_are_all_equal(
    b_halt: float, max_steps: int, steps: int
) -> None:
    # w_hh = 0 and a zero flag column: s^n = s^1 for every n, and w_halt = 0: h^n = sigmoid(b_halt).
    # Then N = min(max_steps, first n with n h >= 1 - eps), R = 1 - (N - 1) h, and the
    # mean-field state is (sum_n p^n) s^1 = s^1 exactly when the weights sum to 1.
    rng = np.random.default_rng(14)
    params = cell_params(rng, "rnn", 3, 2)
    params["w_ih"][:, -1] = 0.0
    params["w_hh"][...] = 0.0
    params["w_halt"] = np.zeros((1, 2))
    params["b_halt"] = np.array([b_halt])
    x = rng.uniform(-1.0, 1.0, (2, 3, 2))
    result = B.act(x, params, epsilon=0.01, max_steps=max_steps)
    h = 1.0 / (1.0 + np.exp(-b_halt))
    total, count = 0.0, 0
    while count < max_steps:
        count += 1
        total += h
        if total >= 0.99:
            break
    assert count == steps
    np.testing.assert_array_equal(result.ponder_steps, np.full((2, 3), float(steps)))
    np.testing.assert_allclose(result.ponder_remainder, 1.0 - (steps - 1) * h, rtol=1e-13)
    s1 = np.tanh(x @ params["w_ih"][:, :-1].T + params["b_ih"] + params["b_hh"])
    np.testing.assert_allclose(result.outputs, s1, rtol=0, atol=1e-15)
    np.testing.assert_allclose(result.state[0]["h"], s1[:, -1], rtol=0, atol=1e-15)


def test_a_halting_sum_exactly_at_one_minus_epsilon_halts() -> None:
    # w_halt = 0, b_halt = 0: h^n = sigmoid(0) = 1/2 exactly; with epsilon = 1/2 the first unit
    # already reaches 1 - epsilon (>=, not >), and with epsilon = 1/4 the sum 1/2 + 1/2 passes 3/4.
    rng = np.random.default_rng(30)
    params = cell_params(rng, "gru", 3, 2)
    params["w_halt"] = np.zeros((1, 2))
    params["b_halt"] = np.zeros(1)
    x = rng.uniform(-1.0, 1.0, (2, 3, 2))
    at_threshold = B.act(x, params, cell="gru", epsilon=0.5)
    np.testing.assert_array_equal(at_threshold.ponder_steps, np.ones((2, 3)))
    np.testing.assert_array_equal(at_threshold.ponder_remainder, np.ones((2, 3)))
    past_threshold = B.act(x, params, cell="gru", epsilon=0.25)
    np.testing.assert_array_equal(past_threshold.ponder_steps, np.full((2, 3), 2.0))
    np.testing.assert_array_equal(past_threshold.ponder_remainder, np.full((2, 3), 0.5))


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("cell", ACT_CELLS)
def test_a_nan_in_x_halts_its_row_at_once_there_and_at_every_later_step(cell: str, reverse: bool) -> None:
    # Under ">= 1 - epsilon" the NaN's row would ponder all 10**6 inner steps (minutes); it takes one.
    x, params = nan_cases.nan_case(cell)
    clean = x.copy()
    clean[nan_cases.ROW, nan_cases.STEP, 0] = 0.5
    options = {"cell": cell, "max_steps": nan_cases.HUGE, "lengths": np.array(nan_cases.LENGTHS), "reverse": reverse}
    got = nan_cases.within_deadline(lambda: B.act(x, params, **options))
    want = nan_cases.within_deadline(lambda: B.act(clean, params, **options))
    nan_cases.assert_the_nan_row_halts_at_once(got, reverse)
    # Every other row, and the NaN's row before it, are those of the call without the NaN.
    before = ~nan_cases.later_in_order(reverse)
    others = [r for r in range(x.shape[0]) if r != nan_cases.ROW]
    for name in ("outputs", "ponder_steps", "ponder_remainder", "ponder_cost"):
        g, w = np.asarray(getattr(got, name)), np.asarray(getattr(want, name))
        np.testing.assert_allclose(g[others], w[others], rtol=1e-13, atol=0, err_msg=name)
        np.testing.assert_allclose(g[nan_cases.ROW, before], w[nan_cases.ROW, before], rtol=1e-13, atol=0, err_msg=name)
    for name, entry in got.state[0].items():
        np.testing.assert_allclose(entry[others], want.state[0][name][others], rtol=1e-13, atol=0, err_msg=name)


def test_a_halting_unit_that_turns_nan_at_a_later_inner_step_stops_there_with_a_nan_remainder() -> None:
    x, params = nan_cases.overflow_case()
    got = nan_cases.within_deadline(lambda: B.act(x, params, cell="indrnn", max_steps=5))
    tiny = 1.0 / (1.0 + np.exp(50.0))  # sigmoid(-50), the halting unit of every finite step
    # Row 0: sigmoid(-50) twice, then NaN at the third inner step: N = 3; its NaN state then halts
    # the next step at once. Row 1 never halts: N = max_steps, R = 1 - 4 sigmoid(-50), h = 0.
    np.testing.assert_array_equal(got.ponder_steps, [[3.0, 1.0], [5.0, 5.0]])
    assert np.isnan(got.ponder_remainder[0]).all()
    assert np.isnan(got.ponder_cost[0]).all()
    assert np.isnan(got.outputs[0]).all()
    assert np.isnan(got.state[0]["h"][0]).all()
    np.testing.assert_allclose(got.ponder_remainder[1], 1.0 - 4.0 * tiny, rtol=1e-15)
    np.testing.assert_array_equal(got.outputs[1], 0.0)


def test_a_nan_halting_bias_gives_nan_outputs_even_where_the_cell_state_is_finite() -> None:
    x, params = nan_cases.nan_case("lstm", nan=False)
    params[0]["b_halt"] = np.array([np.nan])
    got = nan_cases.within_deadline(lambda: B.act(x, params, cell="lstm", max_steps=nan_cases.HUGE))
    np.testing.assert_array_equal(got.ponder_steps, 1.0)
    for field in (got.outputs, got.ponder_remainder, got.ponder_cost, got.state[0]["h"], got.state[0]["c"]):
        assert np.isnan(field).all()


@pytest.mark.parametrize("cell", ACT_CELLS)
def test_reverse_mode_through_a_nan_row_returns_and_leaves_other_rows_gradients_unchanged(cell: str) -> None:
    x, params = nan_cases.nan_case(cell)
    clean = x.copy()
    clean[nan_cases.ROW, nan_cases.STEP, 0] = 0.5
    options = {"cell": cell, "max_steps": nan_cases.HUGE, "lengths": np.array(nan_cases.LENGTHS)}
    cotangents = nan_cases.cotangents_of(B.act(clean, params, **options), seed=2)
    got = nan_cases.within_deadline(lambda: reference.vjp("act", cotangents, x, params, **options))
    want = reference.vjp("act", cotangents, clean, params, **options)
    others = [r for r in range(x.shape[0]) if r != nan_cases.ROW]
    np.testing.assert_allclose(got["x"][others], want["x"][others], rtol=1e-13, atol=0)
    assert np.isnan(got["x"][nan_cases.ROW, nan_cases.STEP]).all()


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("cell", ACT_CELLS)
def test_one_step_of_pondering_is_the_cell_on_x_and_a_zero_flag(cell: str, reverse: bool) -> None:
    case = make_act_case(15, cell, max_steps=1, lengths=[4, 0, 2], with_state=True, reverse=reverse)
    result = case.run()
    flagged = np.concatenate([case.x, np.zeros((*case.x.shape[:2], 1))], axis=2)
    cell_only = {k: v for k, v in case.params.items() if k not in ("w_halt", "b_halt")}
    options = {"activation": "tanh"} if cell == "rnn" else {"activation": "relu"} if cell == "indrnn" else {}
    base = getattr(B, cell)(
        flagged, cell_only, **options, lengths=case.lengths, initial_state=case.initial_state, reverse=reverse
    )
    np.testing.assert_allclose(result.outputs, base.outputs, rtol=0, atol=1e-15)
    for name in STATE_NAMES[cell]:
        np.testing.assert_allclose(result.state[0][name], base.state[0][name], rtol=0, atol=1e-15)
    valid = valid_steps(case.lengths, 3, 4)
    np.testing.assert_array_equal(result.ponder_steps, valid.astype(np.float64))
    np.testing.assert_array_equal(result.ponder_remainder, valid.astype(np.float64))
    np.testing.assert_array_equal(result.ponder_cost, 2.0 * valid)


# -- properties ---------------------------------------------------------------------------


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("cell", ACT_CELLS)
def test_padding_content_never_changes_the_valid_part_or_its_gradient(cell: str, reverse: bool) -> None:
    case = make_act_case(16, cell, max_steps=5, lengths=[4, 0, 2], with_state=True, reverse=reverse)
    padded = case.x.copy()
    valid = valid_steps(case.lengths, 3, 4)
    padded[~valid] = np.random.default_rng(17).uniform(-5.0, 5.0, padded[~valid].shape)
    assert_trees_equal(fields_of(case.run(x=padded)), fields_of(case.run()), "result")
    cotangents = act_cotangents(np.random.default_rng(18), case)
    other = ACTCase(cell, case.epsilon, case.max_steps, padded, case.params, case.lengths, case.initial_state, reverse)
    assert_trees_equal(reference_vjp(other, cotangents), reference_vjp(case, cotangents), "vjp")


@pytest.mark.parametrize("split", [1, 3])
@pytest.mark.parametrize("cell", ACT_CELLS)
def test_a_chunked_run_carrying_the_state_equals_the_whole_run(cell: str, split: int) -> None:
    case = make_act_case(19, cell, max_steps=6, lengths=[4, 0, 2], with_state=True)
    whole = fields_of(case.run())
    lengths = case.lengths
    first = case.run(x=case.x[:, :split], lengths=np.minimum(lengths, split))
    second = case.run(x=case.x[:, split:], lengths=np.maximum(lengths - split, 0), initial_state=first.state)
    for name in ("outputs", "ponder_steps", "ponder_remainder", "ponder_cost"):
        joined = np.concatenate([getattr(first, name), getattr(second, name)], axis=1)
        np.testing.assert_array_equal(joined, whole[name], err_msg=name)
    assert_trees_equal(fields_of(second)["state"], whole["state"], "final state")


@pytest.mark.parametrize("cell", ACT_CELLS)
def test_a_reversed_run_is_the_reversed_second_chunk_then_the_reversed_first(cell: str) -> None:
    case = make_act_case(20, cell, max_steps=6, with_state=True, reverse=True)
    whole = case.run()
    late = case.run(x=case.x[:, 2:])
    early = case.run(x=case.x[:, :2], initial_state=late.state)
    np.testing.assert_array_equal(np.concatenate([early.outputs, late.outputs], axis=1), whole.outputs)
    np.testing.assert_array_equal(np.concatenate([early.ponder_cost, late.ponder_cost], axis=1), whole.ponder_cost)
    assert_trees_equal(fields_of(early)["state"], fields_of(whole)["state"], "final state")


@pytest.mark.parametrize("cell", ACT_CELLS)
def test_rows_are_independent(cell: str) -> None:
    case = make_act_case(21, cell, max_steps=8, lengths=[4, 0, 3], with_state=True, reverse=True)
    whole = fields_of(case.run())
    cotangents = act_cotangents(np.random.default_rng(22), case)
    grads = reference_vjp(case, cotangents)
    for b in range(3):
        rows = slice(b, b + 1)
        row_state = take_rows(case.initial_state, rows)
        alone = ACTCase(cell, case.epsilon, 8, case.x[rows], case.params, case.lengths[rows], row_state, True)
        assert_fields_match(alone.run(), take_rows(whole, rows), 1e-13, f"row {b}")
        row_grads = reference_vjp(alone, take_rows(cotangents, rows))
        assert_trees_close(row_grads["x"], grads["x"][rows], 1e-13, f"d x row {b}")
        assert_trees_close(row_grads["initial_state"], take_rows(grads["initial_state"], rows), 1e-13, f"row {b}")


# -- edge cases -----------------------------------------------------------------------------


@pytest.mark.parametrize("cell", ACT_CELLS)
def test_time_zero_returns_the_initial_state_and_passes_its_cotangent_through(cell: str) -> None:
    case = make_act_case(23, cell, with_state=True)
    x = np.zeros((3, 0, 2))
    result = case.run(x=x)
    assert result.outputs.shape == (3, 0, 3)
    assert result.ponder_steps.shape == result.ponder_remainder.shape == result.ponder_cost.shape == (3, 0)
    assert_trees_equal(fields_of(result)["state"], case.initial_state, "given state")
    zeros = fields_of(case.run(x=x, initial_state=None))["state"]
    assert_trees_equal(zeros, [{n: np.zeros((3, 3)) for n in STATE_NAMES[cell]}], "zero state")
    cot = [{n: np.random.default_rng(24).normal(size=(3, 3)) for n in STATE_NAMES[cell]}]
    grads = reference.vjp("act", {"state": cot}, x, case.params, cell=cell)
    assert_trees_equal(list(grads["initial_state"]), cot, "d initial_state")
    for name, value in grads["params"].items():
        assert np.all(value == 0.0), name


@pytest.mark.parametrize("cell", ACT_CELLS)
def test_a_row_of_length_zero_keeps_its_initial_state_and_zero_fields(cell: str) -> None:
    case = make_act_case(25, cell, max_steps=4, lengths=[0, 4, 3], with_state=True)
    result = fields_of(case.run())
    assert_trees_equal(take_rows(result["state"], [0]), take_rows(case.initial_state, [0]), "row 0 state")
    for name in ("outputs", "ponder_steps", "ponder_remainder", "ponder_cost"):
        assert np.all(result[name][0] == 0.0), name


@pytest.mark.parametrize("cell", ACT_CELLS)
def test_batch_one_and_hidden_size_one_match_the_loop_and_torch(cell: str) -> None:
    case = make_act_case(26, cell, max_steps=7, batch=1, time=3, hidden=1, with_state=True)
    result = case.run()
    assert result.outputs.shape == (1, 3, 1)
    assert_fields_match(result, case.loop(), 1e-12, "loop")
    cotangents = act_cotangents(np.random.default_rng(27), case)
    _, torch_grads = torch_vjp(case, cotangents)
    assert_trees_close(reference_vjp(case, cotangents), torch_grads, TORCH_RTOL, "vjp")


def test_a_numpy_integer_max_steps_and_a_numpy_float_epsilon_are_the_plain_values() -> None:
    case = make_act_case(28, "gru", max_steps=3, epsilon=0.25)
    plain = fields_of(case.run())
    numpy_scalars = fields_of(case.run(max_steps=np.int64(3), epsilon=np.float32(0.25)))
    assert_trees_equal(numpy_scalars, plain, "numpy scalars")


# -- init_params ----------------------------------------------------------------------------


@pytest.mark.parametrize("cell", ACT_CELLS)
def test_init_params_gives_each_cell_layout_with_the_flag_column_and_a_unit_halting_bias(cell: str) -> None:
    params = rnnspec.init_params("act", input_size=3, hidden_size=4, seed=2, cell=cell)
    assert len(params) == 1
    p = params[0]
    rows = {"rnn": 4, "lstm": 16, "gru": 12, "indrnn": 4}[cell]
    expected = {"w_ih", "b_ih", "u"} if cell == "indrnn" else {"w_ih", "w_hh", "b_ih", "b_hh"}
    assert set(p) == expected | {"w_halt", "b_halt"}
    assert p["w_ih"].shape == (rows, 4)  # I + 1: the flag column
    assert p["b_ih"].shape == (rows,)
    if cell == "indrnn":
        assert p["u"].shape == (4,)
    else:
        assert p["w_hh"].shape == (rows, 4)
        assert p["b_hh"].shape == (rows,)
    assert p["w_halt"].shape == (1, 4)
    assert np.any(p["w_halt"] != 0.0)
    np.testing.assert_array_equal(p["b_halt"], np.ones(1, dtype=np.float32))
    assert all(v.dtype == np.float32 for v in p.values())
    x = np.random.default_rng(3).uniform(-1.0, 1.0, (2, 5, 3)).astype(np.float32)
    result = B.act(x, p, cell=cell)
    assert result.outputs.shape == (2, 5, 4)
    assert result.outputs.dtype == np.float32
    assert np.all(result.ponder_steps >= 1)
    wide = rnnspec.init_params("act", input_size=3, hidden_size=4, seed=2, cell=cell, dtype="float64")
    assert B.act(x.astype(np.float64), wide, cell=cell).outputs.dtype == np.float64


def test_init_params_refuses_more_than_one_act_layer() -> None:
    with pytest.raises(ShapeError) as info:
        rnnspec.init_params("act", input_size=3, hidden_size=4, num_layers=2)
    assert info.value.argument == "num_layers"


# -- bad calls ------------------------------------------------------------------------------


def lstm_case() -> ACTCase:
    return make_act_case(29, "lstm", max_steps=3)


def test_two_layers_are_refused() -> None:
    case = lstm_case()
    with pytest.raises(ParameterError) as info:
        B.act(case.x, [case.params, case.params], cell="lstm")
    assert info.value.argument == "params"


@pytest.mark.parametrize("epsilon", [0, 1, 0.0, 1.0, -0.1, float("nan"), True, "x", None])
def test_an_epsilon_outside_the_open_unit_interval_is_refused(epsilon: Any) -> None:
    case = lstm_case()
    with pytest.raises(OptionError) as info:
        B.act(case.x, case.params, cell="lstm", epsilon=epsilon)
    assert info.value.argument == "epsilon"


@pytest.mark.parametrize("max_steps", [0, -1, 2.5, 3.0, True, "3", None])
def test_a_max_steps_that_is_not_a_positive_integer_is_refused(max_steps: Any) -> None:
    case = lstm_case()
    with pytest.raises(OptionError) as info:
        B.act(case.x, case.params, cell="lstm", max_steps=max_steps)
    assert info.value.argument == "max_steps"


def test_an_unknown_cell_is_refused() -> None:
    case = lstm_case()
    with pytest.raises(OptionError) as info:
        B.act(case.x, case.params, cell="foo")
    assert info.value.argument == "cell"


def test_an_input_weight_without_the_flag_column_is_refused() -> None:
    case = lstm_case()
    params = dict(case.params)
    params["w_ih"] = params["w_ih"][:, :-1]
    with pytest.raises(ParameterError, match=r"I\+1") as info:
        B.act(case.x, params, cell="lstm")
    assert info.value.argument == "params[0]['w_ih']"


def test_params_of_another_cell_are_refused() -> None:
    case = lstm_case()
    with pytest.raises(ParameterError) as info:
        B.act(case.x, case.params, cell="indrnn")
    assert info.value.argument == "params[0]"
