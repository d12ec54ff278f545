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
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from helpers import variant_id

tf = pytest.importorskip("tensorflow")

import rnnspec  # noqa: E402  (after the skip: the backend imports tensorflow)
from rnnspec.backends.tensorflow import cells, graphs, sequence  # noqa: E402
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


def _case(op: str, options: dict[str, Any], side: str) -> Case:
    batch, time, hidden, lengths = SIDES[side]
    spec = CaseSpec(
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
    return spec.build()


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
    case = _case(op, options, side)
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

    graph = forward_and_backward.get_concrete_function(tf.zeros([3, 7, 4])).graph.as_graph_def()
    bodies = [f for f in graph.library.function if "while_body" in f.signature.name]
    assert any(f.signature.name.endswith("_grad") or "_grad_" in f.signature.name for f in bodies), bodies
    for body in bodies:
        for node in body.node_def:
            if node.op in ("MatMul", "BatchMatMulV2", "BatchMatMulV3"):
                assert not node.attr["transpose_b"].b, (body.signature.name, node.name)
                assert not node.attr["adj_y"].b, (body.signature.name, node.name)
