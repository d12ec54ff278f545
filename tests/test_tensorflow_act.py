"""TensorFlow's act: a NaN halting unit halts its row at once, and long pondering runs compiled.

The NaN cases are those of ``test_act_nan_halting.py`` (from ``helpers_nan_halting.py``): one NaN
in ``x`` with ``max_steps = 10**6`` returns within its deadline, eagerly and under XLA, with the
reference's values and NaN positions, forward and in reverse mode.

An eager call runs :data:`~rnnspec.backends.tensorflow.act.EAGER_INNER_STEPS` inner steps
eagerly and the rest of its pondering in a compiled loop: under XLA without a tape, as a plain
graph under one. Its values and gradients are those of the same call kept eager
(``RNNSPEC_TF_EAGER=1``); a call that ponders little never compiles; and units that never halt
ponder 40,000 inner steps within the deadline (eagerly, about 3 ms a step: minutes).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

import helpers_nan_halting as nan_cases  # noqa: E402  (after the skip)

import rnnspec  # noqa: E402
from rnnspec.backends.tensorflow import act as tf_act  # noqa: E402
from rnnspec.backends.tensorflow.graphs import EAGER_ENV  # noqa: E402
from rnnspec.results import ACTResult  # noqa: E402

B = rnnspec.get_backend("tensorflow")
PATHS = ["eager", "compiled"]


def _forward(path: str, x: np.ndarray, params: Any, **options: Any) -> ACTResult:
    call = B.act if path == "eager" else B.compiled("act")
    result: ACTResult = B.to_numpy(call(B.from_numpy(x), B.from_numpy(params), **options))
    return result


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("cell", nan_cases.CELLS)
@pytest.mark.parametrize("path", PATHS)
def test_a_nan_in_x_halts_its_row_at_once_as_the_reference_does(path: str, cell: str, reverse: bool) -> None:
    x, params = nan_cases.nan_case(cell)
    lengths = np.array(nan_cases.LENGTHS)
    options = {"cell": cell, "max_steps": nan_cases.HUGE, "lengths": lengths, "reverse": reverse}
    got = nan_cases.within_deadline(lambda: _forward(path, x, params, **options))
    nan_cases.assert_the_nan_row_halts_at_once(got, reverse)
    nan_cases.assert_matches(got, nan_cases.reference(x, params, **options), 1e-9)


@pytest.mark.parametrize("cell", nan_cases.CELLS)
def test_reverse_mode_through_a_nan_row_returns_with_the_references_gradients(cell: str) -> None:
    x, params = nan_cases.nan_case(cell)
    options = {"cell": cell, "max_steps": nan_cases.HUGE, "lengths": np.array(nan_cases.LENGTHS)}
    cotangents = nan_cases.cotangents_of(nan_cases.reference(x, params, **options), seed=1)
    got = nan_cases.within_deadline(
        lambda: B.to_numpy(B.vjp("act", B.from_numpy(cotangents), B.from_numpy(x), B.from_numpy(params), **options))
    )
    want = rnnspec.get_backend("numpy").vjp("act", cotangents, x, params, **options)
    others = [r for r in range(nan_cases.BATCH) if r != nan_cases.ROW]
    nan_cases.assert_matches(got["x"][others], want["x"][others], 1e-9)
    if cell != "indrnn":  # relu'(NaN): see test_act_nan_halting.py
        nan_cases.assert_matches(got, want, 1e-9)


@pytest.mark.parametrize("path", PATHS)
def test_a_nan_halting_bias_halts_every_row_at_its_first_inner_step_with_nan_outputs(path: str) -> None:
    x, params = nan_cases.nan_case("gru", nan=False)
    params[0]["b_halt"] = np.array([np.nan])
    got = nan_cases.within_deadline(lambda: _forward(path, x, params, cell="gru", max_steps=nan_cases.HUGE))
    np.testing.assert_array_equal(got.ponder_steps, 1.0)
    for field in (got.outputs, got.ponder_remainder, got.ponder_cost, got.state[0]["h"]):
        assert np.isnan(field).all()


@pytest.mark.parametrize("path", PATHS)
def test_a_halting_unit_that_turns_nan_at_the_third_inner_step_stops_the_row_there(path: str) -> None:
    x, params = nan_cases.overflow_case()
    options = {"cell": "indrnn", "max_steps": 5}
    got = nan_cases.within_deadline(lambda: _forward(path, x, params, **options))
    np.testing.assert_array_equal(got.ponder_steps, [[3.0, 1.0], [5.0, 5.0]])
    nan_cases.assert_matches(got, nan_cases.reference(x, params, **options), 1e-12)


# -- eager pondering hands over to a compiled loop ------------------------------------------------------


def _never_halting(cell: str, time: int, dtype: str = "float64") -> tuple[np.ndarray, list[dict[str, np.ndarray]]]:
    """Params whose halting units are sigmoid(-30) (the sum never reaches 1 - epsilon), and an x."""
    (params,) = rnnspec.init_params("act", input_size=3, hidden_size=4, seed=1, dtype=dtype, cell=cell)
    params["w_halt"][:] = 0.0
    params["b_halt"][:] = -30.0
    x = np.random.default_rng(1).standard_normal((3, time, 3)).astype(dtype)
    return x, [params]


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Record each compiled inner loop an eager call runs: whether it was XLA's."""
    runs: list[bool] = []
    compiled = tf_act._compiled

    def spied(name: str, p: Any, xla: bool) -> Any:
        loop = compiled(name, p, xla)

        def run(*args: Any) -> Any:
            runs.append(xla)
            return loop(*args)

        return run

    monkeypatch.setattr(tf_act, "_compiled", spied)
    return runs


def _eager_and_kept_eager(monkeypatch: pytest.MonkeyPatch, fn: Any, *args: Any) -> tuple[list[bool], Any, Any]:
    """(the compiled loops of ``fn(*args)``, its result, its result with every call kept eager)."""
    runs = _spy(monkeypatch)
    got = fn(*args)
    with monkeypatch.context() as patch:
        patch.setenv(EAGER_ENV, "1")
        kept = fn(*args)
    return runs, got, kept


@pytest.mark.parametrize("cell", nan_cases.CELLS)
def test_pondering_past_the_eager_budget_runs_under_xla_with_the_eager_values(
    cell: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    time, max_steps = 3, tf_act.EAGER_INNER_STEPS + 36
    x, params = _never_halting(cell, time)

    def forward() -> Any:
        return B.to_numpy(B.act(B.from_numpy(x), B.from_numpy(params), cell=cell, max_steps=max_steps))

    runs, got, kept = _eager_and_kept_eager(monkeypatch, forward)
    # The first step spends the budget and goes on compiled; every later step runs compiled.
    assert runs == [True] * time
    np.testing.assert_array_equal(got.ponder_steps, max_steps)
    nan_cases.assert_matches(got, kept, 1e-12)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_under_a_tape_the_compiled_loop_is_a_graph_with_the_eager_gradients(
    cell: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    time, max_steps = 2, tf_act.EAGER_INNER_STEPS + 16
    x, params = _never_halting(cell, time)
    rng = np.random.default_rng(2)
    d_out = rng.standard_normal((x.shape[0], time, 4))

    def gradients() -> list[Any]:
        xt, pt = tf.constant(x), {k: tf.constant(v) for k, v in params[0].items()}
        with tf.GradientTape() as tape:
            tape.watch([xt, *pt.values()])
            result = B.act(xt, [pt], cell=cell, max_steps=max_steps)
            loss = tf.reduce_sum(result.outputs * d_out) + tf.reduce_sum(result.ponder_cost)
        return [g.numpy() for g in tape.gradient(loss, [xt, *pt.values()])]

    runs, got, kept = _eager_and_kept_eager(monkeypatch, gradients)
    assert runs == [False] * time
    nan_cases.assert_matches(got, kept, 1e-10)


def test_a_call_that_ponders_little_never_compiles(monkeypatch: pytest.MonkeyPatch) -> None:
    (params,) = rnnspec.init_params("act", input_size=3, hidden_size=4, seed=3, dtype="float64", cell="gru")
    x = np.random.default_rng(3).standard_normal((2, 20, 3))  # b_halt = 1: about two inner steps a step
    runs = _spy(monkeypatch)
    result = B.act(tf.constant(x), [{k: tf.constant(v) for k, v in params.items()}], cell="gru")
    # The batched inner loop runs as many steps as the row that ponders longest.
    assert float(tf.reduce_sum(tf.reduce_max(result.ponder_steps, axis=0))) < tf_act.EAGER_INNER_STEPS
    assert runs == []


def test_units_that_never_halt_ponder_forty_thousand_inner_steps_within_the_deadline() -> None:
    x, params = _never_halting("gru", 2, "float32")
    got = nan_cases.within_deadline(lambda: _forward("eager", x, params, cell="gru", max_steps=20_000))
    np.testing.assert_array_equal(got.ponder_steps, 20_000)
