"""The torch.nn DeepIndRNN: the authors' residual, batch-normalised stacks train, equal their hand-written
composition, normalise per step as a hand computation does, keep padding out of the statistics, use running
statistics in eval mode, and ``param_groups`` leaves exactly the recurrent weights undecayed."""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from helpers import TORCH_RTOL, assert_relative_close  # noqa: E402

from rnnspec.backends.torch.nn import DeepIndRNN, IndRNN, PerStepBatchNorm, param_groups  # noqa: E402
from rnnspec.errors import OptionError, ShapeError  # noqa: E402

F = torch.nn.functional
H = 6


def _hand_recurrence(z: Any, u: Any) -> Any:
    """h_t = relu(z_t + u * h_{t-1}) from h_0 = 0, step by step."""
    h = torch.zeros_like(z[:, 0])
    out = []
    for t in range(z.shape[1]):
        h = torch.relu(z[:, t] + u * h)
        out.append(h)
    return torch.stack(out, dim=1)


def test_a_six_layer_residual_indrnn_with_batch_normalisation_trains() -> None:
    torch.manual_seed(0)
    model = DeepIndRNN(2, 16, 6, residual=True, batch_norm="after", seq_len=12)
    readout = torch.nn.Linear(16, 1)
    optimizer = torch.optim.Adam([*model.parameters(), *readout.parameters()], lr=1e-2)
    x = torch.rand(64, 12, 2)
    target = (x[..., 0] * x[..., 1]).sum(1, keepdim=True)  # a sum of products over the sequence
    losses = []
    for _ in range(40):
        optimizer.zero_grad()
        loss = F.mse_loss(readout(model(x).outputs[:, -1]), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0], f"loss {losses[0]:.3f} -> {losses[-1]:.3f}"


def test_a_residual_stack_equals_its_hand_written_composition_of_linear_batch_norm_recurrence_and_shortcut() -> None:
    torch.manual_seed(1)
    model = DeepIndRNN(3, H, 3, residual=True, batch_norm="before", dtype=torch.float64)
    x = torch.randn(5, 7, 3, dtype=torch.float64)
    result = model(x)
    sums: list[Any] = []
    y = x
    for i, cell in enumerate(model.cells):
        p = cell.canonical_params()[0]
        s = y @ p["w_ih"].T + p["b_ih"] + (sums[0] if i == 2 else 0)  # the shortcut of layers 0 -> 2
        sums.append(s)
        norm = model.norms[i]
        mean, var = s.mean((0, 1)), s.var((0, 1), unbiased=False)
        z = (s - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias
        y = _hand_recurrence(z, p["u"])
    assert_relative_close(result.outputs.detach(), y.detach(), TORCH_RTOL, "outputs")
    assert_relative_close(result.state[2]["h"].detach(), y[:, -1].detach(), TORCH_RTOL, "final state")


def test_a_stack_without_batch_norm_or_shortcut_equals_its_indrnn_layers_called_in_turn() -> None:
    torch.manual_seed(2)
    model = DeepIndRNN(3, H, 3, dtype=torch.float64)
    x = torch.randn(4, 6, 3, dtype=torch.float64)
    lengths = torch.tensor([6, 0, 3, 5])
    y = x
    for cell in model.cells:
        y = cell(y, lengths=lengths).outputs
    assert isinstance(model.cells[0], IndRNN)
    assert_relative_close(model(x, lengths=lengths).outputs.detach(), y.detach(), TORCH_RTOL, "outputs")


def test_per_step_statistics_equal_a_hand_computation_over_each_steps_valid_rows() -> None:
    torch.manual_seed(3)
    norm = PerStepBatchNorm(H, max_length=8, dtype=torch.float64)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-1, 1)
    x = torch.randn(5, 6, H, dtype=torch.float64)
    lengths = np.array([6, 4, 4, 1, 0])
    mask = torch.as_tensor(np.arange(6)[None, :] < lengths[:, None])
    y = norm(x, mask).detach().numpy()
    xs, w, b = x.numpy(), norm.weight.detach().numpy(), norm.bias.detach().numpy()
    for t in range(6):
        rows = np.flatnonzero(lengths > t)
        mean, var = xs[rows, t].mean(0), xs[rows, t].var(0)
        assert_relative_close(y[rows, t], (xs[rows, t] - mean) / np.sqrt(var + 1e-5) * w + b, TORCH_RTOL, f"t={t}")
        assert not y[lengths <= t, t].any(), f"padded rows at step {t} are not zero"
        # BatchNorm1d's update (momentum 0.1, unbiased variance) where two rows or more are valid.
        expected_mean = 0.1 * mean if rows.size > 1 else np.zeros(H)
        expected_var = 0.9 + 0.1 * xs[rows, t].var(0, ddof=1) if rows.size > 1 else np.ones(H)
        assert_relative_close(norm.running_mean[t], expected_mean, TORCH_RTOL, f"running_mean[{t}]")
        assert_relative_close(norm.running_var[t], expected_var, TORCH_RTOL, f"running_var[{t}]")
    assert not norm.running_mean[6:].any(), "rows past the sequence moved"


@pytest.mark.parametrize("statistics", ["batch_time", "per_step"])
@pytest.mark.parametrize("where", ["before", "after"])
def test_padded_steps_enter_no_statistic_and_come_out_as_zeros(where: str, statistics: str) -> None:
    torch.manual_seed(4)
    max_length = 6 if statistics == "per_step" else None
    model = DeepIndRNN(3, H, 3, residual=True, batch_norm=where, bn_statistics=statistics, max_length=max_length)
    x = torch.randn(4, 6, 3)
    lengths = torch.tensor([6, 2, 0, 4])
    padded = torch.arange(6)[None, :] >= lengths[:, None]
    noisy = torch.where(padded[..., None], 1e3 * torch.randn_like(x), x)
    twin = copy.deepcopy(model)
    first, second = model(x, lengths=lengths), twin(noisy, lengths=lengths)
    torch.testing.assert_close(second.outputs, first.outputs, rtol=0, atol=0)
    assert not second.outputs[padded].any()
    for (name, a), (_, b) in zip(model.named_buffers(), twin.named_buffers(), strict=True):
        assert torch.equal(a, b), f"{name} saw the padding"
    model.eval()
    torch.testing.assert_close(model(noisy, lengths=lengths).outputs, model(x, lengths=lengths).outputs)


@pytest.mark.parametrize("statistics", ["batch_time", "per_step"])
def test_eval_mode_uses_the_running_statistics_so_each_row_is_independent_of_the_others(statistics: str) -> None:
    torch.manual_seed(5)
    max_length = 5 if statistics == "per_step" else None
    model = DeepIndRNN(3, H, 6, residual=True, batch_norm="before", bn_statistics=statistics, max_length=max_length)
    x = torch.randn(8, 5, 3)
    model(x)  # one training call: the running statistics move
    running = [b.clone() for name, b in model.named_buffers() if "running" in name]
    model.eval()
    alone = model(x[:1]).outputs
    together = model(x).outputs
    torch.testing.assert_close(alone, together[:1])
    after = [b for name, b in model.named_buffers() if "running" in name]
    assert all(torch.equal(a, b) for a, b in zip(after, running, strict=True)), "eval moved the running statistics"
    model.train()
    assert not torch.allclose(model(x[:1]).outputs, alone), "training mode did not use the batch's statistics"


def test_eval_mode_normalises_with_the_running_statistics_of_each_step() -> None:
    norm = PerStepBatchNorm(H, max_length=4, dtype=torch.float64)
    with torch.no_grad():
        norm.running_mean.uniform_(-1, 1)
        norm.running_var.uniform_(0.5, 2)
    norm.eval()
    x = torch.randn(3, 3, H, dtype=torch.float64)
    expected = (x - norm.running_mean[:3]) / torch.sqrt(norm.running_var[:3] + norm.eps)
    assert_relative_close(norm(x).detach(), expected.detach(), TORCH_RTOL, "eval output")


def test_a_sequence_longer_than_max_length_is_refused_naming_x_and_max_length() -> None:
    model = DeepIndRNN(3, H, 2, batch_norm="after", bn_statistics="per_step", max_length=4)
    with pytest.raises(ShapeError, match="max_length") as err:
        model(torch.randn(2, 5, 3))
    assert err.value.argument == "x"
    assert "DeepIndRNN" in str(err.value)


def _names(module: Any, group: dict[str, Any]) -> set[str]:
    ids = {id(p) for p in group["params"]}
    return {name for name, p in module.named_parameters() if id(p) in ids}


def test_param_groups_leave_exactly_the_recurrent_weights_undecayed_when_biases_and_norms_decay() -> None:
    model = DeepIndRNN(3, H, 4, residual=True, batch_norm="after")
    decayed, kept = param_groups(model, 1e-3, biases=True, norms=True)
    assert _names(model, kept) == {f"cells.{i}.layers.0.u" for i in range(4)}
    assert _names(model, decayed) == {n for n, _ in model.named_parameters()} - _names(model, kept)
    assert (decayed["weight_decay"], kept["weight_decay"]) == (1e-3, 0.0)


def test_param_groups_follow_the_authors_by_default_leaving_biases_and_norms_undecayed_too() -> None:
    plain = torch.nn.Sequential(IndRNN(3, H, num_layers=2), torch.nn.Linear(H, 1))
    decayed, kept = param_groups(plain, 1e-3)
    assert _names(plain, kept) == {"0.layers.0.u", "0.layers.1.u", "0.layers.0.b_ih", "0.layers.1.b_ih", "1.bias"}
    assert _names(plain, decayed) == {"0.layers.0.w_ih", "0.layers.1.w_ih", "1.weight"}
    deep = DeepIndRNN(3, H, 2, batch_norm="before")
    assert {n for n in _names(deep, param_groups(deep, 1e-3)[1]) if n.startswith("norms")} == {
        "norms.0.weight",
        "norms.0.bias",
        "norms.1.weight",
        "norms.1.bias",
    }


def test_adamw_with_param_groups_decays_the_input_weights_and_leaves_u_alone() -> None:
    torch.manual_seed(6)
    layer = IndRNN(3, H)
    before = {k: v.detach().clone() for k, v in layer.canonical_params()[0].items()}
    optimizer = torch.optim.AdamW(param_groups(layer, 0.5), lr=0.1)
    (0.0 * layer(torch.randn(2, 3, 3)).outputs.sum()).backward()  # zero gradients: only the decay moves
    optimizer.step()
    after = {k: v.detach() for k, v in layer.canonical_params()[0].items()}
    torch.testing.assert_close(after["w_ih"], before["w_ih"] * (1 - 0.1 * 0.5))
    assert torch.equal(after["u"], before["u"])
    assert torch.equal(after["b_ih"], before["b_ih"])


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("num_layers", 0),
        ("residual", 1),
        ("block_layers", 0),
        ("batch_norm", "middle"),
        ("bn_statistics", "per_time"),
        ("max_length", 10),  # without per-step statistics
        ("dropout", 1.0),
        ("activation", "sigmoid"),
        ("batch_first", "yes"),
    ],
)
def test_a_bad_option_is_refused_naming_the_layer_and_the_argument(argument: str, value: Any) -> None:
    with pytest.raises(OptionError) as err:
        DeepIndRNN(3, H, **{"num_layers": 2, argument: value})
    assert err.value.argument == argument
    assert "DeepIndRNN" in str(err.value)


def test_per_step_statistics_without_max_length_are_refused_naming_max_length() -> None:
    with pytest.raises(OptionError) as err:
        DeepIndRNN(3, H, 2, batch_norm="before", bn_statistics="per_step")
    assert err.value.argument == "max_length"


@pytest.mark.parametrize(("argument", "value"), [("weight_decay", -1.0), ("weight_decay", math.inf), ("biases", 1)])
def test_param_groups_refuse_a_bad_argument_naming_it(argument: str, value: Any) -> None:
    kwargs: dict[str, Any] = {"weight_decay": 1e-4, argument: value}
    with pytest.raises(OptionError) as err:
        param_groups(IndRNN(3, H), **kwargs)
    assert err.value.argument == argument
