"""The JAX backend's own behaviour, beyond the conformance suite.

Every op traces under a caller's ``jax.jit``, batches under ``jax.vmap`` (an
extra leading axis equals a loop over it), and differentiates under
``jax.grad`` to the reference's reverse mode; no op loops over time in Python
(its jaxpr does not grow with the time length); the plain path can be forced
and the path taken is reported; the cuDNN LSTM path's weight packing, grouping,
lengths and reverse handling equal the reference when ``jax.experimental.rnn``'s
own pure-jax ``lstm_ref`` stands in for the cuDNN kernel; half precision comes
back in its dtype; bad calls and float64 without ``jax_enable_x64`` raise
errors that say so. The classic cells' time loops multiply by ``w_hh`` transposed
once before the loop, and their steps equal those given ``w_hh`` itself; their
compiled programs hold one projection-sized temporary, not two.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

jax = pytest.importorskip("jax")

import jax.numpy as jnp  # noqa: E402  (after the skip)

import rnnspec  # noqa: E402
from rnnspec.backends.jax import cells, cudnn, paths, recurrences  # noqa: E402
from rnnspec.backends.jax.sequence import normalise_lengths  # noqa: E402
from rnnspec.conformance.assertions import assert_tree_close, flatten  # noqa: E402
from rnnspec.conformance.cases import Case, CaseSpec  # noqa: E402
from rnnspec.conformance.checks_common import wide_margin  # noqa: E402
from rnnspec.conformance.tolerances import tolerance  # noqa: E402
from rnnspec.errors import DtypeError, ShapeError  # noqa: E402
from rnnspec.ops import OPS  # noqa: E402

B = rnnspec.get_backend("jax")
REFERENCE = rnnspec.get_backend("numpy")

#: One case per op (and per variant worth its own compile): sizes, options, lengths with a short row.
CASES = {
    "rnn": CaseSpec("rnn", num_layers=2, lengths=(4, 2), initial_state=True, options=(("activation", "tanh"),)),
    "lstm": CaseSpec("lstm", num_layers=2, lengths=(4, 0), reverse=True),
    "gru": CaseSpec("gru", lengths=(3, 4), initial_state=True, options=(("reset_after", False),)),
    "skip_rnn": CaseSpec("skip_rnn", num_layers=2, lengths=(4, 3), options=(("activation", "tanh"),)),
    "skip_lstm": CaseSpec("skip_lstm", reverse=True, initial_state=True),
    "skip_gru": CaseSpec("skip_gru", lengths=(2, 4), options=(("reset_after", True),)),
    "act": CaseSpec(
        "act", lengths=(4, 1), initial_state=True, options=(("cell", "lstm"), ("epsilon", 0.1), ("max_steps", 4))
    ),
    "indrnn": CaseSpec("indrnn", num_layers=2, lengths=(4, 2), reverse=True, options=(("activation", "relu"),)),
    "indrnn_recurrence": CaseSpec(
        "indrnn_recurrence", lengths=(1, 4), initial_state=True, options=(("activation", "tanh"),)
    ),
    "qrnn": CaseSpec(
        "qrnn", num_layers=2, window=2, zoneout=True, lengths=(4, 2), reverse=True, options=(("mode", "ifo"),)
    ),
    "linear_recurrence": CaseSpec("linear_recurrence", lengths=(4, 3), reverse=True, initial_state=True),
}
OP_IDS = list(CASES)


def decided(spec: CaseSpec) -> Case:
    """The case of ``spec`` with the first seed whose discrete decisions lie clear of their thresholds."""
    for seed in range(50):
        case = spec.with_(seed=seed).build()
        if wide_margin(case):
            return case
    raise AssertionError(f"no seed below 50 gives {spec.op} a wide decision margin")


def array_arguments(case: Case) -> tuple[tuple[Any, ...], dict[str, Any], dict[str, Any]]:
    """The case's call on the jax backend: positional arrays, keyword arrays, and the other keywords."""
    args, kwargs = case.call_args(B)
    arrays = {k: v for k, v in kwargs.items() if k in ("initial_state", "zoneout_mask") and v is not None}
    rest = {k: v for k, v in kwargs.items() if k not in arrays}
    return tuple(args), arrays, rest


def weighted_sum(result: Any, cotangents: dict[str, Any]) -> Any:
    """``<result, cotangents>`` over every leaf: the scalar whose gradient is the vjp at ``cotangents``
    (``{"h": ...}`` for a primitive, one entry per result field for a sequence op)."""
    structured = cotangents["h"] if isinstance(result, jax.Array) else type(result)(**cotangents)
    got, weights = flatten(result), flatten(structured)
    return sum(jnp.sum(got[path] * jnp.asarray(weights[path])) for path in weights)


def equations_of_call(spec: CaseSpec) -> int:
    """How many equations the jaxpr of the call of ``spec`` on the jax backend has."""
    args, arrays, rest = array_arguments(spec.build())
    jaxpr = jax.make_jaxpr(lambda args, arrays: getattr(B, spec.op)(*args, **arrays, **rest))(args, arrays)
    return count_equations(jaxpr.jaxpr)


def count_equations(jaxpr: Any) -> int:
    """Equations of a jaxpr, those of the jaxprs inside its loops, conditionals and calls included."""
    total = 0
    for eqn in jaxpr.eqns:
        total += 1
        for value in eqn.params.values():
            for sub in value if isinstance(value, (list, tuple)) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    total += count_equations(inner)
    return total


# -- jit, vmap, grad ----------------------------------------------------------------


@pytest.mark.parametrize("op", OP_IDS)
def test_every_op_under_a_callers_jit_equals_the_reference(op: str) -> None:
    """An op called inside the caller's own jax.jit (validation sees tracers) equals the reference."""
    spec = CASES[op].with_(dtype="float32")
    case = decided(spec)
    args, arrays, rest = array_arguments(case)
    jitted = jax.jit(lambda args, arrays: getattr(B, op)(*args, **arrays, **rest))
    got = B.to_numpy(jitted(args, arrays))
    want = case.run(REFERENCE)
    assert_tree_close(got, want, tolerance("float32", steps=spec.steps), context=f"{op} under jax.jit")


@pytest.mark.parametrize("op", OP_IDS)
def test_vmap_over_an_extra_leading_axis_equals_a_loop_over_it(op: str) -> None:
    """jax.vmap over three calls stacked on a new leading axis (arrays, params, state) equals the three calls."""
    spec = CASES[op].with_(dtype="float32")
    cases = [spec.with_(seed=seed).build() for seed in (1, 2, 3)]
    calls = [array_arguments(case) for case in cases]
    _, _, rest = calls[0]
    stacked_args = jax.tree.map(lambda *leaves: jnp.stack(leaves), *(c[0] for c in calls))
    stacked_arrays = jax.tree.map(lambda *leaves: jnp.stack(leaves), *(c[1] for c in calls))
    batched = jax.vmap(lambda args, arrays: getattr(B, op)(*args, **arrays, **rest))(stacked_args, stacked_arrays)
    looped = [getattr(B, op)(*args, **arrays, **rest) for args, arrays, _ in calls]
    want = B.to_numpy(jax.tree.map(lambda *leaves: jnp.stack(leaves), *looped))
    assert_tree_close(B.to_numpy(batched), want, tolerance("float32", steps=spec.steps), context=f"{op} vmap")


@pytest.mark.parametrize("op", OP_IDS)
def test_jax_grad_equals_the_reference_vjp(op: str, x64: None) -> None:
    """jax.grad of <result, cotangents> with respect to every array argument equals the reference's vjp."""
    spec = CASES[op].with_(dtype="float64", initial_state=True)
    case = decided(spec)
    cotangents = case.cotangents(case.run(REFERENCE), seed=7)
    want = case.vjp(REFERENCE, cotangents)
    args, arrays, rest = array_arguments(case)

    def loss(args: tuple[Any, ...], initial: Any) -> Any:
        kwargs = dict(arrays, **rest)
        if OPS[op].kind == "primitive":
            args = (*args[:2], initial)
        else:
            kwargs["initial_state"] = initial
        return weighted_sum(getattr(B, op)(*args, **kwargs), cotangents)

    initial = args[2] if OPS[op].kind == "primitive" else arrays["initial_state"]
    d_args, d_initial = jax.grad(loss, argnums=(0, 1))(args, initial)
    if OPS[op].kind == "primitive":
        names = ("a", "b") if op == "linear_recurrence" else ("pre", "u")
        got = {names[0]: d_args[0], names[1]: d_args[1], "initial": d_initial}
    else:
        got = {"x": d_args[0], "params": list(d_args[1]), "initial_state": tuple(d_initial)}
    assert_tree_close(
        B.to_numpy(got), want, tolerance("float64", steps=spec.steps, kind="gradient"), context=f"{op} jax.grad"
    )


def test_act_pondering_values_equal_with_and_without_a_derivative(x64: None) -> None:
    """act's while_loop (value only) and its scan (under jax.jvp) give equal values, with the default max_steps."""
    spec = CaseSpec("act", dtype="float64", time=5, lengths=(5, 2), options=(("cell", "gru"), ("epsilon", 0.01)))
    case = decided(spec.with_(options=(*spec.options, ("max_steps", 100))))
    (x, params), arrays, rest = array_arguments(case)
    plain = B.act(x, params, **arrays, **rest)
    primal, tangent = jax.jvp(lambda x: B.act(x, params, **arrays, **rest), (x,), (jnp.ones_like(x),))
    assert_tree_close(B.to_numpy(primal), B.to_numpy(plain), tolerance("float64", steps=1), context="act jvp")
    assert float(jnp.abs(tangent.outputs).sum()) > 0.0  # the derivative path computed a derivative


# -- no Python loop over time ------------------------------------------------------------


@pytest.mark.parametrize("op", OP_IDS)
def test_the_traced_program_does_not_grow_with_the_time_length(op: str) -> None:
    """The jaxpr of an op has as many equations at T=3 as at T=30: time is a lax.scan, not a Python loop."""
    sizes = [equations_of_call(CASES[op].with_(dtype="float32", time=t, lengths=(t, 1))) for t in (3, 30)]
    assert sizes[0] == sizes[1], f"{op}: {sizes[0]} equations at T=3, {sizes[1]} at T=30"


def test_act_traced_program_does_not_grow_with_max_steps() -> None:
    """act's inner pondering is a loop too: its jaxpr is the same size for max_steps 2 and 50."""
    options = [(("cell", "rnn"), ("epsilon", 0.1), ("max_steps", m)) for m in (2, 50)]
    sizes = [equations_of_call(CASES["act"].with_(dtype="float32", options=o)) for o in options]
    assert sizes[0] == sizes[1]


# -- the classic cells' time loop --------------------------------------------------------

#: The classic cells with each of their options.
CLASSIC_CELLS = [
    ("rnn", {"activation": "tanh"}),
    ("rnn", {"activation": "relu"}),
    ("lstm", {}),
    ("gru", {"reset_after": True}),
    ("gru", {"reset_after": False}),
]


@pytest.mark.parametrize(("op", "options"), CLASSIC_CELLS, ids=[f"{op}-{o}" for op, o in CLASSIC_CELLS])
def test_the_steps_with_w_hh_transposed_equal_those_with_w_hh(op: str, options: dict[str, Any], x64: None) -> None:
    """A cell's step from :func:`cells.prepare`'s params (``w_hh`` transposed) equals its step from the params."""
    batch, size, hidden = 3, 5, 4
    rng = np.random.default_rng(7)
    host = rnnspec.init_params(op, input_size=size, hidden_size=hidden, seed=3, dtype="float64")[0]
    params = {k: jnp.asarray(v) for k, v in host.items()}
    prepared = cells.prepare(params)
    assert prepared["w_hh_t"].shape == params["w_hh"].shape[::-1]
    cell = cells.make_cell(op, options)
    state = {name: jnp.asarray(rng.standard_normal((batch, hidden))) for name in cell.state_names}
    gi = cell.project(params, jnp.asarray(rng.standard_normal((batch, size))))
    want = B.to_numpy(cell.step(params, state, gi))
    got = B.to_numpy(cell.step(prepared, state, gi))
    assert_tree_close(got, want, tolerance("float64", steps=1), context=f"{op} {options} step")


def scan_bodies(jaxpr: Any) -> Iterator[Any]:
    """The body jaxpr of every ``lax.scan`` in ``jaxpr``, those inside its calls included."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "scan":
            yield eqn.params["jaxpr"].jaxpr
        for value in eqn.params.values():
            for sub in value if isinstance(value, (list, tuple)) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns") and eqn.primitive.name != "scan":
                    yield from scan_bodies(inner)


def dot_operands(jaxpr: Any) -> Iterator[tuple[str | None, str | None]]:
    """For every ``dot_general`` in ``jaxpr`` and the jaxprs inside it, the primitives that made its two
    operands there (None: an input of that jaxpr)."""
    made_by = {id(v): eqn.primitive.name for eqn in jaxpr.eqns for v in eqn.outvars}
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            lhs, rhs = eqn.invars
            yield made_by.get(id(lhs)), made_by.get(id(rhs))
        for value in eqn.params.values():
            for sub in value if isinstance(value, (list, tuple)) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from dot_operands(inner)


@pytest.mark.parametrize("op", ["rnn", "lstm", "gru", "skip_rnn", "skip_lstm", "skip_gru"])
def test_the_time_loops_take_their_weights_transposed_before_the_loop(op: str) -> None:
    """No step transposes a weight: the scan body's matmuls read it transposed already (:func:`cells.prepare`),
    in skip's loop too (its gathered branches, its upper layers' projections and its gate included). Given a
    transpose inside the body, XLA folds it into the dot, whose CPU kernel is markedly slower so."""
    args, arrays, rest = array_arguments(CASES[op].with_(dtype="float32").build())
    jaxpr = jax.make_jaxpr(lambda args, arrays: getattr(B, op)(*args, **arrays, **rest))(args, arrays).jaxpr
    bodies = list(scan_bodies(jaxpr))
    assert bodies, f"{op}: no lax.scan in its program"
    operands = [pair for body in bodies for pair in dot_operands(body)]
    assert operands, f"{op}: no matmul in its time loop"
    assert all("transpose" not in pair for pair in operands), f"{op}: a step transposes an operand: {operands}"


@pytest.mark.parametrize("masked", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize(("op", "options"), CLASSIC_CELLS[1:4], ids=[op for op, _ in CLASSIC_CELLS[1:4]])
def test_the_classic_ops_hold_one_projection_sized_temporary(op: str, options: dict[str, Any], masked: bool) -> None:
    """The compiled op's temporaries are its hoisted input projection, the time-major input and ``w_hh``
    transposed, with room to spare but not for a second projection: ``b_ih`` is added to each step's slice,
    not over a biased copy, whose size cost page faults at every call (see :mod:`rnnspec.backends.jax.classic`)."""
    batch, time, hidden = 8, 64, 32
    gates = {"rnn": 1, "lstm": 4, "gru": 3}[op]
    x = jnp.zeros((batch, time, hidden), jnp.float32)
    params = B.from_numpy(rnnspec.init_params(op, input_size=hidden, hidden_size=hidden, seed=0))
    lengths = jnp.asarray([time, 3] * (batch // 2)) if masked else None
    run = jax.jit(lambda x, p, lengths: getattr(B, op)(x, p, lengths=lengths, **options).outputs)
    temp = run.lower(x, params, lengths).compile().memory_analysis().temp_size_in_bytes
    projection = batch * time * gates * hidden * 4
    allowed = projection + projection // 4 + x.nbytes + params[0]["w_hh"].nbytes
    assert temp <= allowed, f"{op}: {temp} bytes of temporaries for a {projection}-byte projection"


# -- paths ------------------------------------------------------------------------------


def _linear_call() -> dict[str, Any]:
    rng = np.random.default_rng(5)
    a = jnp.asarray(rng.uniform(-1.0, 1.0, (3, 9, 4)).astype(np.float32))
    b = jnp.asarray(rng.standard_normal((3, 9, 4)).astype(np.float32))
    return {"a": a, "b": b, "initial": b[:, 0], "lengths": np.array([9, 4, 0]), "reverse": True}


def test_the_associative_scan_equals_the_sequential_scan_and_plain_path_forces_the_latter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the associative scan switched on for the CPU, linear_recurrence takes it; plain_path() forces the scan."""
    monkeypatch.setitem(recurrences.ASSOCIATIVE_MIN_TIME, "cpu", 1)
    call = _linear_call()
    fast = recurrences.linear_recurrence(**call)
    assert paths.last_path("linear_recurrence") == "associative-scan"
    with paths.plain_path():
        plain = recurrences.linear_recurrence(**call)
        assert paths.last_path("linear_recurrence") == "plain"
    assert_tree_close(np.asarray(fast), np.asarray(plain), tolerance("float32", steps=9), context="linear paths")
    assert np.all(np.asarray(fast)[2] == 0.0)  # the row of length 0


@pytest.mark.parametrize("op", ["linear_recurrence", "indrnn_recurrence"])
def test_the_pallas_dispatch_equals_the_plain_scan_with_the_kernels_interpreted(
    op: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the Pallas path applies (forced here, the kernels in interpret mode on the CPU), the recurrences
    take it and equal the plain scan, zero past each length and reverse included."""
    from rnnspec.backends.jax import pallas_recurrences

    for name in ("linear_scan_pallas", "indrnn_scan_pallas"):
        kernel = getattr(pallas_recurrences, name)
        monkeypatch.setattr(pallas_recurrences, name, functools.partial(kernel, interpret=True))
    monkeypatch.setattr(recurrences, "_pallas_applies", lambda x: True)
    call = _linear_call()
    if op == "indrnn_recurrence":
        call = {"pre": call["b"], "u": call["a"][0, 0], "initial": call["initial"], "activation": "tanh"} | {
            k: call[k] for k in ("lengths", "reverse")
        }
    fast = getattr(recurrences, op)(**call)
    assert paths.last_path(op) == "pallas-recurrences"
    with paths.plain_path():
        plain = getattr(recurrences, op)(**call)
    assert_tree_close(np.asarray(fast), np.asarray(plain), tolerance("float32", steps=9), context=f"{op} pallas")


def test_the_environment_variable_forces_the_plain_path_and_fast_paths_say_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """RNNSPEC_JAX_PLAIN=1 forces the plain path, and list_backends' fast paths note it; unset, it does not."""
    monkeypatch.setitem(recurrences.ASSOCIATIVE_MIN_TIME, "cpu", 1)
    monkeypatch.setenv(paths.PLAIN_ENV, "1")
    recurrences.linear_recurrence(**_linear_call())
    assert paths.last_path("linear_recurrence") == "plain"
    assert all("[off now" in text for text in B.implementation.fast_paths().values())
    monkeypatch.setenv(paths.PLAIN_ENV, "0")
    recurrences.linear_recurrence(**_linear_call())
    assert paths.last_path("linear_recurrence") == "associative-scan"
    assert not any("[off now" in text for text in B.implementation.fast_paths().values())


def test_list_backends_reports_the_jax_fast_paths(monkeypatch: pytest.MonkeyPatch, fresh_registry: None) -> None:
    """The backend table lists cuDNN's lstm, the Pallas kernels and the associative scan, inactive ones saying so."""
    monkeypatch.setenv("RNNSPEC_BACKENDS", "jax")  # loading only jax: tensorflow's LLVM clashes with jaxlib's
    listed = {info.name: info for info in rnnspec.list_backends()}
    assert set(listed["jax"].fast_paths) >= {"cudnn-lstm", "pallas-recurrences", "associative-scan"}
    if jax.default_backend() == "cpu":
        assert "[inactive here" in B.implementation.fast_paths()["cudnn-lstm"]


def test_cudnn_is_declined_for_explicit_reasons_on_this_machine() -> None:
    """why_plain names the reason cuDNN does not apply: forcing, another op, another dtype, no GPU."""
    x = jnp.zeros((2, 3, 4), jnp.float32)
    with paths.plain_path():
        assert "forced" in str(cudnn.why_plain("lstm", x))
    assert "no cuDNN kernel for gru" in str(cudnn.why_plain("gru", x))
    assert "float32 only" in str(cudnn.why_plain("lstm", x.astype(jnp.float16)))
    if jax.default_backend() == "cpu":
        assert "GPU" in str(cudnn.why_plain("lstm", x))
        B.lstm(x, rnnspec.get_backend("jax").from_numpy(rnnspec.init_params("lstm", input_size=4, hidden_size=3)))
        assert paths.last_path("lstm") == "plain"


# -- the cuDNN LSTM path, with lstm_ref standing in for cuDNN ------------------------------


def lstm_ref_kernel(x: Any, h0: Any, c0: Any, weights: Any, seq_lengths: Any, **config: Any) -> Any:
    """jax.experimental.rnn.lstm's interface over its pure-jax lstm_ref (which reads the same packed weights)."""
    from jax.experimental import rnn

    sizes = (config["input_size"], config["hidden_size"], config["num_layers"], config["bidirectional"])
    w_ih, w_hh, b_ih, b_hh = rnn.unpack_lstm_weights(weights, *sizes)
    return rnn.lstm_ref(x, h0, c0, w_ih, w_hh, b_ih, b_hh, seq_lengths, *sizes[:3], config["dropout"], sizes[3])


#: (hidden sizes of the stack, lengths, reverse).
CUDNN_SHAPES = [
    ((4,), None, False),
    ((4, 4), [5, 0, 3], True),
    ((4, 4, 3), [3, 5, 1], False),  # two groups: (4, 4) in one call, then (3,)
    ((3, 4), [0, 0, 0], True),
]


def _lstm_stack(hidden: tuple[int, ...], seed: int) -> tuple[np.ndarray, list[dict[str, np.ndarray]], tuple[Any, ...]]:
    rng = np.random.default_rng(seed)
    params, inputs = [], 3
    for k, h in enumerate(hidden):
        params += rnnspec.init_params("lstm", input_size=inputs, hidden_size=h, seed=k, dtype="float64")
        inputs = h
    state = tuple({n: rng.standard_normal((3, h)) for n in ("h", "c")} for h in hidden)
    return rng.standard_normal((3, 5, 3)), params, state


@pytest.mark.parametrize(("hidden", "lengths", "reverse"), CUDNN_SHAPES)
def test_the_cudnn_lstm_wrapping_equals_the_reference_with_lstm_ref_as_kernel(
    hidden: tuple[int, ...], lengths: list[int] | None, reverse: bool, x64: None
) -> None:
    """Packing, layer groups, zero-length rows and reverse around the kernel give the reference's values and
    gradients (lstm_ref reads the packed vector as cuDNN does, so a packing error would show)."""
    x, params, state = _lstm_stack(hidden, seed=len(hidden))
    jx, jparams, jstate = B.from_numpy(x), B.from_numpy(params), B.from_numpy(state)
    norm = normalise_lengths(lengths, 3, 5)

    def run(x: Any, params: Any, state: Any) -> Any:
        return cudnn.run_cudnn_lstm(x, params, norm, state, reverse, kernel=lstm_ref_kernel)

    got = B.to_numpy(run(jx, jparams, jstate))
    want = REFERENCE.lstm(x, params, lengths=lengths, initial_state=state, reverse=reverse)
    steps = 5 * len(hidden)
    assert_tree_close(got, (want.outputs, want.state), tolerance("float64", steps=steps), context="cudnn wrapping")
    cotangents = {"outputs": np.ones_like(want.outputs), "state": [{"h": s["h"] * 0 + 0.5} for s in want.state]}
    want_grads = rnnspec.reference.vjp(
        "lstm", cotangents, x, params, lengths=lengths, initial_state=state, reverse=reverse
    )

    def loss(x: Any, params: Any, state: Any) -> Any:
        out, final = run(x, params, state)
        return out.sum() + sum(0.5 * f["h"].sum() for f in final)

    d_x, d_params, d_state = jax.grad(loss, argnums=(0, 1, 2))(jx, jparams, jstate)
    got_grads = B.to_numpy({"x": d_x, "params": list(d_params), "initial_state": tuple(d_state)})
    assert_tree_close(
        got_grads, want_grads, tolerance("float64", steps=steps, kind="gradient"), context="cudnn wrapping grads"
    )


def test_packed_weights_unpack_to_the_params_in_cudnn_layout(x64: None) -> None:
    """pack_weights lays a stack out as jax.experimental.rnn.unpack_lstm_weights reads it back."""
    from jax.experimental import rnn

    _, params, _ = _lstm_stack((4, 4), seed=0)
    packed = cudnn.pack_weights(B.from_numpy(params))
    assert packed.shape == (rnn.get_num_params_in_lstm(3, 4, 2, False),)
    unpacked = rnn.unpack_lstm_weights(packed, 3, 4, 2, False)
    for k, p in enumerate(params):
        for name, table in zip(("w_ih", "w_hh", "b_ih", "b_hh"), unpacked, strict=True):
            np.testing.assert_array_equal(np.asarray(table[k]), p[name])


# -- dtypes and errors ------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("op", ["lstm", "qrnn", "linear_recurrence"])
def test_half_precision_comes_back_in_its_dtype_close_to_float32(op: str, dtype: str) -> None:
    """Half precision is computed in float32 and rounded back: the input's dtype, within its tolerance of float32."""
    spec = CASES[op].with_(dtype="float32")
    case = spec.build()
    args, arrays, rest = array_arguments(case)
    half = jnp.dtype(dtype)
    to_half = jax.tree.map(lambda a: a.astype(half) if jnp.issubdtype(a.dtype, jnp.floating) else a, (args, arrays))
    result = getattr(B, op)(*to_half[0], **to_half[1], **rest)
    assert {str(leaf.dtype) for leaf in jax.tree.leaves(result)} == {dtype}
    # The float32 answer on the rounded inputs: what the half-precision call must approximate.
    as_float = jax.tree.map(lambda a: a.astype(jnp.float32) if a.dtype == half else a, to_half)
    want = B.to_numpy(getattr(B, op)(*as_float[0], **as_float[1], **rest))
    got = jax.tree.map(lambda a: np.asarray(a.astype(jnp.float32)).astype(np.float32), result)
    assert_tree_close(got, want, tolerance(dtype, steps=spec.steps), context=f"{op} {dtype}")


def test_float64_without_x64_is_refused_rather_than_computed_in_float32() -> None:
    """Without jax_enable_x64, a float64 NumPy array cannot become a jax array silently in float32."""
    with jax.enable_x64(False), pytest.raises(DtypeError, match=r"jax_enable_x64.*got a float64 NumPy array") as info:
        B.from_numpy(np.zeros((2, 3, 4)))
    assert "backend 'jax'" in str(info.value)


def test_numpy_arrays_are_taken_as_every_jax_function_takes_them() -> None:
    """NumPy x, params, initial state and cotangents give what their jax arrays give."""
    numpy_params = rnnspec.init_params("lstm", input_size=3, hidden_size=4, seed=2)
    x = np.random.default_rng(2).standard_normal((2, 5, 3)).astype(np.float32)
    with_numpy = B.lstm(x, numpy_params, lengths=np.array([5, 2]))
    with_jax = B.lstm(jnp.asarray(x), B.from_numpy(numpy_params), lengths=np.array([5, 2]))
    assert isinstance(with_numpy.outputs, jax.Array)
    np.testing.assert_array_equal(np.asarray(with_numpy.outputs), np.asarray(with_jax.outputs))
    d_out = np.ones((2, 5, 4), np.float32)
    grads = B.vjp("lstm", {"outputs": d_out}, x, numpy_params)
    want = B.vjp("lstm", {"outputs": jnp.asarray(d_out)}, jnp.asarray(x), B.from_numpy(numpy_params))
    np.testing.assert_array_equal(np.asarray(grads["x"]), np.asarray(want["x"]))


def test_a_float64_numpy_x_without_x64_is_refused_naming_the_op_and_x() -> None:
    params = rnnspec.init_params("lstm", input_size=3, hidden_size=4)
    refused = r"lstm \[backend 'jax'\]: argument x: .*jax_enable_x64"
    with jax.enable_x64(False), pytest.raises(DtypeError, match=refused):
        B.lstm(np.zeros((2, 3, 3)), params)


def test_an_object_that_is_no_array_is_refused_naming_the_op_argument_and_backend() -> None:
    params = B.from_numpy(rnnspec.init_params("lstm", input_size=3, hidden_size=4))
    with pytest.raises(DtypeError, match=r"lstm \[backend 'jax'\]: argument x: expected a jax array"):
        B.lstm(np.zeros((2, 3, 3), np.float32).tolist(), params)
    with pytest.raises(ShapeError, match=r"backend 'jax'"):
        B.lstm(jnp.zeros((2, 3), jnp.float32), params)


def test_from_numpy_copies_so_later_changes_to_the_numpy_array_do_not_reach_the_backend() -> None:
    """An array converted with from_numpy keeps its values when the NumPy source is changed afterwards."""
    source = np.arange(6, dtype=np.float32).reshape(2, 3)
    converted = B.from_numpy(source)
    source[:] = -1.0
    np.testing.assert_array_equal(np.asarray(converted), np.arange(6, dtype=np.float32).reshape(2, 3))
