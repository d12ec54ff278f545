"""The plain path's time loop of rnn, lstm and gru in the TensorFlow backend (:mod:`.classic`).

The layer rewrites its params once before the loop (:func:`.cells.make_hoist`:
the recurrent weights transposed, ``b_hh`` moved into the input projection
where the equations allow) and reads the projection in chunks of steps whose
length :func:`.sequence.balanced_chunk_steps` chooses from the sizes. Both
sides of that choice, chunks of one step (the array's elements, no gather)
and longer chunks with a padded last one, give the reference's values and
gradients, eagerly and in a ``tf.function``; a step given the rewritten params
computes what it computes from the spec's (act and the skip cells call it so);
and no matmul by a transposed weight runs inside the forward or the backward
loop, which was most of the plain lstm's time over ``keras.layers.LSTM``'s.

From :data:`.sequence.UNROLL_MIN_STEPS` steps, or a length known only at run
time, the loop runs :data:`.sequence.UNROLL_STEPS` steps per iteration
(:func:`.sequence.unroll_steps`), then the steps left over one per iteration
in a second loop. Just below the threshold, in whole chunks, with steps left
over and with a length unknown to the trace, the values and gradients are the
reference's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from helpers import variant_id

tf = pytest.importorskip("tensorflow")

import rnnspec  # noqa: E402  (after the skip: the backend imports tensorflow)
from rnnspec.backends.tensorflow import cells, classic, graphs, sequence  # noqa: E402
from rnnspec.conformance.assertions import assert_tree_close  # noqa: E402
from rnnspec.conformance.cases import Case, CaseSpec  # noqa: E402
from rnnspec.conformance.tolerances import tolerance  # noqa: E402
from rnnspec.tree import tree_leaves  # noqa: E402

B = rnnspec.get_backend("tensorflow")
REFERENCE = rnnspec.get_backend("numpy")

#: Every cell the plain path runs, with the options that change its arithmetic.
VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("lstm", {}),
    ("gru", {"reset_after": True}),
    ("gru", {"reset_after": False}),
    ("rnn", {"activation": "tanh"}),
    ("rnn", {"activation": "relu"}),
]
#: (batch, time, hidden, lengths) on each side of the chunk choice: chunks of one step (a large step for its
#: length), and of several steps with a padded last chunk (13 steps, a small step).
SIDES = {
    "chunks of one step": (8, 6, 32, (6, 0, 4, 6, 1, 6, 3, 5)),
    "padded chunks of several steps": (3, 13, 3, (13, 0, 7)),
}
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
#: Lengths on each side of the unrolling threshold: one step per iteration just below it; from it, whole
#: iterations only; and whole iterations then steps left over, in a loop of their own.
UNROLL_SIDES = {
    "one step per iteration": sequence.UNROLL_MIN_STEPS - 1,
    "whole iterations": sequence.UNROLL_MIN_STEPS,
    "steps left over": sequence.UNROLL_MIN_STEPS + sequence.UNROLL_STEPS - 1,
}
#: The loop is the same for every cell: each cell runs through both of its loops, lstm on every side.
UNROLL_CHECKS = [(variant, "steps left over") for variant in VARIANTS] + [
    (VARIANTS[0], side) for side in UNROLL_SIDES if side != "steps left over"
]


def _case(op: str, options: dict[str, Any], side: str) -> Case:
    batch, time, hidden, lengths = SIDES[side]
    return _spec(op, options, batch, time, hidden, lengths).build()


def _spec(op: str, options: dict[str, Any], batch: int, time: int, hidden: int, lengths: tuple[int, ...]) -> CaseSpec:
    return CaseSpec(
        op,
        "float64",
        batch,
        time,
        5,
        hidden,
        num_layers=2,
        lengths=lengths,
        initial_state=True,
        reverse=True,
        options=tuple(options.items()),
        seed=3,
    )


def _unroll_case(op: str, options: dict[str, Any], time: int) -> Case:
    """Rows of full, zero and partial length; two layers, reverse, an initial state (as :func:`_case`)."""
    return _spec(op, options, 3, time, 4, (time, 0, time // 2 + 1)).build()


def _close(got: Any, want: Any, case: Case, kind: str, what: str) -> None:
    tol = tolerance(case.spec.dtype, steps=case.spec.steps, kind=kind)
    assert_tree_close(got, want, tol, context=f"{what} [{case.spec!r}]")


@pytest.mark.parametrize("side", list(SIDES))
def test_the_sides_of_the_chunk_choice_are_those_the_cases_name(side: str) -> None:
    batch, time, hidden, _ = SIDES[side]
    assert time < graphs.GRAPH_MIN_STEPS  # the eager calls below run the eager loop
    for op in GATES:
        chunk = sequence.balanced_chunk_steps(tf.zeros([time, batch, GATES[op] * hidden]))
        if side == "chunks of one step":
            assert chunk == 1, op
        else:
            assert chunk is not None, op
            assert chunk > 1, op
            assert time % chunk != 0, (op, chunk)


@pytest.mark.parametrize("side", list(SIDES))
@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_values_and_gradients_equal_the_reference_on_each_side_of_the_chunk_choice(
    variant: tuple[str, dict[str, Any]], side: str
) -> None:
    """Two layers, reverse, an initial state, rows of full, zero and partial length; eagerly and traced."""
    op, options = variant
    _check_eager_and_traced(op, _case(op, options, side))


def _check_eager_and_traced(op: str, case: Case) -> None:
    """``case``'s values and gradients equal the reference's: eagerly, and in a ``tf.function``."""
    want = case.run(REFERENCE)
    _close(case.run(B), want, case, "value", "eager")
    args, kwargs = case.call_args(B)
    traced = tf.function(lambda x, params: getattr(B, op)(x, params, **kwargs))
    _close(B.to_numpy(traced(*args)), want, case, "value", "tf.function")

    cotangents = case.cotangents(want, seed=4)
    want_grads = case.vjp(REFERENCE, cotangents)
    _close(case.vjp(B, cotangents), want_grads, case, "gradient", "eager vjp")
    sources = {"x": args[0], "params": args[1], "initial_state": kwargs["initial_state"]}
    rest = {k: v for k, v in kwargs.items() if k != "initial_state"}
    tf_cotangents = tree_leaves(B.from_numpy(cotangents))

    @tf.function
    def gradients(sources: Any) -> Any:
        with tf.GradientTape() as tape:
            tape.watch(sources)
            result = getattr(B, op)(sources["x"], sources["params"], initial_state=sources["initial_state"], **rest)
            fields = tree_leaves(result._asdict())
            loss = tf.add_n([tf.reduce_sum(c * r) for r, c in zip(fields, tf_cotangents, strict=True)])
        return tape.gradient(loss, sources)

    got = B.to_numpy(gradients(sources))
    want_tape = {k: want_grads[k] for k in ("x", "params", "initial_state")}
    _close(got, want_tape, case, "gradient", "GradientTape in a tf.function")


def _loop_bodies(op: str, time: int, xla: bool = False) -> list[int]:
    """The number of steps (recurrent matmuls) in each forward loop body of a one-layer ``op`` over ``time`` steps,
    traced in a ``tf.function`` (``xla``: with ``jit_compile=True``)."""
    params = [{k: tf.constant(v) for k, v in p.items()} for p in rnnspec.init_params(op, input_size=2, hidden_size=3)]
    forward = tf.function(lambda x: getattr(B, op)(x, params).outputs, jit_compile=xla)
    graph = forward.get_concrete_function(tf.zeros([2, time, 2])).graph.as_graph_def()
    bodies = [f for f in graph.library.function if "while" in f.signature.name and "body" in f.signature.name]
    return sorted(sum(node.op == "MatMul" for node in body.node_def) for body in bodies)


@pytest.mark.parametrize("side", list(UNROLL_SIDES))
def test_the_sides_of_the_unrolling_threshold_are_those_the_cases_name(side: str) -> None:
    time, per, least = UNROLL_SIDES[side], sequence.UNROLL_STEPS, sequence.UNROLL_MIN_STEPS
    assert per > 1
    assert time < graphs.GRAPH_MIN_STEPS  # the eager calls below run the eager loop
    assert sequence.unroll_steps(time) == (1 if side == "one step per iteration" else per)
    assert sequence.unroll_steps(tf.constant(least - 1)) == per  # a length known only at run time
    # lstm steps by one matmul: the loop bodies hold one step, or UNROLL_STEPS (then one, for the steps left over).
    expected = {"one step per iteration": [1], "whole iterations": [per], "steps left over": [1, per]}[side]
    assert _loop_bodies("lstm", time) == expected
    assert _loop_bodies("lstm", time, xla=True) == [1]  # XLA compiles the loop's control away: never unrolled
    if side != "one step per iteration":
        assert (time % per != 0) == (side == "steps left over")


@pytest.mark.parametrize(
    ("variant", "side"), UNROLL_CHECKS, ids=[f"{variant_id(variant)}-{side}" for variant, side in UNROLL_CHECKS]
)
def test_values_and_gradients_equal_the_reference_on_each_side_of_the_unrolling_threshold(
    variant: tuple[str, dict[str, Any]], side: str
) -> None:
    """Two layers, reverse, an initial state, rows of full, zero and partial length; eagerly and traced."""
    op, options = variant
    _check_eager_and_traced(op, _unroll_case(op, options, UNROLL_SIDES[side]))


@pytest.mark.parametrize("variant", VARIANTS[:2], ids=variant_id)
def test_a_length_unknown_to_the_trace_is_unrolled_and_gives_the_references_values_and_gradients(
    variant: tuple[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Long eager calls run as a graph that generalises the time axis after a second length
    (:mod:`.graphs`); the second length leaves steps over."""
    op, options = variant
    monkeypatch.setattr(graphs, "_GRAPHS", {})  # traced afresh here, whatever ran before
    lengths_seen: list[Any] = []
    decide = sequence.unroll_steps
    monkeypatch.setattr(classic, "unroll_steps", lambda time: lengths_seen.append(time) or decide(time))
    first = graphs.GRAPH_MIN_STEPS + sequence.UNROLL_STEPS  # whole iterations
    for time in (first, first + 1):
        case = _unroll_case(op, options, time)
        want = case.run(REFERENCE)
        _close(case.run(B), want, case, "value", "graph")
        cotangents = case.cotangents(want, seed=4)
        _close(case.vjp(B, cotangents), case.vjp(REFERENCE, cotangents), case, "gradient", "graph's gradient")
    assert any(not isinstance(time, int) for time in lengths_seen), lengths_seen


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_a_step_from_the_rewritten_params_computes_the_step_from_the_specs(variant: tuple[str, dict[str, Any]]) -> None:
    """Values and gradients (of every param, the state and the input) to float64 rounding."""
    op, options = variant
    rng = np.random.default_rng(0)
    (host,) = rnnspec.init_params(op, input_size=4, hidden_size=5, seed=1)
    p = {k: tf.constant(v + 0.1 * rng.standard_normal(v.shape)) for k, v in host.items()}  # nonzero biases
    cell, hoist = cells.make_cell(op, options), cells.make_hoist(op, options)
    x = tf.constant(rng.standard_normal((3, 4)))
    state = {name: tf.constant(rng.standard_normal((3, 5))) for name in cell.state_names}

    def step(rewrite: bool) -> tuple[Any, Any]:
        with tf.GradientTape() as tape:
            tape.watch([p, x, state])
            used = hoist(p) if rewrite else p
            new = cell.step(used, state, cell.project(used, x))
            loss = tf.add_n([tf.reduce_sum(v * (k + 1.0)) for k, v in enumerate(tree_leaves(new))])
        return new, tape.gradient(loss, [p, x, state])

    spec_values, spec_grads = step(False)
    hoisted_values, hoisted_grads = step(True)
    assert set(hoist(p)) > set(p)  # the rewrite took place: the transposed blocks are there
    hoisted, spec = tree_leaves([hoisted_values, hoisted_grads]), tree_leaves([spec_values, spec_grads])
    for got, want in zip(hoisted, spec, strict=True):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_no_matmul_by_a_transposed_weight_runs_inside_the_forward_or_the_backward_loop(
    variant: tuple[str, dict[str, Any]],
) -> None:
    op, options = variant
    params = [{k: tf.Variable(v) for k, v in p.items()} for p in rnnspec.init_params(op, input_size=4, hidden_size=5)]
    variables = [v for p in params for v in p.values()]

    @tf.function
    def forward_and_backward(x: Any) -> Any:
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(getattr(B, op)(x, params, **options).outputs)
        return tape.gradient(loss, [x, *variables])

    time = UNROLL_SIDES["steps left over"]  # both loops: unrolled, then one step per iteration
    graph = forward_and_backward.get_concrete_function(tf.zeros([3, time, 4])).graph.as_graph_def()
    bodies = [f for f in graph.library.function if "while_body" in f.signature.name]
    assert any(f.signature.name.endswith("_grad") or "_grad_" in f.signature.name for f in bodies), bodies
    for body in bodies:
        for node in body.node_def:
            if node.op in ("MatMul", "BatchMatMulV2", "BatchMatMulV3"):
                assert not node.attr["transpose_b"].b, (body.signature.name, node.name)
                assert not node.attr["adj_y"].b, (body.signature.name, node.name)
