"""The torch backend's phased_lstm inference path over the open units (``backends/common/kernels/phased.c``).

At inference (no gradient can flow), on float32 and float64 CPU tensors, a layer whose time
gate is open at no more than ``OPEN_UNITS_MAX_DENSITY`` of its valid (row, step, unit) entries
runs the kernel that computes only the open units; denser gates, gradients, a forced plain path
and ``RNNSPEC_NATIVE=0`` run the plain loop. Both sides of the threshold give the reference's
values (stacks, peepholes, unsorted lengths with an empty row, reverse, initial states, shared
and per-row timestamps, a leak), NaN and infinities go where the reference puts them, and the
caller's tensors are never written. Skipped where no C compiler builds the library.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import rnnspec  # noqa: E402  (after the skip: the backend imports torch)
from rnnspec.backends.common import native  # noqa: E402
from rnnspec.backends.torch import fused  # noqa: E402
from rnnspec.backends.torch import phased_lstm as torch_phased  # noqa: E402
from rnnspec.conformance.assertions import assert_tree_close  # noqa: E402
from rnnspec.conformance.tolerances import reference_tolerance  # noqa: E402

if native.library("phased") is None:
    pytest.skip(f"the native phased kernels are unavailable: {native.unavailable('phased')}", allow_module_level=True)

TORCH = rnnspec.get_backend("torch")
REFERENCE = rnnspec.get_backend("numpy")
OP = "phased_lstm"


def _call(
    *,
    dtype: str = "float64",
    batch: int = 5,
    time: int = 30,
    hidden: int = 12,
    layers: int = 2,
    r_on: float = 0.05,
    leak: float = 0.0,
    peepholes: bool = False,
    lengths: tuple[int, ...] | None = (30, 11, 0, 29, 17),
    reverse: bool = False,
    initial_state: bool = True,
    shared_clock: bool = False,
    seed: int = 0,
    poison: Callable[[np.ndarray, list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]], None] | None = None,
) -> tuple[np.ndarray, list[dict[str, np.ndarray]], dict[str, Any]]:
    """A phased_lstm call as NumPy arrays: x, params and keyword arguments (timestamps, leak, ...)."""
    rng = np.random.default_rng(seed)
    params = rnnspec.init_params(
        OP, input_size=3, hidden_size=hidden, num_layers=layers, seed=seed, peepholes=peepholes, period_range=(1, 20)
    )
    params = [{k: v.astype(dtype) for k, v in p.items()} for p in params]
    for p in params:
        p["r_on"][...] = r_on
    x = rng.standard_normal((batch, time, 3)).astype(dtype)
    gaps = rng.uniform(0.1, 2.0, (1 if shared_clock else batch, time))
    timestamps = np.broadcast_to(np.cumsum(gaps, axis=1), (batch, time)).astype(dtype)
    state = [{n: rng.standard_normal((batch, hidden)).astype(dtype) for n in ("h", "c")} for _ in range(layers)]
    if poison is not None:
        poison(x, params, state)
    kwargs: dict[str, Any] = {"timestamps": timestamps, "leak": leak, "peepholes": peepholes, "reverse": reverse}
    if lengths is not None:
        kwargs["lengths"] = np.asarray(lengths[:batch])
    if initial_state:
        kwargs["initial_state"] = state
    return x, params, kwargs


def _torch_args(x: np.ndarray, params: Any, kwargs: dict[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
    def t(a: Any) -> Any:
        return torch.from_numpy(np.array(a)) if isinstance(a, np.ndarray) else a

    converted = {k: (v if k == "lengths" else rnnspec.tree.tree_map(t, v)) for k, v in kwargs.items()}
    return t(x), rnnspec.tree.tree_map(t, params), converted


def _assert_matches_reference(x: np.ndarray, params: Any, kwargs: dict[str, Any], path: str) -> None:
    with np.errstate(invalid="ignore"):
        want = REFERENCE.phased_lstm(x, params, **kwargs)
    tx, tparams, tkwargs = _torch_args(x, params, kwargs)
    got = TORCH.to_numpy(TORCH.phased_lstm(tx, tparams, **tkwargs))
    assert fused.last_path(OP) == path
    tol = reference_tolerance(str(x.dtype), steps=x.shape[1])
    assert_tree_close(got, want, tol, context=f"torch phased_lstm, path {path}")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("peepholes", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("shared_clock", [False, True])
def test_a_mostly_closed_gate_at_inference_runs_the_open_units_and_equals_the_reference(
    dtype: str, peepholes: bool, reverse: bool, shared_clock: bool
) -> None:
    x, params, kwargs = _call(dtype=dtype, peepholes=peepholes, reverse=reverse, shared_clock=shared_clock)
    _assert_matches_reference(x, params, kwargs, "open-units")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_gate_open_at_most_steps_runs_the_plain_loop_and_equals_the_reference(dtype: str) -> None:
    x, params, kwargs = _call(dtype=dtype, r_on=0.9)
    _assert_matches_reference(x, params, kwargs, "plain")


def test_the_density_threshold_is_crossed_at_its_value() -> None:
    """Just below the threshold the open-units kernel runs, just above it the plain loop: both the reference's."""
    x, params, kwargs = _call(layers=1, lengths=None, time=40, hidden=16, r_on=1.0)
    # Unit j is open at every step when j < n, closed at every step otherwise (r_on 1 against a tiny r_on).
    entries = 16
    limit = int(torch_phased.OPEN_UNITS_MAX_DENSITY * entries)
    for open_units, path in ((limit, "open-units"), (limit + 1, "plain")):
        params[0]["r_on"][:] = 1e-9
        params[0]["r_on"][:open_units] = 1.0
        params[0]["s"][:] = 0.5 * params[0]["tau"]  # phase 1/2 at t = 0: closed for r_on 1e-9
        kwargs["timestamps"] = np.zeros_like(kwargs["timestamps"])
        _assert_matches_reference(x, params, kwargs, path)


def test_a_leak_keeps_every_unit_open_so_the_plain_loop_runs() -> None:
    x, params, kwargs = _call(leak=1e-3)
    _assert_matches_reference(x, params, kwargs, "plain")


def test_a_call_that_needs_gradients_runs_the_plain_loop() -> None:
    x, params, kwargs = _call()
    tx, tparams, tkwargs = _torch_args(x, params, kwargs)
    tparams[0]["w_hh"].requires_grad_(True)
    TORCH.phased_lstm(tx, tparams, **tkwargs).outputs.sum().backward()
    assert fused.last_path(OP) == "plain"
    with torch.no_grad():
        TORCH.phased_lstm(tx, tparams, **tkwargs)
    assert fused.last_path(OP) == "open-units"


def test_a_forced_plain_path_and_native_off_run_the_plain_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    x, params, kwargs = _call()
    with fused.plain_path():
        _assert_matches_reference(x, params, kwargs, "plain")
    monkeypatch.setenv(native.ENV, "0")
    _assert_matches_reference(x, params, kwargs, "plain")


def _x_nan(x: np.ndarray, params: Any, state: Any) -> None:
    x[1, 4, 0] = np.nan


def _x_inf(x: np.ndarray, params: Any, state: Any) -> None:
    x[3, 6, 2] = np.inf


def _weight_nan(x: np.ndarray, params: Any, state: Any) -> None:
    params[0]["w_hh"][5, 2] = np.nan


def _bias_inf(x: np.ndarray, params: Any, state: Any) -> None:
    params[1]["b_ih"][14] = -np.inf


def _cell_inf(x: np.ndarray, params: Any, state: Any) -> None:
    state[0]["c"][0, 3] = np.inf


def _hidden_nan(x: np.ndarray, params: Any, state: Any) -> None:
    state[1]["h"][3, 7] = np.nan


@pytest.mark.parametrize("poison", [_x_nan, _x_inf, _weight_nan, _bias_inf, _cell_inf, _hidden_nan])
def test_nan_and_infinities_go_where_the_reference_puts_them(poison: Any) -> None:
    """A closed unit computes where its mix with k = 0 would not be its old state (0 * NaN is NaN)."""
    x, params, kwargs = _call(poison=poison)
    with np.errstate(invalid="ignore"):
        want = REFERENCE.phased_lstm(x, params, **kwargs)
    tx, tparams, tkwargs = _torch_args(x, params, kwargs)
    got = TORCH.to_numpy(TORCH.phased_lstm(tx, tparams, **tkwargs))
    assert fused.last_path(OP) == "open-units"
    assert np.array_equal(np.isnan(got.outputs), np.isnan(want.outputs))
    assert_tree_close(got, want, reference_tolerance("float64", steps=x.shape[1]), context=poison.__name__)


def test_the_callers_tensors_are_not_written() -> None:
    x, params, kwargs = _call()
    tx, tparams, tkwargs = _torch_args(x, params, kwargs)
    tensors = [t for t in rnnspec.tree.tree_leaves((tx, tparams, tkwargs)) if isinstance(t, torch.Tensor)]
    before = [t.clone() for t in tensors]
    result = TORCH.phased_lstm(tx, tparams, **tkwargs)
    assert fused.last_path(OP) == "open-units"
    after = [t for t in rnnspec.tree.tree_leaves((tx, tparams, tkwargs)) if isinstance(t, torch.Tensor)]
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
    state = tkwargs["initial_state"][0]
    assert all(result.state[0][n].data_ptr() != state[n].data_ptr() for n in ("h", "c"))
