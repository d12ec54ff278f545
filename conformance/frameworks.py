"""What the suite cannot do through ``Backend``: make bfloat16 arrays and arrays of another framework,
and write into a backend's array in place.

The suite otherwise stays framework-agnostic. Here it knows the three
frameworks of the built-in backends by name, and reaches each through the
module its backend has already imported (``sys.modules``); nothing imports a
framework the run does not already use, except :func:`foreign_maker` for the
NumPy backend, which needs some other framework and imports the first one
installed.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from rnnspec.backend import Backend

__all__ = ["bfloat16_maker", "foreign_maker", "in_place_writer", "round_to_bfloat16"]

#: Frameworks that can stand in for "another backend's array", in order of preference.
_FOREIGN = ("torch", "jax", "tensorflow")


def round_to_bfloat16(a: np.ndarray) -> np.ndarray:
    """``a`` rounded to the nearest bfloat16 (ties to even), kept in float32.

    bfloat16 is the upper half of float32, so rounding clears the low 16 bits
    after adding half of their weight (plus the tie-breaking bit).
    """
    bits = np.asarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    out: np.ndarray = rounded.astype(np.uint32).view(np.float32)
    return np.where(np.isnan(a), np.float32(np.nan), out)


def _torch_bfloat16(a: np.ndarray) -> Any:
    torch = sys.modules["torch"]
    return torch.from_numpy(np.array(a, dtype=np.float32)).to(torch.bfloat16)


def _jax_bfloat16(a: np.ndarray) -> Any:
    jnp = sys.modules["jax.numpy"]
    return jnp.asarray(np.array(a, dtype=np.float32)).astype(jnp.bfloat16)


def _tensorflow_bfloat16(a: np.ndarray) -> Any:
    tf = sys.modules["tensorflow"]
    return tf.cast(tf.constant(np.array(a, dtype=np.float32)), tf.bfloat16)


_BFLOAT16: dict[str, Callable[[np.ndarray], Any]] = {
    "torch": _torch_bfloat16,
    "jax": _jax_bfloat16,
    "tensorflow": _tensorflow_bfloat16,
}


def bfloat16_maker(backend: Backend) -> Callable[[Any], Any] | None:
    """A function turning a float32 NumPy array into ``backend``'s bfloat16 array.

    Other leaves pass unchanged, and integer arrays go through ``from_numpy``.
    ``None`` when the suite does not know how to make bfloat16 arrays for this
    backend's framework (a third-party backend).
    """
    make = _BFLOAT16.get(backend.implementation.framework)
    if make is None:
        return None

    def convert(leaf: Any) -> Any:
        if isinstance(leaf, np.ndarray) and leaf.dtype.kind == "f":
            return make(leaf)
        return backend.from_numpy(leaf) if isinstance(leaf, np.ndarray) else leaf

    return convert


def _import_foreign(name: str) -> Callable[[np.ndarray], Any]:
    if name == "torch":
        torch = importlib.import_module("torch")
        return lambda a: torch.from_numpy(np.array(a))
    if name == "jax":
        jnp = importlib.import_module("jax.numpy")
        return lambda a: jnp.asarray(a)
    tf = importlib.import_module("tensorflow")
    return lambda a: tf.constant(a)


def foreign_maker(backend: Backend) -> tuple[str, Callable[[np.ndarray], Any]] | None:
    """A framework other than ``backend``'s, and a function making its arrays from NumPy ones.

    For a backend that refuses NumPy arrays, that framework is NumPy. For the
    NumPy backend and those that take NumPy arrays too
    (:attr:`~rnnspec.Implementation.accepts_numpy`) it is the first of torch,
    jax and tensorflow (not the backend's own) already imported, else the first
    installed; for the latter, nested Python lists when none is; ``None`` for
    the NumPy backend when none is.
    """
    framework = backend.implementation.framework
    if framework != "numpy" and not backend.implementation.accepts_numpy:
        return "numpy", lambda a: np.array(a)
    others = [name for name in _FOREIGN if name != framework]
    loaded = [name for name in others if name in sys.modules]
    installed = [name for name in others if importlib.util.find_spec(name) is not None]
    for name in loaded or installed:
        return name, _import_foreign(name)
    if framework != "numpy":  # it takes NumPy arrays, and no other framework is here: nested lists are no array
        return "list", lambda a: np.asarray(a).tolist()
    return None


def _write_numpy(a: Any, value: float) -> None:
    if a.flags.writeable:
        a.fill(value)


def _write_torch(t: Any, value: float) -> None:
    torch = sys.modules["torch"]
    with torch.no_grad():
        t.detach().fill_(value)


#: In-place writers of the frameworks whose arrays can be written in place (jax's and TensorFlow's cannot).
_WRITERS: dict[str, Callable[[Any, float], None]] = {"numpy": _write_numpy, "torch": _write_torch}


def in_place_writer(backend: Backend) -> Callable[[Any, float], None] | None:
    """A function filling one of ``backend``'s arrays with a value, in place; ``None`` where the
    framework's arrays cannot be written in place (or the suite does not know the framework)."""
    return _WRITERS.get(backend.implementation.framework)
