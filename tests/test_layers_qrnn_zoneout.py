"""Zoneout with a probability: the op's fractional masks and the torch.nn and Flax NNX QRNN layers' ``zoneout``.

The op: a mask entry ``m`` in [0, 1] makes f ``f + (1 - f) m``. The reference with ``m = p`` equals an
independent torch implementation that writes it as ``1 - (1 - f)(1 - p)`` (values and autograd), its VJP
with fractional masks equals central differences, a one-step case equals the closed form, and masks of
{0, 1} give bitwise what they gave before (a mask of zeros is no mask, on every path of every backend
here). The layers: in evaluation the layer's result is bitwise the op's with the mask filled with p; in
training the masks the layer hands the op are {0, 1}, one per layer (and per direction), at the rate p
(a 6-sigma bound over 10^5 draws), drawn afresh at every call; each framework's train/eval switch picks
them; p = 0 passes no mask; a caller's mask is used instead; a bad p is refused naming the layer and
``zoneout``.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import TORCH_RTOL, assert_relative_close, full_lengths, sigmoid
from helpers_readme import run_section_example
from helpers_recurrences import (
    assert_forward_and_vjp_match_torch,
    assert_vjp_matches_central_differences,
    cotangents_for,
    qrnn_params,
    torch_qrnn,
    torch_state_vjp,
    uniform_state,
)

import rnnspec
import rnnspec.reference as reference
from rnnspec.backends.common.layers import layer_backend
from rnnspec.backends.torch import fused
from rnnspec.backends.torch import nn as torch_nn
from rnnspec.conformance.assertions import assert_tree_close
from rnnspec.conformance.tolerances import reference_tolerance
from rnnspec.errors import OptionError

NUMPY = rnnspec.get_backend("numpy")
DOCS = Path(__file__).resolve().parents[1] / "docs" / "getting-started"
#: The probabilities of the layers' checks, and the bad values of ``zoneout``.
P = 0.25
BAD_PROBABILITIES = [-0.1, 1.0, 1.5, math.nan, "0.1", True, None]


# -- the op: fractional masks -------------------------------------------------------------------


@dataclass
class ZCase:
    """A two-layer ``qrnn`` call of the reference with a zoneout mask per layer (what the checks of
    ``helpers_recurrences`` read)."""

    mode: str
    x: np.ndarray
    params: list[dict[str, np.ndarray]]
    masks: list[np.ndarray]
    lengths: np.ndarray | None
    initial_state: list[dict[str, np.ndarray]]
    reverse: bool

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.x.shape[0], self.x.shape[1], self.masks[0].shape[2]

    def kwargs(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "zoneout_mask": self.masks,
            "lengths": self.lengths,
            "initial_state": self.initial_state,
            "reverse": self.reverse,
        }

    def state_or_zeros(self) -> list[dict[str, np.ndarray]]:
        return self.initial_state

    def run(self, **overrides: Any) -> Any:
        kwargs = {**self.kwargs(), **overrides}
        return NUMPY.qrnn(kwargs.pop("x", self.x), kwargs.pop("params", self.params), **kwargs)

    def vjp(self, cotangents: dict[str, Any]) -> dict[str, Any]:
        return reference.vjp("qrnn", cotangents, self.x, self.params, **self.kwargs())


def fractional_case(seed: int, mode: str, window: int, *, reverse: bool, filled: float | None = None) -> ZCase:
    """Two layers, lengths with a 0 and a full row, a random initial state; each layer's mask holds 0s, 1s and
    fractions (or, with ``filled``, that value everywhere: zoneout's expectation)."""
    rng = np.random.default_rng([seed, window, len(mode)])
    batch, time, inputs, hidden = 3, 5, 3, 2
    params = qrnn_params(rng, mode, inputs, hidden, window, 2)
    masks = []
    for _ in range(2):
        u = rng.uniform(size=(batch, time, hidden))
        mask = np.where(u < 0.2, 1.0, np.where(u < 0.4, 0.0, rng.uniform(0.05, 0.95, u.shape)))
        masks.append(mask if filled is None else np.full(u.shape, filled))
    shapes = [{"c": (batch, hidden), "x_prev": (batch, window - 1, p["w"].shape[1])} for p in params]
    return ZCase(
        mode=mode,
        x=rng.uniform(-1.0, 1.0, (batch, time, inputs)),
        params=params,
        masks=masks,
        lengths=np.array([5, 0, 3]),
        initial_state=uniform_state(rng, shapes),
        reverse=reverse,
    )


FRACTIONAL = [("f", 1, False, None), ("fo", 2, True, None), ("ifo", 3, False, None), ("fo", 2, False, P)]


@pytest.mark.parametrize(("mode", "window", "reverse", "filled"), FRACTIONAL)
def test_fractional_masks_match_an_independent_torch_qrnn_in_values_and_gradients(
    mode: str, window: int, reverse: bool, filled: float | None
) -> None:
    """The independent implementation writes zoneout as 1 - (1 - f)(1 - m), the expected gate for m = p."""
    case = fractional_case(1, mode, window, reverse=reverse, filled=filled)
    cotangents = cotangents_for(case, 11)
    batch, time, _ = case.shape
    forward, grads = torch_state_vjp(
        torch_qrnn,
        case.x,
        case.params,
        case.initial_state,
        cotangents,
        mode=mode,
        masks=case.masks,
        lengths=full_lengths(case.lengths, batch, time),
        reverse=reverse,
    )
    assert_forward_and_vjp_match_torch(case, cotangents, forward, grads)


@pytest.mark.parametrize(("mode", "window", "reverse", "filled"), FRACTIONAL)
def test_the_vjp_with_fractional_masks_matches_central_differences(
    mode: str, window: int, reverse: bool, filled: float | None
) -> None:
    case = fractional_case(2, mode, window, reverse=reverse, filled=filled)
    assert_vjp_matches_central_differences(case, cotangents_for(case, 12))


def test_one_step_with_the_mask_filled_with_p_is_the_expected_gates_closed_form() -> None:
    rng = np.random.default_rng(3)
    x, c0 = rng.uniform(-1.0, 1.0, (4, 1, 3)), rng.uniform(-1.0, 1.0, (4, 2))
    params = qrnn_params(rng, "f", 3, 2, 1, 1)
    w, b = params[0]["w"][:, :, 0], params[0]["b"]
    pre = x[:, 0] @ w.T + b
    z, f = np.tanh(pre[:, :2]), sigmoid(pre[:, 2:])
    expected = 1.0 - (1.0 - f) * (1.0 - P)
    want = expected * c0 + (1.0 - expected) * z
    state = [{"c": c0, "x_prev": np.zeros((4, 0, 3))}]
    got = NUMPY.qrnn(x, params, mode="f", zoneout_mask=np.full((4, 1, 2), P), initial_state=state)
    assert_relative_close(got.outputs[:, 0], want, TORCH_RTOL, "c_1")


#: Each backend here, and torch's plain path beside its native one: (id, backend, array converter, plain).
PATHS = ["numpy", "torch", "torch-plain", "jax"]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("mode", ["fo", "ifo"])
def test_a_mask_of_zeros_is_bitwise_no_mask_and_ones_keep_f_at_one_on_every_backend(
    mode: str, path: str, x64: None
) -> None:
    """{0, 1} masks give what they always gave: m = 0 leaves f unchanged bit for bit."""
    name = path.removesuffix("-plain")
    if name == "jax":
        convert: Any = pytest.importorskip("jax").numpy.asarray
    else:
        convert = torch.from_numpy if name == "torch" else (lambda a: a)
    backend = rnnspec.get_backend(name)
    case = fractional_case(4, mode, 2, reverse=False)
    zeros = [np.zeros_like(m) for m in case.masks]
    binary = [(m == 1.0).astype(np.float64) for m in case.masks]
    x, params = convert(case.x), [{k: convert(v) for k, v in p.items()} for p in case.params]
    state = [{k: convert(v) for k, v in s.items()} for s in case.initial_state]
    kwargs = {"mode": mode, "lengths": case.lengths, "initial_state": state}
    with fused.plain_path() if path == "torch-plain" else contextlib.nullcontext():
        none = backend.qrnn(x, params, **kwargs)
        with_zeros = backend.qrnn(x, params, zoneout_mask=[convert(m) for m in zeros], **kwargs)
        with_binary = backend.qrnn(x, params, zoneout_mask=[convert(m) for m in binary], **kwargs)
    np.testing.assert_array_equal(np.asarray(with_zeros.outputs), np.asarray(none.outputs))
    want = NUMPY.qrnn(case.x, case.params, zoneout_mask=binary, **{**kwargs, "initial_state": case.initial_state})
    tol = reference_tolerance("float64", steps=2 * case.x.shape[1])
    assert_tree_close(np.asarray(with_binary.outputs), want.outputs, tol, context=f"{path}, a {{0, 1}} mask")


def test_a_mask_entry_outside_0_1_or_nan_is_refused_naming_the_mask() -> None:
    case = fractional_case(5, "fo", 1, reverse=False)
    for bad in (-0.5, 1.0 + 1e-12, math.nan):
        masks = [case.masks[0], case.masks[1].copy()]
        masks[1][0, 0, 0] = bad
        with pytest.raises(OptionError, match=r"zoneout_mask\[1\]") as info:
            case.run(zoneout_mask=masks)
        assert "[0, 1]" in str(info.value)


# -- the layers ------------------------------------------------------------------------------------


class Spy:
    """Records the ``zoneout_mask`` of every call of a backend's qrnn, then runs it."""

    def __init__(self, method: Any) -> None:
        self.method, self.masks = method, []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.masks.append(kwargs.get("zoneout_mask"))
        return self.method(*args, **kwargs)


def spy_on(monkeypatch: pytest.MonkeyPatch, backend: str) -> Spy:
    target = layer_backend(backend)
    spy = Spy(target.qrnn)
    monkeypatch.setattr(target, "qrnn", spy)
    return spy


def as_numpy(a: Any) -> np.ndarray:
    return np.asarray(a.detach() if hasattr(a, "detach") else a, dtype=np.float64)


def assert_bernoulli(masks: list[Any], shape: tuple[int, ...], p: float, what: str) -> None:
    """{0, 1} masks of ``shape``, pairwise different, each with a rate of ones within 6 sigma of ``p``."""
    drawn = [as_numpy(m) for m in masks]
    for k, m in enumerate(drawn):
        assert m.shape == shape, f"{what}[{k}]: shape {m.shape}"
        assert set(np.unique(m)) <= {0.0, 1.0}, f"{what}[{k}]: not a {{0, 1}} mask"
        bound = 6.0 * math.sqrt(p * (1.0 - p) / m.size)
        assert abs(m.mean() - p) <= bound, f"{what}[{k}]: rate {m.mean():.4f}, p {p} +- {bound:.4f}"
    for j in range(len(drawn)):
        for k in range(j):
            assert not np.array_equal(drawn[j], drawn[k]), f"{what}: masks {k} and {j} are the same draw"


#: Large enough for the 6-sigma bound on the rate to be tight (10^5 draws a mask).
BIG = (50, 64, 4, 32)  # batch, time, input size, hidden size


class TestTorch:
    def layer(self, **options: Any) -> Any:
        torch.manual_seed(0)
        return torch_nn.QRNN(3, 4, dtype=torch.float64, **options)

    def test_in_evaluation_the_layer_is_the_op_with_the_mask_filled_with_p(self) -> None:
        for batch_first in (True, False):
            layer = self.layer(num_layers=2, zoneout=P, window=2, batch_first=batch_first).eval()
            x = torch.randn(5, 6, 3, dtype=torch.float64)
            got = layer(x, lengths=torch.tensor([5, 6, 0, 2, 6]) if batch_first else None)
            xb = x if batch_first else x.transpose(0, 1)
            mask = torch.full((*xb.shape[:2], 4), P, dtype=torch.float64)
            want = layer_backend("torch").qrnn(
                xb,
                layer.canonical_params(),
                mode="fo",
                zoneout_mask=mask,
                lengths=torch.tensor([5, 6, 0, 2, 6]) if batch_first else None,
            )
            outputs = want.outputs if batch_first else want.outputs.transpose(0, 1)
            torch.testing.assert_close(got.outputs, outputs, rtol=0, atol=0)

    def test_a_bidirectional_layer_in_evaluation_is_itself_given_the_mask_filled_with_p(self) -> None:
        layer = self.layer(num_layers=2, zoneout=P, bidirectional=True).eval()
        x = torch.randn(5, 6, 3, dtype=torch.float64)
        given = layer(x, zoneout_mask=torch.full((5, 6, 4), P, dtype=torch.float64))
        torch.testing.assert_close(layer(x).outputs, given.outputs, rtol=0, atol=0)
        assert not torch.equal(layer(x).outputs, self.layer(num_layers=2, bidirectional=True).eval()(x).outputs)

    def test_in_training_each_layer_gets_its_own_bernoulli_mask_drawn_afresh_at_every_call(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        batch, time, inputs, hidden = BIG
        layer = torch_nn.QRNN(inputs, hidden, num_layers=2, zoneout=P, dtype=torch.float64)
        assert layer.training, "torch modules start in training mode"
        spy = spy_on(monkeypatch, "torch")
        x = torch.randn(batch, time, inputs, dtype=torch.float64)
        first, second = layer(x).outputs, layer(x).outputs
        assert not torch.equal(first, second)
        assert_bernoulli([*spy.masks[0], *spy.masks[1]], (batch, time, hidden), P, "masks of two calls")
        torch.manual_seed(7)
        again = layer(x).outputs
        torch.manual_seed(7)
        torch.testing.assert_close(layer(x).outputs, again, rtol=0, atol=0)  # torch's generator drives it

    def test_a_bidirectional_layer_draws_one_mask_per_layer_and_direction(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        batch, time, inputs, hidden = BIG
        layer = torch_nn.QRNN(inputs, hidden, num_layers=2, zoneout=P, bidirectional=True, dtype=torch.float64)
        spy = spy_on(monkeypatch, "torch")
        layer(torch.randn(batch, time, inputs, dtype=torch.float64))
        assert len(spy.masks) == 4  # layer 0 forward, reverse, layer 1 forward, reverse
        assert_bernoulli(spy.masks, (batch, time, hidden), P, "bidirectional masks")

    def test_train_and_eval_switch_between_drawn_masks_and_their_expectation(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        layer = self.layer(num_layers=3, zoneout=P, batch_first=False)
        spy = spy_on(monkeypatch, "torch")
        x = torch.randn(6, 5, 3, dtype=torch.float64)  # (time, batch, features): the op sees them batch-major
        layer.eval()
        layer(x)
        layer.train()
        layer(x)
        expectation, drawn = spy.masks
        torch.testing.assert_close(expectation, torch.full((5, 6, 4), P, dtype=torch.float64), rtol=0, atol=0)
        assert len(drawn) == 3
        assert all(m.shape == (5, 6, 4) and set(m.unique().tolist()) <= {0.0, 1.0} for m in drawn)

    def test_zero_zoneout_passes_no_mask_and_a_callers_mask_is_used_instead(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        spy = spy_on(monkeypatch, "torch")
        x = torch.randn(5, 6, 3, dtype=torch.float64)
        plain = self.layer(num_layers=2)
        plain(x)
        plain.eval()(x)
        mine = torch.ones(5, 6, 4, dtype=torch.float64)
        self.layer(num_layers=2, zoneout=P)(x, zoneout_mask=mine)
        assert spy.masks[:2] == [None, None]
        assert spy.masks[2] is mine

    @pytest.mark.parametrize("bad", BAD_PROBABILITIES, ids=repr)
    def test_a_bad_probability_is_refused_naming_the_layer_and_zoneout(self, bad: Any) -> None:
        with pytest.raises(OptionError) as info:
            torch_nn.QRNN(3, 4, zoneout=bad)
        assert (info.value.op, info.value.argument) == ("QRNN", "zoneout")

    def test_the_repr_shows_a_nonzero_zoneout(self) -> None:
        assert "zoneout=0.25" in repr(self.layer(zoneout=P))
        assert "zoneout" not in repr(self.layer())

    def test_gradients_reach_the_parameters_through_drawn_masks(self) -> None:
        layer = self.layer(num_layers=2, zoneout=P)
        layer(torch.randn(5, 6, 3, dtype=torch.float64)).outputs.sum().backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in layer.parameters())


class TestNNX:
    @pytest.fixture(autouse=True)
    def _x64(self, x64: None) -> None:
        return None

    def modules(self) -> tuple[Any, Any, Any]:
        pytest.importorskip("jax")
        nnx = pytest.importorskip("flax.nnx")
        import jax.numpy as jnp

        from rnnspec.backends.jax import nnx as layers

        return nnx, jnp, layers

    def layer(self, inputs: int = 3, hidden: int = 4, **options: Any) -> Any:
        nnx, jnp, layers = self.modules()
        return layers.QRNN(inputs, hidden, param_dtype=jnp.float64, rngs=nnx.Rngs(0), **options)

    def test_in_evaluation_the_layer_is_the_op_with_the_mask_filled_with_p(self) -> None:
        nnx, jnp, _ = self.modules()
        layer = self.layer(num_layers=2, zoneout=P, window=2)
        layer.eval()
        x = jnp.asarray(np.random.default_rng(0).standard_normal((5, 6, 3)))
        want = layer_backend("jax").qrnn(
            x, layer.canonical_params(), mode="fo", zoneout_mask=jnp.full((5, 6, 4), P, jnp.float64)
        )
        np.testing.assert_array_equal(np.asarray(layer(x).outputs), np.asarray(want.outputs))
        jitted = nnx.jit(lambda m, x: m(x).outputs)
        np.testing.assert_allclose(np.asarray(jitted(layer, x)), np.asarray(want.outputs), rtol=TORCH_RTOL, atol=0)

    def test_in_training_each_layer_gets_its_own_bernoulli_mask_drawn_afresh_at_every_call(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        _, jnp, _ = self.modules()
        batch, time, inputs, hidden = BIG
        layer = self.layer(inputs, hidden, num_layers=2, zoneout=P)
        assert layer.deterministic is False, "as nnx.Dropout, the layer starts in training mode"
        spy = spy_on(monkeypatch, "jax")
        x = jnp.asarray(np.random.default_rng(1).standard_normal((batch, time, inputs)))
        first, second = layer(x).outputs, layer(x).outputs
        assert not np.array_equal(np.asarray(first), np.asarray(second))
        assert_bernoulli([*spy.masks[0], *spy.masks[1]], (batch, time, hidden), P, "masks of two calls")

    def test_draws_follow_the_rngs_seeds_and_change_under_jit(self) -> None:
        nnx, jnp, _ = self.modules()
        layer = self.layer(num_layers=2, zoneout=P)
        x = jnp.asarray(np.random.default_rng(2).standard_normal((5, 6, 3)))
        runs = {seed: layer(x, rngs=nnx.Rngs(dropout=seed)) for seed in (1, 2)}  # Flax's convention: outputs
        again = layer(x, rngs=nnx.Rngs(dropout=1))
        np.testing.assert_array_equal(np.asarray(runs[1]), np.asarray(again))
        assert not np.array_equal(np.asarray(runs[1]), np.asarray(runs[2]))
        twin = self.layer(num_layers=2, zoneout=P)  # the same constructor seed: the same stream
        np.testing.assert_array_equal(np.asarray(layer(x).outputs), np.asarray(twin(x).outputs))
        jitted = nnx.jit(lambda m, x: m(x).outputs)
        assert not np.array_equal(np.asarray(jitted(layer, x)), np.asarray(jitted(layer, x)))

    def test_deterministic_train_and_eval_switch_between_drawn_masks_and_their_expectation(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        _, jnp, _ = self.modules()
        layer = self.layer(num_layers=3, zoneout=P, deterministic=True, batch_first=False)
        spy = spy_on(monkeypatch, "jax")
        x = jnp.zeros((6, 5, 3), jnp.float64)  # (time, batch, features): the op sees them batch-major
        layer(x)
        layer(x, deterministic=False)
        layer.train()
        layer(x)
        layer.eval()
        layer(x)
        expectation, drawn, trained, evaluated = spy.masks
        for mask in (expectation, evaluated):
            np.testing.assert_array_equal(np.asarray(mask), np.full((5, 6, 4), P))
        for masks in (drawn, trained):
            assert len(masks) == 3
            assert all(np.asarray(m).shape == (5, 6, 4) and set(np.unique(np.asarray(m))) <= {0.0, 1.0} for m in masks)

    def test_zero_zoneout_passes_no_mask_and_a_callers_mask_is_used_instead(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        _, jnp, _ = self.modules()
        spy = spy_on(monkeypatch, "jax")
        x = jnp.zeros((5, 6, 3), jnp.float64)
        self.layer(num_layers=2)(x)
        self.layer(num_layers=2, deterministic=True)(x)
        mine = jnp.ones((5, 6, 4), jnp.float64)
        self.layer(num_layers=2, zoneout=P)(x, zoneout_mask=mine)
        assert spy.masks[:2] == [None, None]
        np.testing.assert_array_equal(np.asarray(spy.masks[2]), np.asarray(mine))

    @pytest.mark.parametrize("bad", BAD_PROBABILITIES, ids=repr)
    def test_a_bad_probability_is_refused_naming_the_layer_and_zoneout(self, bad: Any) -> None:
        with pytest.raises(OptionError) as info:
            self.layer(zoneout=bad)
        assert (info.value.op, info.value.argument) == ("QRNN", "zoneout")

    @pytest.mark.parametrize("bad", [1, "yes", None])
    def test_a_deterministic_that_is_no_bool_is_refused_naming_it(self, bad: Any) -> None:
        _, jnp, _ = self.modules()
        with pytest.raises(OptionError) as info:
            self.layer(deterministic=bad)
        assert info.value.argument == "deterministic"
        with pytest.raises(OptionError) as info:
            self.layer(zoneout=P)(jnp.zeros((2, 3, 3), jnp.float64), deterministic=bad if bad is not None else "no")
        assert info.value.argument == "deterministic"


# -- the getting-started pages -------------------------------------------------------------------------


@pytest.mark.parametrize("page", ["torch", "jax"])
def test_the_getting_started_zoneout_example_runs_drawing_in_training_and_not_in_evaluation(page: str) -> None:
    if page == "jax":
        pytest.importorskip("flax.nnx")
    namespace = run_section_example(DOCS / f"{page}.md", "### Zoneout")
    qrnn, x, train_out, eval_out = (namespace[k] for k in ("qrnn", "x", "train_out", "eval_out"))
    assert not np.array_equal(as_numpy(train_out), as_numpy(eval_out))
    np.testing.assert_array_equal(as_numpy(qrnn(x).outputs), as_numpy(eval_out))
