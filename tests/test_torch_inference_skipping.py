"""At inference, the PyTorch backend's Skip RNN and ACT skip the work the gates say is not needed.

Without autograd, ``skip_rnn/lstm/gru`` run the cells only on the rows whose
update gate is 1, and ``act`` ponders only the rows still pondering
(:mod:`rnnspec.backends.torch.skipping`). Their results equal the training
loop's and the NumPy reference's; the work skipped is counted by wrapping the
cell each op builds; ``plain_path()``, ``RNNSPEC_TORCH_PLAIN`` and inputs that
require grad take the training loop.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from helpers import variant_id  # noqa: E402
from helpers_adaptive import (  # noqa: E402  (after the skip: the helpers import torch)
    ACT_CELLS,
    SKIP_VARIANTS,
    ACTCase,
    SkipCase,
    make_act_case,
    make_skip_case,
)

import rnnspec  # noqa: E402
from rnnspec.backends.common import native  # noqa: E402
from rnnspec.backends.torch import act as act_module  # noqa: E402
from rnnspec.backends.torch import cell_backward, fused  # noqa: E402
from rnnspec.backends.torch import skip as skip_module  # noqa: E402
from rnnspec.backends.torch.cells import Cell  # noqa: E402
from rnnspec.conformance.assertions import assert_tree_close  # noqa: E402
from rnnspec.conformance.tolerances import tolerance  # noqa: E402
from rnnspec.tree import tree_leaves, tree_map  # noqa: E402

B = rnnspec.get_backend("torch")
REF = rnnspec.get_backend("numpy")
DTYPES = ("float32", "float64")

#: (layers, lengths, initial state, reverse) of a batch of 3 over 5 steps: plain, then every convention at once.
SKIP_SHAPES = {
    "one-layer": (1, None, False, False),
    "stacked-lengths-state-reverse": (2, (5, 0, 3), True, True),
    "stacked-lengths": (2, (2, 5, 0), False, False),
}
#: (lengths, initial state, reverse) of a batch of 3 over 4 steps.
ACT_SHAPES = {
    "full": (None, False, False),
    "lengths-state-reverse": ((4, 0, 2), True, True),
}


def _torch(tree: Any, dtype: str) -> Any:
    """NumPy leaves as new torch tensors of ``dtype``; integer arrays (lengths) stay NumPy."""
    kind = getattr(torch, dtype)
    return tree_map(
        lambda a: torch.from_numpy(np.array(a)).to(kind) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a,
        tree,
    )


def _numpy(tree: Any) -> Any:
    return tree_map(lambda t: t.detach().numpy() if isinstance(t, torch.Tensor) else t, tree)


def _skip_case(variant: tuple[str, dict[str, Any]], shape: str, seed: int = 0) -> SkipCase:
    layers, lengths, with_state, reverse = SKIP_SHAPES[shape]
    op, options = variant
    return make_skip_case(seed, op, options, layers=layers, lengths=lengths, with_state=with_state, reverse=reverse)


def _act_case(cell: str, shape: str, seed: int = 0) -> ACTCase:
    lengths, with_state, reverse = ACT_SHAPES[shape]
    return make_act_case(seed, cell, max_steps=6, lengths=lengths, with_state=with_state, reverse=reverse)


def _call(op: str, args: tuple[Any, ...], kwargs: dict[str, Any], *, plain: bool = False) -> Any:
    """The torch backend's result, asserting the loop it took."""
    if plain:
        with fused.plain_path():
            result = getattr(B, op)(*args, **kwargs)
        assert fused.last_path(op) == "training"
    else:
        result = getattr(B, op)(*args, **kwargs)
        assert fused.last_path(op) == "skipping"
    return result


@pytest.fixture
def cell_rows(monkeypatch: pytest.MonkeyPatch) -> Callable[[Any], list[int]]:
    """``count(module)``: from now on, the rows of every cell step that ``module``'s op runs, one entry per step."""

    def count(module: Any) -> list[int]:
        rows: list[int] = []
        real = module.make_cell

        def make(name: str, options: Any) -> Cell:
            cell = real(name, options)

            def step(p: Any, state: Any, gi: Any) -> Any:
                rows.append(int(gi.shape[0]))
                return cell.fn(p, state, gi)

            return dataclasses.replace(cell, fn=step)

        monkeypatch.setattr(module, "make_cell", make)
        return rows

    return count


# -- values -------------------------------------------------------------------------------


@pytest.mark.parametrize("projection", ["hoisted", "per-update"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", list(SKIP_SHAPES))
@pytest.mark.parametrize("variant", SKIP_VARIANTS, ids=variant_id)
def test_skip_inference_equals_the_training_loop_and_the_reference(
    variant: tuple[str, dict[str, Any]], shape: str, dtype: str, projection: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The skipping loop's result is the training loop's and the reference's; the gates are the same exactly.

    Both placements of layer 0's input projection: hoisted over every step, or on the updating rows only.
    """
    monkeypatch.setattr(skip_module, "PROJECT_PER_UPDATE_FROM", 1 if projection == "per-update" else 10**9)
    case = _skip_case(variant, shape)
    args, kwargs = _torch((case.x, case.params), dtype), _torch(case.kwargs(), dtype)
    fast = _call(case.op, args, kwargs)
    slow = _call(case.op, args, kwargs, plain=True)
    want = getattr(REF, case.op)(*_numpy(args), **_numpy(kwargs))
    tol = tolerance(dtype, steps=case.x.shape[1] * len(case.params))
    assert_tree_close(_numpy(fast), _numpy(slow), tol, context=f"{case.op} {shape} {dtype}: skipping vs training")
    assert_tree_close(_numpy(fast), want, tol, context=f"{case.op} {shape} {dtype}: skipping vs reference")
    np.testing.assert_array_equal(fast.update_gate.numpy(), want.update_gate)
    assert 0 < want.update_gate.sum() < np.count_nonzero(want.update_prob)  # some valid step skips


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", list(ACT_SHAPES))
@pytest.mark.parametrize("cell", ACT_CELLS)
def test_act_inference_equals_the_training_loop_and_the_reference(cell: str, shape: str, dtype: str) -> None:
    """The pondering-rows-only loop's result is the training loop's and the reference's; N is the same exactly."""
    case = _act_case(cell, shape)
    args, kwargs = _torch((case.x, [case.params]), dtype), _torch(case.kwargs(), dtype)
    fast = _call("act", args, kwargs)
    slow = _call("act", args, kwargs, plain=True)
    want = REF.act(*_numpy(args), **_numpy(kwargs))
    tol = tolerance(dtype, steps=case.x.shape[1] * case.max_steps)
    assert_tree_close(_numpy(fast), _numpy(slow), tol, context=f"act {cell} {shape} {dtype}: skipping vs training")
    assert_tree_close(_numpy(fast), want, tol, context=f"act {cell} {shape} {dtype}: skipping vs reference")
    np.testing.assert_array_equal(fast.ponder_steps.numpy(), want.ponder_steps)


def test_inference_results_never_alias_or_modify_the_inputs() -> None:
    """With every row of length 0 the state comes back unchanged, as new tensors; the inputs stay as they were."""
    for op, case in (("skip_lstm", _skip_case(SKIP_VARIANTS[2], "stacked-lengths-state-reverse")), ("act", None)):
        if case is None:
            act_case = _act_case("lstm", "lengths-state-reverse")
            args, kwargs = _torch((act_case.x, [act_case.params]), "float64"), _torch(act_case.kwargs(), "float64")
        else:
            args, kwargs = _torch((case.x, case.params), "float64"), _torch(case.kwargs(), "float64")
        kwargs["lengths"] = np.zeros(args[0].shape[0], dtype=np.int64)
        before = tree_map(lambda t: t.clone() if isinstance(t, torch.Tensor) else t, (args, kwargs))
        result = _call(op, args, kwargs)
        for got, given in zip(tree_leaves(result.state), tree_leaves(kwargs["initial_state"]), strict=True):
            assert torch.equal(got, given)
            assert got.data_ptr() != given.data_ptr()
        for got, want in zip(tree_leaves((args, kwargs)), tree_leaves(before), strict=True):
            if isinstance(want, torch.Tensor):
                assert torch.equal(got, want)


# -- work skipped -------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["stacked-lengths-state-reverse", "stacked-lengths"])
@pytest.mark.parametrize("variant", SKIP_VARIANTS, ids=variant_id)
def test_skip_inference_runs_the_cells_only_on_the_rows_that_update(
    variant: tuple[str, dict[str, Any]], shape: str, cell_rows: Callable[[Any], list[int]]
) -> None:
    """Each layer's cell sees exactly the updates of ``update_gate``; the training loop runs every row at every step."""
    case = _skip_case(variant, shape)
    args, kwargs = _torch((case.x, case.params), "float64"), _torch(case.kwargs(), "float64")
    rows = cell_rows(skip_module)
    result = _call(case.op, args, kwargs)
    layers = len(case.params)
    assert sum(rows) == layers * int(result.update_gate.sum())
    rows.clear()
    _call(case.op, args, kwargs, plain=True)
    assert sum(rows) == layers * case.x.shape[0] * case.x.shape[1]


@pytest.mark.parametrize("projection", ["hoisted", "per-update"])
def test_large_batches_project_only_the_updating_rows_inputs(projection: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """From PROJECT_PER_UPDATE_FROM rows on, layer 0 projects x only at the updates; below, every (row, step) once."""
    case = _skip_case(SKIP_VARIANTS[3], "stacked-lengths-state-reverse")
    batch, time = case.x.shape[:2]
    monkeypatch.setattr(skip_module, "PROJECT_PER_UPDATE_FROM", batch if projection == "per-update" else batch + 1)
    projected: list[int] = []  # rows of every projection, times the steps it covers
    real = skip_module.make_cell

    def make(name: str, options: Any) -> Cell:
        cell = real(name, options)

        class Counting(Cell):
            def project(self, p: Any, x: Any) -> Any:
                projected.append(int(np.prod(x.shape[:-1])))
                return super().project(p, x)

        return Counting(cell.name, cell.state_names, cell.fn, cell.linear)

    monkeypatch.setattr(skip_module, "make_cell", make)
    args, kwargs = _torch((case.x, case.params), "float64"), _torch(case.kwargs(), "float64")
    updates = int(_call(case.op, args, kwargs).update_gate.sum())
    layers = len(case.params)
    assert 0 < updates < batch * time
    expected = layers * updates if projection == "per-update" else batch * time + (layers - 1) * updates
    assert sum(projected) == expected


def test_a_step_where_no_row_updates_runs_no_cell(cell_rows: Callable[[Any], list[int]]) -> None:
    """With du~ = 0.13 every 4th step updates: the cell runs at those steps only, on every row, without a gather."""
    case = _skip_case(SKIP_VARIANTS[3], "one-layer")
    time, batch = 11, case.x.shape[0]
    x = np.random.default_rng(1).uniform(-1.0, 1.0, (batch, time, case.x.shape[2]))
    p = 0.13
    params = [dict(case.params[0], w_gate=np.zeros_like(case.params[0]["w_gate"]), b_gate=np.log([p / (1 - p)]))]
    args = _torch((x, params), "float32")
    rows = cell_rows(skip_module)
    result = _call(case.op, args, {"reset_after": True})
    updates = result.update_gate.numpy()
    assert np.array_equal(updates, np.tile(np.arange(time) % 4 == 0, (batch, 1)))
    assert rows == [batch] * math.ceil(time / 4)


@pytest.mark.parametrize("cell", ACT_CELLS)
def test_act_inference_ponders_only_the_rows_still_pondering(cell: str, cell_rows: Callable[[Any], list[int]]) -> None:
    """The cell sees each valid row N(t) times; the training loop every row until the last one halts."""
    case = make_act_case(1, cell, max_steps=4, batch=4, time=3, lengths=(3, 0, 2, 3), require_cap=True)
    args, kwargs = _torch((case.x, [case.params]), "float64"), _torch(case.kwargs(), "float64")
    rows = cell_rows(act_module)
    steps = _call("act", args, kwargs).ponder_steps.numpy()
    assert len(set(steps[steps > 0].tolist())) > 1  # rows halt at different inner steps
    assert sum(rows) == int(steps.sum())
    rows.clear()
    _call("act", args, kwargs, plain=True)
    assert sum(rows) == case.x.shape[0] * int(steps.max(axis=0).sum())


# -- which loop ---------------------------------------------------------------------------


def test_plain_path_and_the_environment_variable_force_the_training_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """``plain_path()`` and ``RNNSPEC_TORCH_PLAIN=1`` select the training loop for skip and act; "0" does not."""
    skip_case = _skip_case(SKIP_VARIANTS[3], "one-layer")
    act_case = _act_case("gru", "full")
    calls: dict[str, Callable[[], Any]] = {
        "skip_gru": lambda: B.skip_gru(*_torch((skip_case.x, skip_case.params), "float64"), reset_after=True),
        "act": lambda: B.act(*_torch((act_case.x, [act_case.params]), "float64"), **act_case.kwargs()),
    }
    for op, call in calls.items():
        call()
        assert fused.last_path(op) == "skipping"
        with fused.plain_path():
            call()
            assert fused.last_path(op) == "training"
        monkeypatch.setenv(fused.PLAIN_ENV, "1")
        call()
        assert fused.last_path(op) == "training"
        monkeypatch.setenv(fused.PLAIN_ENV, "0")
        call()
        assert fused.last_path(op) == "skipping"


def test_inputs_that_require_grad_take_the_training_loop_and_their_gradients_match_the_reference() -> None:
    """Under autograd the training loop runs and backpropagates as the reference; under no_grad the inference one."""
    case = _skip_case(SKIP_VARIANTS[2], "stacked-lengths-state-reverse")
    x, params = _torch((case.x, case.params), "float64")
    kwargs = _torch(case.kwargs(), "float64")
    for leaf in tree_leaves((x, params, kwargs["initial_state"])):
        leaf.requires_grad_(True)
    with torch.no_grad():
        B.skip_lstm(x, params, **kwargs)
    assert fused.last_path("skip_lstm") == "skipping"
    result = B.skip_lstm(x, params, **kwargs)
    native_kernels = native.available(cell_backward.LIBRARY)
    assert fused.last_path("skip_lstm") == ("native-training" if native_kernels else "training")
    rng = np.random.default_rng(2)
    d_out = rng.standard_normal(result.outputs.shape)
    d_prob = rng.standard_normal(result.update_prob.shape)
    loss = (result.outputs * torch.from_numpy(d_out)).sum() + (result.update_prob * torch.from_numpy(d_prob)).sum()
    d_x, d_w_gate = torch.autograd.grad(loss, [x, params[-1]["w_gate"]])
    want = REF.vjp("skip_lstm", {"outputs": d_out, "update_prob": d_prob}, *_numpy((x, params)), **_numpy(kwargs))
    tol = tolerance("float64", steps=case.x.shape[1] * len(case.params), kind="gradient")
    assert_tree_close(
        _numpy([d_x, d_w_gate]), [want["x"], want["params"][-1]["w_gate"]], tol, context="skip_lstm gradients"
    )
