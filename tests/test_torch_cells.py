"""The torch cells (``rnnspec.backends.torch.nn.*Cell``): one step of each op, stepped over a sequence, is the layer.

For every op with a layer, a cell stepped over a sequence (from its start state, each step reading the
state the step before returned) gives the one-layer layer's outputs, final state, per-step extras and
gradients (with respect to the input and every parameter) on the same params; bad calls name the cell
and the argument.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rnnspec.backends.torch import nn as rnn_nn  # noqa: E402
from rnnspec.conformance.tolerances import tolerance  # noqa: E402
from rnnspec.errors import DtypeError, OptionError, ShapeError, UnknownArgumentError  # noqa: E402

I, H, BATCH, T = 3, 4, 2, 5  # noqa: E741
#: A bound on the steps along the longest path: time x 4 inner steps for ACT.
STEPS = T * 4

#: (cell class, layer class, constructor options) of every op; the per-step arrays come from :func:`_arrays`.
CASES: list[tuple[Any, Any, dict[str, Any]]] = [
    (rnn_nn.RNNCell, rnn_nn.RNN, {"activation": "relu"}),
    (rnn_nn.LSTMCell, rnn_nn.LSTM, {}),
    (rnn_nn.GRUCell, rnn_nn.GRU, {"reset_after": False}),
    (rnn_nn.SkipRNNCell, rnn_nn.SkipRNN, {"trainable_initial_state": True, "initial_state_std": 0.5}),
    (rnn_nn.SkipLSTMCell, rnn_nn.SkipLSTM, {"trainable_initial_state": True, "initial_state_std": 0.5}),
    (rnn_nn.SkipGRUCell, rnn_nn.SkipGRU, {}),
    (rnn_nn.ACTCell, rnn_nn.ACT, {"cell": "gru", "max_steps": 4}),
    (rnn_nn.IndRNNCell, rnn_nn.IndRNN, {}),
    (rnn_nn.QRNNCell, rnn_nn.QRNN, {"mode": "ifo", "window": 3}),
    (rnn_nn.PhasedLSTMCell, rnn_nn.PhasedLSTM, {}),
]
IDS = [case[0].__name__ for case in CASES]


def _arrays(op: str) -> dict[str, np.ndarray]:
    """The per-step arrays a sequence of ``op`` takes, ``(batch, time, ...)``."""
    rng = np.random.default_rng(3)
    if op == "phased_lstm":
        return {"timestamps": np.cumsum(rng.uniform(0.5, 3.0, (BATCH, T)), axis=1)}
    if op == "qrnn":
        return {"zoneout_mask": (rng.uniform(size=(BATCH, T, H)) < 0.3).astype(np.float64)}
    return {}


def _pair(cell_cls: Any, layer_cls: Any, options: dict[str, Any]) -> tuple[Any, Any]:
    torch.manual_seed(0)
    extras = {"return_extras": True} if cell_cls.extra_fields else {}
    cell = cell_cls(I, H, dtype=torch.float64, **options, **extras)
    layer = layer_cls(I, H, dtype=torch.float64, **options)
    layer.load_canonical(cell.numpy_params())
    return cell, layer


def _loss(outputs: Any, state: dict[str, Any], extras: dict[str, Any]) -> Any:
    """A loss that reads every output, state entry and real extra, each with its own weights."""
    total = (outputs * torch.linspace(-1.0, 1.0, outputs.numel(), dtype=outputs.dtype).reshape(outputs.shape)).sum()
    for value in [*state.values(), *extras.values()]:
        total = total + 0.3 * value.sin().sum()
    return total


@pytest.mark.parametrize(("cell_cls", "layer_cls", "options"), CASES, ids=IDS)
def test_a_cell_stepped_over_a_sequence_gives_the_layers_values_and_gradients(
    cell_cls: Any, layer_cls: Any, options: dict[str, Any]
) -> None:
    cell, layer = _pair(cell_cls, layer_cls, options)
    rng = np.random.default_rng(1)
    x_np = rng.standard_normal((BATCH, T, I))
    arrays = {k: torch.from_numpy(v) for k, v in _arrays(cell.op).items()}

    x = torch.from_numpy(x_np).requires_grad_()
    whole = layer(x, **arrays)
    extra_fields = cell_cls.extra_fields
    expected_extras = {f: getattr(whole, f) for f in extra_fields}
    expected = [whole.outputs, whole.state[0], expected_extras]
    expected_grads = torch.autograd.grad(
        _loss(whole.outputs, whole.state[0], expected_extras), [x, *layer.parameters()]
    )

    x = torch.from_numpy(x_np).requires_grad_()
    state = cell.initial_state(x[:, 0])
    outputs, per_step = [], []
    for t in range(T):
        step = cell(x[:, t], state, **{k: v[:, t] for k, v in arrays.items()})
        outputs.append(step[0])
        state = step[1]
        per_step.append(step[2] if extra_fields else {})
    stepped = torch.stack(outputs, dim=1)
    extras = {f: torch.stack([s[f] for s in per_step], dim=1) for f in extra_fields}
    grads = torch.autograd.grad(_loss(stepped, state, extras), [x, *cell.parameters()])

    value_tol = tolerance("float64", steps=STEPS)
    for got, want in zip([stepped, state, extras], expected, strict=True):
        torch.testing.assert_close(got, want, rtol=value_tol.rtol, atol=value_tol.atol)
    grad_tol = tolerance("float64", steps=STEPS, kind="gradient")
    assert len(grads) == len(expected_grads)
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=grad_tol.rtol, atol=grad_tol.atol)


@pytest.mark.parametrize(("cell_cls", "layer_cls", "options"), CASES, ids=IDS)
def test_a_cell_holds_the_params_of_a_one_layer_layer_under_the_same_names(
    cell_cls: Any, layer_cls: Any, options: dict[str, Any]
) -> None:
    cell, layer = _pair(cell_cls, layer_cls, options)
    assert list(cell.state_dict()) == list(layer.state_dict())
    assert [list(p) for p in cell.numpy_params()] == [list(p) for p in layer.numpy_params()]
    assert cell_cls.__name__ == f"{layer_cls.__name__}Cell"
    assert cell.op == layer.op


def test_a_cell_with_a_learnt_start_starts_from_it_and_its_gradient_reaches_h0() -> None:
    cell = rnn_nn.SkipLSTMCell(I, H, trainable_initial_state=True, initial_state_std=1.0, dtype=torch.float64)
    x = torch.zeros(BATCH, I, dtype=torch.float64)
    start = cell.initial_state(x)
    params = cell.canonical_params()[0]
    torch.testing.assert_close(start["h"], params["h0"].expand(BATCH, H))
    torch.testing.assert_close(start["update_prob"], torch.ones(BATCH, 1, dtype=torch.float64))
    y, _ = cell(x)  # None: the same start
    (grad,) = torch.autograd.grad(y.sum(), [params["h0"]])
    assert bool(grad.abs().sum() > 0)


def test_bad_calls_name_the_cell_and_the_argument() -> None:
    cell = rnn_nn.LSTMCell(I, H)
    x = torch.zeros(BATCH, I)
    state = cell.initial_state(x)
    calls = [
        (lambda: cell(torch.zeros(BATCH, 1, I), state), ShapeError, "x"),
        (lambda: cell(torch.zeros(BATCH, I + 1), state), ShapeError, "x"),
        (lambda: cell(x.double(), state), DtypeError, "x"),
        (lambda: cell(x.numpy(), state), DtypeError, "x"),
        (lambda: cell(x, {"h": state["h"]}), UnknownArgumentError, "state"),
        (lambda: cell(x, (state["h"], state["c"])), UnknownArgumentError, "state"),
        (lambda: cell(x, {**state, "c": torch.zeros(BATCH + 1, H)}), ShapeError, "state['c']"),
        (lambda: cell(x, state, timestamps=torch.zeros(BATCH)), UnknownArgumentError, "timestamps"),
        (lambda: rnn_nn.LSTMCell(I, H, return_extras=True), OptionError, "return_extras"),
        (lambda: rnn_nn.GRUCell(I, H, window=3), UnknownArgumentError, "window"),
    ]
    phased = rnn_nn.PhasedLSTMCell(I, H)
    calls += [
        (lambda: phased(x), UnknownArgumentError, "timestamps"),
        (lambda: phased(x, timestamps=torch.zeros(BATCH, 1)), ShapeError, "timestamps"),
    ]
    for call, error, argument in calls:
        with pytest.raises(error) as info:
            call()
        assert info.value.argument == argument
        assert info.value.op in ("LSTMCell", "PhasedLSTMCell", "GRUCell")
