"""The NumPy reference's forward runs of rnn, lstm and gru are exact.

They equal torch.nn.RNN/LSTM/GRU in float64 within 1e-12 (single and stacked layers,
initial states, packed variable lengths, the reverse direction of a bidirectional
module), the Cho GRU equals an independent per-step loop, chunked runs equal whole
runs, calls never modify their inputs, and float32/float16 results are the float64
results rounded.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from helpers import assert_trees_equal, deep_copy, sigmoid, step_order, variant_id
from helpers_reference import (
    STATE_NAMES,
    VARIANTS,
    Case,
    has_torch_module,
    make_case,
    relu_preactivations,
    run_reference,
    torch_forward,
    torch_initial_state,
    torch_module,
    torch_run,
)
from hypothesis import given, settings
from hypothesis import strategies as st

import rnnspec.reference as reference
from rnnspec.convert import from_torch

TORCH_VARIANTS = [v for v in VARIANTS if has_torch_module(*v)]
#: Forward agreement in float64: absolute on O(1) values (relative beyond 1).
TOL = 1e-12


def assert_forward_equal(actual: Any, expected_outputs: np.ndarray, expected_state: list[dict[str, Any]]) -> None:
    """Outputs and every layer's final state agree within TOL."""
    np.testing.assert_allclose(actual.outputs, expected_outputs, rtol=TOL, atol=TOL)
    assert len(actual.state) == len(expected_state)
    for got, want in zip(actual.state, expected_state, strict=True):
        assert sorted(got) == sorted(want)
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=TOL, atol=TOL)


def check_against_torch(case: Case) -> None:
    result = run_reference(case)
    assert result.outputs.dtype == np.float64
    assert result.outputs.shape == (case.batch, case.time, case.hidden)
    run = torch_forward(case)
    assert_forward_equal(result, run.outputs.detach().numpy(), run.state(case.op))


# -- against torch.nn -------------------------------------------------------------


@pytest.mark.parametrize("variant", TORCH_VARIANTS, ids=variant_id)
def test_single_layer_matches_torch(variant: tuple[str, dict[str, Any]]) -> None:
    op, options = variant
    check_against_torch(make_case(1, op, options, scale=0.8))


@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("variant", TORCH_VARIANTS, ids=variant_id)
def test_stacked_layers_match_torch_with_initial_state(variant: tuple[str, dict[str, Any]], layers: int) -> None:
    op, options = variant
    check_against_torch(make_case(10 + layers, op, options, layers=layers, with_state=True, scale=0.8))


@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("variant", TORCH_VARIANTS, ids=variant_id)
def test_outputs_and_final_state_match_torch_with_packed_lengths(
    variant: tuple[str, dict[str, Any]], layers: int
) -> None:
    op, options = variant
    case = make_case(20 + layers, op, options, batch=4, layers=layers, lengths=[3, 5, 0, 1], with_state=True)
    check_against_torch(case)
    result = run_reference(case)
    # past a row's length the outputs are zero, and an empty row keeps its initial state
    assert np.all(result.outputs[0, 3:] == 0.0)
    assert np.all(result.outputs[2] == 0.0)
    assert np.all(result.outputs[3, 1:] == 0.0)
    for k in range(layers):
        for name in STATE_NAMES[op]:
            np.testing.assert_array_equal(result.state[k][name][2], case.initial_state[k][name][2])


def test_lstm_matches_torch_with_packed_lengths_and_no_initial_state() -> None:
    case = make_case(30, "lstm", {}, layers=2, lengths=[2, 5, 4])
    check_against_torch(case)


@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("variant", TORCH_VARIANTS, ids=variant_id)
def test_reverse_direction_of_bidirectional_module_matches_reverse_run(
    variant: tuple[str, dict[str, Any]], with_lengths: bool
) -> None:
    op, options = variant
    torch.manual_seed(7)
    kwargs = {"nonlinearity": options["activation"]} if op == "rnn" else {}
    cls = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[op]
    module = cls(3, 4, batch_first=True, bidirectional=True, dtype=torch.float64, **kwargs)
    rng = np.random.default_rng(40)
    batch, time, hidden = 3, 5, 4
    x = rng.uniform(-1, 1, (batch, time, 3))
    lengths = np.array([5, 2, 4]) if with_lengths else None
    # torch's (directions, batch, hidden) initial state: index 0 forward, 1 reverse
    init = {name: rng.uniform(-1, 1, (2, batch, hidden)) for name in STATE_NAMES[op]}
    state0 = tuple(torch.tensor(init[name]) for name in STATE_NAMES[op])
    with torch.no_grad():
        out, final = torch_run(module, torch.tensor(x), lengths, state0)
    forward_params = from_torch(module, direction="forward")
    reverse_params = from_torch(module, direction="reverse")
    assert len(forward_params) == len(reverse_params) == 1
    for direction, params, columns in ((0, forward_params, slice(0, hidden)), (1, reverse_params, slice(hidden, None))):
        result = getattr(reference, op)(
            x,
            params,
            **options,
            lengths=lengths,
            initial_state=[{name: init[name][direction] for name in STATE_NAMES[op]}],
            reverse=direction == 1,
        )
        expected_state = [{name: final[j][direction].numpy() for j, name in enumerate(STATE_NAMES[op])}]
        assert_forward_equal(result, out[:, :, columns].numpy(), expected_state)


@settings(max_examples=40, deadline=None)
@given(
    variant=st.sampled_from(TORCH_VARIANTS),
    seed=st.integers(0, 2**32 - 1),
    batch=st.integers(1, 3),
    time=st.integers(1, 5),
    input_size=st.integers(1, 4),
    hidden=st.integers(1, 4),
    layers=st.integers(1, 3),
    with_state=st.booleans(),
    reverse=st.booleans(),
    data=st.data(),
)
def test_forward_matches_torch_for_random_shapes_and_lengths(
    variant: tuple[str, dict[str, Any]],
    seed: int,
    batch: int,
    time: int,
    input_size: int,
    hidden: int,
    layers: int,
    with_state: bool,
    reverse: bool,
    data: st.DataObject,
) -> None:
    op, options = variant
    lengths = data.draw(st.none() | st.lists(st.integers(0, time), min_size=batch, max_size=batch), label="lengths")
    case = make_case(
        seed,
        op,
        options,
        batch=batch,
        time=time,
        input_size=input_size,
        hidden=hidden,
        layers=layers,
        lengths=lengths,
        with_state=with_state,
        reverse=reverse,
        relu_margin=0.0,
    )
    check_against_torch(case)


def test_torch_module_helper_holds_the_given_params() -> None:
    """The hand-filled torch module of the helpers really holds the params it is given."""
    case = make_case(3, "lstm", {}, layers=2)
    module = torch_module("lstm", {}, case.params)
    np.testing.assert_array_equal(module.weight_hh_l1.detach().numpy(), case.params[1]["w_hh"])
    np.testing.assert_array_equal(module.bias_ih_l0.detach().numpy(), case.params[0]["b_ih"])
    h0, c0 = torch_initial_state("lstm", case.state_or_zeros())
    assert h0.shape == c0.shape == (2, case.batch, case.hidden)


# -- GRU with reset_after=False (Cho et al. 2014): no torch counterpart --------------


def cho_gru_loop(case: Case) -> tuple[np.ndarray, list[dict[str, np.ndarray]]]:
    """Per row, layer and step: r, z = sigma(..); n = tanh(W_in x + b_in + W_hn (r h) + b_hn); h' = (1-z) n + z h."""
    hidden = case.hidden
    outputs = np.zeros((case.batch, case.time, hidden))
    init = case.state_or_zeros()
    final = [{"h": np.zeros((case.batch, hidden))} for _ in range(case.layers)]
    for b, n_valid in enumerate(case.lengths_or_full()):
        order = step_order(n_valid, case.reverse)
        inp = case.x[b, :n_valid]
        for k, p in enumerate(case.params):
            w_ir, w_iz, w_in = p["w_ih"][:hidden], p["w_ih"][hidden : 2 * hidden], p["w_ih"][2 * hidden :]
            w_hr, w_hz, w_hn = p["w_hh"][:hidden], p["w_hh"][hidden : 2 * hidden], p["w_hh"][2 * hidden :]
            b_ir, b_iz, b_in = p["b_ih"][:hidden], p["b_ih"][hidden : 2 * hidden], p["b_ih"][2 * hidden :]
            b_hr, b_hz, b_hn = p["b_hh"][:hidden], p["b_hh"][hidden : 2 * hidden], p["b_hh"][2 * hidden :]
            h = init[k]["h"][b].copy()
            out = np.zeros((n_valid, hidden))
            for t in order:
                xt = inp[t]
                r = sigmoid(w_ir @ xt + b_ir + w_hr @ h + b_hr)
                z = sigmoid(w_iz @ xt + b_iz + w_hz @ h + b_hz)
                n = np.tanh(w_in @ xt + b_in + w_hn @ (r * h) + b_hn)
                h = (1.0 - z) * n + z * h
                out[t] = h
            final[k]["h"][b] = h
            inp = out
        outputs[b, :n_valid] = inp
    return outputs, final


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize(
    ("layers", "lengths", "with_state"),
    [(1, None, False), (1, [5, 0, 3], True), (2, None, True), (3, [1, 5, 4], True), (3, [2, 0, 5], False)],
)
def test_gru_without_reset_after_matches_hand_written_cho_loop(
    layers: int, lengths: list[int] | None, with_state: bool, reverse: bool
) -> None:
    case = make_case(
        50 + layers,
        "gru",
        {"reset_after": False},
        layers=layers,
        lengths=lengths,
        with_state=with_state,
        reverse=reverse,
    )
    outputs, final = cho_gru_loop(case)
    assert_forward_equal(run_reference(case), outputs, final)


def test_gru_reset_before_and_after_differ() -> None:
    """The two GRU variants are different functions (so the option is really honoured)."""
    case = make_case(60, "gru", {"reset_after": True}, with_state=True)
    after = run_reference(case)
    before = run_reference(case, reset_after=False)
    assert np.max(np.abs(after.outputs - before.outputs)) > 1e-3


def test_relu_cases_keep_their_distance_from_the_kink() -> None:
    """make_case's relu redraw gives pre-activations far from 0 (checked independently)."""
    case = make_case(70, "rnn", {"activation": "relu"}, layers=3, lengths=[5, 0, 2], with_state=True)
    pre = relu_preactivations(case)
    assert pre.size == 3 * (5 + 0 + 2) * case.hidden
    assert np.min(np.abs(pre)) >= 1e-3


# -- chunked runs (truncated BPTT) --------------------------------------------------


@pytest.mark.parametrize(
    ("layers", "lengths", "with_state"),
    [(1, None, False), (3, None, True), (1, [5, 0, 2], True), (2, [3, 5, 1], False), (3, [0, 4, 5], True)],
)
@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_chunked_run_equals_whole_run(
    variant: tuple[str, dict[str, Any]], layers: int, lengths: list[int] | None, with_state: bool
) -> None:
    op, options = variant
    case = make_case(80 + layers, op, options, layers=layers, lengths=lengths, with_state=with_state)
    whole = run_reference(case)
    full = case.lengths_or_full()
    for t1 in range(case.time + 1):
        first_lengths = None if lengths is None else np.clip(full, 0, t1)
        second_lengths = None if lengths is None else np.clip(full - t1, 0, case.time - t1)
        first = run_reference(case, x=case.x[:, :t1], lengths=first_lengths)
        second = run_reference(case, x=case.x[:, t1:], lengths=second_lengths, initial_state=first.state)
        outputs = np.concatenate([first.outputs, second.outputs], axis=1)
        np.testing.assert_allclose(outputs, whole.outputs, rtol=TOL, atol=TOL, err_msg=f"t1={t1}")
        for k in range(layers):
            for name in STATE_NAMES[op]:
                np.testing.assert_allclose(
                    second.state[k][name], whole.state[k][name], rtol=TOL, atol=TOL, err_msg=f"t1={t1}"
                )


# -- inputs are never modified -----------------------------------------------------


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_forward_run_never_modifies_its_inputs(variant: tuple[str, dict[str, Any]], reverse: bool) -> None:
    op, options = variant
    case = make_case(90, op, options, layers=2, lengths=[4, 0, 5], with_state=True, reverse=reverse)
    before = deep_copy((case.x, case.params, case.initial_state, case.lengths))
    result = run_reference(case)
    assert_trees_equal((case.x, case.params, case.initial_state, case.lengths), before, "inputs")
    # the results are fresh arrays: writing to them leaves the inputs alone
    result.outputs[...] = 123.0
    for layer in result.state:
        for value in layer.values():
            value[...] = 123.0
    assert_trees_equal((case.x, case.params, case.initial_state, case.lengths), before, "inputs after writing results")


# -- float32 and float16 ---------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["float32", "float16"])
@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_low_precision_result_is_the_float64_result_rounded(variant: tuple[str, dict[str, Any]], dtype: type) -> None:
    op, options = variant
    case = make_case(100, op, options, layers=2, lengths=[5, 2, 0], with_state=True)
    low = Case(
        op,
        options,
        case.x.astype(dtype),
        [{k: v.astype(dtype) for k, v in p.items()} for p in case.params],
        case.lengths,
        [{k: v.astype(dtype) for k, v in s.items()} for s in case.initial_state],
    )
    wide = Case(
        op,
        options,
        low.x.astype(np.float64),
        [{k: v.astype(np.float64) for k, v in p.items()} for p in low.params],
        case.lengths,
        [{k: v.astype(np.float64) for k, v in s.items()} for s in low.initial_state],
    )
    result = run_reference(low)
    exact = run_reference(wide)
    pairs = [(result.outputs, exact.outputs)]
    pairs += [(result.state[k][name], exact.state[k][name]) for k in range(2) for name in STATE_NAMES[op]]
    for got, want in pairs:
        assert got.dtype == dtype
        # correctly rounded: within half a unit in the last place of the result's dtype
        half_ulp = 0.5 * np.abs(np.spacing(got)).astype(np.float64)
        assert np.all(np.abs(got.astype(np.float64) - want) <= half_ulp)
    # and close to the float64 run on the unrounded inputs, within the dtype's precision
    np.testing.assert_allclose(
        result.outputs.astype(np.float64), run_reference(case).outputs, atol=50 * np.finfo(dtype).eps, rtol=0
    )
