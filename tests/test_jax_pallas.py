"""The Pallas kernels of the elementwise recurrences (rnnspec.backends.jax.pallas_recurrences).

Run with Pallas' interpreter on CPU at small sizes, against the NumPy reference's
``linear_recurrence`` and ``indrnn_recurrence``: values, the final state, and the
reverse mode (``jax.vjp`` through the custom VJP) against ``Backend.vjp``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

jax = pytest.importorskip("jax")
pytest.importorskip("jax.experimental.pallas")

import jax.numpy as jnp  # noqa: E402

import rnnspec  # noqa: E402
from rnnspec.backends.jax.pallas_recurrences import indrnn_scan_pallas, linear_scan_pallas  # noqa: E402
from rnnspec.conformance.assertions import assert_tree_close  # noqa: E402
from rnnspec.conformance.tolerances import tolerance  # noqa: E402
from rnnspec.errors import DtypeError, OptionError, ShapeError  # noqa: E402

REFERENCE = rnnspec.get_backend("numpy")
BATCH, TIME, HIDDEN = 3, 5, 6


@dataclass(frozen=True)
class Recurrence:
    """One recurrence: the reference op, its array argument names and the kernel as f(x, y, h0, valid)."""

    op: str
    names: tuple[str, str]
    options: tuple[tuple[str, str], ...] = ()

    def kernel(self, *, interpret: bool = True, block_size: int | None = None) -> Callable[..., Any]:
        if self.op == "linear_recurrence":
            return lambda x, y, h0, valid: linear_scan_pallas(
                x, y, h0, valid, interpret=interpret, block_size=block_size
            )
        activation = dict(self.options)["activation"]
        return lambda x, y, h0, valid: indrnn_scan_pallas(
            x, y, h0, valid, activation, interpret=interpret, block_size=block_size
        )

    def inputs(self, seed: int, dtype: str, time: int = TIME) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        if self.op == "linear_recurrence":
            second = rng.uniform(-1.0, 1.0, (BATCH, time, HIDDEN))
            first = rng.uniform(-1.2, 1.2, (BATCH, time, HIDDEN))
        else:
            first = rng.uniform(-1.0, 1.0, (BATCH, time, HIDDEN))
            second = rng.uniform(-1.0, 1.0, (HIDDEN,))
        h0 = rng.uniform(-1.0, 1.0, (BATCH, HIDDEN))
        return first.astype(dtype), second.astype(dtype), h0.astype(dtype)


RECURRENCES = [
    pytest.param(Recurrence("linear_recurrence", ("a", "b")), id="linear"),
    pytest.param(Recurrence("indrnn_recurrence", ("pre", "u"), (("activation", "relu"),)), id="indrnn-relu"),
    pytest.param(Recurrence("indrnn_recurrence", ("pre", "u"), (("activation", "tanh"),)), id="indrnn-tanh"),
]

#: (dtype, lengths or None, block size): a 0-length row among variable lengths, and a ragged last block (6 units by 4).
CASES = [
    pytest.param("float32", [TIME, 2, 0], 4, id="float32-lengths-ragged"),
    pytest.param("float32", None, None, id="float32-full"),
    pytest.param("float64", [0, TIME, 3], None, id="float64-lengths"),
    pytest.param("float16", [TIME, 0, 4], 4, id="float16-lengths-ragged"),
]


@contextlib.contextmanager
def precision(dtype: str) -> Iterator[None]:
    """float64 arrays need jax_enable_x64, switched on for the test alone."""
    if dtype == "float64":
        with jax.enable_x64(True):
            yield
    else:
        yield


def valid_mask(lengths: np.ndarray, time: int = TIME) -> np.ndarray:
    return np.arange(time)[None, :] < lengths[:, None]


def final_of_reference(h: np.ndarray, h0: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The state after each row's last valid step: h[r, L-1], or h0 for a 0-length row."""
    last = np.clip(lengths - 1, 0, None)
    picked = h[np.arange(len(lengths)), last]
    return np.where((lengths > 0)[:, None], picked, h0)


def reference_vjp(
    rec: Recurrence,
    first: np.ndarray,
    second: np.ndarray,
    h0: np.ndarray,
    lengths: np.ndarray,
    dh: np.ndarray,
    dfinal: np.ndarray,
) -> dict[str, np.ndarray]:
    """The reference's VJP with a cotangent on the final state too (it is h at the last valid step, or h0)."""
    rows = np.arange(len(lengths))
    dh_total = dh.astype(np.float64)
    has_steps = lengths > 0
    dh_total[rows[has_steps], lengths[has_steps] - 1] += dfinal[has_steps]
    grads = REFERENCE.vjp(
        rec.op, {"h": dh_total.astype(dh.dtype)}, first, second, h0, lengths=lengths, **dict(rec.options)
    )
    initial = grads["initial"].astype(np.float64) + np.where(has_steps[:, None], 0.0, dfinal)
    return {rec.names[0]: grads[rec.names[0]], rec.names[1]: grads[rec.names[1]], "h0": initial.astype(h0.dtype)}


def context(rec: Recurrence, dtype: str, lengths: Any) -> str:
    return (
        f"backend jax (Pallas, interpret), op {rec.op}, options {dict(rec.options)}, dtype {dtype}, lengths {lengths}"
    )


@pytest.mark.parametrize("rec", RECURRENCES)
@pytest.mark.parametrize(("dtype", "lengths", "block"), CASES)
def test_values_and_reverse_mode_match_the_reference(rec: Recurrence, dtype: str, lengths: Any, block: Any) -> None:
    check_against_reference(rec, dtype, lengths, block, interpret=True)


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="the compiled (not interpreted) kernels need a GPU")
@pytest.mark.parametrize("rec", RECURRENCES)
@pytest.mark.parametrize(("dtype", "lengths", "block"), CASES)
def test_compiled_kernels_on_a_gpu_match_the_reference(rec: Recurrence, dtype: str, lengths: Any, block: Any) -> None:
    check_against_reference(rec, dtype, lengths, block, interpret=False)


def check_against_reference(rec: Recurrence, dtype: str, lengths: Any, block: Any, *, interpret: bool) -> None:
    """Values, final state and VJP (cotangents on h and on the final state) of one case against the reference."""
    first, second, h0 = rec.inputs(0, dtype)
    lengths_array = np.full(BATCH, TIME) if lengths is None else np.asarray(lengths)
    rng = np.random.default_rng(1)
    dh = rng.standard_normal((BATCH, TIME, HIDDEN)).astype(dtype)
    dfinal = rng.standard_normal((BATCH, HIDDEN)).astype(dtype)
    originals = [array.copy() for array in (first, second, h0)]

    with precision(dtype):
        valid = None if lengths is None else jnp.asarray(valid_mask(lengths_array))
        run = rec.kernel(interpret=interpret, block_size=block)
        (h, final), pullback = jax.vjp(lambda x, y, s: run(x, y, s, valid), first, second, h0)
        grads = pullback((jnp.asarray(dh), jnp.asarray(dfinal)))
        ours = {"h": np.asarray(h), "final": np.asarray(final)}
        our_grads = dict(zip((*rec.names, "h0"), (np.asarray(g) for g in grads), strict=True))

    options = dict(rec.options)
    h_ref = getattr(REFERENCE, rec.op)(first, second, h0, lengths=lengths, **options)
    expected = {"h": h_ref, "final": final_of_reference(h_ref, h0, lengths_array)}
    where = context(rec, dtype, lengths) + ("" if interpret else ", compiled")
    assert_tree_close(ours, expected, tolerance(dtype, steps=TIME), context=where)
    expected_grads = reference_vjp(rec, first, second, h0, lengths_array, dh, dfinal)
    assert_tree_close(our_grads, expected_grads, tolerance(dtype, steps=TIME, kind="gradient"), context=where)
    for before, after in zip(originals, (first, second, h0), strict=True):
        np.testing.assert_array_equal(after, before)


@pytest.mark.parametrize("rec", RECURRENCES)
def test_the_undifferentiated_path_matches_the_reference(rec: Recurrence) -> None:
    first, second, h0 = rec.inputs(2, "float32")
    lengths = np.array([3, 0, TIME])
    h, final = rec.kernel()(first, second, h0, valid_mask(lengths))
    expected = getattr(REFERENCE, rec.op)(first, second, h0, lengths=lengths, **dict(rec.options))
    ours = {"h": np.asarray(h), "final": np.asarray(final)}
    want = {"h": expected, "final": final_of_reference(expected, h0, lengths)}
    assert_tree_close(ours, want, tolerance("float32", steps=TIME), context=context(rec, "float32", lengths))


@pytest.mark.parametrize("rec", RECURRENCES)
def test_a_mask_of_valid_suffixes_runs_each_row_backwards(rec: Recurrence) -> None:
    """Flipping time turns reverse=True's valid prefixes into suffixes: the state is h0 until the first valid step."""
    first, second, h0 = rec.inputs(3, "float32")
    lengths = np.array([2, TIME, 0])
    dh = np.random.default_rng(4).standard_normal((BATCH, TIME, HIDDEN)).astype(np.float32)
    flip = (lambda x: x[:, ::-1]) if rec.op == "linear_recurrence" else (lambda x: x)
    valid = jnp.asarray(valid_mask(lengths)[:, ::-1])
    run = rec.kernel()

    def flipped(x: Any, y: Any, s: Any) -> Any:
        h, _ = run(x[:, ::-1], flip(y), s, valid)
        return h[:, ::-1]

    h, pullback = jax.vjp(flipped, first, second, h0)
    grads = pullback(jnp.asarray(dh))
    options = dict(rec.options)
    expected = getattr(REFERENCE, rec.op)(first, second, h0, lengths=lengths, reverse=True, **options)
    want = REFERENCE.vjp(rec.op, {"h": dh}, first, second, h0, lengths=lengths, reverse=True, **options)
    where = context(rec, "float32", lengths) + ", valid suffixes"
    assert_tree_close(np.asarray(h), expected, tolerance("float32", steps=TIME), context=where)
    ours = dict(zip((*rec.names, "initial"), (np.asarray(g) for g in grads), strict=True))
    assert_tree_close(ours, want, tolerance("float32", steps=TIME, kind="gradient"), context=where)


def test_jax_grad_under_jit_matches_the_reference() -> None:
    rec = Recurrence("indrnn_recurrence", ("pre", "u"), (("activation", "tanh"),))
    pre, u, h0 = rec.inputs(5, "float32")
    lengths = np.array([TIME, 1, 3])
    valid = jnp.asarray(valid_mask(lengths))
    run = rec.kernel()

    @jax.jit
    def loss_grad(p: Any, w: Any, s: Any) -> Any:
        return jax.grad(lambda p, w, s: run(p, w, s, valid)[0].sum(), argnums=(0, 1, 2))(p, w, s)

    grads = dict(zip(("pre", "u", "initial"), (np.asarray(g) for g in loss_grad(pre, u, h0)), strict=True))
    ones = np.ones((BATCH, TIME, HIDDEN), np.float32)
    want = REFERENCE.vjp(rec.op, {"h": ones}, pre, u, h0, lengths=lengths, activation="tanh")
    assert_tree_close(grads, want, tolerance("float32", steps=TIME, kind="gradient"), context="jit(grad(...))")


@pytest.mark.parametrize("rec", RECURRENCES)
def test_no_steps_give_empty_outputs_and_the_initial_state(rec: Recurrence) -> None:
    first, second, h0 = rec.inputs(6, "float32", time=0)
    h, final = rec.kernel()(first, second, h0, np.zeros((BATCH, 0), bool))
    assert np.asarray(h).shape == (BATCH, 0, HIDDEN)
    np.testing.assert_array_equal(np.asarray(final), h0)


def test_no_initial_state_starts_from_zeros() -> None:
    rec = Recurrence("linear_recurrence", ("a", "b"))
    a, b, _ = rec.inputs(7, "float32")
    h, _ = linear_scan_pallas(a, b, None, None, interpret=True)
    expected = REFERENCE.linear_recurrence(a, b)
    assert_tree_close(np.asarray(h), expected, tolerance("float32", steps=TIME), context="h0=None")


def test_bad_calls_name_the_argument_and_the_backend() -> None:
    a = np.zeros((BATCH, TIME, HIDDEN), np.float32)
    with pytest.raises(ShapeError, match=r"linear_recurrence \[backend 'jax'\]: argument b: expected shape"):
        linear_scan_pallas(a, a[:, :2], None, None, interpret=True)
    with pytest.raises(DtypeError, match=r"argument b: expected dtype float32"):
        linear_scan_pallas(a, a.astype(np.float16), None, None, interpret=True)
    with pytest.raises(ShapeError, match=r"argument valid: expected a \(batch, time\)"):
        linear_scan_pallas(a, a, None, np.ones((BATCH, TIME + 1), bool), interpret=True)
    with pytest.raises(ShapeError, match=r"indrnn_recurrence \[backend 'jax'\]: argument u: expected shape \(6,\)"):
        indrnn_scan_pallas(a, np.zeros(5, np.float32), None, None, "relu", interpret=True)
    with pytest.raises(OptionError, match=r"argument activation: expected 'relu' or 'tanh', got 'sigmoid'"):
        indrnn_scan_pallas(a, np.zeros(HIDDEN, np.float32), None, None, "sigmoid", interpret=True)
    with pytest.raises(OptionError, match=r"argument block_size: expected a power of two"):
        linear_scan_pallas(a, a, None, None, interpret=True, block_size=3)
