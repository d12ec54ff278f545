"""The torch.nn layers as drop-ins for torch.nn's: ``proj_size`` and ``state_format="torch"``.

With ``state_format="torch"`` a layer's ``forward(x, hx)`` takes and returns the state as
``torch.nn.RNN``/``GRU``/``LSTM`` do; these tests hold it against torch.nn's modules with the same
weights (values, shapes, gradients) and check what is refused, naming the argument.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from helpers_readme import run_section_example  # noqa: E402

from rnnspec.backends.torch import nn as rnn_nn  # noqa: E402
from rnnspec.errors import DtypeError, OptionError, ShapeError, UnknownArgumentError  # noqa: E402
from rnnspec.results import SequenceResult  # noqa: E402

I, H, BATCH, T = 3, 5, 4, 7  # noqa: E741
ATOL = 1e-5  # float32
DOCS = Path(__file__).resolve().parents[1] / "docs" / "getting-started" / "torch.md"

#: rnnspec's classic layers and torch.nn's module of the same op.
CLASSIC = [(rnn_nn.RNN, torch.nn.RNN), (rnn_nn.LSTM, torch.nn.LSTM), (rnn_nn.GRU, torch.nn.GRU)]
CLASSIC_IDS = [ours.__name__ for ours, _ in CLASSIC]
#: The layers whose state is h and c (they take proj_size), and the others.
H_AND_C = [rnn_nn.LSTM, rnn_nn.SkipLSTM, rnn_nn.PhasedLSTM]
WITHOUT_C = [rnn_nn.RNN, rnn_nn.GRU, rnn_nn.SkipRNN, rnn_nn.SkipGRU, rnn_nn.ACT, rnn_nn.IndRNN, rnn_nn.QRNN]
#: The layers whose op's state has entries without a torch.nn form, and those entries.
NO_TORCH_FORM = [
    (rnn_nn.SkipRNN, ("update_prob", "cum_update_prob")),
    (rnn_nn.SkipLSTM, ("update_prob", "cum_update_prob")),
    (rnn_nn.SkipGRU, ("update_prob", "cum_update_prob")),
    (rnn_nn.QRNN, ("c", "x_prev")),
]


def _x(batch_first: bool, seed: int = 1) -> Any:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(BATCH, T, I, generator=g)
    return x if batch_first else x.transpose(0, 1).contiguous()


def _hx(is_lstm: bool, layers: int, seed: int = 2) -> Any:
    g = torch.Generator().manual_seed(seed)
    h0 = torch.randn(layers, BATCH, H, generator=g)
    return (h0, torch.randn(layers, BATCH, H, generator=g)) if is_lstm else h0


def _pair(ours_cls: Any, layers: int, batch_first: bool) -> tuple[Any, Any]:
    """rnnspec's layer with state_format="torch" and torch.nn's module holding its weights."""
    torch.manual_seed(0)
    ours = ours_cls(I, H, num_layers=layers, batch_first=batch_first, state_format="torch")
    return ours, ours.to_torch()


def _close(actual: Any, expected: Any) -> None:
    assert tuple(actual.shape) == tuple(expected.shape)
    np.testing.assert_allclose(actual.detach().numpy(), expected.detach().numpy(), atol=ATOL)


def _state_tensors(state: Any) -> tuple[Any, ...]:
    return tuple(state) if isinstance(state, tuple) else (state,)


def _twins(cls: Any, **options: Any) -> tuple[Any, Any]:
    """Two layers of ``cls`` with the same weights: the default form and ``state_format="torch"``."""
    torch.manual_seed(0)
    plain = cls(I, H, **options)
    as_torch = cls(I, H, state_format="torch", **options)
    as_torch.load_canonical(plain.numpy_params())
    return plain, as_torch


# -- the torch form against torch.nn --------------------------------------------------------------------


@pytest.mark.parametrize("with_hx", [False, True], ids=["no-hx", "hx"])
@pytest.mark.parametrize("batch_first", [True, False], ids=["batch-first", "time-major"])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize(("ours_cls", "torch_cls"), CLASSIC, ids=CLASSIC_IDS)
def test_torch_form_equals_torch_nn_with_the_same_weights(
    ours_cls: Any, torch_cls: Any, layers: int, batch_first: bool, with_hx: bool
) -> None:
    ours, theirs = _pair(ours_cls, layers, batch_first)
    assert isinstance(theirs, torch_cls)
    x = _x(batch_first)
    is_lstm = ours_cls is rnn_nn.LSTM
    args = (x, _hx(is_lstm, layers)) if with_hx else (x,)
    out, state = ours(*args)
    want_out, want_state = theirs(*args)
    _close(out, want_out)
    assert isinstance(state, tuple) is is_lstm
    got, want = _state_tensors(state), _state_tensors(want_state)
    assert len(got) == len(want) == (2 if is_lstm else 1)
    for a, b in zip(got, want, strict=True):
        assert tuple(a.shape) == (layers, BATCH, H)
        _close(a, b)
    assert tuple(out.shape) == ((BATCH, T, H) if batch_first else (T, BATCH, H))


@pytest.mark.parametrize("batch_first", [True, False], ids=["batch-first", "time-major"])
@pytest.mark.parametrize(("ours_cls", "torch_cls"), CLASSIC, ids=CLASSIC_IDS)
def test_gradients_flow_from_the_final_state_to_the_parameters_and_hx(
    ours_cls: Any, torch_cls: Any, batch_first: bool
) -> None:
    layers = 2
    ours, theirs = _pair(ours_cls, layers, batch_first)
    x = _x(batch_first)
    is_lstm = ours_cls is rnn_nn.LSTM
    hx = tuple(t.requires_grad_() for t in _state_tensors(_hx(is_lstm, layers)))
    hx_theirs = tuple(t.detach().clone().requires_grad_() for t in hx)
    weights = [torch.linspace(-1, 1, layers * BATCH * H).reshape(layers, BATCH, H) * (j + 1) for j in range(2)]

    def loss(module: Any, start: tuple[Any, ...]) -> Any:
        _, state = module(x, start if is_lstm else start[0])  # the output is left out: only h_n (and c_n)
        return sum((w * s).sum() for w, s in zip(weights, _state_tensors(state), strict=False))

    loss(ours, hx).backward()
    loss(theirs, hx_theirs).backward()
    for a, b in zip(hx, hx_theirs, strict=True):
        assert a.grad is not None
        assert bool(a.grad.ne(0).any())
        _close(a.grad, b.grad)
    for k in range(layers):
        for ours_name, torch_name in (("w_ih", "weight_ih"), ("w_hh", "weight_hh"), ("b_ih", "bias_ih")):
            grad = getattr(ours.layers[k], ours_name).grad
            assert grad is not None, (k, ours_name)
            assert bool(grad.ne(0).any()), (k, ours_name)
            _close(grad, getattr(theirs, f"{torch_name}_l{k}").grad)


@pytest.mark.parametrize("batch_first", [True, False], ids=["batch-first", "time-major"])
@pytest.mark.parametrize(("ours_cls", "torch_cls"), CLASSIC, ids=CLASSIC_IDS)
def test_from_torch_with_the_torch_form_replaces_the_module(ours_cls: Any, torch_cls: Any, batch_first: bool) -> None:
    torch.manual_seed(3)
    module = torch_cls(I, H, num_layers=2, batch_first=batch_first)
    layer = ours_cls.from_torch(module, state_format="torch")
    assert layer.state_format == "torch"
    x, hx = _x(batch_first), _hx(ours_cls is rnn_nn.LSTM, 2)
    out, state = layer(x, hx)
    want_out, want_state = module(x, hx)
    _close(out, want_out)
    for a, b in zip(_state_tensors(state), _state_tensors(want_state), strict=True):
        _close(a, b)


def test_code_written_for_torch_nn_runs_unchanged_with_rnnspec_lstm() -> None:
    def encode(lstm: Any, x: Any, h0: Any, c0: Any) -> tuple[Any, Any, Any]:
        """torch.nn.LSTM code: two chunks, the second continuing from the first's (h, c); hx also as keyword."""
        out, (h, c) = lstm(x[:3], (h0, c0))
        rest, (h, c) = lstm(x[3:], hx=(h, c))
        return torch.cat([out, rest]), h, c

    torch.manual_seed(0)
    module = torch.nn.LSTM(I, H, num_layers=2)  # time-major, torch.nn's default
    layer = rnn_nn.LSTM(I, H, num_layers=2, batch_first=False, proj_size=0, state_format="torch")
    layer.load_canonical(rnn_nn.LSTM.from_torch(module).numpy_params())
    x = _x(batch_first=False)
    h0, c0 = _hx(True, 2)
    for a, b in zip(encode(layer, x, h0, c0), encode(module, x, h0, c0), strict=True):
        _close(a, b)


# -- the torch form of the other layers, from the op's record -------------------------------------------


@pytest.mark.parametrize(
    ("cls", "options", "layers"),
    [(rnn_nn.ACT, {}, 1), (rnn_nn.IndRNN, {"seq_len": 10}, 2), (rnn_nn.PhasedLSTM, {}, 2)],
    ids=["ACT", "IndRNN", "PhasedLSTM"],
)
def test_torch_form_of_a_state_of_h_or_h_and_c_stacks_the_ops_state(cls: Any, options: Any, layers: int) -> None:
    plain, as_torch = _twins(cls, num_layers=layers, **options)
    x = _x(batch_first=True)
    arrays = {"timestamps": torch.cumsum(torch.rand(BATCH, T), 1)} if cls is rnn_nn.PhasedLSTM else {}
    entries = cls.torch_state_entries
    g = torch.Generator().manual_seed(4)
    start = [torch.randn(layers, BATCH, H, generator=g) for _ in entries]
    hx = tuple(start) if len(entries) == 2 else start[0]
    want = plain(x, [{key: t[k] for key, t in zip(entries, start, strict=True)} for k in range(layers)], **arrays)
    out, state = as_torch(x, hx, **arrays)
    _close(out, want.outputs)
    assert isinstance(state, tuple) is (len(entries) == 2)
    for key, got in zip(entries, _state_tensors(state), strict=True):
        _close(got, torch.stack([s[key] for s in want.state]))


def test_the_torch_form_drops_the_per_step_results_besides_the_outputs() -> None:
    _, act = _twins(rnn_nn.ACT)
    result = act(_x(batch_first=True))
    assert len(result) == 2
    out, h_n = result
    assert tuple(out.shape) == (BATCH, T, H)
    assert tuple(h_n.shape) == (1, BATCH, H)


def test_the_default_form_is_still_the_ops_result() -> None:
    result = rnn_nn.LSTM(I, H)(_x(batch_first=True))
    assert isinstance(result, SequenceResult)
    assert set(result.state[0]) == {"h", "c"}


@pytest.mark.parametrize(("cls", "entries"), NO_TORCH_FORM, ids=[c.__name__ for c, _ in NO_TORCH_FORM])
def test_torch_form_is_refused_where_the_ops_state_has_entries_without_one(cls: Any, entries: tuple[str, ...]) -> None:
    with pytest.raises(OptionError, match="state_format") as info:
        cls(I, H, state_format="torch")
    message = str(info.value)
    assert cls.__name__ in message
    assert "no torch.nn form" in message
    for entry in entries:
        assert repr(entry) in message
    assert cls.torch_state_entries == () or "h" in cls.torch_state_entries
    assert cls(I, H, state_format="rnnspec").state_format == "rnnspec"


@pytest.mark.parametrize("value", ["keras", "Torch", None, 1, ("torch",)], ids=repr)
def test_an_invalid_state_format_is_refused_naming_the_argument(value: Any) -> None:
    with pytest.raises(OptionError, match=r"LSTM: argument state_format: expected 'rnnspec' or 'torch'"):
        rnn_nn.LSTM(I, H, state_format=value)


# -- hx -----------------------------------------------------------------------------------------------------


def test_hx_is_refused_without_the_torch_form() -> None:
    layer = rnn_nn.GRU(I, H)
    with pytest.raises(UnknownArgumentError, match=r"argument hx: .*state_format='torch'"):
        layer(_x(batch_first=True), hx=_hx(False, 1))


def test_hx_and_initial_state_together_are_refused() -> None:
    layer = rnn_nn.GRU(I, H, state_format="torch")
    h0 = _hx(False, 1)
    with pytest.raises(UnknownArgumentError, match="both initial_state and hx"):
        layer(_x(batch_first=True), h0, hx=h0)


@pytest.mark.parametrize(
    ("cls", "hx", "error", "pattern"),
    [
        (rnn_nn.LSTM, torch.zeros(1, BATCH, H), DtypeError, r"argument hx: expected a pair \(h0, c0\)"),
        (rnn_nn.LSTM, (torch.zeros(1, BATCH, H),), DtypeError, r"argument hx: expected a pair \(h0, c0\)"),
        (rnn_nn.GRU, (torch.zeros(1, BATCH, H),) * 2, DtypeError, r"argument hx: expected a tensor .*LSTM's"),
        (rnn_nn.GRU, torch.zeros(BATCH, H), ShapeError, r"argument hx: expected shape .* = \(1, 4, 5\)"),
        (rnn_nn.GRU, torch.zeros(2, BATCH, H), ShapeError, r"argument hx: expected shape .* = \(1, 4, 5\)"),
        (rnn_nn.GRU, torch.zeros(1, BATCH + 1, H), ShapeError, r"argument hx: expected shape .* = \(1, 4, 5\)"),
        (
            rnn_nn.LSTM,
            (torch.zeros(1, BATCH, H), torch.zeros(1, BATCH, H + 1)),
            ShapeError,
            r"argument hx\[1\]: expected shape",
        ),
        (rnn_nn.RNN, torch.zeros(1, BATCH, H, dtype=torch.float64), DtypeError, r"argument hx: expected dtype float32"),
    ],
    ids=["lstm-tensor", "lstm-one", "gru-pair", "gru-2d", "gru-layers", "gru-batch", "lstm-c-size", "rnn-dtype"],
)
def test_an_hx_not_of_torch_nns_form_is_refused_naming_it(cls: Any, hx: Any, error: type, pattern: str) -> None:
    layer = cls(I, H, state_format="torch")
    with pytest.raises(error, match=pattern):
        layer(_x(batch_first=True), hx)


# -- proj_size ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", H_AND_C, ids=lambda c: c.__name__)
def test_a_nonzero_proj_size_is_refused_naming_the_layer_and_the_argument(cls: Any) -> None:
    with pytest.raises(OptionError) as info:
        cls(I, H, proj_size=3)
    message = str(info.value)
    assert message.startswith(f"{cls.__name__}: argument proj_size: ")
    assert f"expected 0: rnnspec's {cls.op} has no projection" in message
    assert message.endswith("got 3")


@pytest.mark.parametrize("value", [True, 0.0, -1, "0"], ids=repr)
def test_proj_size_refuses_what_is_not_the_integer_0(value: Any) -> None:
    with pytest.raises(OptionError, match="argument proj_size"):
        rnn_nn.LSTM(I, H, proj_size=value)


@pytest.mark.parametrize("cls", H_AND_C, ids=lambda c: c.__name__)
def test_proj_size_0_is_accepted_and_listed_but_never_shown(cls: Any) -> None:
    layer = cls(I, H, proj_size=0)
    assert layer.proj_size == 0
    assert "proj_size" not in repr(layer)
    assert inspect.signature(cls).parameters["proj_size"].default == 0
    assert "proj_size : int, default 0" in (cls.__doc__ or "")
    assert "proj_size" not in layer.options  # it never reaches the op


@pytest.mark.parametrize("cls", WITHOUT_C, ids=lambda c: c.__name__)
def test_layers_without_a_cell_state_do_not_take_proj_size(cls: Any) -> None:
    assert "proj_size" not in inspect.signature(cls).parameters
    with pytest.raises(UnknownArgumentError, match="argument proj_size") as info:
        cls(I, H, proj_size=0)
    assert isinstance(info.value, TypeError)


# -- the signature, docstring and repr ----------------------------------------------------------------------


@pytest.mark.parametrize("cls", H_AND_C + WITHOUT_C, ids=lambda c: c.__name__)
def test_every_layer_lists_state_format_in_its_signature_and_docstring(cls: Any) -> None:
    parameter = inspect.signature(cls).parameters["state_format"]
    assert parameter.default == "rnnspec"
    assert parameter.kind is inspect.Parameter.KEYWORD_ONLY
    assert "state_format : str, default 'rnnspec'" in (cls.__doc__ or "")


def test_repr_shows_state_format_only_when_it_is_torch() -> None:
    assert "state_format" not in repr(rnn_nn.GRU(I, H))
    assert "state_format='torch'" in repr(rnn_nn.GRU(I, H, state_format="torch"))


def test_the_documentations_drop_in_example_runs() -> None:
    namespace: dict[str, Any] = run_section_example(DOCS, "### Drop-in for `torch.nn`")
    assert tuple(namespace["out"].shape) == (10, 4, 8)
    assert tuple(namespace["h"].shape) == tuple(namespace["c"].shape) == (2, 4, 8)
