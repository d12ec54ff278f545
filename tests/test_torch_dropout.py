"""The torch.nn layers' ``dropout`` (between stacked layers) and ``recurrent_dropout`` (one mask per layer over time).

In evaluation a layer with dropout is bitwise the layer without; in training the masks the layer hands the op
(captured by a spy on the backend's op) have the record's shapes, entries 0 or exactly 1 / (1 - p) at the rate
p (a 6-sigma bound), one per boundary and one per layer (and per direction); torch.nn's ``LSTM(dropout=p)``
agrees in evaluation, and in training our stack is torch.nn's layers with the captured boundary mask between
them; the recurrent mask is the same at every step (a hand-written loop with one mask agrees); a bad p is
refused naming the layer and the argument; a bidirectional, dropped-out two-layer SkipGRU trains.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import TORCH_RTOL, assert_relative_close
from helpers_dropout import assert_dropout_masks, spy_on
from helpers_readme import run_section_example

from rnnspec.backends.torch import nn as torch_nn
from rnnspec.errors import OptionError, UnknownArgumentError

DOCS = Path(__file__).resolve().parents[1] / "docs" / "getting-started" / "torch.md"
P = 0.3
BAD_PROBABILITIES = [-0.1, 1.0, math.nan, "0.1", True, None]
#: Large enough for the 6-sigma bound on the rate to be tight: batch, time, input size, hidden size.
BIG = (40, 50, 4, 32)


def same_weights(layer: Any, **options: Any) -> Any:
    """A layer of ``layer``'s class and sizes with ``options`` in place of its own, holding its weights."""
    twin = type(layer)(layer.input_size, layer.hidden_size, layer.num_layers, **options)
    twin.load_state_dict(layer.state_dict())
    return twin


@pytest.mark.parametrize(
    ("cls", "options"),
    [
        (torch_nn.LSTM, {"dropout": P, "recurrent_dropout": P}),
        (torch_nn.GRU, {"dropout": P, "recurrent_dropout": P, "bidirectional": True}),
        (torch_nn.SkipGRU, {"dropout": P, "recurrent_dropout": P, "bidirectional": True}),
        (torch_nn.IndRNN, {"dropout": P, "recurrent_dropout": P}),
        (torch_nn.QRNN, {"dropout": P}),
        (torch_nn.ACT, {"recurrent_dropout": P}),
    ],
)
def test_in_evaluation_a_layer_is_bitwise_the_layer_without_dropout(cls: Any, options: dict[str, Any]) -> None:
    torch.manual_seed(0)
    layers = 1 if cls is torch_nn.ACT else 2
    layer = cls(3, 5, layers, **options).eval()
    plain = same_weights(layer, bidirectional=options.get("bidirectional", False)).eval()
    x = torch.randn(4, 6, 3)
    assert torch.equal(layer(x).outputs, plain(x).outputs)
    assert not torch.equal(layer.train()(x).outputs, plain(x).outputs)  # training does drop


def test_in_training_the_masks_have_the_shapes_the_rate_and_the_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    batch, time, inputs, hidden = BIG
    torch.manual_seed(1)
    layer = torch_nn.LSTM(inputs, hidden, 3, dropout=P, recurrent_dropout=0.5)
    spy = spy_on(monkeypatch, "torch", "lstm")
    x = torch.randn(batch, time, inputs)
    layer(x)
    layer(x)
    first, second = spy.calls
    assert len(first["dropout_mask"]) == 2
    assert len(first["recurrent_mask"]) == 3
    masks = [*first["dropout_mask"], *second["dropout_mask"]]
    assert_dropout_masks(masks, (batch, time, hidden), P, "dropout masks of two calls")
    recurrent = [*first["recurrent_mask"], *second["recurrent_mask"]]
    assert_dropout_masks(recurrent, (batch, hidden), 0.5, "recurrent masks of two calls")
    layer.eval()(x)
    assert spy.calls[2].get("dropout_mask") is None
    assert spy.calls[2].get("recurrent_mask") is None


def test_time_major_layers_draw_batch_major_masks(monkeypatch: pytest.MonkeyPatch) -> None:
    layer = torch_nn.GRU(3, 5, 2, batch_first=False, dropout=P, recurrent_dropout=P)
    spy = spy_on(monkeypatch, "torch", "gru")
    out = layer(torch.randn(7, 4, 3)).outputs  # (time, batch, ...)
    assert out.shape == (7, 4, 5)
    assert spy.calls[0]["dropout_mask"][0].shape == (4, 7, 5)
    assert spy.calls[0]["recurrent_mask"][0].shape == (4, 5)


def test_the_recurrent_mask_is_the_same_at_every_step(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(2)
    layer = torch_nn.RNN(3, 6, recurrent_dropout=0.4, dtype=torch.float64)
    spy = spy_on(monkeypatch, "torch", "rnn")
    x = torch.randn(5, 8, 3, dtype=torch.float64)
    got = layer(x).outputs
    (mask,) = spy.calls[0]["recurrent_mask"]
    p = layer.numpy_params()[0]
    h = torch.zeros(5, 6, dtype=torch.float64)
    want = []
    for t in range(8):  # one mask on the h_{t-1} of W_hh at every step
        pre = x[:, t] @ torch.from_numpy(p["w_ih"]).T + torch.from_numpy(p["b_ih"] + p["b_hh"])
        h = torch.tanh(pre + (h * mask) @ torch.from_numpy(p["w_hh"]).T)
        want.append(h)
    assert_relative_close(got.detach().numpy(), torch.stack(want, 1).numpy(), TORCH_RTOL, "masked RNN")


def test_in_evaluation_torch_nn_lstm_with_dropout_equals_the_layer() -> None:
    torch.manual_seed(3)
    reference = torch.nn.LSTM(3, 5, num_layers=2, dropout=P, batch_first=True, dtype=torch.float64).eval()
    layer = torch_nn.LSTM.from_torch(reference).eval()
    assert layer.dropout == P
    assert layer.to_torch().dropout == P
    x = torch.randn(4, 6, 3, dtype=torch.float64)
    got = layer(x).outputs.detach().numpy()
    assert_relative_close(got, reference(x)[0].detach().numpy(), TORCH_RTOL, "eval outputs")


def test_in_training_the_stack_is_torch_nns_layers_with_each_boundarys_outputs_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    torch.manual_seed(4)
    reference = torch.nn.LSTM(3, 5, num_layers=3, dropout=P, batch_first=True, dtype=torch.float64)
    layer = torch_nn.LSTM.from_torch(reference).train()
    spy = spy_on(monkeypatch, "torch", "lstm")
    x = torch.randn(4, 6, 3, dtype=torch.float64)
    got = layer(x).outputs
    masks = spy.calls[0]["dropout_mask"]
    assert len(masks) == 2
    scale = 1.0 / (1.0 - P)
    for m in masks:
        assert set(np.unique(m.numpy())) <= {0.0, scale}
    inp = x
    for k in range(3):  # torch.nn's own one-layer LSTMs, the boundary mask between them
        single = torch.nn.LSTM(inp.shape[-1], 5, batch_first=True, dtype=torch.float64)
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(single, f"{name}_l0").data.copy_(getattr(reference, f"{name}_l{k}").data)
        inp = single(inp)[0]
        if k < 2:
            inp = inp * masks[k]
    assert_relative_close(got.detach().numpy(), inp.detach().numpy(), TORCH_RTOL, "training outputs")


def test_a_bidirectional_layerwise_stack_drops_both_directions_outputs_and_draws_recurrent_masks_per_direction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    batch, time, inputs, hidden = BIG
    torch.manual_seed(5)
    layer = torch_nn.GRU(inputs, hidden, 2, bidirectional=True, dropout=P, recurrent_dropout=P)
    spy = spy_on(monkeypatch, "torch", "gru")
    layer(torch.randn(batch, time, inputs))
    assert len(spy.calls) == 4  # layer 0 forward, reverse, layer 1 forward, reverse
    recurrent = [call["recurrent_mask"][0] for call in spy.calls]
    assert_dropout_masks(recurrent, (batch, hidden), P, "recurrent masks")
    below = torch.cat([spy.calls[0]["outputs"], spy.calls[1]["outputs"]], dim=-1)
    read = spy.calls[2]["x"]
    assert torch.equal(read, spy.calls[3]["x"])  # one mask over both directions, as torch.nn
    kept = below != 0
    ratio = torch.where(kept, read / torch.where(kept, below, 1.0), 0.0)
    dropped = (read == 0) & kept
    assert torch.allclose(ratio[kept & ~dropped], torch.tensor(1.0 / (1.0 - P)))
    rate = float(dropped.sum() / kept.sum())
    assert abs(rate - P) <= 6.0 * math.sqrt(P * (1.0 - P) / float(kept.sum()))


def test_a_bidirectional_skip_stack_draws_every_mask_per_direction(monkeypatch: pytest.MonkeyPatch) -> None:
    batch, time, inputs, hidden = BIG
    torch.manual_seed(6)
    layer = torch_nn.SkipGRU(inputs, hidden, 3, bidirectional=True, dropout=P, recurrent_dropout=P)
    spy = spy_on(monkeypatch, "torch", "skip_gru")
    layer(torch.randn(batch, time, inputs))
    forward, reverse = spy.calls
    assert_dropout_masks([*forward["dropout_mask"], *reverse["dropout_mask"]], (batch, time, hidden), P, "dropout")
    recurrent = [*forward["recurrent_mask"], *reverse["recurrent_mask"]]
    assert_dropout_masks(recurrent, (batch, hidden), P, "recurrent")


@pytest.mark.parametrize("bad", BAD_PROBABILITIES)
@pytest.mark.parametrize("argument", ["dropout", "recurrent_dropout"])
def test_a_bad_probability_is_refused_naming_the_layer_and_the_argument(argument: str, bad: Any) -> None:
    with pytest.raises(OptionError, match=rf"SkipGRU: argument {argument}: expected a probability"):
        torch_nn.SkipGRU(3, 4, 2, **{argument: bad})


def test_a_layer_takes_only_the_dropout_its_op_has_and_warns_of_dropout_without_a_boundary() -> None:
    with pytest.raises(UnknownArgumentError, match="recurrent_dropout"):
        torch_nn.QRNN(3, 4, 2, recurrent_dropout=P)
    with pytest.raises(UnknownArgumentError, match="'dropout'"):
        torch_nn.ACT(3, 4, dropout=P)
    with pytest.warns(UserWarning, match="LSTM: dropout=0.3 acts between stacked layers"):
        torch_nn.LSTM(3, 4, dropout=P)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch_nn.LSTM(3, 4, recurrent_dropout=P)
    assert "dropout=0.3, recurrent_dropout=0.3" in repr(torch_nn.LSTM(3, 4, 2, dropout=P, recurrent_dropout=P))


def test_a_bidirectional_two_layer_skip_gru_with_dropout_trains() -> None:
    """The issue's acceptance test: the loss of a seeded synthetic task clearly falls in a few dozen updates."""
    torch.manual_seed(7)
    x = torch.randn(32, 12, 3)
    y = torch.cumsum(x[..., :1], dim=1) / 4.0  # a running sum: needs the recurrence
    rnn = torch_nn.SkipGRU(3, 16, 2, bidirectional=True, dropout=0.2, recurrent_dropout=0.2)
    head = torch.nn.Linear(32, 1)
    optimizer = torch.optim.Adam([*rnn.parameters(), *head.parameters()], lr=2e-2)

    def loss() -> torch.Tensor:
        return torch.mean((head(rnn(x).outputs) - y) ** 2)

    rnn.eval()
    with torch.no_grad():
        before = float(loss())
    rnn.train()
    for _ in range(40):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    rnn.eval()
    with torch.no_grad():
        after = float(loss())
    assert after < 0.5 * before, f"evaluation loss {before:.4f} -> {after:.4f}"


def test_the_getting_started_dropout_example_runs_drawing_in_training_and_not_in_evaluation() -> None:
    namespace = run_section_example(DOCS, "### Dropout")
    rnn, x, train_out, eval_out = (namespace[k] for k in ("rnn", "x", "train_out", "eval_out"))
    assert train_out.shape == (4, 10, 16)
    assert not torch.equal(train_out, eval_out)
    assert torch.equal(rnn(x).outputs, eval_out)
