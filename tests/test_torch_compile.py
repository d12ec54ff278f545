"""torch.compile of models using each layer of rnnspec.backends.torch.nn: the eager values and gradients.

Each layer sits in a small module (the layer and a linear read-out); the compiled module's forward (every
field of the layer's result) and backward (every parameter and x) equal the eager module's. Graph
breaks are allowed (fullgraph=False): the ops read lengths and the path bookkeeping on the host.

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
from rnnspec.backends.torch import fused  # noqa: E402
from rnnspec.backends.torch import nn as rnn_nn  # noqa: E402
from rnnspec.backends.torch.implementation import COMPILE_BACKEND_ENV, TorchImplementation  # noqa: E402
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
