"""torch.compile of models using each layer of rnnspec.backends.torch.nn: the eager values and gradients.

Each layer sits in a small module (the layer and a linear read-out); the compiled module's forward (every
field of the layer's result) and backward (every parameter and x) equal the eager module's. Graph
breaks are allowed (fullgraph=False): the ops read lengths and the path bookkeeping on the host.

The implementation's compiled mode (:mod:`rnnspec.backends.torch.compiled`, capability "compile"): a region per call
signature, so more sequence lengths than dynamo's recompile_limit all compile, and a hit limit raises.

Compiler backends: inductor generates code for IndRNN and QRNN (elementwise recurrences). The others
compile with "aot_eager", which traces through dynamo and AOTAutograd as inductor does but generates no
code: on the shared 2-core CPU, forward and backward took 30-40 s per layer with inductor against 7-25 s
with aot_eager, so inductor for all nine would take about five minutes.
"""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")

import rnnspec  # noqa: E402
from rnnspec.backends.torch import compiled, fused  # noqa: E402
from rnnspec.backends.torch import nn as rnn_nn  # noqa: E402
from rnnspec.backends.torch.implementation import COMPILE_BACKEND_ENV, TorchImplementation, run_op  # noqa: E402
from rnnspec.conformance.tolerances import tolerance  # noqa: E402
from rnnspec.tree import tree_leaves  # noqa: E402

pytestmark = [
    # torch 2.13's inductor imports torch.utils.mkldnn, whose ScriptModules warn at import that torch.jit is deprecated.
    pytest.mark.filterwarnings(r"ignore:`torch\.jit\.script_method` is deprecated:DeprecationWarning"),
    # dynamo reads .grad of the non-leaf tensors that a graph break hands to the next graph (torch's own access).
    pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf Tensor:UserWarning"),
    # dynamo instantiates the recurrences' autograd.Function classes while tracing them (torch's own doing).
    pytest.mark.filterwarnings(
        "ignore:<class 'torch.autograd.function.Function'> should not be instantiated:DeprecationWarning"
    ),
]

BATCH, T, I, H = 2, 3, 3, 4  # noqa: E741
MAX_STEPS = 3

#: (layer class, its options, layers, torch.compile backend).
CASES: list[tuple[Any, dict[str, Any], int, str]] = [
    (rnn_nn.RNN, {}, 2, "aot_eager"),
    (rnn_nn.LSTM, {}, 1, "aot_eager"),
    (rnn_nn.GRU, {"reset_after": False}, 1, "aot_eager"),
    (rnn_nn.SkipRNN, {}, 1, "aot_eager"),
    (rnn_nn.SkipLSTM, {}, 1, "aot_eager"),
    (rnn_nn.SkipGRU, {}, 1, "aot_eager"),
    (rnn_nn.ACT, {"cell": "gru", "max_steps": MAX_STEPS}, 1, "aot_eager"),
    (rnn_nn.IndRNN, {}, 1, "inductor"),
    (rnn_nn.QRNN, {"mode": "fo", "window": 2}, 1, "inductor"),
]


class Model(torch.nn.Module):  # type: ignore[misc,unused-ignore]
    """A layer and a linear read-out of its outputs; returns the loss and the layer's result."""

    def __init__(self, layer: Any) -> None:
        super().__init__()
        self.layer = layer
        self.head = torch.nn.Linear(H, 1)

    def forward(self, x: Any) -> tuple[Any, Any]:
        result = self.layer(x)
        loss = self.head(result.outputs).square().mean()
        for extra in ("update_prob", "ponder_cost"):  # the fields that carry a gradient of their own
            if extra in result._fields:
                loss = loss + getattr(result, extra).mean()
        return loss, result


@pytest.fixture(autouse=True)
def fresh_dynamo() -> Any:
    """Forget earlier compilations: the cases share code objects (Model.forward, the layers' forward), and past
    dynamo's recompile_limit torch would run them eagerly, which would compare eager with eager."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def run(model: Any, x: Any) -> tuple[list[Any], list[Any]]:
    """The leaves of the loss and the result, and the gradients of x and every parameter."""
    x = x.clone().requires_grad_()
    loss, result = model(x)
    model.zero_grad()
    loss.backward()
    grads = [x.grad, *(p.grad for p in model.parameters())]
    return [loss.detach(), *(t.detach() for t in tree_leaves(result))], grads


@pytest.mark.parametrize(("cls", "options", "layers", "backend"), CASES, ids=[c[0].__name__ for c in CASES])
def test_a_compiled_model_using_the_layer_gives_the_eager_values_and_gradients(
    cls: Any, options: dict[str, Any], layers: int, backend: str
) -> None:
    torch.manual_seed(0)
    model = Model(cls(I, H, num_layers=layers, **options))
    x = torch.randn(BATCH, T, I, generator=torch.Generator().manual_seed(1))
    want_values, want_grads = run(model, x)
    got_values, got_grads = run(torch.compile(model, backend=backend), x)
    steps = T * layers * (MAX_STEPS if cls is rnn_nn.ACT else 1)
    values, gradients = tolerance("float32", steps=steps), tolerance("float32", steps=steps, kind="gradient")
    assert len(got_values) == len(want_values) > 2
    for got, want in zip(got_values, want_values, strict=True):
        torch.testing.assert_close(got, want, rtol=values.rtol, atol=values.atol)
    assert all(g is not None for g in want_grads)
    assert len(got_grads) == len(want_grads)
    for got, want in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=gradients.rtol, atol=gradients.atol)


@pytest.mark.xfail(
    strict=True,
    reason="since the dropout masks joined the ops' signatures, dynamo breaks the graph inside the call (a mapping "
    "proxy or context variable read after the validation caches' dict mutations) besides the disabled kernel",
)
def test_the_fused_lstm_with_autograd_runs_outside_the_compiled_graph() -> None:
    """torch's fused RNN kernels cannot be traced with autograd: dynamo is told to leave them out."""
    torch.manual_seed(0)
    layer = rnn_nn.LSTM(I, H)
    x = torch.randn(BATCH, T, I)
    explained = torch._dynamo.explain(lambda x: layer(x).outputs.sum())(x)
    traced = [str(node.target) for graph in explained.graphs for node in graph.graph.nodes]
    assert "sum" in traced  # the compiled part around the call
    assert not any("lstm" in target for target in traced), traced
    assert fused.last_path("lstm") == "fused"
    # A break is reported only when ops were traced before the disabled call; none need be.
    assert all("torch.compiler.disable" in r.reason for r in explained.break_reasons)


def test_the_implementations_compiled_op_gives_the_ops_values(monkeypatch: pytest.MonkeyPatch) -> None:
    """TorchImplementation.compile(op) with the compiler backend chosen by RNNSPEC_TORCH_COMPILE_BACKEND."""
    monkeypatch.setenv(COMPILE_BACKEND_ENV, "aot_eager")
    backend = rnnspec.get_backend("torch")
    params = backend.from_numpy(rnnspec.init_params("gru", input_size=I, hidden_size=H, seed=2, reset_after=False))
    x = torch.randn(BATCH, T, I, generator=torch.Generator().manual_seed(3))
    arguments = backend.check_call("gru", x, params, reset_after=False, lengths=[T, 1])
    got = TorchImplementation().compile("gru")(**arguments)
    want = backend.gru(x, params, reset_after=False, lengths=[T, 1])
    tol = tolerance("float32", steps=T)
    for a, b in zip(tree_leaves(got), tree_leaves(want), strict=True):
        torch.testing.assert_close(a, b, rtol=tol.rtol, atol=tol.atol)


def gru_call(time: int, seed: int = 3, **options: Any) -> tuple[Any, dict[str, Any]]:
    """A float32 gru (reset before the matmul: the plain path, its loop unrolled) of ``time`` steps: the
    backend and the normalised arguments."""
    backend = rnnspec.get_backend("torch")
    params = backend.from_numpy(rnnspec.init_params("gru", input_size=I, hidden_size=H, seed=2, reset_after=False))
    x = torch.randn(BATCH, time, I, generator=torch.Generator().manual_seed(seed))
    return backend, backend.check_call("gru", x, params, reset_after=False, **options)


def graphs_compiled() -> int:
    return int(torch._dynamo.utils.counters["stats"]["unique_graphs"])


def assert_results_equal(got: Any, want: Any, time: int) -> None:
    tol = tolerance("float32", steps=max(time, 1))
    for a, b in zip(tree_leaves(got), tree_leaves(want), strict=True):
        torch.testing.assert_close(a, b, rtol=tol.rtol, atol=tol.atol)


def test_the_torch_backend_declares_its_compiled_mode() -> None:
    assert "compile" in TorchImplementation.capabilities
    assert isinstance(TorchImplementation().compile("lstm"), compiled.CompiledOp)


def test_more_sequence_lengths_than_dynamos_recompile_limit_each_compile_their_own_graphs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """dynamo allows recompile_limit (8) entries per code object and then runs the frame eagerly, compiling nothing
    more: each of 9 sequence lengths must still compile graphs of its own and give the op's values."""
    monkeypatch.setenv(COMPILE_BACKEND_ENV, "aot_eager")
    op = TorchImplementation().compile("gru")
    times = range(1, torch._dynamo.config.recompile_limit + 2)
    for time in times:
        backend, arguments = gru_call(time)
        before = graphs_compiled()
        got = op(**arguments)
        assert graphs_compiled() > before, f"time={time}: nothing compiled, the op ran eagerly"
        assert_results_equal(got, backend.gru(arguments["x"], arguments["params"], reset_after=False), time)
    assert len(op.regions) == len(times)


def test_a_call_of_a_signature_seen_before_runs_its_compiled_code_without_compiling() -> None:
    op = compiled.CompiledOp("gru", run_op, "aot_eager")
    backend, first = gru_call(4, seed=3, lengths=[4, 2])
    op(**first)
    _, second = gru_call(4, seed=4, lengths=[4, 2])  # other values of x, the same signature
    before = graphs_compiled(), torch._dynamo.utils.counters["frames"]["total"]
    got = op(**second)
    assert (graphs_compiled(), torch._dynamo.utils.counters["frames"]["total"]) == before
    assert len(op.regions) == 1
    want = backend.gru(second["x"], second["params"], reset_after=False, lengths=[4, 2])
    assert_results_equal(got, want, 4)


def test_a_recompile_past_a_regions_limit_raises_instead_of_running_eagerly(monkeypatch: pytest.MonkeyPatch) -> None:
    """With every call in one region (a signature that tells none apart) and a limit of 2, the third
    sequence length must fail: without dynamo's fail_on_recompile_limit_hit it would run eagerly."""
    monkeypatch.setattr(compiled, "signature", lambda arguments: "one signature")
    monkeypatch.setattr(compiled, "RECOMPILE_LIMIT", 2)
    op = compiled.CompiledOp("gru", run_op, "aot_eager")
    for time in (1, 2):
        op(**gru_call(time)[1])
    with pytest.raises(torch._dynamo.exc.FailOnRecompileLimitHit):
        op(**gru_call(3)[1])
    assert not torch._dynamo.config.fail_on_recompile_limit_hit  # set for the op's calls only


#: (what differs, the options of two calls of gru_call that differ in it): the ops specialise on each.
SPECIALISED: list[tuple[str, tuple[int, dict[str, Any]], tuple[int, dict[str, Any]]]] = [
    ("the sequence length", (3, {}), (4, {})),
    ("whether lengths are given", (3, {}), (3, {"lengths": [3, 3]})),
    ("the values of lengths", (3, {"lengths": [3, 3]}), (3, {"lengths": [3, 1]})),
    ("an option", (3, {}), (3, {"reverse": True})),
    ("whether an initial state is given", (3, {}), (3, {"initial_state": [{"h": torch.zeros(BATCH, H)}]})),
]


@pytest.mark.parametrize(("what", "first", "second"), SPECIALISED, ids=[s[0] for s in SPECIALISED])
def test_calls_that_differ_in_what_the_ops_specialise_on_have_different_signatures(
    what: str, first: tuple[int, dict[str, Any]], second: tuple[int, dict[str, Any]]
) -> None:
    signature = compiled.signature(gru_call(first[0], **first[1])[1])
    assert compiled.signature(gru_call(first[0], seed=9, **first[1])[1]) == signature  # other values of x
    assert compiled.signature(gru_call(second[0], **second[1])[1]) != signature, what


def test_a_compiled_op_inside_the_callers_torch_compile_is_traced_by_it() -> None:
    """No region of its own (nested torch.compile regions would each recompile); the caller's values."""
    op = compiled.CompiledOp("gru", run_op, "aot_eager")
    backend, arguments = gru_call(3)
    outer = torch.compile(lambda x: op(**{**arguments, "x": x}).outputs.sum(), backend="aot_eager")
    got = outer(arguments["x"])
    assert op.regions == {}
    want = backend.gru(arguments["x"], arguments["params"], reset_after=False).outputs.sum()
    assert_results_equal(got, want, 3)


def test_inductor_keeps_the_initial_state_of_a_row_of_length_zero() -> None:
    """IndRNN's loop reads its partial steps on the host (a graph break): a row of length 0 keeps its
    initial state in the inductor-compiled loop, as in eager (inductor once misordered the buffer's writes)."""
    from rnnspec.backends.torch import recurrence_loops

    torch.manual_seed(0)
    pre, u, h0 = torch.randn(1, 5, 2), torch.randn(2), torch.tensor([[0.5, -0.3]])
    valid = torch.zeros(1, 5, dtype=torch.bool)
    want = recurrence_loops.indrnn_forward(pre, u, h0, "relu", valid)
    torch._dynamo.reset()
    got = torch.compile(recurrence_loops.indrnn_forward, backend="inductor")(pre, u, h0, "relu", valid)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=0)
