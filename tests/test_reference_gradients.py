"""``rnnspec.reference.vjp`` is the exact reverse mode of rnn, lstm and gru.

Every cotangent (of x, of every parameter of every layer, of the initial state)
equals float64 central finite differences of the loss ``<cotangents, result>``
within 1e-7 relative, and torch autograd on the same cases within 1e-10.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from helpers import (
    FD_RTOL,
    RELU_MARGIN,
    SEQUENCE_SHAPES,
    TORCH_RTOL,
    assert_relative_close,
    assert_trees_equal,
    deep_copy,
    numerical_sequence_vjp,
    shape_id,
    variant_id,
)
from helpers_reference import (
    STATE_NAMES,
    VARIANTS,
    Case,
    make_case,
    random_cotangents,
    relu_preactivations,
    run_reference,
    torch_vjp,
)

import rnnspec.reference as reference

# Central differences (helpers.EPS): |L| is O(10) here, so the rounding error ~ 1e-16 * |L| / eps
# stays far below the FD_RTOL bound, and a +-EPS step moves a relu pre-activation by at most
# ~ 10 * EPS, well inside RELU_MARGIN.

CASES = [
    pytest.param(variant, *shape, id=f"{variant_id(variant)}-{shape_id(*shape)}")
    for variant in VARIANTS
    for shape in SEQUENCE_SHAPES
]


def build_case(variant: tuple[str, dict[str, Any]], layers: int, lengths: Any, with_state: bool, reverse: bool) -> Case:
    op, options = variant
    seed = 1000 + 10 * layers + (0 if lengths is None else lengths[0]) + (2 if reverse else 0)
    case = make_case(
        seed,
        op,
        options,
        batch=3,
        time=5,
        input_size=4,
        hidden=3,
        layers=layers,
        lengths=lengths,
        with_state=with_state,
        reverse=reverse,
        relu_margin=RELU_MARGIN,
    )
    if op == "rnn" and options["activation"] == "relu":
        pre = relu_preactivations(case)
        assert np.min(np.abs(pre)) >= RELU_MARGIN
        assert np.any(pre > 0), "some relu units must be active, or the gradient check is vacuous"
    return case


def numerical_vjp(case: Case, cotangents: dict[str, Any]) -> dict[str, Any]:
    """Central differences of ``<cotangents, result>`` w.r.t. every input array (the initial state: zeros
    when the case gives none, so the gradient is at zeros)."""
    return numerical_sequence_vjp(
        lambda x, p, s: run_reference(case, x=x, params=p, initial_state=s),
        case.x,
        case.params,
        case.state_or_zeros(),
        cotangents,
    )


def assert_vjp_close(actual: dict[str, Any], expected: dict[str, Any], rtol: float, case: Case) -> None:
    assert sorted(actual) == ["initial_state", "params", "x"]
    assert_relative_close(actual["x"], expected["x"], rtol, "d x")
    assert len(actual["params"]) == len(expected["params"]) == case.layers
    for k, (got, want) in enumerate(zip(actual["params"], expected["params"], strict=True)):
        assert sorted(got) == sorted(want) == ["b_hh", "b_ih", "w_hh", "w_ih"]
        for name in want:
            assert_relative_close(got[name], want[name], rtol, f"d params[{k}][{name!r}]")
    assert len(actual["initial_state"]) == len(expected["initial_state"]) == case.layers
    for k, (got, want) in enumerate(zip(actual["initial_state"], expected["initial_state"], strict=True)):
        assert sorted(got) == sorted(want) == sorted(STATE_NAMES[case.op])
        for name in want:
            assert_relative_close(got[name], want[name], rtol, f"d initial_state[{k}][{name!r}]")


def reference_vjp(case: Case, cotangents: dict[str, Any]) -> dict[str, Any]:
    return reference.vjp(case.op, cotangents, case.x, case.params, **case.kwargs())


@pytest.mark.parametrize(("variant", "layers", "lengths", "with_state", "reverse"), CASES)
def test_vjp_matches_central_finite_differences(
    variant: tuple[str, dict[str, Any]], layers: int, lengths: Any, with_state: bool, reverse: bool
) -> None:
    case = build_case(variant, layers, lengths, with_state, reverse)
    cotangents = random_cotangents(np.random.default_rng(layers), case)
    grads = reference_vjp(case, cotangents)
    numeric = numerical_vjp(case, cotangents)
    assert np.max(np.abs(numeric["x"])) > 1e-3, "the check is vacuous if the loss does not depend on x"
    assert_vjp_close(grads, numeric, FD_RTOL, case)
    if lengths is not None:
        # steps past a row's length receive no gradient
        for b, n in enumerate(lengths):
            assert np.all(grads["x"][b, n:] == 0.0)


@pytest.mark.parametrize(("variant", "layers", "lengths", "with_state", "reverse"), CASES)
def test_vjp_matches_torch_autograd(
    variant: tuple[str, dict[str, Any]], layers: int, lengths: Any, with_state: bool, reverse: bool
) -> None:
    case = build_case(variant, layers, lengths, with_state, reverse)
    cotangents = random_cotangents(np.random.default_rng(layers + 100), case)
    assert_vjp_close(reference_vjp(case, cotangents), torch_vjp(case, cotangents), TORCH_RTOL, case)


def test_empty_row_passes_the_state_cotangent_through_unchanged() -> None:
    case = build_case(("lstm", {}), 2, [0, 5, 3], True, False)
    cotangents = random_cotangents(np.random.default_rng(5), case)
    grads = reference_vjp(case, cotangents)
    for k in range(2):
        for name in ("h", "c"):
            np.testing.assert_array_equal(grads["initial_state"][k][name][0], cotangents["state"][k][name][0])
    assert np.all(grads["x"][0] == 0.0)


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_missing_cotangents_count_as_zero(variant: tuple[str, dict[str, Any]]) -> None:
    case = build_case(variant, 2, [5, 1, 3], True, False)
    cotangents = random_cotangents(np.random.default_rng(6), case)
    zero_state = [{k: np.zeros_like(v) for k, v in layer.items()} for layer in cotangents["state"]]
    only_outputs = reference_vjp(case, {"outputs": cotangents["outputs"]})
    explicit = reference_vjp(case, {"outputs": cotangents["outputs"], "state": zero_state})
    assert_trees_equal(only_outputs, explicit, "outputs only")
    only_state = reference_vjp(case, {"state": cotangents["state"]})
    explicit = reference_vjp(case, {"outputs": np.zeros_like(cotangents["outputs"]), "state": cotangents["state"]})
    assert_trees_equal(only_state, explicit, "state only")
    assert np.any(only_state["x"] != 0.0)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_vjp_never_modifies_its_inputs(variant: tuple[str, dict[str, Any]], reverse: bool) -> None:
    case = build_case(variant, 2, [4, 0, 5], True, reverse)
    cotangents = random_cotangents(np.random.default_rng(7), case)
    before = deep_copy((case.x, case.params, case.initial_state, case.lengths, cotangents))
    grads = reference_vjp(case, cotangents)
    assert_trees_equal((case.x, case.params, case.initial_state, case.lengths, cotangents), before, "inputs")
    # the cotangents returned are fresh arrays
    grads["x"][...] = 1.0
    for layer in [*grads["params"], *grads["initial_state"]]:
        for value in layer.values():
            value[...] = 1.0
    assert_trees_equal((case.x, case.params, case.initial_state, case.lengths, cotangents), before, "after writes")


def test_vjp_of_a_single_param_mapping_is_a_mapping() -> None:
    case = build_case(("gru", {"reset_after": True}), 1, None, False, False)
    cotangents = random_cotangents(np.random.default_rng(8), case)
    as_list = reference.vjp("gru", cotangents, case.x, case.params, reset_after=True)
    as_mapping = reference.vjp("gru", cotangents, case.x, case.params[0], reset_after=True)
    assert isinstance(as_mapping["params"], dict)
    assert_trees_equal(as_mapping["params"], as_list["params"][0], "params")


@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["float32", "float16"])
@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_low_precision_vjp_is_the_float64_vjp_rounded(variant: tuple[str, dict[str, Any]], dtype: type) -> None:
    case = build_case(variant, 2, [5, 0, 3], True, True)
    low = Case(
        case.op,
        case.options,
        case.x.astype(dtype),
        [{k: v.astype(dtype) for k, v in p.items()} for p in case.params],
        case.lengths,
        [{k: v.astype(dtype) for k, v in s.items()} for s in case.initial_state],
        reverse=True,
    )
    wide = Case(
        case.op,
        case.options,
        low.x.astype(np.float64),
        [{k: v.astype(np.float64) for k, v in p.items()} for p in low.params],
        case.lengths,
        [{k: v.astype(np.float64) for k, v in s.items()} for s in low.initial_state],
        reverse=True,
    )
    cotangents = random_cotangents(np.random.default_rng(9), case)
    got = reference_vjp(low, cotangents)
    want = reference_vjp(wide, cotangents)
    leaves = [(got["x"], want["x"])]
    for key in ("params", "initial_state"):
        for g_layer, w_layer in zip(got[key], want[key], strict=True):
            leaves += [(g_layer[name], w_layer[name]) for name in w_layer]
    for g, w in leaves:
        assert g.dtype == dtype
        half_ulp = 0.5 * np.abs(np.spacing(g)).astype(np.float64)
        assert np.all(np.abs(g.astype(np.float64) - w) <= half_ulp)
