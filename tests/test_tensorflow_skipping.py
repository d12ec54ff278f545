"""The TensorFlow backend's Skip RNN at inference: only the rows whose gate opens run the cells.

Where no gradient can be taken of the call (eager with no tape) the skip ops
run :mod:`rnnspec.backends.tensorflow.skipping`'s loop; inside a trace with no
tape watching the inputs (an inference ``tf.function``, XLA, ``model.predict``)
they run it under a custom gradient that recomputes the training loop; under a
tape watching the inputs they run the training loop. Checked here:

- values: the skipping loop's equal the training loop's (forced by
  :func:`rnnspec.backends.tensorflow.paths.plain_path`) in the same mode
  (eager, ``tf.function``, XLA), within float rounding, gates bitwise, with
  lengths, reverse, two
  layers, an initial state, batches with and without gathered rows, update
  rates 0, mixed and 1;
- gradients: a tape around an inference trace, a tape inside a trace, and an
  eager tape all give the training loop's gradients;
- work: a counter in the cell's step counts the rows the cells run on: only
  the updating rows (at most a bucket of them under XLA), every row at every
  step under a tape;
- inputs are not modified.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from helpers import logit

tf = pytest.importorskip("tensorflow")

import rnnspec  # noqa: E402  (after the skip: the backend imports tensorflow)
from rnnspec.backends.tensorflow import paths, skip, skipping  # noqa: E402
from rnnspec.backends.tensorflow.cells import Cell, make_cell  # noqa: E402
from rnnspec.conformance.assertions import flatten  # noqa: E402

B = rnnspec.get_backend("tensorflow")
OPTIONS: dict[str, dict[str, Any]] = {
    "skip_rnn": {"activation": "tanh"},
    "skip_lstm": {},
    "skip_gru": {"reset_after": True},
}
OPS = tuple(OPTIONS)
LAYERS, HIDDEN, FEATURES, TIME = 2, 4, 3, 12
MODES = ("eager", "graph", "xla")


def _params(op: str, seed: int, rate: str) -> list[dict[str, tf.Tensor]]:
    """Random params; ``rate`` "mixed" gives gates that open and close, "0" and "1" force ``du~`` near 0 and 1."""
    init_options = {"activation": "tanh"} if op == "skip_rnn" else {}
    host = rnnspec.init_params(
        op, input_size=FEATURES, hidden_size=HIDDEN, num_layers=LAYERS, seed=seed, **init_options
    )
    top = host[-1]
    if rate == "mixed":
        top["w_gate"] = 0.5 * np.random.default_rng(seed).standard_normal(top["w_gate"].shape)
        top["b_gate"] = np.array([-1.5])
    else:
        top["w_gate"], top["b_gate"] = np.zeros_like(top["w_gate"]), np.array([logit(0.999 if rate == "1" else 0.001)])
    return [{k: tf.constant(np.asarray(v, np.float64)) for k, v in p.items()} for p in host]


def _state(op: str, batch: int, seed: int, rate: str) -> list[dict[str, tf.Tensor]]:
    """An initial state: rows at staggered phases ("mixed"), never updating ("0") or always ("1")."""
    rng = np.random.default_rng(seed + 100)
    names = ("h", "c") if op == "skip_lstm" else ("h",)
    state = [{n: rng.standard_normal((batch, HIDDEN)) for n in names} for _ in range(LAYERS)]
    prob = {"mixed": rng.uniform(0.2, 1.0, (batch, 1)), "0": np.zeros((batch, 1)), "1": np.ones((batch, 1))}[rate]
    state[-1]["update_prob"] = prob
    state[-1]["cum_update_prob"] = rng.uniform(0.0, 0.45, (batch, 1)) if rate == "mixed" else np.zeros((batch, 1))
    return [{k: tf.constant(v) for k, v in s.items()} for s in state]


def _arguments(op: str, batch: int, rate: str, seed: int = 0, time: int = TIME) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, time + 1, batch)
    lengths[0] = time
    return {
        "x": tf.constant(rng.standard_normal((batch, time, FEATURES))),
        "params": _params(op, seed, rate),
        "initial_state": _state(op, batch, seed, rate),
        "lengths": tf.constant(lengths, tf.int32),
    }


def _runner(op: str, mode: str, reverse: bool = True) -> Callable[[dict[str, Any]], Any]:
    """The op in ``mode``; a trace made now keeps the path chosen now."""

    def call(arguments: dict[str, Any]) -> Any:
        return getattr(B, op)(**arguments, **OPTIONS[op], reverse=reverse)

    if mode == "eager":
        return call
    return tf.function(call, jit_compile=mode == "xla", reduce_retracing=False)


def _values(result: Any) -> dict[str, np.ndarray]:
    return flatten(B.to_numpy(result))


@pytest.fixture
def counter(monkeypatch: pytest.MonkeyPatch) -> tf.Variable:
    """The number of rows the skip ops' cells run on, summed over steps and layers."""
    rows = tf.Variable(0, dtype=tf.int64)

    def counting(name: str, options: Any) -> Cell:
        cell = make_cell(name, options)

        def fn(p: Any, state: Any, gi: tf.Tensor) -> Any:
            with tf.control_dependencies([rows.assign_add(tf.cast(tf.shape(gi)[0], tf.int64))]):
                return {k: tf.identity(v) for k, v in cell.fn(p, state, gi).items()}

        return dataclasses.replace(cell, fn=fn)

    monkeypatch.setattr(skip, "make_cell", counting)
    return rows


def _value_cases() -> list[tuple[str, int, str, str]]:
    """(op, batch, rate, mode): a Latin square over batches 1, 3, 16 and rates 0, mixed, 1 for each op and
    mode (every pair of values meets once; the full product takes minutes of XLA compiling), and the mixed
    rate at batch 16, where rows are gathered, for every op and mode."""
    square = [
        (op, (1, 3, 16)[(j + m) % 3], ("0", "mixed", "1")[(j + 2 * m) % 3], mode)
        for j, op in enumerate(OPS)
        for m, mode in enumerate(MODES)
    ]
    gathered = [(op, 16, "mixed", mode) for op in OPS for mode in MODES]
    return list(dict.fromkeys(square + gathered))


@pytest.mark.parametrize(("op", "batch", "rate", "mode"), _value_cases())
def test_the_skipping_loop_gives_the_training_loops_values(op: str, batch: int, rate: str, mode: str) -> None:
    arguments = _arguments(op, batch, rate)
    with paths.plain_path():
        expected = _values(_runner(op, mode)(arguments))
        assert paths.last_path(op) == "training"
    got = _values(_runner(op, mode)(arguments))
    assert paths.last_path(op) == ("skipping" if mode == "eager" else "skipping-recompute")
    assert got.keys() == expected.keys()
    for key in expected:
        if "update_gate" in key:
            np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
        else:
            np.testing.assert_allclose(got[key], expected[key], rtol=1e-12, atol=1e-12, err_msg=key)
    mean_gate = float(np.mean(next(v for k, v in expected.items() if "update_gate" in k)))
    if rate != "mixed":  # the forced rates do what they say (on each row's valid steps)
        assert (mean_gate == 0.0) if rate == "0" else (mean_gate > 0.5)


def _rows_computed(result: Any, xla: bool) -> int:
    """The rows the cells of one layer should run on, from each step's updating rows ``n`` (in loop order):
    none where ``n = 0``; ``n`` where gathered (at most half the batch, from batch ``MIN_GATHER_BATCH``), the
    smallest bucket holding them under XLA; else the whole batch."""
    gates = B.to_numpy(result.update_gate)
    batch = gates.shape[0]
    total = 0
    for n in gates.sum(axis=0).astype(int):
        if n == 0:
            continue
        if batch < skipping.MIN_GATHER_BATCH:
            total += batch
        elif xla:
            total += next((m for m in skipping.buckets(batch) if n <= m), batch)
        else:
            total += n if 2 * n <= batch else batch
    return total


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("batch", [1, 16])
def test_the_cells_run_only_on_the_rows_that_update(batch: int, mode: str, counter: tf.Variable) -> None:
    op = "skip_gru"
    arguments = _arguments(op, batch, "mixed")
    run = _runner(op, mode, reverse=False)  # loop order is output order
    run(arguments)  # traced (or warmed) before counting
    counter.assign(0)
    result = run(arguments)
    updates = int(np.sum(B.to_numpy(result.update_gate)))
    assert 0 < updates < batch * TIME
    expected = _rows_computed(result, mode == "xla")
    assert expected < batch * TIME  # some work skipped
    assert int(counter.numpy()) == LAYERS * expected

    def taped(arguments: dict[str, Any]) -> Any:  # a tape where the op is built: the training loop
        with tf.GradientTape() as tape:
            tape.watch(arguments["x"])
            return getattr(B, op)(**arguments, **OPTIONS[op])

    training = taped if mode == "eager" else tf.function(taped, jit_compile=mode == "xla")
    counter.assign(0)
    training(arguments)
    assert paths.last_path(op) == "training"
    assert int(counter.numpy()) == LAYERS * batch * TIME  # every row at every step


@pytest.mark.parametrize("mode", MODES)
def test_a_step_where_no_row_updates_runs_no_cell(mode: str, counter: tf.Variable) -> None:
    run = _runner("skip_lstm", mode)
    arguments = _arguments("skip_lstm", 16, "0")
    run(arguments)
    counter.assign(0)
    run(arguments)
    assert int(counter.numpy()) == 0


def _gradients(run: Callable[[dict[str, Any]], Any], arguments: dict[str, Any]) -> list[tf.Tensor]:
    """The gradients of a loss over the outputs and the final update_prob, as a training step takes them."""
    sources = [arguments["x"], *tf.nest.flatten(arguments["params"]), *tf.nest.flatten(arguments["initial_state"])]
    weights = tf.constant(np.random.default_rng(3).standard_normal((*arguments["x"].shape[:2], HIDDEN)))
    with tf.GradientTape() as tape:
        tape.watch(sources)
        result = run(arguments)
        loss = tf.reduce_sum(result.outputs * weights) + tf.reduce_sum(result.state[-1]["update_prob"])
    return list(tape.gradient(loss, sources))


def _assert_same_gradients(got: list[tf.Tensor], expected: list[tf.Tensor]) -> None:
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(e), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_a_tape_around_an_inference_trace_gets_the_training_loops_gradients(mode: str) -> None:
    op = "skip_lstm"
    arguments = _arguments(op, 16, "mixed")
    with paths.plain_path():
        # A tape around an XLA function cannot differentiate the training loop itself (its while loop's
        # TensorLists cannot leave XLA): there the training loop's gradients are those of the tf.function.
        expected = _gradients(_runner(op, "graph" if mode == "xla" else mode), arguments)
    run = _runner(op, mode)
    run(arguments)  # traced (or run) without a tape: it skips
    assert paths.last_path(op) == ("skipping" if mode == "eager" else "skipping-recompute")
    got = _gradients(run, arguments)
    if mode == "eager":  # an eager call under the tape takes the training loop itself
        assert paths.last_path(op) == "training"
    _assert_same_gradients(got, expected)


@pytest.mark.parametrize("mode", ["graph", "xla"])
def test_a_tape_inside_a_trace_takes_the_training_loop(mode: str) -> None:
    op = "skip_gru"
    arguments = _arguments(op, 16, "mixed")

    def step() -> list[tf.Tensor]:
        return _gradients(_runner(op, "eager"), arguments)

    with paths.plain_path():
        expected = tf.function(step, jit_compile=mode == "xla")()
    got = tf.function(step, jit_compile=mode == "xla")()
    assert paths.last_path(op) == "training"
    _assert_same_gradients(got, expected)


def test_a_long_eager_call_runs_as_a_graph_that_skips_and_keeps_the_training_gradient() -> None:
    op = "skip_gru"
    arguments = _arguments(op, 16, "mixed", time=80)  # past graphs.GRAPH_MIN_STEPS: the cached tf.function
    with paths.plain_path():
        expected = _values(_runner(op, "eager")(arguments))
        expected_gradients = _gradients(_runner(op, "eager"), arguments)
    got = _values(_runner(op, "eager")(arguments))
    assert paths.last_path(op) == "skipping-recompute"
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-12, atol=1e-12, err_msg=key)
    _assert_same_gradients(_gradients(_runner(op, "eager"), arguments), expected_gradients)


@pytest.mark.parametrize("mode", MODES)
def test_the_inputs_are_not_modified(mode: str) -> None:
    arguments = _arguments("skip_gru", 16, "mixed")
    before = flatten({k: B.to_numpy(v) for k, v in arguments.items()})
    _runner("skip_gru", mode)(arguments)
    after = flatten({k: B.to_numpy(v) for k, v in arguments.items()})
    for key in before:
        np.testing.assert_array_equal(after[key], before[key], err_msg=key)


def test_buckets_hold_at_most_half_the_batch_and_none_below_the_gather_batch() -> None:
    assert skipping.buckets(skipping.MIN_GATHER_BATCH - 1) == ()
    assert skipping.buckets(64) == (8, 16, 32)
    assert skipping.buckets(9) == (2, 3, 5)


def test_keras_predict_skips_and_fit_trains_with_the_training_loop() -> None:
    keras = pytest.importorskip("keras")
    from rnnspec.backends.tensorflow.keras import SkipGRU

    layer = SkipGRU(HIDDEN, num_layers=LAYERS, return_sequences=True, return_extras=True, seed=0)
    inputs = keras.Input((TIME, FEATURES))
    model = keras.Model(inputs, layer(inputs))
    for weight in layer.weights:  # du~ near 0.3: updates at about every second step
        if weight.path.endswith("b_gate"):
            weight.assign([logit(0.3)])
    x = np.random.default_rng(0).standard_normal((16, TIME, FEATURES)).astype(np.float32)
    got = model.predict(x, verbose=0)
    assert paths.last_path("skip_gru") == "skipping-recompute"
    with paths.plain_path():
        expected = [np.asarray(e) for e in model(x, training=False)]
    assert 0.0 < float(np.mean(expected[1])) < 1.0  # some steps skip
    np.testing.assert_array_equal(got[1], expected[1])  # the gates
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)  # float32 rounding
    model.compile(optimizer="sgd", loss=["mse", None, None])
    model.fit(x, np.zeros((16, TIME, HIDDEN), np.float32), epochs=1, verbose=0)
    assert paths.last_path("skip_gru") == "training"
