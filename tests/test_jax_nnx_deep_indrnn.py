"""The Flax NNX DeepIndRNN: the authors' residual, batch-normalised stacks train, equal their hand-written
composition, normalise per step as a hand computation does, keep padding out of the statistics, use running
statistics after ``model.eval()``, and ``weight_decay_mask`` leaves exactly the recurrent weights undecayed."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

jax = pytest.importorskip("jax")
nnx = pytest.importorskip("flax.nnx")

import jax.numpy as jnp  # noqa: E402

from rnnspec.backends.jax.nnx import DeepIndRNN, IndRNN, PerStepBatchNorm, weight_decay_mask  # noqa: E402
from rnnspec.conformance.assertions import assert_tree_close  # noqa: E402
from rnnspec.conformance.tolerances import tolerance  # noqa: E402
from rnnspec.errors import OptionError, ShapeError  # noqa: E402

H = 6


def _hand_recurrence(z: np.ndarray, u: np.ndarray) -> np.ndarray:
    """h_t = relu(z_t + u * h_{t-1}) from h_0 = 0, step by step (float64)."""
    h = np.zeros_like(z[:, 0])
    out = []
    for t in range(z.shape[1]):
        h = np.maximum(z[:, t] + u * h, 0.0)
        out.append(h)
    return np.stack(out, axis=1)


def _host(tree: Any) -> Any:
    return jax.tree_util.tree_map(lambda a: np.asarray(a, dtype=np.float64), tree)


def test_a_six_layer_residual_indrnn_with_batch_normalisation_trains() -> None:
    optax = pytest.importorskip("optax")

    class Model(nnx.Module):  # type: ignore[misc]
        def __init__(self, rngs: Any) -> None:
            self.rnn = DeepIndRNN(2, 16, 6, residual=True, batch_norm="after", seq_len=12, rngs=rngs)
            self.readout = nnx.Linear(16, 1, rngs=rngs)

        def __call__(self, x: Any) -> Any:
            return self.readout(self.rnn(x).outputs[:, -1])

    model = Model(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    x = jax.random.uniform(jax.random.key(1), (64, 12, 2))
    target = (x[..., 0] * x[..., 1]).sum(1, keepdims=True)  # a sum of products over the sequence

    @nnx.jit
    def step(model: Any, optimizer: Any) -> Any:
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - target) ** 2))(model)
        optimizer.update(model, grads)
        return loss

    losses = [float(step(model, optimizer)) for _ in range(40)]
    assert losses[-1] < 0.1 * losses[0], f"loss {losses[0]:.3f} -> {losses[-1]:.3f}"


def test_a_residual_stack_equals_its_hand_written_composition_of_linear_batch_norm_recurrence_and_shortcut() -> None:
    model = DeepIndRNN(3, H, 3, residual=True, batch_norm="before", rngs=nnx.Rngs(1))
    x = np.asarray(jax.random.normal(jax.random.key(2), (5, 7, 3)), dtype=np.float64)
    result = model(jnp.asarray(x, jnp.float32))
    sums: list[np.ndarray] = []
    y = x
    for i, cell in enumerate(model.cells):
        p = _host(cell.canonical_params()[0])
        s = y @ p["w_ih"].T + p["b_ih"] + (sums[0] if i == 2 else 0)  # the shortcut of layers 0 -> 2
        sums.append(s)
        norm = model.norms[i]
        z = (s - s.mean((0, 1))) / np.sqrt(s.var((0, 1)) + norm.epsilon) * _host(norm.scale[...]) + _host(
            norm.bias[...]
        )
        y = _hand_recurrence(z, p["u"])
    tol = tolerance("float32", steps=3 * 7)
    assert_tree_close(_host(result.outputs), y, tol, context="outputs")
    assert_tree_close(_host(result.state[2]["h"]), y[:, -1], tol, context="final state")


def test_a_stack_without_batch_norm_or_shortcut_equals_its_indrnn_layers_called_in_turn() -> None:
    model = DeepIndRNN(3, H, 3, rngs=nnx.Rngs(3))
    x = jax.random.normal(jax.random.key(4), (4, 6, 3))
    lengths = jnp.array([6, 0, 3, 5])
    y = x
    for cell in model.cells:
        y = cell(y, lengths=lengths).outputs
    assert isinstance(model.cells[0], IndRNN)
    assert_tree_close(_host(model(x, lengths=lengths).outputs), _host(y), tolerance("float32", steps=18), context="y")


def test_per_step_statistics_equal_a_hand_computation_over_each_steps_valid_rows() -> None:
    norm = PerStepBatchNorm(H, max_length=8)
    norm.scale[...] = jax.random.uniform(jax.random.key(5), (H,), minval=0.5, maxval=1.5)
    norm.bias[...] = jax.random.uniform(jax.random.key(6), (H,), minval=-1, maxval=1)
    x = np.asarray(jax.random.normal(jax.random.key(7), (5, 6, H)), dtype=np.float64)
    lengths = np.array([6, 4, 4, 1, 0])
    mask = np.arange(6)[None, :] < lengths[:, None]
    y = _host(norm(jnp.asarray(x, jnp.float32), mask=jnp.asarray(mask)))
    w, b = _host(norm.scale[...]), _host(norm.bias[...])
    tol = tolerance("float32", steps=1)
    for t in range(6):
        rows = np.flatnonzero(lengths > t)
        mean, var = x[rows, t].mean(0), x[rows, t].var(0)
        assert_tree_close(y[rows, t], (x[rows, t] - mean) / np.sqrt(var + 1e-5) * w + b, tol, context=f"t={t}")
        assert not y[lengths <= t, t].any(), f"padded rows at step {t} are not zero"
        # nnx.BatchNorm's update (momentum 0.99, biased variance) at each step with a valid row.
        assert_tree_close(_host(norm.mean[...][t]), 0.01 * mean, tol, context=f"mean[{t}]")
        assert_tree_close(_host(norm.var[...][t]), 0.99 + 0.01 * var, tol, context=f"var[{t}]")
    assert not np.asarray(norm.mean[...][6:]).any(), "rows past the sequence moved"


@pytest.mark.parametrize("statistics", ["batch_time", "per_step"])
@pytest.mark.parametrize("where", ["before", "after"])
def test_padded_steps_enter_no_statistic_and_come_out_as_zeros(where: str, statistics: str) -> None:
    max_length = 6 if statistics == "per_step" else None

    def build() -> Any:
        return DeepIndRNN(
            3, H, 3, residual=True, batch_norm=where, bn_statistics=statistics, max_length=max_length, rngs=nnx.Rngs(8)
        )

    model, twin = build(), build()
    x = jax.random.normal(jax.random.key(9), (4, 6, 3))
    lengths = jnp.array([6, 2, 0, 4])
    padded = jnp.arange(6)[None, :] >= lengths[:, None]
    noisy = jnp.where(padded[..., None], 1e3 * jax.random.normal(jax.random.key(10), x.shape), x)
    first, second = model(x, lengths=lengths), twin(noisy, lengths=lengths)
    np.testing.assert_array_equal(np.asarray(second.outputs), np.asarray(first.outputs))
    assert not np.asarray(second.outputs)[np.asarray(padded)].any()
    stats = nnx.to_flat_state(nnx.state(model, nnx.BatchStat))
    for (path, a), (_, b) in zip(stats, nnx.to_flat_state(nnx.state(twin, nnx.BatchStat)), strict=True):
        np.testing.assert_array_equal(np.asarray(a[...]), np.asarray(b[...]), err_msg=f"{path} saw the padding")


@pytest.mark.parametrize("statistics", ["batch_time", "per_step"])
def test_eval_mode_uses_the_running_statistics_so_each_row_is_independent_of_the_others(statistics: str) -> None:
    max_length = 5 if statistics == "per_step" else None
    model = DeepIndRNN(
        3, H, 6, residual=True, batch_norm="before", bn_statistics=statistics, max_length=max_length, rngs=nnx.Rngs(11)
    )
    x = jax.random.normal(jax.random.key(12), (8, 5, 3))
    model(x)  # one training call: the running statistics move
    running = _host(nnx.state(model, nnx.BatchStat))
    model.eval()
    alone, together = model(x[:1]).outputs, model(x).outputs
    tol = tolerance("float32", steps=6 * 5)
    assert_tree_close(_host(alone), _host(together[:1]), tol, context="one row alone")
    assert_tree_close(_host(nnx.state(model, nnx.BatchStat)), running, tolerance("float32", steps=0), context="eval")
    model.train()
    assert not np.allclose(np.asarray(model(x[:1]).outputs), np.asarray(alone)), "train() kept the running stats"


def test_eval_mode_normalises_with_the_running_statistics_of_each_step() -> None:
    norm = PerStepBatchNorm(H, max_length=4)
    norm.mean[...] = jax.random.uniform(jax.random.key(13), (4, H), minval=-1, maxval=1)
    norm.var[...] = jax.random.uniform(jax.random.key(14), (4, H), minval=0.5, maxval=2)
    norm.eval()
    x = jax.random.normal(jax.random.key(15), (3, 3, H))
    expected = (_host(x) - _host(norm.mean[...][:3])) / np.sqrt(_host(norm.var[...][:3]) + 1e-5)
    assert_tree_close(_host(norm(x)), expected, tolerance("float32", steps=1), context="eval output")


def test_a_sequence_longer_than_max_length_is_refused_naming_x_and_max_length() -> None:
    model = DeepIndRNN(3, H, 2, batch_norm="after", bn_statistics="per_step", max_length=4, rngs=nnx.Rngs(0))
    with pytest.raises(ShapeError, match="max_length") as err:
        model(jnp.zeros((2, 5, 3)))
    assert err.value.argument == "x"


def _decisions(module: Any, **flags: Any) -> dict[str, bool]:
    tree = weight_decay_mask(module, **flags)(nnx.state(module, nnx.Param))
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    return {"/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in p[:-1]): bool(v) for p, v in leaves}


def test_the_mask_leaves_exactly_the_recurrent_weights_undecayed_when_biases_and_norms_decay() -> None:
    model = DeepIndRNN(3, H, 4, residual=True, batch_norm="after", rngs=nnx.Rngs(0))
    decided = _decisions(model, biases=True, norms=True)
    assert {k for k, v in decided.items() if not v} == {f"cells/{i}/layers/0/u" for i in range(4)}
    assert len(decided) == len(nnx.to_flat_state(nnx.state(model, nnx.Param)))


def test_the_mask_follows_the_authors_by_default_leaving_biases_and_norms_undecayed_too() -> None:
    class Plain(nnx.Module):  # type: ignore[misc]
        def __init__(self, rngs: Any) -> None:
            self.rnn = IndRNN(3, H, num_layers=2, rngs=rngs)
            self.norm = nnx.LayerNorm(H, rngs=rngs)
            self.readout = nnx.Linear(H, 1, rngs=rngs)

    decided = _decisions(Plain(nnx.Rngs(0)))
    assert {k for k, v in decided.items() if v} == {"rnn/layers/0/w_ih", "rnn/layers/1/w_ih", "readout/kernel"}
    assert {k for k, v in decided.items() if not v} == {
        "rnn/layers/0/u",
        "rnn/layers/1/u",
        "rnn/layers/0/b_ih",
        "rnn/layers/1/b_ih",
        "norm/scale",
        "norm/bias",
        "readout/bias",
    }


def test_adamw_with_the_mask_decays_the_input_weights_and_leaves_u_alone() -> None:
    optax = pytest.importorskip("optax")
    layer = IndRNN(3, H, rngs=nnx.Rngs(0))
    before = _host(layer.canonical_params()[0])
    optimizer = nnx.Optimizer(layer, optax.adamw(0.1, weight_decay=0.5, mask=weight_decay_mask(layer)), wrt=nnx.Param)
    grads = nnx.grad(lambda m: 0.0 * m(jnp.ones((2, 3, 3))).outputs.sum())(layer)  # only the decay moves
    optimizer.update(layer, grads)
    after = _host(layer.canonical_params()[0])
    assert_tree_close(after["w_ih"], before["w_ih"] * (1 - 0.1 * 0.5), tolerance("float32", steps=1), context="w_ih")
    np.testing.assert_array_equal(after["u"], before["u"])
    np.testing.assert_array_equal(after["b_ih"], before["b_ih"])


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
        DeepIndRNN(3, H, **{"num_layers": 2, argument: value}, rngs=nnx.Rngs(0))
    assert err.value.argument == argument
    assert "DeepIndRNN" in str(err.value)


def test_a_mask_flag_that_is_no_bool_is_refused_naming_it() -> None:
    with pytest.raises(OptionError) as err:
        weight_decay_mask(IndRNN(3, H, rngs=nnx.Rngs(0)), norms=1)
    assert err.value.argument == "norms"
