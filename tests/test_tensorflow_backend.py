"""The TensorFlow backend's own behaviour, beyond the conformance suite.

Every op gives the reference's values eagerly, under ``tf.function(jit_compile=True)``
and inside a user's XLA function with symbolic lengths; a user's
``tf.GradientTape`` (with ``tf.Variable`` params) gets the reference's
gradients, eagerly and under XLA; the traced graph does not grow with the
number of time steps (the time loop is a ``tf.while_loop``, not a Python loop);
bad calls raise rnnspec's errors before anything is traced; calls never modify
their inputs nor return them; half precision comes back in its own dtype.
Every comparison uses the conformance suite's tolerance policy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from helpers import variant_id

tf = pytest.importorskip("tensorflow")

import rnnspec  # noqa: E402  (after the skip: the backend imports tensorflow)
from rnnspec.backend import Backend  # noqa: E402
from rnnspec.backends.tensorflow.implementation import TensorflowImplementation  # noqa: E402
from rnnspec.conformance.assertions import assert_tree_close  # noqa: E402
from rnnspec.conformance.cases import Case, CaseSpec  # noqa: E402
from rnnspec.conformance.tolerances import tolerance  # noqa: E402
from rnnspec.errors import DtypeError, LengthsError, ParameterError  # noqa: E402
from rnnspec.ops import OPS  # noqa: E402
from rnnspec.tree import tree_leaves, tree_map  # noqa: E402

B = rnnspec.get_backend("tensorflow")
REFERENCE = rnnspec.get_backend("numpy")

#: Options that change the arithmetic, beyond each op's defaults.
VARIANTS: list[tuple[str, tuple[tuple[str, Any], ...]]] = [
    *((op, ()) for op in OPS),
    ("rnn", (("activation", "relu"),)),
    ("gru", (("reset_after", False),)),
    ("skip_gru", (("reset_after", False),)),
    ("qrnn", (("mode", "ifo"),)),
    ("qrnn", (("mode", "f"),)),
    ("act", (("cell", "lstm"), ("max_steps", 3))),
    ("act", (("cell", "indrnn"), ("epsilon", 0.3))),
    ("indrnn_recurrence", (("activation", "tanh"),)),
]


def case_of(op: str, options: tuple[tuple[str, Any], ...] = (), dtype: str = "float64", **changes: Any) -> Case:
    """A call with every convention at work: rows of full, zero and partial length, an initial state,
    reverse, two layers where the op stacks, a window of 2 and a zoneout mask for qrnn."""
    fields: dict[str, Any] = dict(batch=3, time=6, lengths=(6, 0, 4), initial_state=True, reverse=True, seed=5)
    if OPS[op].kind == "sequence" and op != "act":
        fields["num_layers"] = 2
    if op == "qrnn":
        fields.update(window=2, zoneout=True)
    fields.update(changes)
    return CaseSpec(op, dtype=dtype, options=options, **fields).build()


def close(got: Any, want: Any, case: Case, *, kind: str = "value", what: str = "") -> None:
    spec = case.spec
    tol = tolerance(spec.dtype, steps=spec.steps, kind="gradient" if kind == "gradient" else "value")
    assert_tree_close(got, want, tol, context=f"{what} [{spec!r}]")


# -- values: eager, compiled, inside a user's function ------------------------------


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_eager_and_xla_compiled_results_equal_the_reference(
    variant: tuple[str, tuple[tuple[str, Any], ...]], dtype: str
) -> None:
    op, options = variant
    case = case_of(op, options, dtype)
    want = case.run(REFERENCE)
    close(case.run(B), want, case, what="eager")
    close(case.run_compiled(B), want, case, what="tf.function(jit_compile=True)")


def test_a_users_xla_function_with_symbolic_lengths_equals_the_reference() -> None:
    """Inside a user's tf.function the lengths are a symbolic tensor: their values are checked at run time."""
    case = case_of("lstm")
    (x, params), kwargs = case.call_args(B)

    @tf.function(jit_compile=True)
    def run(x: Any, lengths: Any) -> Any:
        return B.lstm(x, params, lengths=lengths, initial_state=kwargs["initial_state"], reverse=True)

    got = run(x, tf.constant(case.kwargs["lengths"], tf.int32))
    close(B.to_numpy(got), case.run(REFERENCE), case, what="a user's tf.function")


@pytest.mark.parametrize("kind", ["numpy int16", "list", "int32 tensor", "int64 tensor"])
def test_lengths_of_any_kind_give_the_same_result(kind: str) -> None:
    case = case_of("gru")
    (x, params), kwargs = case.call_args(B)
    want = B.to_numpy(B.gru(x, params, **kwargs))
    values = [6, 0, 4]
    given = {
        "numpy int16": np.array(values, np.int16),
        "list": values,
        "int32 tensor": tf.constant(values, tf.int32),
        "int64 tensor": tf.constant(values, tf.int64),
    }[kind]
    got = B.to_numpy(B.gru(x, params, **{**kwargs, "lengths": given}))
    for g, w in zip(tree_leaves(got), tree_leaves(want), strict=True):
        np.testing.assert_array_equal(g, w)


# -- reverse mode ---------------------------------------------------------------------


def _sources(case: Case) -> tuple[dict[str, Any], Callable[[dict[str, Any]], Any]]:
    """The differentiable arguments of the case as the user would hold them (params as tf.Variable),
    and a function running the op on them."""
    (args, kwargs) = case.call_args(B)
    op = case.spec.op
    if OPS[op].kind == "primitive":
        names = ("a", "b", "initial") if op == "linear_recurrence" else ("pre", "u", "initial")
        sources = dict(zip(names, args, strict=True))
        return sources, lambda s: getattr(B, op)(*(s[n] for n in names), **kwargs)
    x, params = args
    variables = [{k: tf.Variable(v) for k, v in p.items()} for p in params]
    sources = {"x": x, "params": variables, "initial_state": kwargs["initial_state"]}
    rest = {k: v for k, v in kwargs.items() if k != "initial_state"}
    return sources, lambda s: getattr(B, op)(s["x"], s["params"], initial_state=s["initial_state"], **rest)


def _tape_gradients(run: Callable[[dict[str, Any]], Any], sources: dict[str, Any], cotangents: Any) -> Any:
    """``<cotangents, result>`` differentiated with a user's GradientTape."""
    with tf.GradientTape() as tape:
        tape.watch([s for s in tree_leaves(sources) if not isinstance(s, tf.Variable)])
        result = run(sources)
        fields = {"h": result} if isinstance(result, tf.Tensor) else result._asdict()
        loss = tf.add_n(
            [
                tf.reduce_sum(tf.cast(c, r.dtype) * r)
                for r, c in zip(tree_leaves(fields), tree_leaves(cotangents), strict=True)
            ]
        )
    return tape.gradient(loss, sources, unconnected_gradients=tf.UnconnectedGradients.ZERO)


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_gradient_tape_gradients_equal_the_reference_vjp(variant: tuple[str, tuple[tuple[str, Any], ...]]) -> None:
    """A user's tape over the op (params as variables) gets the reference's cotangents of every input."""
    op, options = variant
    case = case_of(op, options)
    cotangents = case.cotangents(case.run(REFERENCE), seed=7)
    want = case.vjp(REFERENCE, cotangents)
    sources, run = _sources(case)
    got = _tape_gradients(run, sources, B.from_numpy(cotangents))
    close(B.to_numpy(got), want, case, kind="gradient", what="GradientTape")


@pytest.mark.parametrize("op", list(OPS))
def test_gradients_under_xla_equal_the_reference_vjp(op: str) -> None:
    """The tape inside tf.function(jit_compile=True): the loops' gradients compile too."""
    case = case_of(op)
    cotangents = case.cotangents(case.run(REFERENCE), seed=8)
    want = case.vjp(REFERENCE, cotangents)
    sources, run = _sources(case)
    tf_cotangents = B.from_numpy(cotangents)

    @tf.function(jit_compile=True)
    def gradients() -> Any:
        return _tape_gradients(run, sources, tf_cotangents)

    close(B.to_numpy(gradients()), want, case, kind="gradient", what="GradientTape under XLA")


# -- the traced graph -------------------------------------------------------------------


def _traced_size(op: str, time: int) -> tuple[int, list[str]]:
    """Nodes of the op's XLA-compiled trace (its graph and every function it calls), and those functions' names."""
    case = case_of(op, time=time, lengths=(time, 0, time // 2))
    args, kwargs = case.call_args(B)
    normalised = B.check_call(op, *args, **kwargs)
    concrete = B.implementation.compile(op).get_concrete_function(**normalised)
    graph = concrete.graph.as_graph_def()
    functions = graph.library.function
    return len(graph.node) + sum(len(f.node_def) for f in functions), [f.signature.name for f in functions]


@pytest.mark.parametrize("op", list(OPS))
def test_the_traced_graph_does_not_grow_with_the_number_of_steps(op: str) -> None:
    """No Python loop over time inside tf.function: 3 and 30 steps trace the same number of nodes."""
    short, functions = _traced_size(op, 3)
    long, _ = _traced_size(op, 30)
    assert any("while_body" in name for name in functions), functions
    assert short == long


# -- errors -------------------------------------------------------------------------------


class TracingTensorflow(TensorflowImplementation):
    """The backend, keeping every tf.function its compile() returns."""

    def __init__(self) -> None:
        self.compiled_functions: list[Any] = []

    def compile(self, op: str) -> Callable[..., Any]:
        fn = super().compile(op)
        self.compiled_functions.append(fn)
        return fn


def _bad_calls() -> list[tuple[str, type[Exception], str, tuple[Any, ...], dict[str, Any]]]:
    """(name, error, the argument named, args, kwargs) of calls of lstm that break the spec."""
    case = case_of("lstm", time=4, lengths=(4, 0, 2))
    (x, params), kwargs = case.call_args(B)
    narrow = [dict(p) for p in params]
    narrow[0]["w_hh"] = narrow[0]["w_hh"][:, :-1]
    too_long = {**kwargs, "lengths": [4, 5, 1]}
    return [
        ("shape", ParameterError, r"params\[0\]\['w_hh'\]", (x, narrow), kwargs),
        ("dtype", DtypeError, r"x", (tf.cast(x, tf.int32), params), kwargs),
        ("lengths", LengthsError, r"lengths", (x, params), too_long),
    ]


@pytest.mark.parametrize("bad", _bad_calls(), ids=lambda b: b[0])
def test_bad_calls_raise_rnnspec_errors_before_anything_is_traced(
    bad: tuple[str, type[Exception], str, tuple[Any, ...], dict[str, Any]],
) -> None:
    """Eagerly and compiled, the error names the op, the argument and the backend; XLA never sees the call."""
    _, error, argument, args, kwargs = bad
    impl = TracingTensorflow()
    backend = Backend("tensorflow", impl, version=B.version)
    message = rf"^lstm \[backend 'tensorflow'\]: argument {argument}: expected .*, got "
    with pytest.raises(error, match=message):
        backend.lstm(*args, **kwargs)
    with pytest.raises(error, match=message):
        backend.compiled("lstm")(*args, **kwargs)
    assert [fn.experimental_get_tracing_count() for fn in impl.compiled_functions] == [0]


# -- inputs and outputs ---------------------------------------------------------------------


@pytest.mark.parametrize("op", list(OPS))
def test_calls_never_modify_their_inputs(op: str) -> None:
    """Forward and reverse mode leave every array the caller passed (params as variables) as it was."""
    case = case_of(op)
    sources, run = _sources(case)
    before = tree_map(lambda t: np.array(t.numpy()), sources)
    cotangents = B.from_numpy(case.cotangents(case.run(REFERENCE), seed=9))
    _tape_gradients(run, sources, cotangents)
    for got, want in zip(tree_leaves(sources), tree_leaves(before), strict=True):
        np.testing.assert_array_equal(got.numpy(), want)


@pytest.mark.parametrize("op", [op for op in OPS if OPS[op].kind == "sequence"])
def test_an_empty_sequence_returns_the_initial_state_as_new_tensors(op: str) -> None:
    case = case_of(op, time=0, lengths=(0, 0, 0))
    (x, params), kwargs = case.call_args(B)
    result = getattr(B, op)(x, params, **kwargs)
    for got, given in zip(result.state, kwargs["initial_state"], strict=True):
        for name, value in given.items():
            assert got[name] is not value
            np.testing.assert_array_equal(got[name].numpy(), value.numpy())


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("op", list(OPS))
def test_half_precision_is_float32_arithmetic_rounded_to_the_input_dtype(op: str, dtype: str) -> None:
    """A half-precision call equals, exactly, the float32 call on the same (widened) values with its result rounded."""
    case = case_of(op, dtype="float32")
    args, kwargs = case.call_args(B)
    half = tf.as_dtype(dtype)
    args_h, kwargs_h = tree_map(lambda t: tf.cast(t, half) if isinstance(t, tf.Tensor) else t, (args, kwargs))
    got = getattr(B, op)(*args_h, **kwargs_h)
    assert {leaf.dtype for leaf in tree_leaves(got)} == {half}
    args_w, kwargs_w = tree_map(
        lambda t: tf.cast(t, tf.float32) if isinstance(t, tf.Tensor) and t.dtype == half else t, (args_h, kwargs_h)
    )
    want = tree_map(lambda t: tf.cast(t, half), getattr(B, op)(*args_w, **kwargs_w))
    for g, w in zip(tree_leaves(B.to_numpy(got)), tree_leaves(B.to_numpy(want)), strict=True):
        np.testing.assert_array_equal(g, w)


def test_indrnn_constrain_clips_tensorflow_tensors_and_variables_eagerly_and_in_a_tf_function() -> None:
    u = np.array([-3.0, -0.5, 0.25, 2.0], np.float32)
    want = np.clip(u, -1.0, 1.0)
    variable = tf.Variable(u)
    clipped = rnnspec.indrnn_constrain(variable, 1.0)
    assert isinstance(clipped, tf.Tensor)
    np.testing.assert_array_equal(clipped.numpy(), want)
    np.testing.assert_array_equal(variable.numpy(), u)  # the input is never modified

    @tf.function
    def constrain(t: tf.Tensor) -> tf.Tensor:
        return rnnspec.indrnn_constrain(t, 1.0)

    np.testing.assert_array_equal(constrain(tf.constant(u)).numpy(), want)


def test_numpy_arrays_are_taken_as_every_tensorflow_function_takes_them() -> None:
    backend = rnnspec.get_backend("tensorflow")
    params = rnnspec.init_params("gru", input_size=3, hidden_size=4, seed=1)
    x = np.random.default_rng(1).standard_normal((2, 5, 3)).astype(np.float32)
    with_numpy = backend.gru(x, params)
    with_tf = backend.gru(tf.constant(x), backend.from_numpy(params))
    assert isinstance(with_numpy.outputs, tf.Tensor)
    np.testing.assert_array_equal(with_numpy.outputs.numpy(), with_tf.outputs.numpy())
