"""Native CPU kernels: small C files compiled on first use and called through :mod:`ctypes`.

The adaptive ops' per-step loops (IndRNN's recurrence, the Skip RNN and ACT steps,
QRNN's gates and pooling) cost dozens of framework ops a step in eager mode, each
dispatched, and each a pass over memory. A kernel here runs a step's elementwise
work, or a whole recurrence, in one call over raw buffers, leaving the matmuls to the
framework. The kernels are framework-free: they read and write contiguous float32 or
float64 buffers given by address (a CPU tensor's ``data_ptr()``).

A kernel library is the C file ``kernels/<name>.c`` (with the headers beside it),
compiled by the system C compiler (``$CC``, else ``cc``) into a shared object kept in
the cache folder (``$RNNSPEC_CACHE_DIR``, else ``$XDG_CACHE_HOME/rnnspec``, else
``~/.cache/rnnspec``), under a name made of the hash of the sources, the flags, the
compiler and the processor: a later process loads it without compiling, and a change
of any of those builds anew. Nothing is compiled or loaded at import: the first call of
:func:`library` for a name does it, once per process.

Where a library cannot be had (no compiler, a failed build, a platform without
``ctypes`` loading, or ``RNNSPEC_NATIVE=0``), :func:`library` returns None and the
backends take their framework-op paths; :func:`unavailable` says why, and the backends
record which path each call took. ``RNNSPEC_NATIVE=require`` turns that into an
error instead (for CI, so that a machine with a compiler does test the kernels).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from rnnspec.errors import BackendError

__all__ = ["ENV", "KERNELS", "NativeLibrary", "available", "library", "unavailable"]

#: ``0`` disables the native kernels; ``require`` makes a library that cannot be built an error.
ENV = "RNNSPEC_NATIVE"

#: The folder of the kernels' C sources.
KERNELS = Path(__file__).parent / "kernels"

# -O3 vectorises the column loops; no -ffast-math (NaN must propagate, as the spec says) and no
# contraction into fused multiply-adds (values independent of the instruction set chosen).
_FLAGS = ("-O3", "-std=c11", "-fPIC", "-shared", "-ffp-contract=off", "-fno-math-errno")
# The processor's own instruction set where the compiler knows the flag (x86-64 and ARM alike).
_NATIVE_ARCH = ("-march=native",)

_lock = threading.Lock()
_loaded: dict[str, NativeLibrary | None] = {}
_reasons: dict[str, str] = {}


class NativeLibrary:
    """A compiled kernel library: its functions by name, as :mod:`ctypes` functions.

    Each exported function takes buffer addresses as ``void *`` and sizes, strides and flags as
    ``int64``; :meth:`function` declares that signature from a string of ``p`` and ``i`` codes.
    """

    def __init__(self, name: str, path: Path) -> None:
        self.name = name
        self.path = path
        self._dll = ctypes.CDLL(str(path))
        self._functions: dict[str, Callable[..., None]] = {}

    def function(self, symbol: str, signature: str) -> Callable[..., None]:
        """The exported ``symbol``, with arguments ``signature``: ``p`` an address, ``i`` an int64, ``d`` a double."""
        found = self._functions.get(symbol)
        if found is None:
            codes = {"p": ctypes.c_void_p, "i": ctypes.c_int64, "d": ctypes.c_double}
            found = getattr(self._dll, symbol)
            found.argtypes = [codes[c] for c in signature]
            found.restype = None
            self._functions[symbol] = found
        function: Callable[..., None] = found
        return function


def _mode() -> str:
    value = os.environ.get(ENV, "")
    return "off" if value == "0" else "require" if value == "require" else "auto"


def _cache_dir() -> Path:
    configured = os.environ.get("RNNSPEC_CACHE_DIR")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rnnspec"


def _processor() -> str:
    """What ``-march=native`` depends on: the machine and, on Linux, the processor's feature flags."""
    text = platform.machine() + platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            text += "".join(line for line in info if line.startswith(("flags", "Features", "model name")))
    except OSError:
        pass
    return text


def _compiler_version(compiler: str) -> str:
    try:
        run = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return run.stdout


def _sources(name: str) -> list[Path]:
    return [KERNELS / f"{name}.c", *sorted(KERNELS.glob("*.h"))]


def _build(name: str) -> Path:
    """The shared object of ``kernels/<name>.c``, compiled now unless the cache holds it; raises on failure."""
    source = KERNELS / f"{name}.c"
    if not source.is_file():
        raise FileNotFoundError(f"no kernel source {source}")
    compiler = os.environ.get("CC") or "cc"
    found = shutil.which(compiler)
    if found is None:
        raise FileNotFoundError(f"no C compiler: {compiler!r} is not on PATH (set CC)")
    version = _compiler_version(found)
    digest = hashlib.sha256()
    for part in (version, " ".join(_FLAGS + _NATIVE_ARCH), _processor(), sys.platform):
        digest.update(part.encode())
    for path in _sources(name):
        digest.update(path.name.encode() + path.read_bytes())
    cache = _cache_dir()
    target = cache / f"{name}-{digest.hexdigest()[:20]}{'.dll' if os.name == 'nt' else '.so'}"
    if target.is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    # Compiled beside the target and renamed into place: concurrent processes (pytest-xdist workers)
    # each build their own file, and a reader never sees a half-written one.
    handle, scratch = tempfile.mkstemp(prefix=f".{name}-", suffix=".so", dir=cache)
    os.close(handle)
    try:
        for arch in (_NATIVE_ARCH, ()):  # a compiler that does not know -march=native gets the generic build
            command = [found, *_FLAGS, *arch, "-I", str(KERNELS), str(source), "-o", scratch, "-lm"]
            run = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
            if run.returncode == 0:
                break
        else:
            raise RuntimeError(f"{' '.join(command)} failed:\n{run.stderr.strip()}")
        os.replace(scratch, target)
    finally:
        if os.path.exists(scratch):
            os.remove(scratch)
    return target


def library(name: str) -> NativeLibrary | None:
    """The kernel library ``name`` (``kernels/<name>.c``), built and loaded on the first call; None if unavailable.

    Raises
    ------
    BackendError
        When ``RNNSPEC_NATIVE=require`` and the library cannot be built or loaded.
    """
    mode = _mode()
    if mode == "off":
        return None
    with _lock:
        if name not in _loaded:
            try:
                _loaded[name] = NativeLibrary(name, _build(name))
            except (OSError, RuntimeError, subprocess.SubprocessError) as error:
                _loaded[name] = None
                _reasons[name] = f"{type(error).__name__}: {error}"
        loaded = _loaded[name]
    if loaded is None and mode == "require":
        raise BackendError(f"native kernels {name!r}: {ENV}=require, but the library is unavailable: {_reasons[name]}")
    return loaded


def available(name: str) -> bool:
    """Whether the kernel library ``name`` can be used in this process (builds it if needed)."""
    return library(name) is not None


def unavailable(name: str) -> str | None:
    """Why the library ``name`` is not used (``RNNSPEC_NATIVE=0``, or its build's error); None when it is."""
    if _mode() == "off":
        return f"disabled by {ENV}=0"
    library(name)
    return _reasons.get(name)
