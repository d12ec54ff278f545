"""A NaN halting unit halts its row of ``act`` at once, on every backend and path.

The spec (``spec/ops/act.md``, "A NaN halting unit") tests the halting sum with "not below
``1 - epsilon``", which a NaN sum passes: the row stops at the inner step whose halting unit is
NaN, ``N(t)`` that step, ``R(t)`` NaN, and so NaN outputs, state and ponder cost; its later steps
read the NaN state and stop at their first inner step. Under ``sum >= 1 - epsilon`` a NaN sum
never halted, and with ``max_steps = 10**9`` no backend returned.

Each backend path here (torch's inference loop, its hand-written backward and its plain
autograd loop; jax) gets one NaN in ``x`` with ``max_steps = 10**6`` and must return within
:data:`~helpers_nan_halting.DEADLINE` seconds (each call runs in a thread that the test waits
for), with exactly the reference's values and NaN positions, forward and in reverse mode (for
indrnn, whose relu frameworks differentiate at NaN in different ways, the other rows' ``x``
gradients). Two more cases put the NaN elsewhere: a halting bias of NaN (every row stops at its
first inner step, with NaN outputs, although the cell's state is finite), and an overflow that
makes the third inner step's halting unit NaN (``N(t) = 3``). The cases are in
``helpers_nan_halting.py``; the reference's own NaN tests are in ``test_reference_act.py``, and
TensorFlow's, in their own session, in ``test_tensorflow_act.py``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from helpers_nan_halting import (
    BATCH,
    CELLS,
    HUGE,
    LENGTHS,
    ROW,
    assert_matches,
    assert_the_nan_row_halts_at_once,
    cotangents_of,
    nan_case,
    overflow_case,
    reference,
    within_deadline,
)

import rnnspec
from rnnspec.results import ACTResult

# -- the backend paths ----------------------------------------------------------------------------------

#: (backend, path): torch's three loops and jax (each compared with the reference).
PATHS = ["torch-inference", "torch-training", "torch-plain", "jax"]


@contextlib.contextmanager
def _torch_path(path: str) -> Iterator[None]:
    from rnnspec.backends.torch import fused

    with fused.plain_path() if path == "torch-plain" else contextlib.nullcontext():
        yield


def _backend(path: str) -> rnnspec.Backend:
    name = path.split("-")[0]
    pytest.importorskip(name)
    return rnnspec.get_backend(name)


def _dtype(path: str) -> str:
    if path == "jax":
        import jax

        return "float64" if jax.config.jax_enable_x64 else "float32"
    return "float64"


def _forward(path: str, x: np.ndarray, params: Any, **options: Any) -> ACTResult:
    """The result of ``path``'s loop, as NumPy."""
    backend = _backend(path)
    if not path.startswith("torch"):
        return backend.to_numpy(backend.act(backend.from_numpy(x), backend.from_numpy(params), **options))
    import torch

    grad = path != "torch-inference"
    leaves = [
        torch.tensor(x, requires_grad=grad),
        [{k: torch.tensor(v, requires_grad=grad) for k, v in params[0].items()}],
    ]
    with _torch_path(path):
        result = backend.act(*leaves, **options)
    kind = type(result.state[0]["h"].grad_fn).__name__
    assert (kind == "_ACTFunctionBackward") == (path == "torch-training"), f"{path} ran {kind}"
    return backend.to_numpy(result)


def _vjp(path: str, cotangents: Any, x: np.ndarray, params: Any, **options: Any) -> Any:
    backend = _backend(path)
    with _torch_path(path) if path.startswith("torch") else contextlib.nullcontext():
        grads = backend.vjp(
            "act", backend.from_numpy(cotangents), backend.from_numpy(x), backend.from_numpy(params), **options
        )
    return backend.to_numpy(grads)


def _rtol(dtype: str) -> float:
    return 1e-9 if dtype == "float64" else 2e-4


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("path", PATHS)
def test_a_nan_in_x_halts_its_row_at_once_and_every_path_matches_the_reference(
    path: str, cell: str, reverse: bool
) -> None:
    dtype = _dtype(path)
    x, params = nan_case(cell, dtype)
    options = {"cell": cell, "max_steps": HUGE, "lengths": np.array(LENGTHS), "reverse": reverse}
    got = within_deadline(lambda: _forward(path, x, params, **options))
    assert_the_nan_row_halts_at_once(got, reverse)
    assert_matches(got, reference(x, params, **options), _rtol(dtype))


#: Reverse mode of jax scans all max_steps inner steps (a reverse-mode loop needs a fixed trip
#: count), costing time and memory in proportion: it gets a max_steps that a test can afford.
_VJP_STEPS = {"jax": 1000}


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("path", [p for p in PATHS if p != "torch-inference"])
def test_reverse_mode_through_a_nan_row_returns_with_the_references_gradients(path: str, cell: str) -> None:
    dtype = _dtype(path)
    x, params = nan_case(cell, dtype)
    options = {"cell": cell, "max_steps": _VJP_STEPS.get(path, HUGE), "lengths": np.array(LENGTHS)}
    cotangents = cotangents_of(reference(x, params, **options), seed=1)
    got = within_deadline(lambda: _vjp(path, cotangents, x, params, **options))
    want = within_deadline(lambda: rnnspec.get_backend("numpy").vjp("act", cotangents, x, params, **options))
    others = [r for r in range(BATCH) if r != ROW]
    assert np.isfinite(np.asarray(want["x"])[others]).all()  # the NaN stays in its row's x gradient
    assert np.isnan(np.asarray(want["x"])[ROW]).any()
    assert_matches(np.asarray(got["x"])[others], np.asarray(want["x"])[others], _rtol(dtype))
    if cell != "indrnn":
        # How far back the NaN goes through relu'(NaN) depends on how a framework differentiates
        # relu (a select stops it, a product carries it); the other cells carry it everywhere alike.
        assert_matches(got, want, _rtol(dtype))


@pytest.mark.parametrize("path", PATHS)
def test_a_nan_halting_bias_halts_every_row_at_its_first_inner_step_with_nan_outputs(path: str) -> None:
    dtype = _dtype(path)
    x, params = nan_case("gru", dtype, nan=False)
    params[0]["b_halt"] = np.full(1, np.nan, dtype)
    options = {"cell": "gru", "max_steps": HUGE}
    got = within_deadline(lambda: _forward(path, x, params, **options))
    np.testing.assert_array_equal(got.ponder_steps, 1.0)
    # The cell's state is finite, but its weight R(t) is NaN: the NaN is not hidden.
    for field in (got.outputs, got.ponder_remainder, got.ponder_cost, got.state[0]["h"]):
        assert np.isnan(np.asarray(field)).all()


@pytest.mark.parametrize("path", PATHS)
def test_a_halting_unit_that_turns_nan_at_the_third_inner_step_stops_the_row_there(path: str) -> None:
    if _dtype(path) != "float64":
        pytest.skip("the overflow is built for float64's range")
    x, params = overflow_case()
    options = {"cell": "indrnn", "max_steps": 5}
    got = within_deadline(lambda: _forward(path, x, params, **options))
    np.testing.assert_array_equal(got.ponder_steps, [[3.0, 1.0], [5.0, 5.0]])
    assert np.isnan(got.ponder_remainder[0]).all()
    assert np.isnan(got.outputs[0]).all()
    assert_matches(got, reference(x, params, **options), 1e-12)
