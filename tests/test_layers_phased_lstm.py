"""The PhasedLSTM layers of torch.nn and Flax NNX call the op with the caller's timestamps, as the op defines it.

The layer's forward equals the backend op on the layer's params (batch-first and time-major, the
timestamps laid out as ``x``); the init options reach ``init_params``; autograd reaches ``tau``,
``s`` and ``r_on``; ``trainable_ratio_on=False`` holds ``r_on`` fixed (no ``requires_grad``; an
``nnx.Variable`` that is no ``nnx.Param``) while it stays in the parameter files; a call without
timestamps is refused naming them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import rnnspec
from rnnspec.errors import OptionError, UnknownArgumentError

I, H, BATCH, T = 3, 4, 3, 6  # noqa: E741


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((BATCH, T, I))
    timestamps = np.cumsum(rng.uniform(0.0, 2.0, (BATCH, T)), axis=1)
    return x, timestamps


# -- torch.nn ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torch_nn() -> Any:
    pytest.importorskip("torch")
    from rnnspec.backends.torch import nn

    return nn


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("peepholes", [False, True])
def test_the_torch_layer_equals_the_op_with_the_same_timestamps(
    torch_nn: Any, peepholes: bool, batch_first: bool
) -> None:
    import torch

    torch.manual_seed(0)
    layer = torch_nn.PhasedLSTM(
        I,
        H,
        num_layers=2,
        batch_first=batch_first,
        dtype=torch.float64,
        peepholes=peepholes,
        leak=0.01,
        period_range=(1.0, 4.0),
        ratio_on=0.3,
    )
    x, timestamps = (torch.from_numpy(a) for a in _data())
    lengths = np.array([T, 2, 0])
    swap = (lambda a: a) if batch_first else (lambda a: a.transpose(0, 1))
    ours = layer(swap(x), lengths=lengths, reverse=True, timestamps=swap(timestamps))
    params = layer.canonical_params()
    assert sorted(params[0]) == sorted(
        ["w_ih", "w_hh", "b_ih", "b_hh", "tau", "s", "r_on"] + ["w_peephole"] * peepholes
    )
    assert torch.all(params[0]["r_on"] == 0.3)
    assert params[1]["tau"].max() <= 4.0
    backend = rnnspec.get_backend("torch")
    theirs = backend.phased_lstm(
        x, params, timestamps=timestamps, peepholes=peepholes, leak=0.01, lengths=lengths, reverse=True
    )
    assert torch.equal(swap(ours.outputs), theirs.outputs)
    assert all(torch.equal(a[k], b[k]) for a, b in zip(ours.state, theirs.state, strict=True) for k in a)


@pytest.mark.parametrize("trainable_ratio_on", [True, False])
def test_the_torch_layer_trains_r_on_only_when_asked(torch_nn: Any, trainable_ratio_on: bool) -> None:
    import torch

    torch.manual_seed(0)
    layer = torch_nn.PhasedLSTM(
        I, H, dtype=torch.float64, period_range=(1.0, 4.0), ratio_on=0.3, trainable_ratio_on=trainable_ratio_on
    )
    x, timestamps = (torch.from_numpy(a) for a in _data())
    layer(x, timestamps=timestamps).outputs.square().sum().backward()
    grads = {name: p.grad for name, p in layer.named_parameters()}
    for name in ("layers.0.tau", "layers.0.s", "layers.0.w_ih"):
        assert grads[name] is not None, name
        assert torch.any(grads[name] != 0), name
    r_on = layer.layers[0].r_on
    assert r_on.requires_grad is trainable_ratio_on
    assert (grads["layers.0.r_on"] is not None) is trainable_ratio_on
    assert "layers.0.r_on" in layer.state_dict()  # kept and saved either way
    assert layer.keyword_options()["trainable_ratio_on"] is trainable_ratio_on
    copy = torch_nn.PhasedLSTM(I, H, dtype=torch.float64, trainable_ratio_on=trainable_ratio_on)
    copy.load_state_dict(layer.state_dict())
    assert torch.equal(copy.layers[0].r_on, r_on)


def test_the_torch_layer_refuses_a_call_without_timestamps_and_a_bad_flag(torch_nn: Any) -> None:
    import torch

    layer = torch_nn.PhasedLSTM(I, H, dtype=torch.float64)
    x, _ = _data()
    with pytest.raises(UnknownArgumentError, match="timestamps"):
        layer(torch.from_numpy(x))
    with pytest.raises(OptionError, match="trainable_ratio_on"):
        torch_nn.PhasedLSTM(I, H, trainable_ratio_on=1)
    with pytest.raises(OptionError, match="period_range"):
        torch_nn.PhasedLSTM(I, H, period_range=(10.0, 1.0))


# -- Flax NNX -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nnx_layers() -> Any:
    pytest.importorskip("flax")
    from rnnspec.backends.jax import nnx

    return nnx


@pytest.mark.parametrize("batch_first", [True, False])
def test_the_nnx_layer_equals_the_op_with_the_same_timestamps(nnx_layers: Any, batch_first: bool) -> None:
    import jax.numpy as jnp
    from flax import nnx

    layer = nnx_layers.PhasedLSTM(
        I, H, num_layers=2, batch_first=batch_first, peepholes=True, rngs=nnx.Rngs(0), period_range=(1.0, 4.0)
    )
    x, timestamps = (jnp.asarray(a, jnp.float32) for a in _data())
    swap = (lambda a: a) if batch_first else (lambda a: jnp.swapaxes(a, 0, 1))
    lengths = np.array([T, 2, 0])
    ours = layer(swap(x), lengths=lengths, timestamps=swap(timestamps))
    theirs = rnnspec.get_backend("jax").phased_lstm(
        x, layer.canonical_params(), timestamps=timestamps, peepholes=True, lengths=lengths
    )
    assert np.array_equal(np.asarray(swap(ours.outputs)), np.asarray(theirs.outputs))


@pytest.mark.parametrize("trainable_ratio_on", [True, False])
def test_the_nnx_layer_holds_r_on_as_a_param_only_when_trained(nnx_layers: Any, trainable_ratio_on: bool) -> None:
    import jax.numpy as jnp
    from flax import nnx

    layer = nnx_layers.PhasedLSTM(
        I, H, rngs=nnx.Rngs(0), period_range=(1.0, 4.0), ratio_on=0.3, trainable_ratio_on=trainable_ratio_on
    )
    x, timestamps = (jnp.asarray(a, jnp.float32) for a in _data())

    def loss(model: Any) -> Any:
        return jnp.sum(model(x, timestamps=timestamps).outputs ** 2)

    grads = nnx.grad(loss)(layer)
    params = nnx.state(layer, nnx.Param)
    assert ("r_on" in params["layers"][0]) is trainable_ratio_on
    assert ("r_on" in grads["layers"][0]) is trainable_ratio_on
    assert float(jnp.abs(grads["layers"][0]["tau"][...]).sum()) > 0
    assert "r_on" in nnx.state(layer)["layers"][0]  # kept either way
    assert np.all(np.asarray(layer.canonical_params()[0]["r_on"]) == np.float32(0.3))
