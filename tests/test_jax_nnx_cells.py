"""The Flax NNX cells (``rnnspec.backends.jax.nnx.*Cell``): one step of each op, stepped over a sequence, is the layer.

For every op with a layer, a cell stepped over a sequence (from ``initialize_carry``, each step reading
the carry the step before returned) gives the one-layer layer's outputs, final state and per-step
extras, and for each kind of state its gradients (``nnx.grad``, with respect to the input and every
parameter); ``nnx.RNN(cell)`` equals the layer; bad calls name the cell and the argument.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

jax = pytest.importorskip("jax")
nnx = pytest.importorskip("flax.nnx")

import jax.numpy as jnp  # noqa: E402

from rnnspec.backends.jax import nnx as layers  # noqa: E402
from rnnspec.conformance.assertions import assert_tree_close  # noqa: E402
from rnnspec.conformance.tolerances import tolerance  # noqa: E402
from rnnspec.errors import DtypeError, OptionError, ShapeError, UnknownArgumentError  # noqa: E402

I, H, BATCH, T = 3, 4, 2, 4  # noqa: E741
#: A bound on the steps along the longest path: time x 4 inner steps for ACT.
STEPS = T * 4

#: (cell class, layer class, constructor options) of every op.
CASES: list[tuple[Any, Any, dict[str, Any]]] = [
    (layers.RNNCell, layers.RNN, {"activation": "relu"}),
    (layers.LSTMCell, layers.LSTM, {}),
    (layers.GRUCell, layers.GRU, {"reset_after": False}),
    (layers.SkipRNNCell, layers.SkipRNN, {"trainable_initial_state": True, "initial_state_std": 0.5}),
    (layers.SkipLSTMCell, layers.SkipLSTM, {}),
    (layers.SkipGRUCell, layers.SkipGRU, {"trainable_initial_state": True, "initial_state_std": 0.5}),
    (layers.ACTCell, layers.ACT, {"cell": "lstm", "max_steps": 4}),
    (layers.IndRNNCell, layers.IndRNN, {"activation": "tanh"}),
    (layers.QRNNCell, layers.QRNN, {"mode": "fo", "window": 3}),
    (layers.PhasedLSTMCell, layers.PhasedLSTM, {}),
]
IDS = [case[0].__name__ for case in CASES]


def _arrays(op: str) -> dict[str, jax.Array]:
    """The per-step arrays a sequence of ``op`` takes, ``(batch, time, ...)``."""
    rng = np.random.default_rng(3)
    if op == "phased_lstm":
        return {"timestamps": jnp.asarray(np.cumsum(rng.uniform(0.5, 3.0, (BATCH, T)), axis=1), jnp.float32)}
    if op == "qrnn":
        return {"zoneout_mask": jnp.asarray(rng.uniform(size=(BATCH, T, H)) < 0.3, jnp.float32)}
    return {}


def _pair(cell_cls: Any, layer_cls: Any, options: dict[str, Any]) -> tuple[Any, Any]:
    extras = {"return_extras": True} if cell_cls.extra_fields else {}
    cell = cell_cls(I, H, **options, **extras, rngs=nnx.Rngs(0))
    layer = layer_cls(I, H, **options, rngs=nnx.Rngs(1))
    layer.load_canonical(cell.numpy_params())
    return cell, layer


def _x() -> jax.Array:
    return jnp.asarray(np.random.default_rng(1).standard_normal((BATCH, T, I)), jnp.float32)


def _loss(outputs: Any, state: dict[str, Any], extras: dict[str, Any]) -> Any:
    """A loss that reads every output, state entry and extra, each with its own weights."""
    weights = jnp.linspace(-1.0, 1.0, outputs.size, dtype=outputs.dtype).reshape(outputs.shape)
    total = jnp.sum(outputs * weights)
    for value in [*state.values(), *extras.values()]:
        total = total + 0.3 * jnp.sum(jnp.sin(value))
    return total


def _stepped(cell: Any, x: jax.Array, arrays: dict[str, jax.Array]) -> tuple[Any, Any, Any]:
    carry = cell.initialize_carry(x[:, 0].shape)
    outputs, per_step = [], []
    for t in range(x.shape[1]):
        carry, y = cell(carry, x[:, t], **{k: v[:, t] for k, v in arrays.items()})
        y, extras = y if cell.return_extras else (y, {})
        outputs.append(y)
        per_step.append(extras)
    extras = {f: jnp.stack([s[f] for s in per_step], axis=1) for f in cell.extra_fields}
    return jnp.stack(outputs, axis=1), carry, extras


@pytest.mark.parametrize(("cell_cls", "layer_cls", "options"), CASES, ids=IDS)
def test_a_cell_stepped_over_a_sequence_gives_the_layers_values(
    cell_cls: Any, layer_cls: Any, options: dict[str, Any]
) -> None:
    cell, layer = _pair(cell_cls, layer_cls, options)
    x, arrays = _x(), _arrays(cell.op)
    whole = layer(x, **arrays)
    outputs, state, extras = _stepped(cell, x, arrays)
    tol = tolerance("float32", steps=STEPS)
    assert_tree_close(outputs, whole.outputs, tol, context=f"{cell_cls.__name__} outputs")
    assert_tree_close(state, whole.state[0], tol, context=f"{cell_cls.__name__} state")
    expected_extras = {f: getattr(whole, f) for f in cell_cls.extra_fields}
    assert_tree_close(extras, expected_extras, tol, context=f"{cell_cls.__name__} extras")


#: The cases whose gradients are compared: each kind of state and step (the Skip RNN's top-layer entries,
#: extras and learnt start, QRNN's window of inputs, Phased LSTM's h and c and timestamps). Each op's reverse
#: mode compiles for seconds in JAX (ACT's for over ten); the torch cells' test covers every op's gradients.
GRADIENT_CASES = [CASES[j] for j in (5, 8, 9)]


@pytest.mark.parametrize(
    ("cell_cls", "layer_cls", "options"), GRADIENT_CASES, ids=[c[0].__name__ for c in GRADIENT_CASES]
)
def test_a_cell_stepped_over_a_sequence_gives_the_layers_gradients(
    cell_cls: Any, layer_cls: Any, options: dict[str, Any]
) -> None:
    cell, layer = _pair(cell_cls, layer_cls, options)
    x, arrays = _x(), _arrays(cell.op)

    def whole_loss(layer: Any, x: jax.Array) -> Any:
        result = layer(x, **arrays)
        return _loss(result.outputs, result.state[0], {f: getattr(result, f) for f in cell_cls.extra_fields})

    def stepped_loss(cell: Any, x: jax.Array) -> Any:
        return _loss(*_stepped(cell, x, arrays))

    expected = nnx.grad(whole_loss, argnums=(0, 1))(layer, x)
    got = nnx.grad(stepped_loss, argnums=(0, 1))(cell, x)
    flat_got, flat_expected = nnx.to_flat_state(got[0]), nnx.to_flat_state(expected[0])
    assert [path for path, _ in flat_got] == [path for path, _ in flat_expected]
    assert_tree_close(
        [got[1], *(v[...] for _, v in flat_got)],
        [expected[1], *(v[...] for _, v in flat_expected)],
        tolerance("float32", steps=STEPS, kind="gradient"),
        context=f"{cell_cls.__name__} gradients",
    )


@pytest.mark.parametrize(
    ("cell_cls", "layer_cls", "options"), [c for c in CASES if c[1] is not layers.PhasedLSTM], ids=IDS[:-1]
)
def test_nnx_rnn_of_a_cell_equals_the_layer(cell_cls: Any, layer_cls: Any, options: dict[str, Any]) -> None:
    cell, layer = _pair(cell_cls, layer_cls, options)
    x = _x()
    carry, outputs = nnx.RNN(cell, return_carry=True)(x)
    whole = layer(x)
    tol = tolerance("float32", steps=STEPS)
    expected_extras = {f: getattr(whole, f) for f in cell_cls.extra_fields}
    expected = (whole.outputs, expected_extras) if cell.return_extras else whole.outputs
    assert_tree_close(outputs, expected, tol, context=f"nnx.RNN({cell_cls.__name__}) outputs")
    assert_tree_close(carry, whole.state[0], tol, context=f"nnx.RNN({cell_cls.__name__}) carry")


def test_a_jitted_step_equals_the_eager_step() -> None:
    cell = layers.SkipGRUCell(I, H, return_extras=True, rngs=nnx.Rngs(0))
    x = _x()[:, 0]
    carry = cell.initialize_carry(x.shape)
    eager = cell(carry, x)
    jitted = nnx.jit(lambda cell, carry, x: cell(carry, x))(cell, carry, x)
    assert_tree_close(jitted, eager, tolerance("float32", steps=1), context="a jitted step")


def test_bad_calls_name_the_cell_and_the_argument() -> None:
    cell = layers.LSTMCell(I, H, rngs=nnx.Rngs(0))
    x = jnp.zeros((BATCH, I))
    carry = cell.initialize_carry(x.shape)
    calls = [
        (lambda: cell(carry, jnp.zeros((BATCH, 1, I))), ShapeError, "x"),
        (lambda: cell(carry, jnp.zeros((BATCH, I + 1))), ShapeError, "x"),
        (lambda: cell(carry, jnp.zeros((BATCH, I), jnp.int32)), DtypeError, "x"),
        (lambda: cell({"h": carry["h"]}, x), UnknownArgumentError, "state"),
        (lambda: cell({**carry, "h": jnp.zeros((BATCH, H + 1))}, x), ShapeError, "state['h']"),
        (lambda: cell(carry, x, zoneout_mask=jnp.zeros((BATCH, H))), UnknownArgumentError, "zoneout_mask"),
        (lambda: layers.GRUCell(I, H, return_extras=True, rngs=nnx.Rngs(0)), OptionError, "return_extras"),
    ]
    phased = layers.PhasedLSTMCell(I, H, rngs=nnx.Rngs(0))
    calls.append((lambda: phased(None, x), UnknownArgumentError, "timestamps"))
    for call, error, argument in calls:
        with pytest.raises(error) as info:
            call()
        assert info.value.argument == argument
        assert info.value.op in ("LSTMCell", "GRUCell", "PhasedLSTMCell")
