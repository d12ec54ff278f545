"""The nn.Module layers of the PyTorch backend (rnnspec.backends.torch.nn)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import rnnspec  # noqa: E402
from rnnspec.backends.torch import nn as rnn_nn  # noqa: E402
from rnnspec.conformance.tolerances import tolerance  # noqa: E402
from rnnspec.errors import DtypeError, OptionError, ParameterError, ShapeError  # noqa: E402

B = rnnspec.get_backend("torch")

#: (layer class, constructor options, op options, number of layers) of every layer.
CASES: list[tuple[Any, dict[str, Any], dict[str, Any], int]] = [
    (rnn_nn.RNN, {"activation": "relu"}, {"activation": "relu"}, 2),
    (rnn_nn.LSTM, {}, {}, 2),
    (rnn_nn.GRU, {"reset_after": False}, {"reset_after": False}, 2),
    (rnn_nn.SkipRNN, {"trainable_initial_state": True}, {"activation": "tanh"}, 2),
    (rnn_nn.SkipLSTM, {"trainable_initial_state": True}, {}, 2),
    (rnn_nn.SkipGRU, {}, {"reset_after": True}, 2),
    (rnn_nn.ACT, {"cell": "gru", "max_steps": 4}, {"cell": "gru", "epsilon": 0.01, "max_steps": 4}, 1),
    (rnn_nn.IndRNN, {"seq_len": 10}, {"activation": "relu"}, 2),
    (rnn_nn.QRNN, {"mode": "ifo", "window": 2}, {"mode": "ifo"}, 2),
]
IDS = [case[0].__name__ for case in CASES]
I, H, BATCH, T = 3, 4, 3, 6  # noqa: E741


def _make(cls: Any, options: dict[str, Any], layers: int, **kw: Any) -> Any:
    torch.manual_seed(0)
    return cls(I, H, num_layers=layers, dtype=torch.float64, **options, **kw)


def _x(batch_first: bool = True) -> Any:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(BATCH, T, I, generator=g, dtype=torch.float64)
    return x if batch_first else x.transpose(0, 1)


def _loss(result: Any) -> Any:
    loss = result.outputs.square().sum()
    for extra in ("update_prob", "ponder_cost"):
        if extra in result._fields:
            loss = loss + getattr(result, extra).sum()
    return loss


@pytest.mark.parametrize(("cls", "options", "op_options", "layers"), CASES, ids=IDS)
def test_forward_equals_backend_op(cls: Any, options: Any, op_options: Any, layers: int) -> None:
    layer = _make(cls, options, layers)
    x = _x()
    lengths = np.array([T, 2, 0])
    ours = layer(x, lengths=lengths, reverse=True)
    # Parameters that require grad, as the layer's do: both calls take the same (training) loop.
    params = [{k: v.detach().clone().requires_grad_() for k, v in p.items()} for p in layer.canonical_params()]
    theirs = getattr(B, layer.op)(x, params, **op_options, lengths=lengths, reverse=True)
    assert type(ours) is type(theirs)
    for a, b in zip(ours, theirs, strict=True):
        for u, v in zip(
            rnnspec.tree.tree_leaves(a) if not torch.is_tensor(a) else [a],
            rnnspec.tree.tree_leaves(b) if not torch.is_tensor(b) else [b],
            strict=True,
        ):
            assert torch.equal(u, v)


@pytest.mark.parametrize(("cls", "options", "op_options", "layers"), CASES, ids=IDS)
def test_gradients_reach_every_parameter(cls: Any, options: Any, op_options: Any, layers: int) -> None:
    layer = _make(cls, options, layers)
    names = [name for name, _ in layer.named_parameters()]
    assert names, "no parameters"
    before = {name: p.detach().clone() for name, p in layer.named_parameters()}
    optimiser = torch.optim.SGD(layer.parameters(), lr=0.1)
    _loss(layer(_x())).backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None, name
        assert bool(p.grad.ne(0).any()), name
    optimiser.step()
    for name, p in layer.named_parameters():
        assert not torch.equal(p.detach(), before[name]), name


@pytest.mark.parametrize(("cls", "options", "op_options", "layers"), CASES, ids=IDS)
def test_time_major_equals_batch_first_transposed(cls: Any, options: Any, op_options: Any, layers: int) -> None:
    first = _make(cls, options, layers)
    major = _make(cls, options, layers, batch_first=False)
    major.load_state_dict(first.state_dict())
    lengths = torch.tensor([T, 3, 1])
    a = first(_x(), lengths=lengths)
    b = major(_x(batch_first=False), lengths=lengths)
    for field in a._fields:
        if field == "state":
            for sa, sb in zip(a.state, b.state, strict=True):
                assert sa.keys() == sb.keys()
                assert all(torch.equal(sa[k], sb[k]) for k in sa)
        else:
            assert torch.equal(getattr(a, field).transpose(0, 1), getattr(b, field)), field


@pytest.mark.parametrize(("cls", "options", "op_options", "layers"), CASES, ids=IDS)
def test_state_continues_across_calls(cls: Any, options: Any, op_options: Any, layers: int) -> None:
    layer = _make(cls, options, layers)
    x = _x()
    whole = layer(x)
    head = layer(x[:, :2])
    tail = layer(x[:, 2:], initial_state=head.state)
    torch.testing.assert_close(torch.cat([head.outputs, tail.outputs], 1), whole.outputs, rtol=1e-12, atol=1e-12)
    for sa, sb in zip(tail.state, whole.state, strict=True):
        for k in sa:
            torch.testing.assert_close(sa[k], sb[k], rtol=1e-12, atol=1e-12)


def test_reset_parameters_follows_the_paper_inits() -> None:
    skip = rnn_nn.SkipGRU(I, H, num_layers=2, trainable_initial_state=True)
    assert torch.equal(skip.layers[1].b_gate, torch.ones(1))
    assert torch.equal(skip.layers[0].h0, torch.zeros(H))
    act = rnn_nn.ACT(I, H, cell="indrnn")
    assert torch.equal(act.layers[0].b_halt, torch.ones(1))
    assert act.layers[0].w_ih.shape == (H, I + 1)
    assert torch.equal(act.layers[0].b_ih, torch.zeros(H))
    ind = rnn_nn.IndRNN(I, H, num_layers=2, seq_len=10, mag=2.0, last_layer_init=True)
    bound = rnnspec.indrnn_bound(10, 2.0)
    top = ind.layers[1].u
    assert bool((top >= 1 / bound - 1e-6).all())
    assert bool((top <= bound + 1e-6).all())
    assert bool((ind.layers[0].u <= bound + 1e-6).all())
    assert torch.equal(ind.layers[0].b_ih, torch.zeros(H))
    qrnn = rnn_nn.QRNN(I, H, mode="fo", window=3)
    assert qrnn.layers[0].w.shape == (3 * H, I, 3)
    assert float(qrnn.layers[0].w.detach().abs().max()) <= 1 / np.sqrt(I * 3) + 1e-6
    lstm = rnn_nn.LSTM(I, H)
    assert float(lstm.layers[0].w_hh.detach().abs().max()) <= 1 / np.sqrt(H) + 1e-6


def test_reset_parameters_is_reproducible_under_manual_seed() -> None:
    torch.manual_seed(3)
    a = rnn_nn.LSTM(I, H, num_layers=2)
    torch.manual_seed(3)
    b = rnn_nn.LSTM(I, H, num_layers=2)
    c = rnn_nn.LSTM(I, H, num_layers=2)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    torch.manual_seed(3)
    c.reset_parameters()
    assert all(torch.equal(sa[k], c.state_dict()[k]) for k in sa)
    # The values are init_params' for the drawn seed.
    torch.manual_seed(3)
    seed = int(torch.randint(0, 2**62, (), dtype=torch.int64))
    expected = rnnspec.init_params("lstm", input_size=I, hidden_size=H, num_layers=2, seed=seed, dtype="float64")
    for layer, values in zip(a.layers, expected, strict=True):
        for k, v in values.items():
            assert torch.equal(getattr(layer, k), torch.from_numpy(v).float())


def test_bias_false_keeps_zero_frozen_cell_biases() -> None:
    layer = rnn_nn.SkipLSTM(I, H, bias=False)
    assert "layers.0.b_ih" not in layer.state_dict()
    assert {name for name, _ in layer.named_parameters()} == {
        "layers.0.w_ih",
        "layers.0.w_hh",
        "layers.0.w_gate",
        "layers.0.b_gate",
    }
    assert torch.equal(layer.layers[0].b_hh, torch.zeros(4 * H))
    assert torch.equal(layer.layers[0].b_gate, torch.ones(1))
    layer = layer.double()
    assert layer.layers[0].b_ih.dtype == torch.float64
    assert layer(_x()).outputs.dtype == torch.float64


# -- torch interop ------------------------------------------------------------------


def _torch_module(kind: str, **kw: Any) -> Any:
    torch.manual_seed(5)
    return getattr(torch.nn, kind)(I, H, num_layers=2, batch_first=True, dtype=torch.float64, **kw)


@pytest.mark.parametrize(
    ("cls", "kind", "kw"),
    [
        (rnn_nn.RNN, "RNN", {"nonlinearity": "relu"}),
        (rnn_nn.RNN, "RNN", {}),
        (rnn_nn.LSTM, "LSTM", {}),
        (rnn_nn.GRU, "GRU", {}),
        (rnn_nn.GRU, "GRU", {"bias": False}),
    ],
)
def test_from_torch_matches_the_torch_module(cls: Any, kind: str, kw: Any) -> None:
    module = _torch_module(kind, **kw)
    layer = cls.from_torch(module)
    assert layer.bias == module.bias
    x = _x()
    h0 = torch.randn(2, BATCH, H, dtype=torch.float64)
    c0 = torch.randn(2, BATCH, H, dtype=torch.float64)
    initial = [{"h": h0[k], "c": c0[k]} if kind == "LSTM" else {"h": h0[k]} for k in range(2)]
    # Pack-free comparison: each row against torch on that row cut at its length.
    lengths = [T, 3, 1]
    ours = layer(x, initial_state=initial, lengths=torch.tensor(lengths))
    for b, n in enumerate(lengths):
        hx = (h0[:, b : b + 1], c0[:, b : b + 1]) if kind == "LSTM" else h0[:, b : b + 1]
        out, hn = module(x[b : b + 1, :n], hx)
        h_n = hn[0] if kind == "LSTM" else hn
        torch.testing.assert_close(ours.outputs[b : b + 1, :n], out, rtol=1e-12, atol=1e-12)
        assert bool((ours.outputs[b, n:] == 0).all())
        for k in range(2):
            torch.testing.assert_close(ours.state[k]["h"][b], h_n[k, 0], rtol=1e-12, atol=1e-12)
            if kind == "LSTM":
                torch.testing.assert_close(ours.state[k]["c"][b], hn[1][k, 0], rtol=1e-12, atol=1e-12)
    # to_torch round-trips the weights.
    back = layer.to_torch()
    assert type(back) is type(module)
    assert back.bias == module.bias
    assert back.batch_first
    assert back.weight_ih_l0.dtype == torch.float64
    assert back.state_dict().keys() == module.state_dict().keys()
    assert all(torch.equal(v, back.state_dict()[k]) for k, v in module.state_dict().items())
    if kind == "RNN":
        assert back.nonlinearity == module.nonlinearity


def test_to_torch_refuses_what_torch_cannot_express() -> None:
    with pytest.raises(OptionError, match="reset_after"):
        rnn_nn.GRU(I, H, reset_after=False).to_torch()
    with pytest.raises(OptionError, match="module"):
        rnn_nn.LSTM.from_torch(torch.nn.GRU(I, H))
    with pytest.raises(ParameterError, match="proj_size"):
        rnn_nn.LSTM.from_torch(torch.nn.LSTM(I, H, proj_size=2))


# -- module usage -------------------------------------------------------------------


class _Classifier(torch.nn.Module):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.rnn = rnn_nn.SkipLSTM(I, H, num_layers=2)
        self.head = torch.nn.Linear(H, 2)

    def forward(self, x: Any) -> Any:
        return self.head(self.rnn(x).outputs[:, -1])


def test_layers_compose_and_convert_dtypes() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(_Classifier(), torch.nn.Tanh())
    assert any(name.startswith("0.rnn.layers.1.w_gate") for name, _ in model.named_parameters())
    x = torch.randn(BATCH, T, I)
    out = model(x)
    assert out.shape == (BATCH, 2)
    assert out.dtype == torch.float32
    model = model.double()
    assert model(x.double()).dtype == torch.float64
    model = model.to(torch.float32)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = model[0].rnn.layers[0].w_ih.detach().clone()
    model(x).square().sum().backward()
    optimiser.step()
    assert not torch.equal(before, model[0].rnn.layers[0].w_ih)
    # The state dict loads into a fresh model.
    fresh = torch.nn.Sequential(_Classifier(), torch.nn.Tanh())
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh(x), model(x))
    assert "LSTM" in repr(rnn_nn.LSTM(I, H))
    assert "window=2" in repr(rnn_nn.QRNN(I, H, window=2))


# -- bad arguments ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "error", "argument"),
    [
        (lambda: rnn_nn.LSTM(0, H), ShapeError, "input_size"),
        (lambda: rnn_nn.GRU(I, 2.5), ShapeError, "hidden_size"),
        (lambda: rnn_nn.RNN(I, H, num_layers=0), ShapeError, "num_layers"),
        (lambda: rnn_nn.ACT(I, H, num_layers=2), ShapeError, "num_layers"),
        (lambda: rnn_nn.RNN(I, H, activation="sigmoid"), OptionError, "activation"),
        (lambda: rnn_nn.GRU(I, H, reset_after="yes"), OptionError, "reset_after"),
        (lambda: rnn_nn.QRNN(I, H, window=0), OptionError, "window"),
        (lambda: rnn_nn.QRNN(I, H, mode="io"), OptionError, "mode"),
        (lambda: rnn_nn.ACT(I, H, epsilon=1.5), OptionError, "epsilon"),
        (lambda: rnn_nn.ACT(I, H, cell="qrnn"), OptionError, "cell"),
        (lambda: rnn_nn.IndRNN(I, H, mag=3.0), OptionError, "mag"),
        (lambda: rnn_nn.SkipRNN(I, H, trainable_initial_state=1), OptionError, "trainable_initial_state"),
        (lambda: rnn_nn.LSTM(I, H, bias=1), OptionError, "bias"),
        (lambda: rnn_nn.LSTM(I, H, batch_first=None), OptionError, "batch_first"),
    ],
)
def test_bad_constructor_arguments_name_the_argument(make: Any, error: Any, argument: str) -> None:
    with pytest.raises(error, match=rf"argument {argument}\b") as info:
        make()
    assert info.value.argument == argument


@pytest.mark.parametrize("batch_first", [True, False])
def test_a_numpy_x_is_refused_naming_x_in_either_layout(batch_first: bool) -> None:
    layer = rnn_nn.LSTM(I, H, batch_first=batch_first)
    with pytest.raises(DtypeError, match=r"LSTM layer \[backend 'torch'\]: argument x: .*torch.from_numpy.* ndarray"):
        layer(np.zeros((2, 5, I), dtype=np.float32))


def test_load_canonical_checks_shapes() -> None:
    layer = rnn_nn.LSTM(I, H)
    params = rnnspec.init_params("lstm", input_size=I, hidden_size=H + 1)
    with pytest.raises(ParameterError, match="w_ih"):
        layer.load_canonical(params)


# -- checkpoint_every ---------------------------------------------------------------


@pytest.mark.parametrize(("cls", "options", "op_options", "layers"), CASES, ids=IDS)
def test_checkpoint_every_runs_segments_and_changes_no_value_and_no_gradient(
    cls: Any, options: Any, op_options: Any, layers: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    segments: list[int] = []
    checkpoint = torch.utils.checkpoint.checkpoint

    def counting(*args: Any, **kwargs: Any) -> Any:
        segments.append(1)
        return checkpoint(*args, **kwargs)

    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", counting)
    lengths = np.array([T, 2, 0])
    runs = []
    for every in (None, 4):
        layer = _make(cls, options, layers, checkpoint_every=every)
        x = _x().requires_grad_()
        result = layer(x, lengths=lengths, reverse=True)
        runs.append([*result, *torch.autograd.grad(_loss(result), [x, *layer.parameters()])])
    assert len(segments) == 2, "checkpoint_every=4 over 6 steps: two checkpointed segments"
    tol = tolerance("float64", steps=T * 2 * 4, kind="gradient")
    for got, want in zip(rnnspec.tree.tree_leaves(runs[1]), rnnspec.tree.tree_leaves(runs[0]), strict=True):
        torch.testing.assert_close(got, want, rtol=tol.rtol, atol=tol.atol)


@pytest.mark.parametrize("value", [0, -2, True, 2.5, "3"], ids=repr)
@pytest.mark.parametrize("cls", [rnn_nn.LSTM, rnn_nn.SkipGRU, rnn_nn.QRNN])
def test_a_bad_checkpoint_every_is_the_specs_option_error_naming_the_layer(cls: Any, value: Any) -> None:
    with pytest.raises(OptionError, match=r"argument checkpoint_every: expected None or an integer >= 1") as info:
        cls(I, H, checkpoint_every=value)
    assert (info.value.op, info.value.argument) == (cls.__name__, "checkpoint_every")


def test_checkpoint_every_is_kept_and_shown() -> None:
    layer = rnn_nn.GRU(I, H, checkpoint_every=np.int64(3))
    assert layer.checkpoint_every == 3
    assert type(layer.checkpoint_every) is int
    assert "checkpoint_every=3" in repr(layer)
    assert "checkpoint_every" not in repr(rnn_nn.GRU(I, H))
