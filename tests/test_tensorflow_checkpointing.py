"""checkpoint_every on the TensorFlow backend: gradients reach variables, eagerly and in tf.function.

Long eager calls run their segments one by one, each through a graph (not the
whole call as one graph, whose backward recomputed every segment at once).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

import rnnspec  # noqa: E402  (after the skip: the backend imports tensorflow)
from rnnspec.backends.tensorflow import checkpointing, graphs  # noqa: E402
from rnnspec.conformance.tolerances import tolerance  # noqa: E402
from rnnspec.results import SequenceResult  # noqa: E402

TF = rnnspec.get_backend("tensorflow")
BATCH, TIME, INPUT, HIDDEN = 3, 17, 4, 6


def gradients(op: str, every: int | None, *, graph: bool, time: int = TIME) -> list[np.ndarray]:
    """Gradients of <outputs, w> for tf.Variable params (as Keras holds them) and tensor lengths."""
    layers = 1 if op == "act" else 2
    arrays = rnnspec.init_params(op, input_size=INPUT, hidden_size=HIDDEN, num_layers=layers, seed=0, dtype="float64")
    params = [{k: tf.Variable(v) for k, v in layer.items()} for layer in arrays]
    rng = np.random.default_rng(1)
    x = tf.constant(rng.standard_normal((BATCH, time, INPUT)))
    weights = tf.constant(rng.standard_normal((BATCH, time, HIDDEN)))
    lengths = tf.constant([time, 5, 0], dtype=tf.int32)
    variables = [v for layer in params for v in layer.values()]

    def step(x: tf.Tensor) -> list[Any]:
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = getattr(TF, op)(x, params, lengths=lengths, reverse=True, checkpoint_every=every).outputs
            loss = tf.reduce_sum(out * weights)
        return [out, *tape.gradient(loss, [x, *variables], unconnected_gradients=tf.UnconnectedGradients.ZERO)]

    run = tf.function(step) if graph else step
    return [np.asarray(g) for g in run(x)]


@pytest.mark.parametrize("graph", [False, True], ids=["eager", "tf.function"])
@pytest.mark.parametrize("op", ["lstm", "skip_rnn", "qrnn"])
def test_checkpointed_gradients_reach_variable_params_as_without_checkpointing(op: str, graph: bool) -> None:
    tol = tolerance("float64", steps=2 * TIME, kind="gradient")
    for got, want in zip(gradients(op, 4, graph=graph), gradients(op, None, graph=graph), strict=True):
        np.testing.assert_allclose(got, want, rtol=tol.rtol, atol=tol.atol)


LONG = graphs.GRAPH_MIN_STEPS + 6  # a call run as a graph: segments of 16 steps, the last of 6


@pytest.mark.parametrize("op", ["lstm", "skip_gru", "linear_recurrence"])
def test_a_long_eager_checkpointed_call_runs_its_segments_as_graphs_not_as_one_graph(
    op: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    x = tf.zeros((1, LONG, 2))
    whole = {"x": x, "checkpoint_every": 16}
    assert graphs.wants_graph(op, {"x": x})
    assert not graphs.wants_graph(op, whole)
    assert graphs.wants_graph(op, {**whole, "checkpoint_every": LONG}), "one segment: the call as it is"
    calls: list[int] = []
    as_graph = graphs.as_graph

    def counted(name: str, fn: Any, arguments: Any, *, segment: bool = False) -> Any:
        assert segment
        first = arguments["x"] if "x" in arguments else arguments["a"]
        calls.append(int(first.shape[1]))
        return as_graph(name, fn, arguments, segment=segment)

    monkeypatch.setattr(checkpointing.graphs, "as_graph", counted)
    if op == "linear_recurrence":
        a = tf.fill((2, LONG, 3), 0.5)
        with tf.GradientTape() as tape:
            tape.watch(a)
            h = TF.linear_recurrence(a, a, checkpoint_every=16)
        tape.gradient(h, a)
    else:
        arrays = rnnspec.init_params(op, input_size=2, hidden_size=3)
        params = [{k: tf.constant(v) for k, v in p.items()} for p in arrays]
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = getattr(TF, op)(x, params, checkpoint_every=16).outputs
        tape.gradient(out, x)
    # Forward: segments first to last; backward: each recomputed, from the last.
    assert calls == [16, 16, 16, 16, 6, 6, 16, 16, 16, 16], calls


@pytest.mark.parametrize("graph", [False, True], ids=["eager", "tf.function"])
@pytest.mark.parametrize("op", ["lstm", "skip_rnn"])
def test_long_checkpointed_calls_give_the_gradients_of_unsegmented_ones(op: str, graph: bool) -> None:
    tol = tolerance("float64", steps=2 * LONG, kind="gradient")
    got, want = gradients(op, 16, graph=graph, time=LONG), gradients(op, None, graph=graph, time=LONG)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=tol.rtol, atol=tol.atol)


def test_a_segments_carried_state_is_its_first_output_so_graphs_recompute_segments_in_turn() -> None:
    state = (tf.constant([1.0]), tf.constant([2.0]))
    result = SequenceResult(outputs=tf.constant([[3.0]]), state=state)
    flat, rebuild = checkpointing._chain_first(result)
    assert [float(np.asarray(f).reshape(-1)[0]) for f in flat] == [1.0, 2.0, 3.0]
    again = rebuild(flat)
    assert isinstance(again, SequenceResult)
    assert again.outputs is flat[2]
    assert again.state[1] is flat[1]
