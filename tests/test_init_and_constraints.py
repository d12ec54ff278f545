"""init_params for indrnn and qrnn, and the IndRNN constraint helpers indrnn_bound and indrnn_constrain.

The range checks are statistically safe: every value must lie inside its interval,
and with thousands of draws the extremes must come within 1% of the interval's
width of its ends (with 2000 draws a miss has probability 0.99**2000, about e^-20).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

import rnnspec
from rnnspec.errors import OptionError, UnknownArgumentError
from rnnspec.ops import OPS, QRNN_GATES

PRIMITIVES = sorted(op for op, record in OPS.items() if record.kind == "primitive")
#: Units per layer for the range checks: enough draws that the extremes are close to the bounds.
WIDE = 2000


def assert_uniform_on(values: np.ndarray, low: float, high: float) -> None:
    """All values in [low, high], and the extremes within 1% of the width of each end."""
    width = high - low
    assert values.min() >= low
    assert values.max() <= high
    assert values.min() < low + 0.01 * width
    assert values.max() > high - 0.01 * width


def run(op: str, params: list[dict[str, np.ndarray]], x: np.ndarray, **options: Any) -> rnnspec.SequenceResult:
    result: rnnspec.SequenceResult = getattr(rnnspec.get_backend("numpy"), op)(x, params, **options)
    return result


# -- shapes accepted by the ops --------------------------------------------------


@pytest.mark.parametrize("num_layers", [1, 3])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("init", [{}, {"seq_len": 7}, {"seq_len": 7, "mag": 10.0, "last_layer_init": True}])
def test_indrnn_init_has_the_spec_shapes_and_is_accepted_by_the_op(
    num_layers: int, activation: str, init: dict[str, Any]
) -> None:
    params = rnnspec.init_params(
        "indrnn", input_size=3, hidden_size=5, num_layers=num_layers, activation=activation, **init
    )
    assert len(params) == num_layers
    for k, layer in enumerate(params):
        assert {name: a.shape for name, a in layer.items()} == {
            "w_ih": (5, 3 if k == 0 else 5),
            "b_ih": (5,),
            "u": (5,),
        }
        assert all(a.dtype == np.float32 for a in layer.values())
    result = run("indrnn", params, np.ones((2, 7, 3), np.float32), activation=activation)
    assert result.outputs.shape == (2, 7, 5)
    assert [set(s) for s in result.state] == [{"h"}] * num_layers


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("window", [1, 2, 3])
@pytest.mark.parametrize("mode", sorted(QRNN_GATES))
def test_qrnn_init_has_the_spec_shapes_for_every_mode_and_window_and_is_accepted_by_the_op(
    num_layers: int, window: int, mode: str
) -> None:
    params = rnnspec.init_params("qrnn", input_size=3, hidden_size=4, num_layers=num_layers, mode=mode, window=window)
    gates = len(QRNN_GATES[mode])
    assert len(params) == num_layers
    for k, layer in enumerate(params):
        inputs = 3 if k == 0 else 4
        assert {name: a.shape for name, a in layer.items()} == {"w": (gates * 4, inputs, window), "b": (gates * 4,)}
        assert all(a.dtype == np.float32 for a in layer.values())
    x = np.random.default_rng(0).standard_normal((2, 6, 3)).astype(np.float32)
    result = run("qrnn", params, x, mode=mode, lengths=np.array([6, 4]), reverse=window == 2)
    assert result.outputs.shape == (2, 6, 4)
    assert [set(s) for s in result.state] == [{"c", "x_prev"}] * num_layers
    for k, s in enumerate(result.state):
        assert s["c"].shape == (2, 4)
        assert s["x_prev"].shape == (2, window - 1, 3 if k == 0 else 4)
    assert np.all(np.isfinite(result.outputs))


def test_qrnn_init_accepts_a_numpy_integer_window() -> None:
    (layer,) = rnnspec.init_params("qrnn", input_size=3, hidden_size=4, window=np.int64(2))
    assert layer["w"].shape == (12, 3, 2)


# -- indrnn: the recurrent weights, input weights and bias -----------------------


def test_indrnn_u_is_uniform_on_zero_one_without_seq_len() -> None:
    params = rnnspec.init_params("indrnn", input_size=2, hidden_size=WIDE, num_layers=2, dtype="float64")
    for layer in params:
        assert_uniform_on(layer["u"], 0.0, 1.0)


@pytest.mark.parametrize(("seq_len", "mag"), [(10, 2.0), (100, 2.0), (5, 10.0), (1, 5)])
def test_indrnn_u_is_uniform_below_the_bound_in_every_layer(seq_len: int, mag: float) -> None:
    params = rnnspec.init_params(
        "indrnn", input_size=2, hidden_size=WIDE, num_layers=3, dtype="float64", seq_len=seq_len, mag=mag
    )
    bound = mag ** (1 / seq_len)
    assert bound == pytest.approx(rnnspec.indrnn_bound(seq_len, mag))
    for layer in params:
        assert_uniform_on(layer["u"], 0.0, bound)


def test_indrnn_mag_defaults_to_two() -> None:
    (layer,) = rnnspec.init_params("indrnn", input_size=2, hidden_size=WIDE, dtype="float64", seq_len=20)
    assert_uniform_on(layer["u"], 0.0, 2.0 ** (1 / 20))


@pytest.mark.parametrize(("seq_len", "mag"), [(10, 2.0), (50, 10.0)])
@pytest.mark.parametrize("num_layers", [1, 3])
def test_last_layer_init_draws_the_top_layers_u_around_one(seq_len: int, mag: float, num_layers: int) -> None:
    params = rnnspec.init_params(
        "indrnn",
        input_size=2,
        hidden_size=WIDE,
        num_layers=num_layers,
        dtype="float64",
        seq_len=seq_len,
        mag=mag,
        last_layer_init=True,
    )
    high = mag ** (1 / seq_len)
    for layer in params[:-1]:
        assert_uniform_on(layer["u"], 0.0, high)
    top = params[-1]["u"]
    # mag ** (-1/seq_len) = 1 / high, up to rounding of the last bit
    assert top.min() >= mag ** (-1 / seq_len) * (1 - 1e-12)
    assert_uniform_on(top, 1 / high, high)


def test_indrnn_input_weights_are_small_and_the_bias_is_zero() -> None:
    params = rnnspec.init_params("indrnn", input_size=8, hidden_size=WIDE, num_layers=2, dtype="float64", seq_len=9)
    for layer in params:
        w = layer["w_ih"]
        assert abs(w.std() - 0.001) < 0.05 * 0.001  # 16000+ draws: the std is off by about 0.6% (1/sqrt(2n))
        assert abs(w.mean()) < 0.001 * 5 / math.sqrt(w.size)
        assert np.all(layer["b_ih"] == 0)


def test_indrnn_activation_does_not_change_the_draws() -> None:
    relu = rnnspec.init_params("indrnn", input_size=3, hidden_size=4, num_layers=2, seed=3)
    tanh = rnnspec.init_params("indrnn", input_size=3, hidden_size=4, num_layers=2, seed=3, activation="tanh")
    for a, b in zip(relu, tanh, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


# -- qrnn: Conv1d's default ---------------------------------------------------


@pytest.mark.parametrize("window", [1, 2, 3])
@pytest.mark.parametrize("mode", sorted(QRNN_GATES))
def test_qrnn_weights_and_biases_are_uniform_within_one_over_root_fan_in(mode: str, window: int) -> None:
    hidden, inputs = 1000, 6
    params = rnnspec.init_params(
        "qrnn", input_size=inputs, hidden_size=hidden, num_layers=2, mode=mode, window=window, dtype="float64"
    )
    for k, layer in enumerate(params):
        fan_in = (inputs if k == 0 else hidden) * window
        bound = 1 / math.sqrt(fan_in)
        assert_uniform_on(layer["w"], -bound, bound)
        assert_uniform_on(layer["b"], -bound, bound)


# -- reproducibility -------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "init"),
    [
        ("indrnn", {}),
        ("indrnn", {"seq_len": 30, "mag": 5.0, "last_layer_init": True}),
        ("qrnn", {"mode": "ifo", "window": 3}),
        ("qrnn", {}),
    ],
)
def test_init_params_is_reproducible_from_its_seed(op: str, init: dict[str, Any]) -> None:
    first = rnnspec.init_params(op, input_size=3, hidden_size=4, num_layers=2, seed=11, **init)
    again = rnnspec.init_params(op, input_size=3, hidden_size=4, num_layers=2, seed=11, **init)
    other = rnnspec.init_params(op, input_size=3, hidden_size=4, num_layers=2, seed=12, **init)
    for a, b, c in zip(first, again, other, strict=True):
        assert list(a) == list(b) == list(c)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
            if key != "b_ih":  # indrnn's bias is zero whatever the seed
                assert not np.array_equal(a[key], c[key])


@pytest.mark.parametrize(("op", "init"), [("indrnn", {"seq_len": 12}), ("qrnn", {"window": 2})])
def test_init_params_float32_rounds_the_float64_draws(op: str, init: dict[str, Any]) -> None:
    wide = rnnspec.init_params(op, input_size=3, hidden_size=4, num_layers=2, dtype="float64", seed=5, **init)
    narrow = rnnspec.init_params(op, input_size=3, hidden_size=4, num_layers=2, dtype="float32", seed=5, **init)
    for w, n in zip(wide, narrow, strict=True):
        for key in w:
            np.testing.assert_array_equal(n[key], w[key].astype(np.float32))


# -- errors ----------------------------------------------------------------------


@pytest.mark.parametrize("window", [0, -1, 1.5, 2.0, True, "2", None])
def test_qrnn_window_must_be_an_integer_of_at_least_one(window: Any) -> None:
    with pytest.raises(OptionError, match=r"^init_params: argument window: expected an integer >= 1") as info:
        rnnspec.init_params("qrnn", input_size=3, hidden_size=4, window=window)
    assert info.value.argument == "window"
    assert info.value.actual == repr(window)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("seq_len", [0, -5, 2.5, True, "10"])
def test_indrnn_seq_len_must_be_a_positive_integer_or_none(seq_len: Any) -> None:
    with pytest.raises(OptionError, match=r"^init_params: argument seq_len: expected a positive integer") as info:
        rnnspec.init_params("indrnn", input_size=3, hidden_size=4, seq_len=seq_len)
    assert info.value.argument == "seq_len"


@pytest.mark.parametrize("mag", [0.5, 0, -2.0, math.inf, math.nan, "2", True, None])
def test_indrnn_mag_must_be_a_finite_number_of_at_least_one(mag: Any) -> None:
    with pytest.raises(OptionError, match=r"^init_params: argument mag: expected a finite real number >= 1") as info:
        rnnspec.init_params("indrnn", input_size=3, hidden_size=4, seq_len=10, mag=mag)
    assert info.value.argument == "mag"


def test_indrnn_mag_without_seq_len_is_an_error_not_ignored() -> None:
    with pytest.raises(OptionError, match=r"^init_params: argument mag: expected only together with seq_len"):
        rnnspec.init_params("indrnn", input_size=3, hidden_size=4, mag=10.0)


def test_indrnn_last_layer_init_needs_seq_len() -> None:
    with pytest.raises(OptionError, match=r"^init_params: argument last_layer_init: expected False when seq_len"):
        rnnspec.init_params("indrnn", input_size=3, hidden_size=4, last_layer_init=True)


@pytest.mark.parametrize("value", [1, "yes", None])
def test_indrnn_last_layer_init_must_be_a_bool(value: Any) -> None:
    with pytest.raises(OptionError, match=r"^init_params: argument last_layer_init: expected True or False"):
        rnnspec.init_params("indrnn", input_size=3, hidden_size=4, seq_len=10, last_layer_init=value)


@pytest.mark.parametrize("op", PRIMITIVES)
def test_init_params_refuses_a_primitive_and_says_why(op: str) -> None:
    with pytest.raises(UnknownArgumentError, match=r"^init_params: argument op: expected a sequence op") as info:
        rnnspec.init_params(op, input_size=3, hidden_size=4)
    assert "is a primitive" in str(info.value)
    assert "no parameters to initialise" in str(info.value)
    assert info.value.actual == repr(op)


@pytest.mark.parametrize(
    ("op", "option"), [("qrnn", "zoneout_mask"), ("qrnn", "seq_len"), ("indrnn", "window"), ("indrnn", "mode")]
)
def test_init_params_rejects_options_of_other_ops_and_array_options(op: str, option: str) -> None:
    with pytest.raises(UnknownArgumentError, match=rf"^init_params: argument {option}: expected an option of '{op}'"):
        rnnspec.init_params(op, input_size=3, hidden_size=4, **{option: None})


@pytest.mark.parametrize(("op", "option", "value"), [("qrnn", "mode", "fifo"), ("indrnn", "activation", "sigmoid")])
def test_init_params_checks_the_op_options(op: str, option: str, value: str) -> None:
    with pytest.raises(OptionError, match=rf"^init_params: argument {option}: "):
        rnnspec.init_params(op, input_size=3, hidden_size=4, **{option: value})


# -- indrnn_bound ----------------------------------------------------------------


@pytest.mark.parametrize(("seq_len", "mag"), [(1, 2.0), (100, 2.0), (784, 10.0), (20, 1.0), (3, 5)])
def test_indrnn_bound_is_mag_to_the_one_over_seq_len(seq_len: int, mag: float) -> None:
    bound = rnnspec.indrnn_bound(seq_len, mag)
    assert isinstance(bound, float)
    assert bound == pytest.approx(mag ** (1 / seq_len), rel=1e-15)
    assert bound**seq_len == pytest.approx(mag, rel=1e-12)
    assert 1.0 <= bound <= mag


def test_indrnn_bound_defaults_to_mag_two_and_accepts_numpy_scalars() -> None:
    assert rnnspec.indrnn_bound(np.int64(10)) == pytest.approx(2.0**0.1)
    assert rnnspec.indrnn_bound(10, np.float32(2.0)) == pytest.approx(2.0**0.1)


@pytest.mark.parametrize(
    ("seq_len", "mag", "argument"),
    [(0, 2.0, "seq_len"), (True, 2.0, "seq_len"), (1.5, 2.0, "seq_len"), (10, 0.9, "mag"), (10, math.inf, "mag")],
)
def test_indrnn_bound_rejects_bad_arguments(seq_len: Any, mag: Any, argument: str) -> None:
    with pytest.raises(OptionError, match=rf"^indrnn_bound: argument {argument}: expected ") as info:
        rnnspec.indrnn_bound(seq_len, mag)
    assert info.value.argument == argument


# -- indrnn_constrain --------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_indrnn_constrain_clips_into_the_interval_without_modifying_the_input(dtype: type) -> None:
    u: np.ndarray = np.array([-3.0, -1.0, -0.25, 0.0, 0.5, 1.0, 1.0001, 7.0], dtype)
    before = u.copy()
    out = rnnspec.indrnn_constrain(u, 1.0)
    np.testing.assert_array_equal(out, np.array([-1.0, -1.0, -0.25, 0.0, 0.5, 1.0, 1.0, 1.0], dtype))
    assert out.dtype == dtype
    assert out is not u
    assert not np.shares_memory(out, u)
    np.testing.assert_array_equal(u, before)


def test_indrnn_constrain_keeps_the_dtype_with_a_numpy_float64_bound() -> None:
    u = np.linspace(-2, 2, 9, dtype=np.float32).reshape(3, 3)
    out = rnnspec.indrnn_constrain(u, np.float64(1.5))
    assert out.dtype == np.float32
    assert out.shape == (3, 3)
    assert out.max() == np.float32(1.5)
    assert out.min() == np.float32(-1.5)


def test_indrnn_constrain_leaves_values_inside_the_bound_exactly_unchanged() -> None:
    u = np.random.default_rng(0).uniform(-0.9, 0.9, size=100)
    np.testing.assert_array_equal(rnnspec.indrnn_constrain(u, rnnspec.indrnn_bound(10)), u)


def test_indrnn_constrain_projects_init_params_u_back_into_the_bound() -> None:
    (layer,) = rnnspec.init_params("indrnn", input_size=2, hidden_size=50, dtype="float64", seq_len=5)
    bound = rnnspec.indrnn_bound(5)
    stepped = layer["u"] + 0.5  # an optimiser step that overshoots
    projected = rnnspec.indrnn_constrain(stepped, bound)
    assert projected.max() == bound
    assert np.all(np.abs(projected) <= bound)


def test_indrnn_constrain_works_on_torch_tensors() -> None:
    torch = pytest.importorskip("torch")
    u = torch.tensor([-2.0, -0.5, 0.25, 3.0], dtype=torch.float32)
    before = u.clone()
    out = rnnspec.indrnn_constrain(u, 1.0)
    assert isinstance(out, torch.Tensor)
    assert out.dtype == torch.float32
    assert torch.equal(out, torch.tensor([-1.0, -0.5, 0.25, 1.0]))
    assert torch.equal(u, before)
    # The projection as the caller applies it to a parameter: outside the graph, written back.
    weight = torch.nn.Parameter(torch.tensor([1.5, -0.1, -4.0]))
    with torch.no_grad():
        weight.copy_(rnnspec.indrnn_constrain(weight, 1.0))
    assert torch.equal(weight.detach(), torch.tensor([1.0, -0.1, -1.0]))
    assert weight.requires_grad


class _Namespace:
    """A minimal array-API namespace over NumPy, without clip (older versions of the standard)."""

    @staticmethod
    def full_like(x: _ArrayAPIArray, value: float) -> _ArrayAPIArray:
        return _ArrayAPIArray(np.full_like(x.data, value))

    @staticmethod
    def minimum(x: _ArrayAPIArray, y: _ArrayAPIArray) -> _ArrayAPIArray:
        return _ArrayAPIArray(np.minimum(x.data, y.data))

    @staticmethod
    def maximum(x: _ArrayAPIArray, y: _ArrayAPIArray) -> _ArrayAPIArray:
        return _ArrayAPIArray(np.maximum(x.data, y.data))


class _NamespaceWithClip(_Namespace):
    @staticmethod
    def clip(x: _ArrayAPIArray, low: float, high: float) -> _ArrayAPIArray:
        assert type(low) is float
        assert type(high) is float
        return _ArrayAPIArray(np.clip(x.data, low, high))


class _ArrayAPIArray:
    """An array with ``__array_namespace__`` and no ``clip`` method."""

    namespace: type[_Namespace] = _Namespace

    def __init__(self, data: np.ndarray) -> None:
        self.data = data

    def __array_namespace__(self, api_version: str | None = None) -> type[_Namespace]:
        return self.namespace


@pytest.mark.parametrize("namespace", [_Namespace, _NamespaceWithClip])
def test_indrnn_constrain_uses_the_array_api_namespace_of_an_array_without_clip(namespace: type[_Namespace]) -> None:
    u = _ArrayAPIArray(np.array([-5.0, 0.5, 5.0]))
    u.namespace = namespace
    out = rnnspec.indrnn_constrain(u, 2.0)
    assert isinstance(out, _ArrayAPIArray)
    np.testing.assert_array_equal(out.data, [-2.0, 0.5, 2.0])
    np.testing.assert_array_equal(u.data, [-5.0, 0.5, 5.0])


def test_indrnn_constrain_falls_back_to_numpy_for_sequences() -> None:
    u = [-3.0, 0.0, 3.0]
    out = rnnspec.indrnn_constrain(u, 1.0)
    assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out, [-1.0, 0.0, 1.0])
    assert u == [-3.0, 0.0, 3.0]


@pytest.mark.parametrize("bound", [0, 0.0, -1.0, math.inf, -math.inf, math.nan, "1", None, True, np.array([1.0])])
def test_indrnn_constrain_rejects_a_bound_that_is_not_a_positive_finite_number(bound: Any) -> None:
    u = np.zeros(3)
    with pytest.raises(
        OptionError, match=r"^indrnn_constrain: argument bound: expected a positive finite number"
    ) as info:
        rnnspec.indrnn_constrain(u, bound)
    assert info.value.argument == "bound"
    assert isinstance(info.value, ValueError)


def test_a_record_may_carry_an_init_scheme_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """An op whose paper has an initialisation of its own defines it beside its record, not in rnnspec.init."""
    import dataclasses

    import rnnspec.init
    from rnnspec.ops import OPS, InitScheme

    def draw(rng: Any, name: str, shape: tuple[int, ...], dims: Any, options: Any) -> np.ndarray:
        return np.full(shape, options["scale"] * dims["H"])

    own = dataclasses.replace(OPS["rnn"], name="scaled_rnn", init=InitScheme(draw, {"scale": 0.5}))
    monkeypatch.setattr(rnnspec.init, "OPS", {**OPS, "scaled_rnn": own})
    monkeypatch.setattr(rnnspec.init, "_SEQUENCE_OPS", [*rnnspec.init._SEQUENCE_OPS, "scaled_rnn"])
    assert rnnspec.init.init_options("scaled_rnn") == {"scale": 0.5}
    (layer,) = rnnspec.init.init_params("scaled_rnn", input_size=2, hidden_size=4, scale=2.0)
    assert set(layer) == {"w_ih", "w_hh", "b_ih", "b_hh"}
    for array in layer.values():
        np.testing.assert_array_equal(array, np.full(array.shape, 8.0, np.float32))
