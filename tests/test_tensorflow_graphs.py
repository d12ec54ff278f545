"""The TensorFlow backend runs eager calls over long sequences as a cached graph (:mod:`.graphs`).

A long eager call goes through the op's ``tf.function``, a short one, a call
inside a ``tf.function`` and a call under ``RNNSPEC_TF_EAGER=1`` do not; the
graph's values and GradientTape gradients equal the eager loop's and the
reference's; new lengths and new batch and time sizes reuse the trace, while a
second model size (hidden or input size) in the same process gets a function
of its own and the reference's values; a forced plain path gets a function of
its own.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

import rnnspec.tree  # noqa: E402  (after the skip: the backend imports tensorflow)
from rnnspec.backends.tensorflow import graphs, implementation, paths  # noqa: E402
from rnnspec.conformance.assertions import assert_tree_close  # noqa: E402
from rnnspec.conformance.cases import Case, CaseSpec  # noqa: E402
from rnnspec.conformance.tolerances import tolerance  # noqa: E402

B = rnnspec.get_backend("tensorflow")
REFERENCE = rnnspec.get_backend("numpy")
LONG = graphs.GRAPH_MIN_STEPS
#: Ops of every family, with options that exercise their branches.
OPS: list[tuple[str, tuple[tuple[str, Any], ...]]] = [
    ("lstm", ()),
    ("gru", (("reset_after", False),)),
    ("skip_gru", (("reset_after", True),)),
    ("act", (("cell", "gru"), ("epsilon", 0.01), ("max_steps", 3))),
    ("indrnn", (("activation", "relu"),)),
    ("qrnn", (("mode", "ifo"),)),
    ("linear_recurrence", ()),
]


def _case(
    op: str, options: tuple[tuple[str, Any], ...], time: int, reverse: bool, input_size: int = 2, hidden_size: int = 3
) -> Case:
    """float64, three rows (full, half, empty), two layers where the op stacks, a random initial state."""
    primitive = rnnspec.ops.OPS[op].kind == "primitive"
    return CaseSpec(
        op,
        "float64",
        3,
        time,
        input_size,
        hidden_size,
        num_layers=1 if primitive or rnnspec.ops.OPS[op].max_layers == 1 else 2,
        lengths=None if primitive else (time, time // 2, 0),
        initial_state=True,
        reverse=reverse and not primitive,
        options=options,
        window=2 if op == "qrnn" else 1,
    ).build()


def test_a_long_eager_call_runs_as_a_graph_and_a_short_one_does_not() -> None:
    x = tf.zeros((2, LONG, 3), tf.float32)
    assert graphs.wants_graph("skip_gru", {"x": x, "reset_after": True})
    assert not graphs.wants_graph("skip_gru", {"x": x[:, : LONG - 1], "reset_after": True})
    assert graphs.wants_graph("linear_recurrence", {"a": x, "b": x, "initial": None})


def test_inside_a_tf_function_or_with_the_eager_switch_the_call_stays_as_it_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    x = tf.zeros((2, LONG, 3), tf.float32)
    seen: list[bool] = []

    @tf.function
    def traced(x: tf.Tensor) -> tf.Tensor:
        seen.append(graphs.wants_graph("lstm", {"x": x}))
        return x

    traced(x)
    assert seen == [False]
    monkeypatch.setenv(graphs.EAGER_ENV, "1")
    assert not graphs.wants_graph("lstm", {"x": x})


@pytest.mark.parametrize(("op", "options"), OPS, ids=[op for op, _ in OPS])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_the_graph_gives_the_eager_loops_and_the_references_values_and_gradients(
    op: str, options: tuple[tuple[str, Any], ...], reverse: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = _case(op, options, LONG, reverse)
    values, grads = (
        tolerance("float64", steps=case.spec.steps),
        tolerance("float64", steps=case.spec.steps, kind="gradient"),
    )
    calls: list[str] = []

    def counted(name: str, fn: Any, arguments: Any) -> Any:
        calls.append(name)
        return graphs.as_graph(name, fn, arguments)

    monkeypatch.setattr(implementation, "as_graph", counted)
    result = case.run(B)
    cotangents = case.cotangents(result, seed=3)
    found = case.vjp(B, cotangents)
    assert calls == [op, op], "the long calls, forward and under the tape, each go through the graph"
    assert_tree_close(result, case.run(REFERENCE), values, context=f"{op}: graph vs reference")
    assert_tree_close(found, case.vjp(REFERENCE, cotangents), grads, context=f"{op}: graph vs reference gradients")
    monkeypatch.setenv(graphs.EAGER_ENV, "1")
    assert_tree_close(result, case.run(B), values, context=f"{op}: graph vs eager loop")
    assert_tree_close(found, case.vjp(B, cotangents), grads, context=f"{op}: graph vs eager loop gradients")


@pytest.mark.parametrize("op", list(rnnspec.ops.OPS))
def test_a_second_model_size_in_one_process_gives_the_references_values(op: str) -> None:
    options = dict(OPS).get(op, ())
    for input_size, hidden_size in [(4, 8), (4, 9), (5, 9)]:
        case = _case(op, options, LONG, False, input_size=input_size, hidden_size=hidden_size)
        assert_tree_close(
            case.run(B),
            case.run(REFERENCE),
            tolerance("float64", steps=case.spec.steps),
            context=f"{op}: input size {input_size}, hidden size {hidden_size} after another size",
        )


def test_new_lengths_and_new_sizes_reuse_the_trace(monkeypatch: pytest.MonkeyPatch) -> None:
    params = rnnspec.init_params("skip_lstm", input_size=2, hidden_size=3, seed=0)
    params = [{k: tf.constant(v) for k, v in p.items()} for p in params]
    rng = np.random.default_rng(0)
    used: list[Any] = []
    found = graphs._graph
    monkeypatch.setattr(graphs, "_graph", lambda *args: used.append(found(*args)) or used[-1])
    counts = []
    for time, lengths in [(LONG, [LONG, 3]), (LONG, [5, LONG]), (LONG + 7, [LONG + 7, 1]), (LONG + 9, [2, 4])]:
        x = tf.constant(rng.standard_normal((2, time, 2)), tf.float32)
        B.skip_lstm(x, params, lengths=np.array(lengths))
        counts.append(int(used[-1].experimental_get_tracing_count()))
    assert all(fn is used[0] for fn in used), "one function for every batch and length"
    # The first call traces; a second size may retrace once, generalising the sizes; then no more.
    assert counts[-1] == counts[-2], counts
    assert counts[-1] <= 2, counts


def test_a_forced_plain_path_gets_a_graph_of_its_own() -> None:
    params = [
        {k: tf.constant(v) for k, v in p.items()} for p in rnnspec.init_params("gru", input_size=2, hidden_size=3)
    ]
    x = tf.zeros((1, LONG, 2), tf.float32)
    with paths.plain_path():
        B.gru(x, params)
    assert any(key[:2] == ("gru", True) for key in graphs._GRAPHS)
    assert paths.last_path("gru") == "plain"


def test_a_graph_call_modifies_none_of_the_callers_arrays() -> None:
    case = _case("skip_gru", (("reset_after", True),), LONG, False)
    arrays = [a for a in rnnspec.tree.tree_leaves([case.args, case.kwargs]) if isinstance(a, np.ndarray)]
    before = [a.copy() for a in arrays]
    result = case.run(B)
    case.vjp(B, case.cotangents(result, seed=1))
    for now, then in zip(arrays, before, strict=True):
        np.testing.assert_array_equal(now, then)
