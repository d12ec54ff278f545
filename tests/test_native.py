"""The native kernel libraries: built on first use and cached, their fallbacks, and the accuracy of their math."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rnnspec.backends.common import native
from rnnspec.errors import BackendError

needs_compiler = pytest.mark.skipif(
    shutil.which(os.environ.get("CC") or "cc") is None, reason="no C compiler: the native kernels cannot be built"
)


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A process that has loaded no library yet, with an empty cache folder (returned)."""
    monkeypatch.setattr(native, "_loaded", {})
    monkeypatch.setattr(native, "_reasons", {})
    monkeypatch.setenv("RNNSPEC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(native.ENV, raising=False)
    return tmp_path / "cache"


def _apply(symbol: str, x: np.ndarray) -> np.ndarray:
    lib = native.library("elementwise")
    assert lib is not None, native.unavailable("elementwise")
    x = np.ascontiguousarray(x)
    y = np.empty_like(x)
    suffix = "_f32" if x.dtype == np.float32 else "_f64"
    lib.function(symbol + suffix, "ppi")(x.ctypes.data, y.ctypes.data, x.size)
    return y


def _grid() -> np.ndarray:
    """Every regime of exp, sigmoid and tanh: both tails, the polynomial's range, tiny values, the edges."""
    rng = np.random.default_rng(0)
    return np.concatenate(
        [
            np.linspace(-110.0, 110.0, 400_001),
            3.0 * rng.standard_normal(200_000),
            np.geomspace(1e-30, 1.0, 5001),
            -np.geomspace(1e-30, 1.0, 5001),
            [0.625, -0.625, 88.72, -87.33, 88.3762626647950],
        ]
    ).astype(np.float32)


def _ulps(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    """``|got - want|`` in units of the float32 spacing at ``want`` (normal, finite results only)."""
    with np.errstate(over="ignore"):
        want32 = want.astype(np.float32)
    keep = np.isfinite(want32) & (np.abs(want32) >= np.finfo(np.float32).tiny)
    return np.abs(got[keep].astype(np.float64) - want[keep]) / np.spacing(np.abs(want32[keep])).astype(np.float64)


REFERENCES = {
    "rs_exp": np.exp,
    "rs_sigmoid": lambda v: 1.0 / (1.0 + np.exp(-v)),
    "rs_tanh": np.tanh,
}
#: Measured: 0.98, 2.61 and 1.50 ulp over the grid.
MAX_ULPS = {"rs_exp": 1.0, "rs_sigmoid": 3.0, "rs_tanh": 2.0}


@needs_compiler
@pytest.mark.parametrize("symbol", sorted(REFERENCES))
def test_float32_math_is_within_a_few_ulps_of_float64(symbol: str) -> None:
    x = _grid()
    with np.errstate(over="ignore"):
        want = REFERENCES[symbol](x.astype(np.float64))
    assert _ulps(_apply(symbol, x), want).max() <= MAX_ULPS[symbol]


@needs_compiler
@pytest.mark.parametrize("symbol", sorted(REFERENCES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_math_keeps_nan_infinities_and_the_sign_of_zero(symbol: str, dtype: type) -> None:
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 200.0, -200.0], dtype)
    with np.errstate(over="ignore"):
        want = REFERENCES[symbol](x.astype(np.float64)).astype(dtype)
    got = _apply(symbol, x)
    np.testing.assert_allclose(got, want, rtol=1e-6 if dtype == np.float32 else 1e-15, atol=0.0)
    number = ~np.isnan(want)  # a NaN's sign bit means nothing
    np.testing.assert_array_equal(np.signbit(got[number]), np.signbit(want[number]))


@needs_compiler
@pytest.mark.parametrize("symbol", sorted(REFERENCES))
def test_float64_math_agrees_with_numpy_to_rounding(symbol: str) -> None:
    x = _grid().astype(np.float64) * 1.000001
    with np.errstate(over="ignore"):
        want = REFERENCES[symbol](x)
    # libm's and NumPy's roundings, and the two sigmoid formulas', differ by an ulp or two (2.2e-16 each).
    np.testing.assert_allclose(_apply(symbol, x), want, rtol=1e-15, atol=0.0)


@needs_compiler
def test_a_library_is_compiled_once_into_the_cache_and_reused(fresh: Path) -> None:
    lib = native.library("elementwise")
    assert lib is not None
    assert lib.path.parent == fresh
    built = list(fresh.glob("elementwise-*.so"))
    assert built == [lib.path]
    stamp = lib.path.stat().st_mtime_ns
    assert native.library("elementwise") is lib
    # A new process (here: a forgotten one) finds the cached file and compiles nothing.
    native._loaded.clear()
    again = native.library("elementwise")
    assert again is not None
    assert again.path == lib.path
    assert again.path.stat().st_mtime_ns == stamp
    assert list(fresh.iterdir()) == [lib.path]  # no scratch files left behind


@needs_compiler
def test_the_cache_key_changes_with_the_sources(fresh: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    kernels = tmp_path / "kernels"
    shutil.copytree(native.KERNELS, kernels)
    monkeypatch.setattr(native, "KERNELS", kernels)
    first = native.library("elementwise")
    assert first is not None
    (kernels / "elementwise.c").write_text((kernels / "elementwise.c").read_text() + "\n/* changed */\n")
    native._loaded.clear()
    second = native.library("elementwise")
    assert second is not None
    assert second.path != first.path


def test_rnnspec_native_0_disables_the_kernels(fresh: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(native.ENV, "0")
    assert native.library("elementwise") is None
    assert not native.available("elementwise")
    assert native.unavailable("elementwise") == f"disabled by {native.ENV}=0"
    assert not fresh.exists()


def test_without_a_compiler_the_library_is_unavailable_and_says_why(
    fresh: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CC", "no-such-compiler-rnnspec")
    assert native.library("elementwise") is None
    reason = native.unavailable("elementwise")
    assert reason is not None
    assert "no-such-compiler-rnnspec" in reason


def test_require_turns_an_unavailable_library_into_an_error(fresh: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC", "no-such-compiler-rnnspec")
    monkeypatch.setenv(native.ENV, "require")
    with pytest.raises(BackendError, match=r"native kernels 'elementwise'.*RNNSPEC_NATIVE=require.*no C compiler"):
        native.library("elementwise")


@needs_compiler
def test_a_source_that_does_not_compile_reports_the_compilers_error(
    fresh: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    kernels = tmp_path / "kernels"
    kernels.mkdir()
    (kernels / "broken.c").write_text("void f(void) { this is not C; }\n")
    monkeypatch.setattr(native, "KERNELS", kernels)
    assert native.library("broken") is None
    reason = native.unavailable("broken")
    assert reason is not None
    assert "broken.c" in reason
    assert "error" in reason
    assert [p for p in fresh.iterdir() if p.name.startswith(".broken")] == []  # the scratch file is removed


def test_importing_rnnspec_and_its_torch_backend_builds_nothing(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    cache = tmp_path / "cache"
    code = "import rnnspec; rnnspec.get_backend('torch')"
    env = dict(os.environ, RNNSPEC_CACHE_DIR=str(cache))
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=300)
    assert not cache.exists()
