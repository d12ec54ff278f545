"""A NaN halting unit halts its row of ``act`` at once, on every backend and path.

The spec (``spec/ops/act.md``, "A NaN halting unit") tests the halting sum with "not below
``1 - epsilon``", which a NaN sum passes: the row stops at the inner step whose halting unit is
NaN, ``N(t)`` that step, ``R(t)`` NaN, and so NaN outputs, state and ponder cost; its later steps
read the NaN state and stop at their first inner step. Under ``sum >= 1 - epsilon`` a NaN sum
never halted, and with ``max_steps = 10**9`` no backend returned.

Each backend path here (the reference; torch's inference loop, its hand-written backward and its
plain autograd loop; jax) gets one NaN in ``x`` with ``max_steps = 10**6`` and must return within
:data:`DEADLINE` seconds (each call runs in a thread that the test waits for), with exactly the
reference's values and NaN positions, forward and in reverse mode (for indrnn, whose relu
frameworks differentiate at NaN in different ways, the other rows' ``x`` gradients). Two more cases put the NaN
elsewhere: a halting bias of NaN (every row stops at its first inner step, with NaN outputs,
although the cell's state is finite), and an overflow that makes the third inner step's halting
unit NaN (``N(t) = 3``). TensorFlow's checks, in their own session, reuse these cases
(``test_tensorflow_act.py``).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

import rnnspec
from rnnspec.results import ACTResult

CELLS = ("rnn", "lstm", "gru", "indrnn")
#: More inner steps than any backend runs in a test's time: a row that ponders them never returns.
HUGE = 10**6
#: Seconds a call may take (jax compiles, and the machine may be busy); a row pondering HUGE steps takes minutes.
DEADLINE = 60.0
BATCH, TIME, INPUT, HIDDEN = 3, 4, 3, 5
#: The NaN's row and step; the third row is shorter, so the padding is covered too.
ROW, STEP, LENGTHS = 1, 1, (4, 4, 2)


def within_deadline(fn: Callable[[], Any], seconds: float = DEADLINE) -> Any:
    """``fn()``, failing the test if it has not returned after ``seconds`` (it goes on in a daemon thread)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            with np.errstate(over="ignore", invalid="ignore"):  # NumPy's warnings on the NaN and overflows
                box["value"] = fn()
        except BaseException as error:  # re-raised in the test's thread
            box["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"the call did not return within {seconds} s"
    if "error" in box:
        raise box["error"]
    return box["value"]


def nan_case(cell: str, dtype: str = "float64") -> tuple[np.ndarray, list[dict[str, np.ndarray]]]:
    """x with one NaN at (ROW, STEP), and params whose rows halt after different inner steps."""
    (params,) = rnnspec.init_params("act", input_size=INPUT, hidden_size=HIDDEN, seed=5, dtype="float64", cell=cell)
    rng = np.random.default_rng(5)
    params["w_halt"] = rng.normal(0.0, 3.0, params["w_halt"].shape)
    params["b_halt"] = np.full(1, -0.4)
    if cell == "indrnn":  # its initial w_ih is tiny, and so would be the halting units' spread
        params["w_ih"] = rng.normal(0.0, 1.0, params["w_ih"].shape)
        params["w_halt"] = np.abs(params["w_halt"])  # relu's h >= 0: units of sigmoid(-0.4) at least
    x = rng.standard_normal((BATCH, TIME, INPUT))
    x[ROW, STEP, 0] = np.nan
    return x.astype(dtype), [{k: v.astype(dtype) for k, v in params.items()}]


def overflow_case(dtype: str = "float64") -> tuple[np.ndarray, list[dict[str, np.ndarray]]]:
    """indrnn whose row 0 reaches NaN at its third inner step, and whose row 1 never halts.

    ``h^n = relu(x + 1e200 h^{n-1})`` on both units: row 0 (``x = 1``) holds 1, then 1e200, then
    inf; the halting unit reads ``h_0 - h_1 - 50``, so ``sigmoid(-50)`` twice, then
    ``sigmoid(inf - inf)``, NaN. Row 1 (``x = 0``) stays 0 and sums ``sigmoid(-50)`` per step.
    """
    params = {
        "w_ih": np.array([[1.0, 0.0], [1.0, 0.0]]),
        "b_ih": np.zeros(2),
        "u": np.full(2, 1e200),
        "w_halt": np.array([[1.0, -1.0]]),
        "b_halt": np.array([-50.0]),
    }
    x = np.array([[[1.0], [1.0]], [[0.0], [0.0]]])
    return x.astype(dtype), [{k: v.astype(dtype) for k, v in params.items()}]


def later_in_order(reverse: bool) -> np.ndarray:
    """The steps of row ROW (full length) at or after the NaN's, in processing order."""
    index = np.arange(TIME)
    return index <= STEP if reverse else index >= STEP


def assert_the_nan_row_halts_at_once(result: ACTResult, reverse: bool) -> None:
    """Row ROW: N = 1, NaN remainder, cost, outputs and state from the NaN's step on; finite before.

    Every other row is finite (its values are compared with the reference's elsewhere).
    """
    after = later_in_order(reverse)
    steps, remainder, cost = (np.asarray(a, np.float64) for a in result[2:])
    outputs = np.asarray(result.outputs, np.float64)
    np.testing.assert_array_equal(steps[ROW, after], 1.0)
    assert np.isnan(remainder[ROW, after]).all()
    assert np.isnan(cost[ROW, after]).all()
    assert np.isnan(outputs[ROW, after]).all()
    for name, entry in result.state[0].items():
        assert np.isnan(np.asarray(entry)[ROW]).all(), f"state {name!r} of the NaN's row is not NaN"
    others = [r for r in range(BATCH) if r != ROW]
    for field in (outputs, steps, remainder, cost):
        assert np.isfinite(field[others]).all()
        assert np.isfinite(field[ROW, ~after]).all()
    assert (steps[others] <= 20).all(), "another row pondered far too long"


def assert_matches(got: Any, want: Any, rtol: float) -> None:
    """Equal leaf by leaf within ``rtol``, NaN exactly where ``want`` has NaN."""
    if isinstance(want, dict):
        assert set(got) == set(want)
        for k in want:
            assert_matches(got[k], want[k], rtol)
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            assert_matches(g, w, rtol)
    else:
        np.testing.assert_allclose(
            np.asarray(got, np.float64), np.asarray(want, np.float64), rtol=rtol, atol=rtol, equal_nan=True
        )


def reference(x: np.ndarray, params: Any, **options: Any) -> ACTResult:
    """The reference's result (float64 arithmetic, rounded to x's dtype)."""
    result: ACTResult = within_deadline(lambda: rnnspec.get_backend("numpy").act(x, params, **options))
    return result


def cotangents_of(result: ACTResult, seed: int) -> dict[str, Any]:
    """Random cotangents for the outputs, the state and the ponder cost (NumPy, in x's dtype)."""
    rng = np.random.default_rng(seed)
    outputs = np.asarray(result.outputs)

    def draw(a: Any) -> np.ndarray:
        return rng.standard_normal(np.shape(a)).astype(outputs.dtype)

    return {
        "outputs": draw(outputs),
        "state": [{k: draw(v) for k, v in result.state[0].items()}],
        "ponder_cost": draw(result.ponder_cost),
    }


# -- the backend paths ----------------------------------------------------------------------------------

#: (backend, path): the reference, torch's three loops and jax.
PATHS = ["numpy", "torch-inference", "torch-training", "torch-plain", "jax"]


@contextlib.contextmanager
def _torch_path(path: str) -> Iterator[None]:
    from rnnspec.backends.torch import fused

    with fused.plain_path() if path == "torch-plain" else contextlib.nullcontext():
        yield


def _backend(path: str) -> rnnspec.Backend:
    name = path.split("-")[0]
    if name != "numpy":
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
    x, params = nan_case("gru", dtype)
    x = np.nan_to_num(x)
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
