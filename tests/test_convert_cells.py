"""The cell converters of torch and Flax NNX (rnnspec.convert): a converted cell steps as the original.

``from_torch`` reads ``torch.nn.RNNCell``/``LSTMCell``/``GRUCell`` and ``to_torch(..., cell=True)``
makes them; ``from_flax`` reads Flax NNX's ``LSTMCell``/``OptimizedLSTMCell``/``GRUCell``/``SimpleCell``
and ``to_flax`` makes them. Each direction is checked step by step against the rnnspec cell of the
same params, from the same state.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from rnnspec.conformance.tolerances import tolerance
from rnnspec.convert import from_flax, from_torch, to_flax, to_torch
from rnnspec.errors import OptionError, ParameterError

I, H, BATCH, T = 3, 4, 2, 4  # noqa: E741


def _xs(dtype: Any) -> np.ndarray:
    return np.random.default_rng(1).standard_normal((T, BATCH, I)).astype(dtype)


# -- torch ------------------------------------------------------------------------------------------------

#: (torch.nn cell, its constructor options, rnnspec cell name, its options).
TORCH_CASES = [
    ("RNNCell", {"nonlinearity": "relu"}, "RNNCell", {"activation": "relu"}),
    ("RNNCell", {"bias": False}, "RNNCell", {}),
    ("LSTMCell", {}, "LSTMCell", {}),
    ("GRUCell", {}, "GRUCell", {}),
]


def _torch_step(theirs: Any, x: Any, state: Any) -> tuple[Any, Any]:
    """torch.nn's step as (y, state): an LSTMCell's state is the pair (h, c)."""
    new = theirs(x, state)
    return (new[0] if isinstance(new, tuple) else new), new


@pytest.mark.parametrize(("torch_class", "torch_options", "ours", "options"), TORCH_CASES, ids=repr)
def test_a_torch_cell_and_its_rnnspec_cell_step_alike_both_ways(
    torch_class: str, torch_options: dict[str, Any], ours: str, options: dict[str, Any]
) -> None:
    torch = pytest.importorskip("torch")
    from rnnspec.backends.torch import nn as rnn_nn

    torch.manual_seed(0)
    theirs = getattr(torch.nn, torch_class)(I, H, dtype=torch.float64, **torch_options)
    cell = getattr(rnn_nn, ours)(I, H, bias=torch_options.get("bias", True), dtype=torch.float64, **options)
    cell.load_canonical(from_torch(theirs))
    back = to_torch(cell.numpy_params(), cell.op, cell=True, bias=cell.bias, **options)
    assert type(back) is type(theirs)
    tol = tolerance("float64", steps=T)
    with torch.no_grad():
        state, torch_state, back_state = None, None, None
        for x in torch.from_numpy(_xs(np.float64)):
            y, state = cell(x, state)
            expected, torch_state = _torch_step(theirs, x, torch_state)
            again, back_state = _torch_step(back, x, back_state)
            torch.testing.assert_close(y, expected, rtol=tol.rtol, atol=tol.atol)
            torch.testing.assert_close(again, expected, rtol=tol.rtol, atol=tol.atol)
        if torch_class == "LSTMCell":
            torch.testing.assert_close(state["c"], torch_state[1], rtol=tol.rtol, atol=tol.atol)


def test_to_torch_makes_a_cell_of_one_layer_only() -> None:
    pytest.importorskip("torch")
    import rnnspec

    params = rnnspec.init_params("gru", input_size=I, hidden_size=H, num_layers=2, seed=0)
    with pytest.raises(ParameterError) as info:
        to_torch(params, "gru", cell=True)
    assert info.value.argument == "params"
    with pytest.raises(OptionError, match="direction"):
        from_torch(to_torch(params[:1], "gru", cell=True), direction="reverse")


# -- Flax NNX --------------------------------------------------------------------------------------------

#: (Flax cell class, the activation of a SimpleCell, rnnspec cell name, its options).
FLAX_CASES = [
    ("LSTMCell", None, "LSTMCell", {}),
    ("OptimizedLSTMCell", None, "LSTMCell", {}),
    ("GRUCell", None, "GRUCell", {}),
    ("SimpleCell", "relu", "RNNCell", {"activation": "relu"}),
]


def _flax_carry(flax_class: str, state: dict[str, Any]) -> Any:
    """rnnspec's state as Flax's carry: an LSTM's is ``(c, h)``."""
    return (state["c"], state["h"]) if "LSTM" in flax_class else state["h"]


@pytest.mark.parametrize(("flax_class", "activation", "ours", "options"), FLAX_CASES, ids=repr)
def test_a_flax_cell_and_its_rnnspec_cell_step_alike_both_ways(
    flax_class: str, activation: str | None, ours: str, options: dict[str, Any]
) -> None:
    pytest.importorskip("jax")
    nnx = pytest.importorskip("flax.nnx")
    import jax.numpy as jnp

    from rnnspec.backends.jax import nnx as layers
    from rnnspec.conformance.assertions import assert_tree_close

    extra = {} if activation is None else {"activation_fn": getattr(nnx, activation)}
    theirs = getattr(nnx, flax_class)(I, H, **extra, rngs=nnx.Rngs(0))
    for linear in nnx.iter_graph(theirs):  # Flax draws zero biases: nonzero ones check where they go
        bias = getattr(linear[1], "bias", None)
        if isinstance(bias, nnx.Param):
            bias[...] = jnp.linspace(-0.5, 0.5, bias[...].size).reshape(bias[...].shape)
    cell = getattr(layers, ours)(I, H, **options, rngs=nnx.Rngs(1))
    cell.load_canonical(from_flax(theirs))
    params = cell.numpy_params()
    if cell.op == "gru":
        with pytest.raises(ParameterError, match="b_hn"):  # rnnspec's draw: a b_hn Flax cannot hold
            to_flax(layers.GRUCell(I, H, rngs=nnx.Rngs(2)).numpy_params(), "gru")
    back = to_flax(params, cell.op, cell_class=flax_class, **options)
    assert type(back) is type(theirs)
    tol = tolerance("float32", steps=T)
    state = cell.initialize_carry((BATCH, I))
    carry = back_carry = _flax_carry(flax_class, state)
    for t, x in enumerate(jnp.asarray(_xs(np.float32))):
        state, y = cell(state, x)
        carry, expected = theirs(carry, x)
        back_carry, again = back(back_carry, x)
        assert_tree_close(y, expected, tol, context=f"{flax_class} step {t}")
        assert_tree_close(again, expected, tol, context=f"to_flax's {flax_class} step {t}")
    assert_tree_close(_flax_carry(flax_class, state), carry, tol, context=f"{flax_class} carry")


def test_to_flax_refuses_what_flax_cells_cannot_hold() -> None:
    pytest.importorskip("flax")
    import rnnspec

    gru = rnnspec.init_params("gru", input_size=I, hidden_size=H, num_layers=2, seed=0)
    calls = [
        (lambda: to_flax(gru, "gru"), ParameterError, "params"),
        (lambda: to_flax(gru[:1], "gru", cell_class="LSTMCell"), OptionError, "cell_class"),
        (lambda: to_flax(gru[:1], "gru", reset_after=False), OptionError, "reset_after"),
        (lambda: to_flax(gru[:1], "indrnn"), OptionError, "op"),
    ]
    for call, error, argument in calls:
        with pytest.raises(error) as info:
            call()
        assert info.value.argument == argument
