"""Bidirectional torch.nn layers: torch.nn's outputs, states, wiring and gradients, the converters, training."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnspec
from rnnspec.backends.torch import nn as rnn_nn
from rnnspec.convert import from_torch, to_torch
from rnnspec.errors import OptionError, ParameterError

I, H, B, T = 3, 5, 4, 7  # noqa: E741
ATOL = 1e-5
CLASSIC = {"rnn": (rnn_nn.RNN, torch.nn.RNN), "lstm": (rnn_nn.LSTM, torch.nn.LSTM), "gru": (rnn_nn.GRU, torch.nn.GRU)}
DIRECTIONS = ("forward", "reverse")


def make_pair(op: str, num_layers: int, batch_first: bool, seed: int, **kwargs: Any) -> tuple[Any, Any]:
    """A bidirectional torch.nn module and rnnspec's layer holding its weights."""
    torch.manual_seed(seed)
    theirs = CLASSIC[op][1](I, H, num_layers=num_layers, batch_first=batch_first, bidirectional=True, **kwargs)
    return theirs, CLASSIC[op][0].from_torch(theirs)


def torch_name(key: str) -> str:
    """torch.nn's name of one of rnnspec's state_dict keys: ``layers_reverse.1.w_ih`` -> ``weight_ih_l1_reverse``."""
    stack, k, name = key.split(".")
    ours = {"w_ih": "weight_ih", "w_hh": "weight_hh", "b_ih": "bias_ih", "b_hh": "bias_hh"}[name]
    return f"{ours}_l{k}" + ("_reverse" if stack == "layers_reverse" else "")


def state_of(hx: tuple[torch.Tensor, ...], names: tuple[str, ...], num_layers: int) -> dict[str, list[Any]]:
    """torch.nn's ``hx`` ((2 * num_layers, batch, H) each, layer 0 forward first) as rnnspec's per-direction state."""
    return {
        d: [{n: t[2 * k + j] for n, t in zip(names, hx, strict=True)} for k in range(num_layers)]
        for j, d in enumerate(DIRECTIONS)
    }


def stacked(state: dict[str, Any], name: str, num_layers: int) -> torch.Tensor:
    return torch.stack([state[d][k][name] for k in range(num_layers) for d in DIRECTIONS])


@pytest.mark.parametrize("op", sorted(CLASSIC))
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("with_state", [False, True])
def test_bidirectional_layers_match_torch_nn_in_outputs_states_and_every_gradient(
    op: str, num_layers: int, batch_first: bool, with_state: bool
) -> None:
    theirs, ours = make_pair(op, num_layers, batch_first, seed=num_layers + 10 * batch_first)
    names = ("h", "c") if op == "lstm" else ("h",)
    x = torch.randn((B, T, I) if batch_first else (T, B, I))
    hx = tuple(torch.randn(2 * num_layers, B, H) for _ in names) if with_state else None
    out, final = theirs(x, None if hx is None else (hx if op == "lstm" else hx[0]))
    finals = final if op == "lstm" else (final,)
    result = ours(x, None if hx is None else state_of(hx, names, num_layers))
    assert result.outputs.shape == out.shape
    torch.testing.assert_close(result.outputs, out, atol=ATOL, rtol=0)
    for name, expected in zip(names, finals, strict=True):
        torch.testing.assert_close(stacked(result.state, name, num_layers), expected, atol=ATOL, rtol=0)
    weights = torch.randn(out.shape)
    ((out * weights).sum() + sum(f.sum() for f in finals)).backward()
    ((result.outputs * weights).sum() + sum(stacked(result.state, n, num_layers).sum() for n in names)).backward()
    reference = dict(theirs.named_parameters())
    ours_named = dict(ours.named_parameters())
    assert len(ours_named) == len(reference)
    for key, param in ours_named.items():
        torch.testing.assert_close(param.grad, reference[torch_name(key)].grad, atol=ATOL, rtol=1e-5)


@pytest.mark.parametrize("op", sorted(CLASSIC))
@pytest.mark.parametrize("num_layers", [1, 2])
def test_bidirectional_layers_with_lengths_match_torch_nn_on_packed_sequences(op: str, num_layers: int) -> None:
    theirs, ours = make_pair(op, num_layers, batch_first=True, seed=20 + num_layers)
    lengths = torch.tensor([7, 5, 2, 6])
    x = torch.randn(B, T, I)
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out, final = theirs(packed)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)
    finals = final if op == "lstm" else (final,)
    result = ours(x, lengths=lengths)
    for b, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(result.outputs[b, :n], out[b, :n], atol=ATOL, rtol=0)
    names = ("h", "c") if op == "lstm" else ("h",)
    for name, expected in zip(names, finals, strict=True):
        torch.testing.assert_close(stacked(result.state, name, num_layers), expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("op", sorted(CLASSIC))
def test_a_stacked_bidirectional_module_round_trips_through_from_torch_and_to_torch(op: str) -> None:
    theirs, ours = make_pair(op, 3, batch_first=False, seed=30, bias=op != "gru")
    assert ours.bidirectional
    assert (ours.num_layers, ours.batch_first) == (3, False)
    assert ours.canonical_params()["reverse"][1]["w_ih"].shape[1] == 2 * H  # layer 1 reads both directions
    back = ours.to_torch()
    assert type(back) is type(theirs)
    assert (back.bidirectional, back.num_layers) == (True, 3)
    expected = theirs.state_dict()
    assert sorted(back.state_dict()) == sorted(expected)
    for key, value in back.state_dict().items():
        torch.testing.assert_close(value, expected[key], atol=0, rtol=0)
    params = from_torch(theirs, direction="both")
    module = to_torch(params, op, batch_first=False, bias=op != "gru")
    for key, value in module.state_dict().items():
        torch.testing.assert_close(value, expected[key], atol=0, rtol=0)


def test_the_canonical_params_of_a_bidirectional_layer_are_one_list_per_direction_and_load_back() -> None:
    torch.manual_seed(40)
    layer = rnn_nn.GRU(I, H, num_layers=2, bidirectional=True)
    other = rnn_nn.GRU(I, H, num_layers=2, bidirectional=True)
    params = layer.numpy_params()
    assert sorted(params) == ["forward", "reverse"]
    assert [p["w_ih"].shape for p in params["reverse"]] == [(3 * H, I), (3 * H, 2 * H)]
    other.load_canonical(params)
    x = torch.randn(B, T, I)
    torch.testing.assert_close(other(x).outputs, layer(x).outputs, atol=0, rtol=0)
    assert {k for k in layer.state_dict() if k.startswith("layers_reverse.")} == {
        f"layers_reverse.{k}.{name}" for k in range(2) for name in ("w_ih", "w_hh", "b_ih", "b_hh")
    }
    with pytest.raises(ParameterError, match=r"params\['reverse'\]\[1\]\['w_ih'\]"):
        other.load_canonical({**params, "reverse": [params["reverse"][0], params["reverse"][0]]})
    with pytest.raises(ParameterError, match="'forward'"):
        other.load_canonical(params["forward"])


def test_a_bidirectional_layer_refuses_parameter_files_and_reverse(tmp_path: Any) -> None:
    layer = rnn_nn.LSTM(I, H, bidirectional=True)
    with pytest.raises(OptionError, match="bidirectional"):
        layer.save_params(tmp_path / "p.npz")
    with pytest.raises(OptionError, match="reverse"):
        layer(torch.randn(B, T, I), reverse=True)
    with pytest.raises(OptionError, match="bidirectional"):
        rnn_nn.LSTM(I, H, bidirectional=1)


@pytest.mark.parametrize("op", ["lstm", "gru"])
@pytest.mark.parametrize("batch_first", [True, False])
def test_state_format_torch_returns_h_n_of_both_directions_in_torch_nn_order(op: str, batch_first: bool) -> None:
    torch.manual_seed(50)
    theirs = CLASSIC[op][1](I, H, num_layers=2, batch_first=batch_first, bidirectional=True)
    ours = CLASSIC[op][0].from_torch(theirs, state_format="torch")
    x = torch.randn((B, T, I) if batch_first else (T, B, I))
    hx: Any = (torch.randn(4, B, H), torch.randn(4, B, H)) if op == "lstm" else torch.randn(4, B, H)
    out, final = ours(x, hx)
    expected_out, expected_final = theirs(x, hx)
    torch.testing.assert_close(out, expected_out, atol=ATOL, rtol=0)
    finals = final if op == "lstm" else (final,)
    expected = expected_final if op == "lstm" else (expected_final,)
    for got, want in zip(finals, expected, strict=True):
        assert got.shape == (4, B, H)
        torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
    out, _ = ours(x)  # no hx: zeros, as torch.nn
    torch.testing.assert_close(out, theirs(x)[0], atol=ATOL, rtol=0)


def train_steps(layer: torch.nn.Module, steps: int = 3, **arrays: Any) -> list[float]:
    """A few Adam steps on a regression; the losses (the layer's weights change in place)."""
    torch.manual_seed(60)
    x, y = torch.randn(B, T, I), torch.randn(B, 1)
    head = torch.nn.Linear(2 * H, 1)
    optimizer = torch.optim.Adam([*layer.parameters(), *head.parameters()], lr=1e-2)
    losses = []
    for _ in range(steps):
        result = layer(x, **arrays)
        loss = torch.nn.functional.mse_loss(head(result.outputs[:, -1]), y)
        if hasattr(result, "update_gate"):
            # The budget loss takes one direction's gate (batch, time): one term per direction.
            loss = loss + sum(rnnspec.skip_budget_loss(result.update_gate[..., d], 1e-3) for d in range(2))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


@pytest.mark.parametrize(
    ("layer_class", "kwargs"),
    [(rnn_nn.IndRNN, {}), (rnn_nn.QRNN, {"window": 2}), (rnn_nn.SkipGRU, {})],
    ids=["indrnn", "qrnn", "skip_gru"],
)
def test_a_bidirectional_two_layer_stack_trains_a_few_adam_steps(layer_class: Any, kwargs: dict[str, Any]) -> None:
    torch.manual_seed(70)
    layer = layer_class(I, H, num_layers=2, bidirectional=True, **kwargs)
    before = {k: v.detach().clone() for k, v in layer.state_dict().items()}
    losses = train_steps(layer)
    assert all(np.isfinite(losses))
    after = layer.state_dict()
    for stack in ("layers.0.", "layers.1.", "layers_reverse.0.", "layers_reverse.1."):
        weight = next(k for k in before if k.startswith(stack))  # the layer's first weight (w_ih, qrnn's w)
        assert not torch.equal(before[weight], after[weight]), weight


def test_layer_wise_ops_wire_layer_one_to_both_directions_below() -> None:
    torch.manual_seed(80)
    layer = rnn_nn.IndRNN(I, H, num_layers=2, bidirectional=True)
    assert layer.layers[1].w_ih.shape == (H, 2 * H)
    assert layer.layers_reverse[1].w_ih.shape == (H, 2 * H)
    result = layer(torch.randn(B, T, I))
    assert result.outputs.shape == (B, T, 2 * H)
    assert [len(result.state[d]) for d in DIRECTIONS] == [2, 2]


def test_skip_gru_runs_each_direction_as_a_whole_stack_with_its_gate_on_a_last_axis() -> None:
    torch.manual_seed(90)
    layer = rnn_nn.SkipGRU(I, H, num_layers=2, bidirectional=True, batch_first=False)
    assert layer.layers_reverse[1].w_ih.shape == (3 * H, H)  # a whole stack over x: layer 1 reads its own below
    x = torch.randn(T, B, I)
    result = layer(x)
    assert result.outputs.shape == (T, B, 2 * H)
    assert result.update_gate.shape == (T, B, 2)
    assert result.update_prob.shape == (T, B, 2)
    forward = rnn_nn.SkipGRU(I, H, num_layers=2, batch_first=False)
    forward.load_canonical(layer.numpy_params()["forward"])
    alone = forward(x)
    torch.testing.assert_close(result.outputs[..., :H], alone.outputs, atol=ATOL, rtol=0)
    torch.testing.assert_close(result.update_gate[..., 0], alone.update_gate, atol=0, rtol=0)
    backward = rnn_nn.SkipGRU(I, H, num_layers=2, batch_first=False)
    backward.load_canonical(layer.numpy_params()["reverse"])
    torch.testing.assert_close(result.outputs[..., H:], backward(x, reverse=True).outputs, atol=ATOL, rtol=0)
