"""The cases of ``act``'s NaN-halting tests, framework-free, shared by the reference's, the backends' and
TensorFlow's tests (``test_reference_act.py``, ``test_act_nan_halting.py``, ``test_tensorflow_act.py``).

A NaN halting unit halts its row at once (``spec/ops/act.md``, "A NaN halting unit"): :func:`nan_case`
puts one NaN in ``x``, :func:`overflow_case` makes a halting unit NaN at the third inner step. Every
call runs under :func:`within_deadline`: a row that never halts ponders :data:`HUGE` inner steps.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np

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


def nan_case(cell: str, dtype: str = "float64", *, nan: bool = True) -> tuple[np.ndarray, list[dict[str, np.ndarray]]]:
    """x with one NaN at (ROW, STEP) (none with ``nan=False``), and params whose rows halt after different
    inner steps."""
    (params,) = rnnspec.init_params("act", input_size=INPUT, hidden_size=HIDDEN, seed=5, dtype="float64", cell=cell)
    rng = np.random.default_rng(5)
    params["w_halt"] = rng.normal(0.0, 3.0, params["w_halt"].shape)
    params["b_halt"] = np.full(1, -0.4)
    if cell == "indrnn":  # its initial w_ih is tiny, and so would be the halting units' spread
        params["w_ih"] = rng.normal(0.0, 1.0, params["w_ih"].shape)
        params["w_halt"] = np.abs(params["w_halt"])  # relu's h >= 0: units of sigmoid(-0.4) at least
    x = rng.standard_normal((BATCH, TIME, INPUT))
    if nan:
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
