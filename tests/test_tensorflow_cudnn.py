"""The TensorFlow backend's cuDNN path (rnn, lstm, gru through ``tf.raw_ops.CudnnRNNV3``).

Without a GPU: the packed buffer reads back as cuDNN's canonical weights gate
by gate; the path is declined for explicit reasons (forced off, an option
cuDNN cannot express, a dtype, an empty axis, XLA, no GPU) and taken when
they are all absent; the path's glue (packing, lengths, zero-length rows,
reverse, stacked layers of different sizes, the initial state) gives the
reference's values and GradientTape gradients when a stand-in computing
cuDNN's documented equations from the packed buffer replaces the kernel, so a
wrong gate order or bias placement fails; and the graph around the real op,
with its registered gradient, builds. With a GPU: the real path equals the
reference, values and gradients.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

import rnnspec  # noqa: E402  (after the skip: the backend imports tensorflow)
from rnnspec.backends.tensorflow import cudnn, paths  # noqa: E402
from rnnspec.backends.tensorflow.sequence import normalise_lengths  # noqa: E402
from rnnspec.conformance.assertions import assert_tree_close  # noqa: E402
from rnnspec.conformance.tolerances import tolerance  # noqa: E402

B = rnnspec.get_backend("tensorflow")
REFERENCE = rnnspec.get_backend("numpy")
HAS_GPU = bool(tf.config.list_logical_devices("GPU"))

#: (op, options, cuDNN's rnn_mode): every variant the path takes.
MODES: list[tuple[str, dict[str, Any], str]] = [
    ("lstm", {}, "lstm"),
    ("gru", {"reset_after": True}, "gru"),
    ("rnn", {"activation": "tanh"}, "rnn_tanh"),
    ("rnn", {"activation": "relu"}, "rnn_relu"),
]
MODE_IDS = [m[2] for m in MODES]

BATCH, TIME, INPUTS = 3, 5, 3


# -- a stand-in for CudnnRNNV3: cuDNN's documented equations, read off the packed buffer -------------


def cudnn_standin(
    *,
    input: Any,  # CudnnRNNV3's keyword
    input_h: Any,
    input_c: Any,
    params: Any,
    sequence_lengths: Any,
    rnn_mode: str,
    input_mode: str,
    direction: str,
    dropout: float,
    seed: int,
    seed2: int,
    num_proj: int,
    is_training: bool,
    time_major: bool,
) -> tuple[Any, Any, Any, Any, Any]:
    """One unidirectional layer as cuDNN computes it, batch-major, in TensorFlow ops (eager or traced).

    The buffer is read as cuDNN lays out one layer: the linear layers' matrices
    ``W_0..W_{G-1}`` ``(H, I)`` then ``R_0..R_{G-1}`` ``(H, H)``, row-major,
    then the biases ``b_W0..``, ``b_R0..``. Gates are named by cuDNN's linear
    layer numbers (lstm: 0 i, 1 f, 2 c, 3 o; gru: 0 r, 1 z, 2 h), and the
    equations are cuDNN's, written here independently of the backend's cells.
    A row shorter than 1 step is an error, as in cuDNN.
    """
    assert (input_mode, direction, dropout, num_proj, is_training, time_major) == (
        "linear_input",
        "unidirectional",
        0.0,
        0,
        True,
        False,
    )
    n_in, hidden = int(input.shape[2]), int(input_h.shape[2])
    assert input_h.shape[1] == 1  # (batch, layers, H) when batch-major
    gates = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}[rnn_mode]
    sizes = [hidden * n_in] * gates + [hidden * hidden] * gates + [hidden] * (2 * gates)
    tf.debugging.assert_equal(tf.size(params), sum(sizes), message="params size")
    pieces = tf.split(params, sizes)
    w = [tf.reshape(a, [hidden, n_in]) for a in pieces[:gates]]
    r = [tf.reshape(a, [hidden, hidden]) for a in pieces[gates : 2 * gates]]
    b_w, b_r = pieces[2 * gates : 3 * gates], pieces[3 * gates :]
    lengths = tf.cast(sequence_lengths, tf.int32)
    tf.debugging.assert_greater_equal(lengths, 1, message="cuDNN rejects a row of length 0")
    tf.debugging.assert_less_equal(lengths, tf.shape(input)[1], message="a row longer than the input")

    def step(carry: tuple[Any, Any, Any], inp: tuple[Any, Any]) -> tuple[Any, Any, Any]:
        h, c, _ = carry
        x_t, t = inp
        wx = [tf.matmul(x_t, w[k], transpose_b=True) + b_w[k] for k in range(gates)]
        rh = [tf.matmul(h, r[k], transpose_b=True) + b_r[k] for k in range(gates)]
        if rnn_mode == "lstm":
            i, f, o = (tf.sigmoid(wx[k] + rh[k]) for k in (0, 1, 3))
            c_new = f * c + i * tf.tanh(wx[2] + rh[2])
            h_new = o * tf.tanh(c_new)
        elif rnn_mode == "gru":
            reset, update = tf.sigmoid(wx[0] + rh[0]), tf.sigmoid(wx[1] + rh[1])
            h_new = (1.0 - update) * tf.tanh(wx[2] + reset * rh[2]) + update * h
            c_new = c
        else:
            act = tf.tanh if rnn_mode == "rnn_tanh" else tf.nn.relu
            h_new, c_new = act(wx[0] + rh[0]), c
        live = (t < lengths)[:, None]
        return tf.where(live, h_new, h), tf.where(live, c_new, c), tf.where(live, h_new, tf.zeros_like(h_new))

    h0 = input_h[:, 0]
    c0 = input_c[:, 0] if rnn_mode == "lstm" else tf.zeros_like(h0)
    steps = tf.range(tf.shape(input)[1])
    hs, cs, outputs = tf.scan(step, (tf.transpose(input, [1, 0, 2]), steps), initializer=(h0, c0, tf.zeros_like(h0)))
    empty = tf.zeros([0], input.dtype)
    c_n = cs[-1][:, None] if rnn_mode == "lstm" else empty
    return tf.transpose(outputs, [1, 0, 2]), hs[-1][:, None], c_n, empty, empty


# -- helpers --------------------------------------------------------------------------------


def stack_of(
    op: str, options: dict[str, Any], hidden: tuple[int, ...], seed: int, dtype: str = "float64"
) -> tuple[np.ndarray, list[dict[str, np.ndarray]], tuple[dict[str, np.ndarray], ...]]:
    """Input, params of layers of sizes ``hidden`` (the first reads INPUTS features), and an initial state."""
    rng = np.random.default_rng(seed)
    params: list[dict[str, np.ndarray]] = []
    inputs = INPUTS
    for k, h in enumerate(hidden):
        params += rnnspec.init_params(op, input_size=inputs, hidden_size=h, seed=seed + k, dtype=dtype, **options)
        inputs = h
    names = ("h", "c") if op == "lstm" else ("h",)
    state = tuple({n: rng.standard_normal((BATCH, h)).astype(dtype) for n in names} for h in hidden)
    return rng.standard_normal((BATCH, TIME, INPUTS)).astype(dtype), params, state


def reference_call(op: str, options: dict[str, Any], x: Any, params: Any, **kwargs: Any) -> Any:
    return getattr(REFERENCE, op)(x, params, **options, **kwargs)


@pytest.fixture
def pretend_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """cuDNN counts as available and the input as on a GPU; the kernel is the stand-in."""
    monkeypatch.setattr(cudnn, "available", lambda: None)
    monkeypatch.setattr(cudnn, "on_gpu", lambda value: True)
    monkeypatch.setattr(cudnn, "_kernel", lambda: cudnn_standin)
    monkeypatch.delenv(paths.PLAIN_ENV, raising=False)


# -- the packed buffer ---------------------------------------------------------------------


@pytest.mark.parametrize(("op", "options", "mode"), MODES, ids=MODE_IDS)
def test_the_packed_buffer_reads_back_as_cudnns_canonical_weights_gate_by_gate(
    op: str, options: dict[str, Any], mode: str
) -> None:
    """Linear layer k of cuDNN is the spec's row block k of w_ih (then w_hh, b_ih, b_hh), untransposed."""
    _, params, _ = stack_of(op, options, (4,), seed=1)
    p = params[0]
    packed = cudnn.pack_params(B.from_numpy(p))
    gates = cudnn.GATES[mode]
    assert packed.shape == (gates * (4 * INPUTS + 4 * 4 + 2 * 4),)
    weights, biases = cudnn.canonical(packed, mode, INPUTS, 4)
    for k in range(gates):
        rows = slice(4 * k, 4 * (k + 1))
        np.testing.assert_array_equal(weights[k].numpy(), p["w_ih"][rows])
        np.testing.assert_array_equal(weights[gates + k].numpy(), p["w_hh"][rows])
        np.testing.assert_array_equal(biases[k].numpy(), p["b_ih"][rows])
        np.testing.assert_array_equal(biases[gates + k].numpy(), p["b_hh"][rows])


# -- the decision ---------------------------------------------------------------------------


def test_rnn_mode_maps_the_spec_variants_cudnn_computes_and_no_other() -> None:
    for op, options, mode in MODES:
        assert cudnn.rnn_mode(op, options) == mode
    assert cudnn.rnn_mode("gru", {"reset_after": False}) is None
    assert cudnn.rnn_mode("indrnn", {"activation": "relu"}) is None


def test_in_xla_is_true_only_while_tracing_for_xla() -> None:
    """Eagerly and in a plain tf.function: no; in a jit_compile function and a function it calls: yes."""
    seen: dict[str, bool] = {}

    @tf.function
    def called(x: Any) -> Any:
        seen["called from XLA"] = paths.in_xla()
        return x

    @tf.function
    def plain(x: Any) -> Any:
        seen["plain"] = paths.in_xla()
        return x

    @tf.function(jit_compile=True)
    def compiled(x: Any) -> Any:
        seen["compiled"] = paths.in_xla()
        return called(x)

    seen["eager"] = paths.in_xla()
    plain(tf.constant(1.0))
    compiled(tf.constant(1.0))
    assert seen == {"eager": False, "plain": False, "compiled": True, "called from XLA": True}


def test_cudnn_is_declined_for_explicit_reasons(monkeypatch: pytest.MonkeyPatch) -> None:
    """why_plain names each reason: forced, an option cuDNN cannot express, a dtype, an empty axis, no GPU."""
    monkeypatch.delenv(paths.PLAIN_ENV, raising=False)
    x = tf.zeros((2, 3, 4), tf.float32)
    with paths.plain_path():
        assert "forced" in str(cudnn.why_plain("lstm", x, {}))
    monkeypatch.setenv(paths.PLAIN_ENV, "1")
    assert "forced" in str(cudnn.why_plain("lstm", x, {}))
    monkeypatch.setenv(paths.PLAIN_ENV, "0")
    assert "reset_after=False" in str(cudnn.why_plain("gru", x, {"reset_after": False}))
    assert "no kernel for indrnn" in str(cudnn.why_plain("indrnn", x, {"activation": "relu"}))
    assert "not float16" in str(cudnn.why_plain("lstm", tf.cast(x, tf.float16), {}))
    assert "not float64" in str(cudnn.why_plain("lstm", tf.cast(x, tf.float64), {}))
    assert "empty" in str(cudnn.why_plain("lstm", tf.zeros((2, 0, 4)), {}))
    assert "empty" in str(cudnn.why_plain("lstm", tf.zeros((0, 3, 4)), {}))
    if not HAS_GPU:  # a CPU build says so first; a CUDA build without a GPU, that no GPU is visible
        assert cudnn.why_plain("lstm", x, {}) == cudnn.available()
        assert any(word in str(cudnn.available()) for word in ("CUDA build", "no GPU"))
        assert f"[inactive here: {cudnn.available()}]" in cudnn.describe()


def test_cudnn_is_taken_when_every_condition_holds_but_never_inside_xla(pretend_gpu: None) -> None:
    x32 = tf.zeros((2, 3, 4), tf.float32)
    assert cudnn.why_plain("lstm", x32, {}) is None
    assert cudnn.why_plain("gru", x32, {"reset_after": True}) is None
    assert cudnn.why_plain("rnn", x32, {"activation": "relu"}) is None
    reasons: list[str | None] = []

    @tf.function(jit_compile=True)
    def compiled(x: Any) -> Any:
        reasons.append(cudnn.why_plain("lstm", x, {}))
        return x

    compiled(x32)
    assert "XLA" in str(reasons[0])


def test_on_gpu_is_false_for_a_tensor_on_the_cpu() -> None:
    with tf.device("/CPU:0"):
        x = tf.zeros((2, 3))
    assert not paths.on_gpu(x)


# -- the glue around the kernel, with the stand-in ------------------------------------------

#: (hidden sizes of the stack, lengths, reverse).
SHAPES: list[tuple[tuple[int, ...], list[int] | None, bool]] = [
    ((4,), None, False),
    ((4, 4), [5, 0, 3], True),
    ((4, 2), [3, 5, 1], False),
    ((2, 4), [0, 0, 0], True),
]


def _glue_case(
    op: str, options: dict[str, Any], mode: str, hidden: tuple[int, ...], lengths: list[int] | None, reverse: bool
) -> None:
    x, params, state = stack_of(op, options, hidden, seed=len(hidden) + (lengths or [7])[0])
    tx, tparams, tstate = B.from_numpy(x), B.from_numpy(params), B.from_numpy(state)
    norm = normalise_lengths(lengths, BATCH, TIME)
    variables = [{k: tf.Variable(v) for k, v in p.items()} for p in tparams]
    want = reference_call(op, options, x, params, lengths=lengths, initial_state=state, reverse=reverse)
    rng = np.random.default_rng(3)
    cot_out = rng.standard_normal(want.outputs.shape)
    cot_state = [{k: rng.standard_normal(v.shape) for k, v in s.items()} for s in want.state]
    with tf.GradientTape() as tape:
        tape.watch([tx, *(v for s in tstate for v in s.values())])
        outputs, finals = cudnn.run_cudnn(tx, variables, norm, tstate, reverse, mode, kernel=cudnn_standin)
        loss = tf.reduce_sum(outputs * cot_out) + tf.add_n(
            [tf.reduce_sum(f[k] * c[k]) for f, c in zip(finals, cot_state, strict=True) for k in f]
        )
    steps = TIME * len(hidden)
    got = B.to_numpy((outputs, finals))
    assert_tree_close(got, (want.outputs, want.state), tolerance("float64", steps=steps), context=f"{mode} values")
    d_x, d_params, d_state = tape.gradient(
        loss, (tx, variables, tstate), unconnected_gradients=tf.UnconnectedGradients.ZERO
    )
    want_grads = rnnspec.reference.vjp(
        op,
        {"outputs": cot_out, "state": cot_state},
        x,
        params,
        lengths=lengths,
        initial_state=state,
        reverse=reverse,
        **options,
    )
    got_grads = B.to_numpy({"x": d_x, "params": list(d_params), "initial_state": tuple(d_state)})
    assert_tree_close(
        got_grads, want_grads, tolerance("float64", steps=steps, kind="gradient"), context=f"{mode} gradients"
    )


@pytest.mark.parametrize(("hidden", "lengths", "reverse"), SHAPES)
@pytest.mark.parametrize(("op", "options", "mode"), MODES, ids=MODE_IDS)
def test_the_cudnn_glue_with_a_standin_kernel_equals_the_reference_values_and_gradients(
    op: str,
    options: dict[str, Any],
    mode: str,
    hidden: tuple[int, ...],
    lengths: list[int] | None,
    reverse: bool,
) -> None:
    """Packing, zero-length rows, reverse and stacking around cuDNN's equations give the reference's values and
    GradientTape gradients (the stand-in reads the buffer by cuDNN's layout, so a packing error shows)."""
    _glue_case(op, options, mode, hidden, lengths, reverse)


def test_a_packing_with_two_gates_swapped_is_caught_by_the_standin(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stand-in tells cuDNN's gate order from another: swapping the lstm's f and g blocks fails the comparison."""
    right = cudnn.pack_params

    def swapped(p: Any) -> Any:
        def swap(a: Any) -> Any:
            i, f, g, o = tf.split(a, 4, axis=0)
            return tf.concat([i, g, f, o], axis=0)

        return right({k: swap(v) for k, v in p.items()})

    monkeypatch.setattr(cudnn, "pack_params", swapped)
    with pytest.raises(AssertionError, match="lstm values"):
        _glue_case("lstm", {}, "lstm", (4,), None, False)


def test_the_backend_takes_the_cudnn_path_when_it_applies(pretend_gpu: None) -> None:
    """Through the public call: the path is recorded, the result is the reference's; forcing takes the loop."""
    x, params, state = stack_of("gru", {"reset_after": True}, (4, 2), seed=4, dtype="float32")
    kwargs: dict[str, Any] = {"lengths": [5, 0, 2], "initial_state": state, "reverse": True}
    want = REFERENCE.gru(x, params, **kwargs)
    got = B.gru(B.from_numpy(x), B.from_numpy(params), **{**kwargs, "initial_state": B.from_numpy(state)})
    assert paths.last_path("gru") == cudnn.FAST_PATH
    assert_tree_close(B.to_numpy(got), want, tolerance("float32", steps=2 * TIME), context="backend gru")
    with paths.plain_path():
        B.gru(B.from_numpy(x), B.from_numpy(params))
    assert paths.last_path("gru") == "plain"
    B.gru(B.from_numpy(x), B.from_numpy(params), reset_after=False)
    assert paths.last_path("gru") == "plain"


def test_a_traced_call_takes_the_path_with_symbolic_lengths(pretend_gpu: None) -> None:
    """In a user's tf.function (not XLA) the lengths are symbolic; the path is chosen at trace time."""
    x, params, _ = stack_of("lstm", {}, (4,), seed=6, dtype="float32")
    tparams = B.from_numpy(params)

    @tf.function
    def run(x: Any, lengths: Any) -> Any:
        result = B.lstm(x, tparams, lengths=lengths, reverse=True)
        return result.outputs, result.state

    got = run(tf.constant(x), tf.constant([5, 1, 0]))
    assert paths.last_path("lstm") == cudnn.FAST_PATH
    want = REFERENCE.lstm(x, params, lengths=[5, 1, 0], reverse=True)
    assert_tree_close(B.to_numpy(got), (want.outputs, want.state), tolerance("float32", steps=TIME), context="traced")


# -- the real op ------------------------------------------------------------------------------


@pytest.mark.parametrize(("op", "options", "mode"), MODES, ids=MODE_IDS)
def test_the_graph_around_the_real_cudnn_op_and_its_gradient_builds(
    op: str, options: dict[str, Any], mode: str
) -> None:
    """Tracing (no kernel runs) checks CudnnRNNV3's keywords, attributes, dtypes and shapes, and that its
    registered gradient reaches x, every param and the initial state."""
    x, params, state = stack_of(op, options, (4, 2), seed=2, dtype="float32")
    tparams, tstate = B.from_numpy(params), B.from_numpy(state)

    @tf.function
    def traced(x: Any, lengths: Any) -> Any:
        norm = normalise_lengths(lengths, BATCH, TIME)
        with tf.GradientTape() as tape:
            tape.watch([x, tparams, tstate])
            outputs, finals = cudnn.run_cudnn(x, tparams, norm, tstate, True, mode)
            loss = tf.reduce_sum(outputs) + tf.add_n([tf.reduce_sum(v) for f in finals for v in f.values()])
        return outputs, finals, tape.gradient(loss, (x, tparams, tstate))

    concrete = traced.get_concrete_function(tf.TensorSpec(x.shape, tf.float32), tf.TensorSpec([BATCH], tf.int32))
    op_types = {node.type for node in concrete.graph.get_operations()}
    assert {"CudnnRNNV3", "CudnnRNNBackpropV3"} <= op_types
    outputs, finals, (d_x, d_params, d_state) = concrete.structured_outputs
    assert outputs.shape == (BATCH, TIME, 2)
    assert [f["h"].shape for f in finals] == [(BATCH, 4), (BATCH, 2)]
    assert d_x.shape == x.shape
    assert all(d_params[k][n].shape == params[k][n].shape for k in range(2) for n in params[k])
    assert all(d_state[k][n].shape == state[k][n].shape for k in range(2) for n in state[k])


@pytest.mark.skipif(not HAS_GPU, reason="needs a GPU visible to tensorflow (cuDNN's RNN has GPU kernels only)")
@pytest.mark.parametrize(("op", "options", "mode"), MODES, ids=MODE_IDS)
def test_the_real_cudnn_path_on_a_gpu_equals_the_reference_values_and_gradients(
    op: str, options: dict[str, Any], mode: str
) -> None:
    """On a GPU the backend takes cuDNN; values and GradientTape gradients equal the reference (TF32 off)."""
    was = tf.config.experimental.tensor_float_32_execution_enabled()
    tf.config.experimental.enable_tensor_float_32_execution(False)
    dtype = "float32"
    try:
        x, params, state = stack_of(op, options, (4, 2), seed=9, dtype=dtype)
        kwargs: dict[str, Any] = {"lengths": [5, 0, 3], "reverse": True, **options}
        want = getattr(REFERENCE, op)(x, params, initial_state=state, **kwargs)
        rng = np.random.default_rng(4)
        cot_out = rng.standard_normal(want.outputs.shape).astype(dtype)
        cot_state = [{k: rng.standard_normal(v.shape).astype(dtype) for k, v in s.items()} for s in want.state]
        want_grads = rnnspec.reference.vjp(
            op, {"outputs": cot_out, "state": cot_state}, x, params, initial_state=state, **kwargs
        )
        with tf.device("/GPU:0"):
            tx, tstate = B.from_numpy(x), B.from_numpy(state)
            variables = [{k: tf.Variable(v) for k, v in p.items()} for p in B.from_numpy(params)]
            with tf.GradientTape() as tape:
                tape.watch([tx, tstate])
                got = getattr(B, op)(tx, variables, initial_state=tstate, **kwargs)
                loss = tf.reduce_sum(got.outputs * cot_out) + tf.add_n(
                    [tf.reduce_sum(f[k] * c[k]) for f, c in zip(got.state, cot_state, strict=True) for k in f]
                )
            grads = tape.gradient(loss, (tx, variables, tstate), unconnected_gradients=tf.UnconnectedGradients.ZERO)
        assert paths.last_path(op) == cudnn.FAST_PATH
        steps = 2 * TIME
        assert_tree_close(B.to_numpy(got), want, tolerance(dtype, steps=steps), context=f"cuDNN {mode}")
        got_grads = B.to_numpy({"x": grads[0], "params": list(grads[1]), "initial_state": tuple(grads[2])})
        assert_tree_close(
            got_grads, want_grads, tolerance(dtype, steps=steps, kind="gradient"), context=f"cuDNN {mode} grads"
        )
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(was)
