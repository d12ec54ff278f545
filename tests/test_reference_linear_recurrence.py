"""The NumPy reference of ``linear_recurrence`` (h_t = a_t h_{t-1} + b_t) is exact.

Its VJP equals central finite differences and torch autograd of an independent loop;
its forward obeys the properties the spec states (chunking, reverse, padding, rows);
edge cases and bad calls behave as the spec says.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from helpers import (
    FD_RTOL,
    TORCH_RTOL,
    assert_relative_close,
    assert_trees_equal,
    central_difference,
    deep_copy,
    full_lengths,
    leaf,
    valid_steps,
)
from helpers_recurrences import B, flip_valid_prefix, torch_linear_recurrence

import rnnspec.reference as reference
from rnnspec.errors import CallError, DtypeError, LengthsError, OptionError, ShapeError

#: (lengths, given initial, reverse): a 0-length row and a full row among the variable lengths.
CASES = [
    pytest.param(None, False, False, id="full-zeros-forward"),
    pytest.param([0, 5, 3], True, False, id="lengths-initial-forward"),
    pytest.param([5, 0, 2], True, True, id="lengths-initial-reverse"),
    pytest.param(None, True, True, id="full-initial-reverse"),
    pytest.param([3, 5, 0], False, True, id="lengths-zeros-reverse"),
]


def make_inputs(
    seed: int, batch: int = 3, time: int = 5, hidden: int = 2, with_initial: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    rng = np.random.default_rng(seed)
    a = rng.uniform(-1.2, 1.2, (batch, time, hidden))
    b = rng.uniform(-1.0, 1.0, (batch, time, hidden))
    initial = rng.uniform(-1.0, 1.0, (batch, hidden)) if with_initial else None
    return a, b, initial


def as_lengths(lengths: Any) -> np.ndarray | None:
    return None if lengths is None else np.asarray(lengths, dtype=np.int64)


@pytest.mark.parametrize(("lengths", "with_initial", "reverse"), CASES)
def test_vjp_matches_central_finite_differences(lengths: Any, with_initial: bool, reverse: bool) -> None:
    a, b, initial = make_inputs(11, with_initial=with_initial)
    lengths = as_lengths(lengths)
    cot = np.random.default_rng(12).normal(size=a.shape)
    h0 = np.zeros((3, 2)) if initial is None else initial
    grads = reference.vjp("linear_recurrence", {"h": cot}, a, b, initial, lengths=lengths, reverse=reverse)
    assert sorted(grads) == ["a", "b", "initial"]

    a_, b_, h0_ = a.copy(), b.copy(), h0.copy()

    def loss() -> float:
        return float(np.sum(cot * B.linear_recurrence(a_, b_, h0_, lengths=lengths, reverse=reverse)))

    assert_relative_close(grads["a"], central_difference(loss, a_), FD_RTOL, "d a")
    assert_relative_close(grads["b"], central_difference(loss, b_), FD_RTOL, "d b")
    assert_relative_close(grads["initial"], central_difference(loss, h0_), FD_RTOL, "d initial")
    assert np.max(np.abs(grads["a"])) > 1e-3, "the check is vacuous if h does not depend on a"
    if initial is not None:
        assert np.max(np.abs(grads["initial"])) > 1e-3
    valid = valid_steps(lengths, 3, 5)
    assert np.all(grads["a"][~valid] == 0.0)
    assert np.all(grads["b"][~valid] == 0.0)


@pytest.mark.parametrize(("lengths", "with_initial", "reverse"), CASES)
def test_forward_and_vjp_match_torch_autograd(lengths: Any, with_initial: bool, reverse: bool) -> None:
    a, b, initial = make_inputs(21, with_initial=with_initial)
    lengths = as_lengths(lengths)
    cot = np.random.default_rng(22).normal(size=a.shape)
    h = B.linear_recurrence(a, b, initial, lengths=lengths, reverse=reverse)
    grads = reference.vjp("linear_recurrence", {"h": cot}, a, b, initial, lengths=lengths, reverse=reverse)

    ta, tb, th0 = leaf(a), leaf(b), leaf(np.zeros((3, 2)) if initial is None else initial)
    out = torch_linear_recurrence(ta, tb, th0, full_lengths(lengths, 3, 5), reverse)
    (out * torch.from_numpy(cot)).sum().backward()
    assert_relative_close(h, out.detach().numpy(), TORCH_RTOL, "h")
    assert_relative_close(grads["a"], ta.grad.numpy(), TORCH_RTOL, "d a")
    assert_relative_close(grads["b"], tb.grad.numpy(), TORCH_RTOL, "d b")
    assert_relative_close(grads["initial"], th0.grad.numpy(), TORCH_RTOL, "d initial")


def test_forward_equals_the_closed_form_sum_of_products() -> None:
    a, b, initial = make_inputs(31, batch=2, time=4, hidden=3)
    h = B.linear_recurrence(a, b, initial)
    for t in range(4):
        # h_t = prod_{s<=t} a_s * h_0 + sum_{s<=t} prod_{s<r<=t} a_r * b_s
        want = np.prod(a[:, : t + 1], axis=1) * initial
        for s in range(t + 1):
            want = want + np.prod(a[:, s + 1 : t + 1], axis=1) * b[:, s]
        np.testing.assert_allclose(h[:, t], want, rtol=1e-13, atol=1e-14)


def test_missing_cotangent_gives_zero_gradients() -> None:
    a, b, initial = make_inputs(32)
    grads = reference.vjp("linear_recurrence", {}, a, b, initial)
    for name in ("a", "b", "initial"):
        assert np.all(grads[name] == 0.0)
    assert grads["initial"].shape == initial.shape


def test_chunked_run_with_the_state_carried_equals_the_whole_run() -> None:
    a, b, initial = make_inputs(33, time=7)
    lengths = np.array([7, 2, 5])
    whole = B.linear_recurrence(a, b, initial, lengths=lengths)
    cut = 3
    first = B.linear_recurrence(a[:, :cut], b[:, :cut], initial, lengths=np.minimum(lengths, cut))
    carried = np.where(
        (lengths > 0)[:, None], first[np.arange(3), np.maximum(np.minimum(lengths, cut) - 1, 0)], initial
    )
    second = B.linear_recurrence(a[:, cut:], b[:, cut:], carried, lengths=np.maximum(lengths - cut, 0))
    np.testing.assert_array_equal(np.concatenate([first, second], axis=1), whole)


def test_reverse_equals_flipping_each_rows_valid_prefix() -> None:
    a, b, initial = make_inputs(34, time=6)
    lengths = np.array([6, 0, 4])
    backward = B.linear_recurrence(a, b, initial, lengths=lengths, reverse=True)
    forward = B.linear_recurrence(
        flip_valid_prefix(a, lengths), flip_valid_prefix(b, lengths), initial, lengths=lengths
    )
    np.testing.assert_array_equal(backward, flip_valid_prefix(forward, lengths))


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_padding_content_never_changes_the_valid_part(reverse: bool) -> None:
    a, b, initial = make_inputs(35, time=6)
    lengths = np.array([6, 0, 3])
    pad = ~valid_steps(lengths, 3, 6)
    h = B.linear_recurrence(a, b, initial, lengths=lengths, reverse=reverse)
    a2, b2 = a.copy(), b.copy()
    a2[pad] = 1e6
    b2[pad] = -7.0
    h2 = B.linear_recurrence(a2, b2, initial, lengths=lengths, reverse=reverse)
    np.testing.assert_array_equal(h2, h)
    assert np.all(h[pad] == 0.0)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_rows_are_independent(reverse: bool) -> None:
    a, b, initial = make_inputs(36, batch=4, time=5)
    lengths = np.array([5, 2, 0, 4])
    h = B.linear_recurrence(a, b, initial, lengths=lengths, reverse=reverse)
    for r in range(4):
        alone = B.linear_recurrence(
            a[r : r + 1], b[r : r + 1], initial[r : r + 1], lengths=lengths[r : r + 1], reverse=reverse
        )
        np.testing.assert_array_equal(alone[0], h[r])


def test_a_row_of_length_zero_gives_zero_outputs_and_no_gradient() -> None:
    a, b, initial = make_inputs(37)
    lengths = np.array([0, 5, 2])
    h = B.linear_recurrence(a, b, initial, lengths=lengths)
    assert np.all(h[0] == 0.0)
    cot = np.ones_like(h)
    grads = reference.vjp("linear_recurrence", {"h": cot}, a, b, initial, lengths=lengths)
    assert np.all(grads["a"][0] == 0.0)
    assert np.all(grads["b"][0] == 0.0)
    assert np.all(grads["initial"][0] == 0.0)
    assert np.all(grads["initial"][1] != 0.0)


@pytest.mark.parametrize("with_initial", [False, True], ids=["zeros", "initial"])
def test_time_zero_gives_an_empty_result_and_zero_gradients(with_initial: bool) -> None:
    a, b, initial = make_inputs(38, time=0, with_initial=with_initial)
    h = B.linear_recurrence(a, b, initial, lengths=np.zeros(3, dtype=np.int64))
    assert h.shape == (3, 0, 2)
    assert h.dtype == np.float64
    grads = reference.vjp("linear_recurrence", {"h": np.zeros((3, 0, 2))}, a, b, initial)
    assert grads["a"].shape == grads["b"].shape == (3, 0, 2)
    assert grads["initial"].shape == (3, 2)
    assert np.all(grads["initial"] == 0.0)


def test_batch_one_and_hidden_size_one_match_a_python_loop() -> None:
    a, b, initial = make_inputs(39, batch=1, time=6, hidden=1)
    h = B.linear_recurrence(a, b, initial)
    state = float(initial[0, 0])
    for t in range(6):
        state = float(a[0, t, 0]) * state + float(b[0, t, 0])
        assert h[0, t, 0] == pytest.approx(state, rel=1e-15, abs=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_low_precision_result_is_the_float64_result_rounded(dtype: type) -> None:
    a, b, initial = make_inputs(40)
    a, b, initial = a.astype(dtype), b.astype(dtype), initial.astype(dtype)
    h = B.linear_recurrence(a, b, initial)
    wide = B.linear_recurrence(a.astype(np.float64), b.astype(np.float64), initial.astype(np.float64))
    assert h.dtype == dtype
    np.testing.assert_array_equal(h, wide.astype(dtype))


BAD_CALLS = [
    pytest.param(
        lambda a, b, h0: B.linear_recurrence(a, b[:, :, :1], h0), ShapeError, "b", id="a-and-b-of-different-shapes"
    ),
    pytest.param(lambda a, b, h0: B.linear_recurrence(a, b[:, :4], h0), ShapeError, "b", id="b-shorter-in-time"),
    pytest.param(lambda a, b, h0: B.linear_recurrence(a, b, h0[:, :1]), ShapeError, "initial", id="initial-too-narrow"),
    pytest.param(lambda a, b, h0: B.linear_recurrence(a, b, h0[:2]), ShapeError, "initial", id="initial-wrong-batch"),
    pytest.param(lambda a, b, h0: B.linear_recurrence(a, b, h0[None]), ShapeError, "initial", id="initial-of-rank-3"),
    pytest.param(lambda a, b, h0: B.linear_recurrence(a[0], b[0], h0), ShapeError, "a", id="a-of-rank-2"),
    pytest.param(lambda a, b, h0: B.linear_recurrence(a.astype(np.int64), b, h0), DtypeError, "a", id="integer-a"),
    pytest.param(lambda a, b, h0: B.linear_recurrence(a > 0, b, h0), DtypeError, "a", id="boolean-a"),
    pytest.param(
        lambda a, b, h0: B.linear_recurrence(a, b.astype(np.float32), h0), DtypeError, "b", id="b-of-another-dtype"
    ),
    pytest.param(
        lambda a, b, h0: B.linear_recurrence(a, b, h0.astype(np.float32)),
        DtypeError,
        "initial",
        id="initial-of-another-dtype",
    ),
    pytest.param(lambda a, b, h0: B.linear_recurrence(a.tolist(), b, h0), DtypeError, "a", id="a-a-list"),
    pytest.param(
        lambda a, b, h0: B.linear_recurrence(a, b, h0, lengths=np.array([5, 6, 1])),
        LengthsError,
        "lengths",
        id="length-beyond-time",
    ),
    pytest.param(
        lambda a, b, h0: B.linear_recurrence(a, b, h0, lengths=np.array([5.0, 1.0, 1.0])),
        LengthsError,
        "lengths",
        id="float-lengths",
    ),
    pytest.param(lambda a, b, h0: B.linear_recurrence(a, b, h0, reverse=1), OptionError, "reverse", id="reverse-1"),
]


@pytest.mark.parametrize(("call", "error", "argument"), BAD_CALLS)
def test_bad_calls_raise_an_rnnspec_error_naming_the_argument(call: Any, error: type, argument: str) -> None:
    a, b, initial = make_inputs(41)
    with pytest.raises(error) as info:
        call(a, b, initial)
    assert isinstance(info.value, CallError)
    assert info.value.op == "linear_recurrence"
    assert info.value.argument == argument
    assert f"argument {argument}:" in str(info.value)


def test_vjp_rejects_a_cotangent_of_the_wrong_shape() -> None:
    a, b, initial = make_inputs(42)
    with pytest.raises(ShapeError, match="cotangents"):
        reference.vjp("linear_recurrence", {"h": np.zeros((3, 4, 2))}, a, b, initial)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_calls_never_modify_their_inputs_and_results_never_alias_them(reverse: bool) -> None:
    a, b, initial = make_inputs(43)
    lengths = np.array([5, 0, 3])
    cot = np.random.default_rng(44).normal(size=a.shape)
    before = deep_copy((a, b, initial, lengths, cot))
    h = B.linear_recurrence(a, b, initial, lengths=lengths, reverse=reverse)
    grads = reference.vjp("linear_recurrence", {"h": cot}, a, b, initial, lengths=lengths, reverse=reverse)
    assert_trees_equal((a, b, initial, lengths, cot), before, "inputs")
    h[...] = 9.0
    for value in grads.values():
        value[...] = 9.0
    assert_trees_equal((a, b, initial, lengths, cot), before, "inputs after writing into the results")
