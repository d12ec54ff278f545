"""``rnnspec.convert.from_torch`` / ``to_torch`` move weights losslessly and refuse what rnnspec cannot express."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from helpers_reference import GATES, STATE_NAMES, TORCH_CLASSES

import rnnspec.reference as reference
from rnnspec.convert import from_torch, to_torch
from rnnspec.errors import OptionError, ParameterError, RnnspecError

#: (op, torch keyword arguments, rnnspec options)
MODULES = [
    ("rnn", {"nonlinearity": "tanh"}, {"activation": "tanh"}),
    ("rnn", {"nonlinearity": "relu"}, {"activation": "relu"}),
    ("lstm", {}, {}),
    ("gru", {}, {"reset_after": True}),
]
MODULE_IDS = ["rnn-tanh", "rnn-relu", "lstm", "gru"]


def make_module(op: str, torch_kwargs: dict[str, Any], layers: int, seed: int, **extra: Any) -> torch.nn.Module:
    torch.manual_seed(seed)
    return TORCH_CLASSES[op](3, 4, num_layers=layers, batch_first=True, dtype=torch.float64, **torch_kwargs, **extra)


def run_module(module: torch.nn.Module, op: str, x: np.ndarray, state: dict[str, np.ndarray]) -> tuple[Any, ...]:
    """Outputs and final state tensors of a batch-first module, as NumPy."""
    hx = tuple(torch.tensor(state[name]) for name in STATE_NAMES[op])
    with torch.no_grad():
        out, final = module(torch.tensor(x), hx if op == "lstm" else hx[0])
    finals = final if op == "lstm" else (final,)
    return (out.numpy(), *(f.numpy() for f in finals))


@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize(("op", "torch_kwargs", "options"), MODULES, ids=MODULE_IDS)
def test_round_trip_through_to_torch_gives_the_same_module(
    op: str, torch_kwargs: dict[str, Any], options: dict[str, Any], layers: int
) -> None:
    module = make_module(op, torch_kwargs, layers, seed=layers)
    params = from_torch(module)
    assert len(params) == layers
    rebuilt = to_torch(params, op, **options)
    assert type(rebuilt) is type(module)
    assert rebuilt.num_layers == layers
    assert rebuilt.batch_first
    assert next(rebuilt.parameters()).dtype == torch.float64
    if op == "rnn":
        assert rebuilt.nonlinearity == torch_kwargs["nonlinearity"]
    # the same weights, bit for bit, under the same names
    for name, tensor in module.named_parameters():
        assert torch.equal(getattr(rebuilt, name), tensor), name
    # and so the same outputs and final states
    rng = np.random.default_rng(layers)
    x = rng.uniform(-1, 1, (2, 5, 3))
    state = {name: rng.uniform(-1, 1, (layers, 2, 4)) for name in STATE_NAMES[op]}
    for got, want in zip(run_module(rebuilt, op, x, state), run_module(module, op, x, state), strict=True):
        np.testing.assert_array_equal(got, want)
    # converting back gives the same canonical params
    again = from_torch(rebuilt)
    for layer_again, layer in zip(again, params, strict=True):
        assert sorted(layer) == ["b_hh", "b_ih", "w_hh", "w_ih"]
        for key in layer:
            assert layer_again[key].dtype == np.float64
            np.testing.assert_array_equal(layer_again[key], layer[key])


@pytest.mark.parametrize(("op", "torch_kwargs", "options"), MODULES, ids=MODULE_IDS)
def test_from_torch_params_run_in_the_reference_like_the_module(
    op: str, torch_kwargs: dict[str, Any], options: dict[str, Any]
) -> None:
    module = make_module(op, torch_kwargs, 2, seed=11)
    rng = np.random.default_rng(11)
    x = rng.uniform(-1, 1, (3, 4, 3))
    state = {name: rng.uniform(-1, 1, (2, 3, 4)) for name in STATE_NAMES[op]}
    out, *finals = run_module(module, op, x, state)
    initial = [{name: state[name][k] for name in STATE_NAMES[op]} for k in range(2)]
    result = getattr(reference, op)(x, from_torch(module), **options, initial_state=initial)
    np.testing.assert_allclose(result.outputs, out, rtol=1e-12, atol=1e-12)
    for j, name in enumerate(STATE_NAMES[op]):
        for k in range(2):
            np.testing.assert_allclose(result.state[k][name], finals[j][k], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("op", "torch_kwargs", "options"), MODULES, ids=MODULE_IDS)
def test_from_torch_of_a_module_without_bias_gives_zero_biases(
    op: str, torch_kwargs: dict[str, Any], options: dict[str, Any]
) -> None:
    module = make_module(op, torch_kwargs, 2, seed=12, bias=False)
    params = from_torch(module)
    assert len(params) == 2
    for k, layer in enumerate(params):
        assert sorted(layer) == ["b_hh", "b_ih", "w_hh", "w_ih"]
        np.testing.assert_array_equal(layer["w_ih"], getattr(module, f"weight_ih_l{k}").detach().numpy())
        for key in ("b_ih", "b_hh"):
            assert layer[key].shape == (GATES[op] * 4,)
            assert layer[key].dtype == np.float64
            assert np.all(layer[key] == 0.0)
    rng = np.random.default_rng(12)
    x = rng.uniform(-1, 1, (2, 3, 3))
    zeros = {name: np.zeros((2, 2, 4)) for name in STATE_NAMES[op]}
    out, *_ = run_module(module, op, x, zeros)
    np.testing.assert_allclose(getattr(reference, op)(x, params, **options).outputs, out, rtol=1e-12, atol=1e-12)


def test_from_torch_copies_the_weights() -> None:
    module = make_module("gru", {}, 1, seed=13)
    params = from_torch(module)
    saved = params[0]["w_hh"].copy()
    with torch.no_grad():
        module.weight_hh_l0.add_(1.0)
    np.testing.assert_array_equal(params[0]["w_hh"], saved)


def test_to_torch_accepts_one_mapping_and_keeps_float32() -> None:
    module = make_module("lstm", {}, 1, seed=14).float()
    layer = from_torch(module)[0]
    assert layer["w_ih"].dtype == np.float32
    rebuilt = to_torch(layer, "lstm")
    assert rebuilt.num_layers == 1
    assert rebuilt.weight_ih_l0.dtype == torch.float32
    assert torch.equal(rebuilt.bias_hh_l0, module.bias_hh_l0)


def test_from_torch_reverse_direction_reads_the_reverse_weights() -> None:
    module = make_module("lstm", {}, 1, seed=15, bidirectional=True)
    forward, reverse = from_torch(module, direction="forward")[0], from_torch(module, direction="reverse")[0]
    for ours, theirs in (("w_ih", "weight_ih"), ("w_hh", "weight_hh"), ("b_ih", "bias_ih"), ("b_hh", "bias_hh")):
        np.testing.assert_array_equal(forward[ours], getattr(module, f"{theirs}_l0").detach().numpy())
        np.testing.assert_array_equal(reverse[ours], getattr(module, f"{theirs}_l0_reverse").detach().numpy())
    assert not np.array_equal(forward["w_hh"], reverse["w_hh"])


# -- what rnnspec cannot express raises, naming the argument ------------------------


def assert_names_argument(err: pytest.ExceptionInfo[Exception], argument: str, *words: str) -> None:
    assert isinstance(err.value, RnnspecError)
    assert err.value.argument == argument
    message = str(err.value)
    assert f"argument {argument}" in message
    for word in words:
        assert word in message


def test_from_torch_refuses_an_lstm_with_projections() -> None:
    module = torch.nn.LSTM(3, 4, proj_size=2, batch_first=True)
    with pytest.raises(ParameterError) as err:
        from_torch(module)
    assert_names_argument(err, "module", "proj_size=2")


def test_from_torch_refuses_a_stacked_bidirectional_module() -> None:
    module = torch.nn.GRU(3, 4, num_layers=2, bidirectional=True, batch_first=True)
    for direction in ("forward", "reverse"):
        with pytest.raises(ParameterError) as err:
            from_torch(module, direction=direction)
        assert_names_argument(err, "module", "num_layers=2", "bidirectional")


def test_from_torch_asks_which_direction_of_a_bidirectional_module_instead_of_dropping_one() -> None:
    with pytest.raises(OptionError) as err:
        from_torch(torch.nn.LSTM(3, 4, bidirectional=True))
    assert_names_argument(err, "direction", "'forward' or 'reverse' for a bidirectional module", "None")


def test_from_torch_refuses_the_reverse_direction_of_a_unidirectional_module() -> None:
    module = torch.nn.RNN(3, 4)
    with pytest.raises(OptionError) as err:
        from_torch(module, direction="reverse")
    assert_names_argument(err, "direction", "'reverse'")


def test_from_torch_refuses_an_unknown_direction() -> None:
    with pytest.raises(OptionError) as err:
        from_torch(torch.nn.GRU(3, 4, bidirectional=True), direction="backward")
    assert_names_argument(err, "direction", "'backward'")


def test_from_torch_refuses_a_module_that_is_not_a_recurrent_layer() -> None:
    with pytest.raises(ParameterError) as err:
        from_torch(torch.nn.Linear(3, 4))
    assert_names_argument(err, "module", "Linear")


def test_to_torch_refuses_gru_without_reset_after() -> None:
    params = from_torch(make_module("gru", {}, 1, seed=16))
    with pytest.raises(OptionError) as err:
        to_torch(params, "gru", reset_after=False)
    assert_names_argument(err, "reset_after", "False")


def test_to_torch_refuses_an_unknown_op_or_activation() -> None:
    params = from_torch(make_module("rnn", {}, 1, seed=17))
    with pytest.raises(OptionError) as err:
        to_torch(params, "elman")
    assert_names_argument(err, "op", "'elman'")
    with pytest.raises(OptionError) as err:
        to_torch(params, "rnn", activation="sigmoid")
    assert_names_argument(err, "activation", "'sigmoid'")


def test_to_torch_refuses_missing_or_misshapen_params() -> None:
    params = from_torch(make_module("lstm", {}, 2, seed=18))
    missing = [params[0], {k: v for k, v in params[1].items() if k != "b_hh"}]
    with pytest.raises(ParameterError) as err:
        to_torch(missing, "lstm")
    assert_names_argument(err, "params[1]", "b_hh")
    misshapen = [params[0], {**params[1], "w_hh": params[1]["w_hh"][:, :3]}]
    with pytest.raises(ParameterError) as err:
        to_torch(misshapen, "lstm")
    assert_names_argument(err, "params[1]['w_hh']", "(16, 4)", "(16, 3)")
