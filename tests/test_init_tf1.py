"""init_params' ``init_style`` ("torch" or "tf1") and the skip ops' ``initial_state_std``.

The TF1 style draws each TF1 kernel over ``concat([x, h])`` glorot-uniform on its own shape,
``U(-a, a)`` with ``a = sqrt(6 / (fan_in + fan_out))``: the checks write the kernels' shapes out
here (BasicRNNCell ``(I+H, H)``, BasicLSTMCell ``(I+H, 4H)``, GRUCell's gate kernel ``(I+H, 2H)``
and candidate kernel ``(I+H, H)``), independently of rnnspec.init. The range checks are
statistically safe as in test_init_and_constraints: every value inside the bound, and with more
than 2000 draws per kernel the largest magnitude within 1% of it (a miss: 0.99**2000, about
e^-20). The default ("torch") is compared bit for bit with draws made here the way the spec pages
describe them. A tf1-initialised lstm and gru (``reset_after=False``) compute, at init, the
function of TF1's cells with those kernels and TF1's biases (``forget_bias`` added at run time),
written here in NumPy. The layers of torch and Flax NNX take both options (Keras':
test_tensorflow_init_tf1.py).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from helpers import TORCH_RTOL, assert_relative_close, sigmoid

import rnnspec
from rnnspec.errors import OptionError, UnknownArgumentError

I, H = 7, 48  # noqa: E741
#: The TF1 kernels of each op, in the order of w_ih's rows: each kernel's number of H-row blocks.
TF1_KERNELS = {"rnn": (1,), "lstm": (4,), "gru": (2, 1)}
#: The H-row blocks of w_ih of each op.
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
#: The blocks of b_ih TF1 starts at 1: GRUCell's gate bias (r, z), BasicLSTMCell's forget_bias (f of i, f, g, o).
TF1_UNIT_BIAS: dict[str, tuple[int, ...]] = {"rnn": (), "lstm": (1,), "gru": (0, 1)}
BASES = ("rnn", "lstm", "gru")
SKIPS = ("skip_rnn", "skip_lstm", "skip_gru")


def base_of(op: str) -> str:
    return op.removeprefix("skip_")


def glorot_bound(fan_in: int, fan_out: int) -> float:
    return math.sqrt(6.0 / (fan_in + fan_out))


def kernel_rows(op: str, size_i: int) -> list[tuple[slice, float]]:
    """Each TF1 kernel's rows of w_ih / w_hh and its glorot bound (the kernel is (size_i + H, k*H))."""
    out, start = [], 0
    for blocks in TF1_KERNELS[base_of(op)]:
        out.append((slice(start, start + blocks * H), glorot_bound(size_i + H, blocks * H)))
        start += blocks * H
    return out


def expected_b_ih(op: str) -> np.ndarray:
    bias = np.zeros(GATES[base_of(op)] * H)
    for block in TF1_UNIT_BIAS[base_of(op)]:
        bias[block * H : (block + 1) * H] = 1.0
    return bias


def tf1(op: str, **options: Any) -> list[dict[str, np.ndarray]]:
    return rnnspec.init_params(
        op, input_size=I, hidden_size=H, num_layers=2, seed=4, dtype="float64", init_style="tf1", **options
    )


# -- the tf1 style ---------------------------------------------------------------


@pytest.mark.parametrize("op", BASES + SKIPS)
def test_tf1_weights_lie_within_the_glorot_bound_of_their_tf1_kernel_and_reach_it(op: str) -> None:
    for k, layer in enumerate(tf1(op)):
        size_i = I if k == 0 else H
        for rows, bound in kernel_rows(op, size_i):
            kernel = np.concatenate([layer["w_ih"][rows], layer["w_hh"][rows]], axis=1)
            assert kernel.size >= 2000
            assert np.abs(kernel).max() <= bound
            assert np.abs(kernel).max() > 0.99 * bound
            # U(-a, a): mean 0, variance a^2 / 3 (loose: the estimates' errors are ~1% of these margins).
            assert abs(kernel.mean()) < 0.05 * bound
            assert kernel.var() == pytest.approx(bound**2 / 3, rel=0.1)


@pytest.mark.parametrize("op", BASES + SKIPS)
def test_tf1_biases_are_zero_but_the_gru_gate_blocks_and_the_lstm_forget_block_of_b_ih(op: str) -> None:
    for layer in tf1(op):
        np.testing.assert_array_equal(layer["b_ih"], expected_b_ih(op))
        np.testing.assert_array_equal(layer["b_hh"], np.zeros_like(layer["b_hh"]))


@pytest.mark.parametrize("op", SKIPS)
def test_the_tf1_style_draws_the_skip_gate_weights_glorot_uniform_and_keeps_its_bias_at_one(op: str) -> None:
    top = tf1(op)[-1]
    np.testing.assert_array_equal(top["b_gate"], np.ones(1))
    bound = math.sqrt(6 / (H + 1))
    assert np.abs(top["w_gate"]).max() <= bound
    # Wider than PyTorch's 1/sqrt(H): some entry lies beyond it (H draws over a range 2.4 times as wide).
    assert np.abs(top["w_gate"]).max() > 1 / math.sqrt(H)


@pytest.mark.parametrize("reset_after", [True, False])
def test_tf1_style_leaves_reset_after_to_the_caller(reset_after: bool) -> None:
    with_option = tf1("gru", reset_after=reset_after)
    without = tf1("gru")
    for a, b in zip(with_option, without, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_tf1_draws_the_weights_in_the_documented_order_from_the_seed() -> None:
    """Per layer w_ih then w_hh, each entry U(-a, a) of its kernel's a; biases draw nothing; then w_gate, h0."""
    got = rnnspec.init_params(
        "skip_gru",
        input_size=I,
        hidden_size=H,
        num_layers=2,
        seed=9,
        dtype="float64",
        init_style="tf1",
        trainable_initial_state=True,
        initial_state_std=0.5,
    )
    rng = np.random.default_rng(9)
    for k, layer in enumerate(got):
        size_i = I if k == 0 else H
        bound = np.concatenate([np.full(rows.stop - rows.start, a) for rows, a in kernel_rows("skip_gru", size_i)])
        for key, width in (("w_ih", size_i), ("w_hh", H)):
            expected = rng.uniform(-1.0, 1.0, size=(3 * H, width)) * bound[:, None]
            assert_relative_close(layer[key], expected, 1e-15, f"layer {k} {key}")
        if k == 1:
            glorot = math.sqrt(6 / (H + 1))
            assert_relative_close(layer["w_gate"], rng.uniform(-1, 1, size=(1, H)) * glorot, 1e-15, "w_gate")
        np.testing.assert_array_equal(layer["h0"], rng.normal(0.0, 0.5, size=H))


def _tf1_lstm_step(x: np.ndarray, h: np.ndarray, c: np.ndarray, kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # BasicLSTMCell: gates i, j, f, o over concat([x, h]); bias 0; forget_bias=1.0 inside the sigmoid.
    i, j, f, o = np.split(np.concatenate([x, h], axis=1) @ kernel, 4, axis=1)
    c = c * sigmoid(f + 1.0) + sigmoid(i) * np.tanh(j)
    return np.tanh(c) * sigmoid(o), c


def _tf1_gru_step(x: np.ndarray, h: np.ndarray, gates: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    # GRUCell: gates r, u over concat([x, h]) with bias 1; candidate over concat([x, r * h]) with bias 0.
    r, u = np.split(sigmoid(np.concatenate([x, h], axis=1) @ gates + 1.0), 2, axis=1)
    c = np.tanh(np.concatenate([x, r * h], axis=1) @ candidate)
    return u * h + (1 - u) * c


def test_tf1_lstm_and_gru_compute_tf1s_cells_with_their_kernels_at_init() -> None:
    x = np.random.default_rng(0).standard_normal((3, 5, I))
    reference = rnnspec.get_backend("numpy")
    (lstm,) = rnnspec.init_params("lstm", input_size=I, hidden_size=H, seed=2, dtype="float64", init_style="tf1")
    # TF1's kernel is (I + H, 4H) with column blocks i, j, f, o: rnnspec's row blocks i, g, f, o, transposed.
    ours = np.concatenate([lstm["w_ih"], lstm["w_hh"]], axis=1).T
    i, f, g, o = np.split(ours, 4, axis=1)
    kernel = np.concatenate([i, g, f, o], axis=1)
    h, c, outputs = np.zeros((3, H)), np.zeros((3, H)), []
    for t in range(5):
        h, c = _tf1_lstm_step(x[:, t], h, c, kernel)
        outputs.append(h)
    assert_relative_close(reference.lstm(x, [lstm]).outputs, np.stack(outputs, 1), TORCH_RTOL, "lstm")

    (gru,) = rnnspec.init_params("gru", input_size=I, hidden_size=H, seed=2, dtype="float64", init_style="tf1")
    joint = np.concatenate([gru["w_ih"], gru["w_hh"]], axis=1).T
    h, outputs = np.zeros((3, H)), []
    for t in range(5):
        h = _tf1_gru_step(x[:, t], h, joint[:, : 2 * H], joint[:, 2 * H :])
        outputs.append(h)
    got = reference.gru(x, [gru], reset_after=False).outputs
    assert_relative_close(got, np.stack(outputs, 1), TORCH_RTOL, "gru")


# -- the torch style: the default, unchanged -------------------------------------


def _torch_style(op: str, num_layers: int, seed: int, trainable: bool) -> list[dict[str, np.ndarray]]:
    """The draws the spec pages describe: U(-1/sqrt(H), 1/sqrt(H)) in record order, b_gate 1, h0/c0 zero."""
    gates = GATES[base_of(op)]
    rng, bound, layers = np.random.default_rng(seed), 1 / math.sqrt(H), []
    for k in range(num_layers):
        size_i = I if k == 0 else H
        shapes = {"w_ih": (gates * H, size_i), "w_hh": (gates * H, H), "b_ih": (gates * H,), "b_hh": (gates * H,)}
        layer = {key: rng.uniform(-bound, bound, size=shape) for key, shape in shapes.items()}
        if op in SKIPS and k == num_layers - 1:
            layer["w_gate"] = rng.uniform(-bound, bound, size=(1, H))
            layer["b_gate"] = np.ones(1)
        if trainable:
            layer["h0"] = np.zeros(H)
            if op == "skip_lstm":
                layer["c0"] = np.zeros(H)
        layers.append(layer)
    return layers


@pytest.mark.parametrize("style", [{}, {"init_style": "torch"}])
@pytest.mark.parametrize("op", BASES + SKIPS)
def test_the_torch_style_is_the_default_and_draws_as_the_pages_say(op: str, style: dict[str, str]) -> None:
    trainable = {"trainable_initial_state": True} if op in SKIPS else {}
    got = rnnspec.init_params(
        op, input_size=I, hidden_size=H, num_layers=2, seed=21, dtype="float64", **style, **trainable
    )
    expected = _torch_style(op, 2, 21, bool(trainable))
    for a, b in zip(got, expected, strict=True):
        assert list(a) == list(b)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


# -- initial_state_std -------------------------------------------------------------


@pytest.mark.parametrize("std", [1.0, 0.25])
def test_initial_state_std_draws_h0_and_c0_with_that_standard_deviation(std: float) -> None:
    # 10 layers of 400 units: 4000 draws of each, whose sample std errs by about std / sqrt(8000) = 1.1%
    # and mean by std / sqrt(4000) = 1.6% of std (the bounds below are 7 and 6 of those).
    params = rnnspec.init_params(
        "skip_lstm",
        input_size=2,
        hidden_size=400,
        num_layers=10,
        seed=1,
        dtype="float64",
        trainable_initial_state=True,
        initial_state_std=std,
    )
    for key in ("h0", "c0"):
        values = np.concatenate([layer[key] for layer in params])
        assert abs(values.mean()) < 0.1 * std
        assert values.std() == pytest.approx(std, rel=0.08)
    assert not np.array_equal(params[0]["h0"], params[0]["c0"])


@pytest.mark.parametrize("op", SKIPS)
def test_initial_state_std_zero_keeps_the_learnt_initial_state_at_zero(op: str) -> None:
    params = rnnspec.init_params(
        op, input_size=I, hidden_size=H, num_layers=2, trainable_initial_state=True, initial_state_std=0.0
    )
    for layer in params:
        for key in ("h0", "c0"):
            if key in layer:
                np.testing.assert_array_equal(layer[key], np.zeros(H, np.float32))


# -- errors -----------------------------------------------------------------------


@pytest.mark.parametrize("style", ["keras", "TF1", "", None, 1, True])
@pytest.mark.parametrize("op", ["gru", "skip_lstm"])
def test_init_style_must_be_torch_or_tf1(op: str, style: Any) -> None:
    with pytest.raises(OptionError, match=r"^init_params: argument init_style: expected 'torch' or 'tf1'") as info:
        rnnspec.init_params(op, input_size=3, hidden_size=4, init_style=style)
    assert info.value.actual == repr(style)


@pytest.mark.parametrize("std", [-1.0, -1e-12, math.inf, math.nan, "1", True, None])
def test_initial_state_std_must_be_a_finite_number_of_at_least_zero(std: Any) -> None:
    with pytest.raises(OptionError, match=r"^init_params: argument initial_state_std: expected a finite real"):
        rnnspec.init_params(
            "skip_gru", input_size=3, hidden_size=4, trainable_initial_state=True, initial_state_std=std
        )


def test_initial_state_std_without_trainable_initial_state_is_an_error_not_ignored() -> None:
    with pytest.raises(OptionError, match=r"^init_params: argument initial_state_std: expected 0.0 unless trainable"):
        rnnspec.init_params("skip_rnn", input_size=3, hidden_size=4, initial_state_std=1.0)


@pytest.mark.parametrize(
    ("op", "option"),
    [("indrnn", "init_style"), ("qrnn", "init_style"), ("act", "init_style"), ("gru", "initial_state_std")],
)
def test_ops_without_the_option_refuse_it(op: str, option: str) -> None:
    with pytest.raises(UnknownArgumentError, match=rf"^init_params: argument {option}: expected an option of '{op}'"):
        rnnspec.init_params(op, input_size=3, hidden_size=4, **{option: "tf1" if option == "init_style" else 1.0})


# -- the layers -------------------------------------------------------------------


def assert_tf1_skip_gru(params: list[dict[str, np.ndarray]]) -> None:
    """A 2-layer skip_gru drawn with init_style="tf1" and initial_state_std > 0 (float32 entries)."""
    for k, layer in enumerate(params):
        for rows, bound in kernel_rows("skip_gru", I if k == 0 else H):
            assert np.abs(layer["w_ih"][rows]).max() <= np.float32(bound)
            assert np.abs(layer["w_hh"][rows]).max() <= np.float32(bound)
        np.testing.assert_array_equal(layer["b_ih"], expected_b_ih("skip_gru"))
        np.testing.assert_array_equal(layer["b_hh"], np.zeros(3 * H))
        assert np.abs(layer["h0"]).max() > 1.0  # N(0, 1): P(all 48 within 1) ~ 0.68**48 ~ 1e-8


def test_the_torch_layers_take_init_style_and_initial_state_std() -> None:
    pytest.importorskip("torch")
    from rnnspec.backends.torch import nn as rnn_nn

    options = {"init_style": "tf1", "trainable_initial_state": True, "initial_state_std": 1.0}
    layer = rnn_nn.SkipGRU(I, H, num_layers=2, reset_after=False, **options)
    assert_tf1_skip_gru(layer.numpy_params())
    layer.reset_parameters()
    assert_tf1_skip_gru(layer.numpy_params())
    with pytest.raises(OptionError, match=r"^GRU: argument init_style: expected 'torch' or 'tf1'"):
        rnn_nn.GRU(I, H, init_style="keras")


def test_the_flax_nnx_layers_take_init_style_and_initial_state_std() -> None:
    nnx = pytest.importorskip("flax.nnx")
    from rnnspec.backends.jax import nnx as layers

    options = {"init_style": "tf1", "trainable_initial_state": True, "initial_state_std": 1.0}
    layer = layers.SkipGRU(I, H, num_layers=2, reset_after=False, **options, rngs=nnx.Rngs(0))
    assert_tf1_skip_gru(layer.numpy_params())
    with pytest.raises(OptionError, match=r"^SkipRNN: argument initial_state_std: expected 0.0 unless trainable"):
        layers.SkipRNN(I, H, initial_state_std=1.0, rngs=nnx.Rngs(0))
