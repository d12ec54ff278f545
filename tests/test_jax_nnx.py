"""The Flax NNX layers (rnnspec.backends.jax.nnx) and the Flax cell converter (rnnspec.convert.flax).

Layers are checked against the NumPy reference run on their own parameters,
values and reverse mode, and against torch.nn.LSTM and Flax's own cells after
their weights are loaded.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

jax = pytest.importorskip("jax")
nnx = pytest.importorskip("flax.nnx")

import jax.numpy as jnp  # noqa: E402

import rnnspec  # noqa: E402
from rnnspec.backends.jax import nnx as layers  # noqa: E402
from rnnspec.conformance.assertions import assert_tree_close  # noqa: E402
from rnnspec.conformance.tolerances import tolerance  # noqa: E402
from rnnspec.convert import from_torch  # noqa: E402
from rnnspec.convert.flax import from_flax  # noqa: E402
from rnnspec.errors import OptionError, ParameterError  # noqa: E402

REFERENCE = rnnspec.get_backend("numpy")
I, H, BATCH, T = 3, 4, 3, 6  # noqa: E741

#: (layer class, constructor options, op options, number of layers) of every layer.
CASES: list[tuple[Any, dict[str, Any], dict[str, Any], int]] = [
    (layers.RNN, {"activation": "relu"}, {"activation": "relu"}, 2),
    (layers.LSTM, {}, {}, 2),
    (layers.GRU, {"reset_after": False}, {"reset_after": False}, 2),
    (layers.SkipRNN, {"trainable_initial_state": True}, {"activation": "tanh"}, 2),
    (layers.SkipLSTM, {"trainable_initial_state": True}, {}, 2),
    (layers.SkipGRU, {}, {"reset_after": True}, 2),
    (layers.ACT, {"cell": "gru", "max_steps": 4}, {"cell": "gru", "epsilon": 0.01, "max_steps": 4}, 1),
    (layers.IndRNN, {"seq_len": 10}, {"activation": "relu"}, 2),
    (layers.QRNN, {"mode": "ifo", "window": 2}, {"mode": "ifo"}, 2),
]
IDS = [case[0].__name__ for case in CASES]
#: A bound on the steps along any case's longest path: time x 2 layers, or time x 4 inner steps for ACT.
STEPS = T * 2 * 4


def make(cls: Any, options: dict[str, Any], num_layers: int, seed: int = 0, **kw: Any) -> Any:
    return cls(I, H, num_layers=num_layers, **options, **kw, rngs=nnx.Rngs(seed))


def inputs(seed: int = 1, batch: int = BATCH, time: int = T, features: int = I) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, time, features)).astype(np.float32)


def host(tree: Any) -> Any:
    return jax.tree.map(np.asarray, tree)


@pytest.mark.parametrize(("cls", "options", "op_options", "num_layers"), CASES, ids=IDS)
def test_each_layer_equals_the_reference_op_on_its_params(
    cls: Any, options: dict[str, Any], op_options: dict[str, Any], num_layers: int
) -> None:
    layer = make(cls, options, num_layers)
    x = inputs()
    lengths = np.array([T, 2, 0])
    ours = layer(jnp.asarray(x), lengths=lengths, reverse=True)
    theirs = getattr(REFERENCE, layer.op)(x, layer.numpy_params(), **op_options, lengths=lengths, reverse=True)
    assert type(ours) is type(theirs)
    where = f"{cls.__name__} {options} against the reference, lengths {lengths.tolist()}, reverse"
    assert_tree_close(host(ours), theirs, tolerance("float32", steps=STEPS), context=where)


@pytest.mark.parametrize(("cls", "options", "op_options", "num_layers"), CASES, ids=IDS)
def test_gradients_under_nnx_jit_match_the_reference_vjp(
    cls: Any, options: dict[str, Any], op_options: dict[str, Any], num_layers: int
) -> None:
    layer = make(cls, options, num_layers, seed=2)
    x = inputs(3)
    lengths = np.array([T, 4, 1])
    cotangent = np.random.default_rng(4).standard_normal((BATCH, T, H)).astype(np.float32)

    @nnx.jit
    def grads(model: Any, x: Any, cotangent: Any) -> Any:
        return nnx.grad(lambda m: jnp.sum(m(x, lengths=lengths).outputs * cotangent))(model)

    ours = grads(layer, jnp.asarray(x), jnp.asarray(cotangent))
    want = REFERENCE.vjp(layer.op, {"outputs": cotangent}, x, layer.numpy_params(), **op_options, lengths=lengths)
    flat = {path: np.asarray(leaf) for path, leaf in nnx.to_flat_state(ours)}
    assert flat, "no parameter received a gradient"
    expected = {path: want["params"][int(path[1])][path[2]] for path in flat}
    assert all(path[:1] == ("layers",) for path in flat)
    where = f"{cls.__name__} {options}: nnx.jit(nnx.grad) against the reference vjp"
    assert_tree_close(flat, expected, tolerance("float32", steps=STEPS, kind="gradient"), context=where)


@pytest.mark.parametrize(("cls", "options", "op_options", "num_layers"), CASES[:3], ids=IDS[:3])
def test_time_major_layers_equal_batch_first_transposed(
    cls: Any, options: dict[str, Any], op_options: dict[str, Any], num_layers: int
) -> None:
    first = make(cls, options, num_layers)
    major = make(cls, options, num_layers, seed=5, batch_first=False)
    major.load_canonical(first.numpy_params())
    x = jnp.asarray(inputs())
    lengths = np.array([T, 3, 1])
    a = first(x, lengths=lengths)
    b = major(jnp.swapaxes(x, 0, 1), lengths=lengths)
    np.testing.assert_array_equal(np.asarray(jnp.swapaxes(b.outputs, 0, 1)), np.asarray(a.outputs))
    assert_tree_close(host(b.state), host(a.state), tolerance("float32", steps=0), context="state, time-major")


def test_without_bias_the_cell_biases_are_zeros_and_no_parameters() -> None:
    layer = layers.SkipGRU(I, H, num_layers=2, bias=False, rngs=nnx.Rngs(0))
    names = [(path[1], path[2]) for path, _ in nnx.to_flat_state(nnx.state(layer, nnx.Param))]
    assert sorted(names) == [(0, "w_hh"), (0, "w_ih"), (1, "b_gate"), (1, "w_gate"), (1, "w_hh"), (1, "w_ih")]
    params = layer.numpy_params()
    assert all(not p["b_ih"].any() and not p["b_hh"].any() for p in params)
    x = inputs()
    ours = layer(jnp.asarray(x))
    theirs = REFERENCE.skip_gru(x, params)
    assert_tree_close(host(ours), theirs, tolerance("float32", steps=STEPS), context="SkipGRU(bias=False)")


def test_initialisation_follows_the_paper_inits_and_the_rngs() -> None:
    skip = layers.SkipGRU(I, H, num_layers=2, trainable_initial_state=True, rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(np.asarray(skip.layers[1].b_gate[...]), np.ones(1, np.float32))
    np.testing.assert_array_equal(np.asarray(skip.layers[0].h0[...]), np.zeros(H, np.float32))
    ind = layers.IndRNN(I, H, num_layers=2, seq_len=10, mag=2.0, last_layer_init=True, rngs=nnx.Rngs(0))
    bound = rnnspec.indrnn_bound(10, 2.0)
    top = np.asarray(ind.layers[1].u[...])
    assert top.min() >= np.float32(1 / bound)
    assert top.max() <= np.float32(bound)
    lstm = layers.LSTM(I, H, rngs=nnx.Rngs(0))
    assert np.abs(np.asarray(lstm.layers[0].w_hh[...])).max() <= np.float32(1 / np.sqrt(H))
    again = layers.LSTM(I, H, rngs=nnx.Rngs(0))
    other = layers.LSTM(I, H, rngs=nnx.Rngs(1))
    np.testing.assert_array_equal(np.asarray(again.layers[0].w_ih[...]), np.asarray(lstm.layers[0].w_ih[...]))
    assert not np.array_equal(np.asarray(other.layers[0].w_ih[...]), np.asarray(lstm.layers[0].w_ih[...]))
    before = np.asarray(lstm.layers[0].w_ih[...]).copy()
    lstm.reset_parameters(nnx.Rngs(7))
    assert not np.array_equal(np.asarray(lstm.layers[0].w_ih[...]), before)


def test_loaded_params_are_copies_of_the_callers_arrays() -> None:
    params = rnnspec.init_params("lstm", input_size=I, hidden_size=H, seed=3)
    layer = layers.LSTM(I, H, rngs=nnx.Rngs(0))
    layer.load_canonical(params)
    kept = params[0]["w_ih"].copy()
    params[0]["w_ih"][...] = 0.0
    np.testing.assert_array_equal(np.asarray(layer.layers[0].w_ih[...]), kept)
    x = inputs()
    x_before = x.copy()
    layer(x)
    np.testing.assert_array_equal(x, x_before)


def test_loading_torch_lstm_weights_gives_torchs_outputs() -> None:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = torch.nn.LSTM(I, H, num_layers=2, batch_first=True)
    layer = layers.LSTM(I, H, num_layers=2, rngs=nnx.Rngs(0))
    layer.load_canonical(from_torch(module))
    x = inputs(6)
    with torch.no_grad():
        y, (h_n, c_n) = module(torch.from_numpy(x))
    ours = layer(jnp.asarray(x))
    expected = {"outputs": y.numpy(), "h": h_n.numpy(), "c": c_n.numpy()}
    got = {
        "outputs": np.asarray(ours.outputs),
        "h": np.stack([np.asarray(s["h"]) for s in ours.state]),
        "c": np.stack([np.asarray(s["c"]) for s in ours.state]),
    }
    assert_tree_close(got, expected, tolerance("float32", steps=2 * T), context="torch.nn.LSTM weights")


def randomise(module: Any, seed: int) -> None:
    """Give every parameter of a Flax module random values (Flax starts biases at zero, which would hide them)."""
    state = nnx.state(module, nnx.Param)
    rng = np.random.default_rng(seed)
    nnx.update(module, jax.tree.map(lambda v: jnp.asarray(rng.uniform(-0.6, 0.6, v.shape), v.dtype), state))


def run_flax_cell(cell: Any, x: Any) -> Any:
    """The cell's own step over time from Flax's zero carry: all its outputs, (batch, time, hidden)."""
    carry = cell.initialize_carry(x[:, 0].shape, nnx.Rngs(0))
    outputs = []
    for t in range(x.shape[1]):
        carry, y = cell(carry, x[:, t])
        outputs.append(y)
    return jnp.stack(outputs, axis=1)


@pytest.mark.parametrize(
    ("cell_class", "layer_class", "options"),
    [
        pytest.param("LSTMCell", layers.LSTM, {}, id="LSTMCell"),
        pytest.param("OptimizedLSTMCell", layers.LSTM, {}, id="OptimizedLSTMCell"),
        pytest.param("GRUCell", layers.GRU, {}, id="GRUCell"),
        pytest.param("SimpleCell", layers.RNN, {"activation": "relu"}, id="SimpleCell-relu"),
    ],
)
def test_converted_flax_cells_give_flaxs_outputs(cell_class: str, layer_class: Any, options: dict[str, Any]) -> None:
    extra = {"activation_fn": nnx.relu} if options.get("activation") == "relu" else {}
    cells = [
        getattr(nnx, cell_class)(I, H, rngs=nnx.Rngs(1), **extra),
        getattr(nnx, cell_class)(H, H, rngs=nnx.Rngs(2), **extra),
    ]
    for k, cell in enumerate(cells):
        randomise(cell, k)
    x = jnp.asarray(inputs(7))
    expected = run_flax_cell(cells[1], run_flax_cell(cells[0], x))
    layer = layer_class(I, H, num_layers=2, **options, rngs=nnx.Rngs(0))
    layer.load_canonical(from_flax(cells))
    ours = layer(x).outputs
    where = f"{cell_class} converted by from_flax"
    assert_tree_close(np.asarray(ours), np.asarray(expected), tolerance("float32", steps=2 * T), context=where)


def test_the_converter_refuses_what_the_ops_do_not_compute() -> None:
    with pytest.raises(ParameterError, match=r"from_flax: argument LSTMCell.gate_fn: expected flax.nnx.sigmoid"):
        from_flax(nnx.LSTMCell(I, H, gate_fn=nnx.tanh, rngs=nnx.Rngs(0)))
    with pytest.raises(ParameterError, match=r"argument cell: expected a flax.nnx LSTMCell"):
        from_flax(nnx.Linear(I, H, rngs=nnx.Rngs(0)))
    with pytest.raises(OptionError, match=r"argument cells\[1\]: expected in_features 4"):
        from_flax([nnx.GRUCell(I, H, rngs=nnx.Rngs(0)), nnx.GRUCell(I, H, rngs=nnx.Rngs(0))])


def test_bad_layer_arguments_name_the_layer_and_the_argument() -> None:
    with pytest.raises(OptionError, match=r"^QRNN: argument mode: expected"):
        layers.QRNN(I, H, mode="fi", rngs=nnx.Rngs(0))
    with pytest.raises(OptionError, match=r"^LSTM: argument batch_first: expected True or False"):
        layers.LSTM(I, H, batch_first=1, rngs=nnx.Rngs(0))  # type: ignore[arg-type]
    layer = layers.GRU(I, H, rngs=nnx.Rngs(0))
    params = rnnspec.init_params("gru", input_size=I, hidden_size=H + 1)
    with pytest.raises(ParameterError, match=r"^GRU: argument params\[0\]\['w_ih'\]: expected shape \(12, 3\)"):
        layer.load_canonical(params)


def loss_of(result: Any, cotangent: Any) -> Any:
    """<outputs, cotangent> plus the adaptive ops' differentiable extras, so every parameter gets a gradient."""
    loss = jnp.sum(result.outputs * cotangent)
    for extra in ("update_prob", "ponder_cost"):
        if extra in result._fields:
            loss = loss + jnp.sum(getattr(result, extra))
    return loss


#: One layer of each family: the option reaches the op the same way in every layer; the conformance suite's
#: checkpointing check covers each op.
CHECKPOINT_CASES = [CASES[1], CASES[5], CASES[8]]


@pytest.mark.parametrize(
    ("cls", "options", "op_options", "num_layers"), CHECKPOINT_CASES, ids=[c[0].__name__ for c in CHECKPOINT_CASES]
)
def test_checkpoint_every_runs_segments_and_changes_no_value_and_no_gradient(
    cls: Any, options: dict[str, Any], op_options: dict[str, Any], num_layers: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrapped: list[Any] = []
    checkpoint = jax.checkpoint

    def counting(fun: Any, *args: Any, **kwargs: Any) -> Any:
        wrapped.append(fun)
        return checkpoint(fun, *args, **kwargs)

    monkeypatch.setattr(jax, "checkpoint", counting)
    x = jnp.asarray(inputs(5))
    lengths = np.array([T, 2, 0])
    cotangent = jnp.asarray(np.random.default_rng(6).standard_normal((BATCH, T, H)).astype(np.float32))
    runs = []
    for every in (None, 4):
        layer = make(cls, options, num_layers, seed=7, checkpoint_every=every)

        def loss(m: Any, x: Any) -> Any:
            result = m(x, lengths=lengths, reverse=True)
            return loss_of(result, cotangent), result

        step = nnx.jit(nnx.value_and_grad(loss, argnums=(0, 1), has_aux=True))
        (_, result), (state, x_grad) = step(layer, x)
        runs.append({"result": host(result), "x": np.asarray(x_grad), "params": host(nnx.to_pure_dict(state))})
    assert wrapped, "checkpoint_every=4 over 6 steps: the segments run under jax.checkpoint"
    where = f"{cls.__name__} {options}: checkpoint_every=4 against None"
    assert_tree_close(runs[1], runs[0], tolerance("float32", steps=STEPS, kind="gradient"), context=where)


@pytest.mark.parametrize("value", [0, -2, True, 2.5, "3"], ids=repr)
@pytest.mark.parametrize("cls", [layers.LSTM, layers.SkipGRU, layers.QRNN])
def test_a_bad_checkpoint_every_is_the_specs_option_error_naming_the_layer(cls: Any, value: Any) -> None:
    with pytest.raises(OptionError, match=r"argument checkpoint_every: expected None or an integer >= 1") as info:
        cls(I, H, checkpoint_every=value, rngs=nnx.Rngs(0))
    assert (info.value.op, info.value.argument) == (cls.__name__, "checkpoint_every")
