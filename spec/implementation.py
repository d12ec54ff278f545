"""What a backend author writes: the base class of backend implementations.

A backend plugin's loader returns an :class:`Implementation`. It implements
the ops it lists in :attr:`Implementation.ops` as methods whose signatures are
exactly the spec's (the registry checks this when the backend loads), and the
few array adapters below. It never validates: :class:`rnnspec.Backend` has
already checked every argument when an op method runs, and hands it
normalised arguments:

- ``params`` is a list with one dict per layer, bottom layer first;
- ``initial_state`` is ``None`` or a tuple with one dict per layer;
- ``lengths`` is ``None`` or the user's integer array (any array type);
- every option is passed by keyword with its value.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import numpy as np

from .tree import tree_map

__all__ = ["Implementation"]


class Implementation:
    """Base class of a backend implementation (see the module docstring)."""

    #: The ops this backend implements, by spec name.
    ops: ClassVar[tuple[str, ...]] = ()
    #: Dtype names this backend accepts (float32 and float64 are required).
    dtypes: ClassVar[tuple[str, ...]] = ("float32", "float64")
    #: The framework's name, for reports.
    framework: ClassVar[str] = "unknown"
    #: Optional abilities, which the conformance suite tests when declared:
    #: ``"vjp"`` (:meth:`vjp` is implemented by the framework's autodiff) and
    #: ``"compile"`` (:meth:`compile` returns the op under the framework's compiler).
    capabilities: ClassVar[frozenset[str]] = frozenset()

    def framework_version(self) -> str:
        """The framework's version string, for reports."""
        return "unknown"

    def fast_paths(self) -> dict[str, str]:
        """Accelerated paths available here: a short name to what it does and when."""
        return {}

    def device(self) -> str:
        """Where this backend computes by default, for reports."""
        return "cpu"

    def vjp(self, op: str, arguments: dict[str, Any], cotangents: Mapping[str, Any]) -> dict[str, Any]:
        """Reverse mode of ``op`` at normalised ``arguments`` (see :meth:`rnnspec.Backend.vjp`).

        ``params`` in the returned mapping is one mapping per layer; the
        :class:`~rnnspec.Backend` restores the caller's structure.
        """
        raise NotImplementedError(f"{type(self).__name__} declares no reverse mode")

    def compile(self, op: str) -> Callable[..., Any]:
        """``op`` under the framework's compiler (``jax.jit``, ``tf.function(jit_compile=True)``,
        ``torch.compile``): a callable taking the normalised arguments by keyword, as the op method does."""
        raise NotImplementedError(f"{type(self).__name__} declares no compiled mode")

    # -- array adapters ---------------------------------------------------------

    #: Whether the op methods take NumPy arrays too, as the framework's own functions do (jax, TensorFlow): the
    #: :class:`~rnnspec.Backend` then converts every NumPy array of a call (``x``, params, states, array options,
    #: a primitive's arrays, ``vjp``'s cotangents; ``lengths`` stays as given) with :meth:`asarray` before
    #: validating it. False where the framework's convention is to refuse them (torch).
    accepts_numpy: ClassVar[bool] = False

    def is_array(self, value: Any) -> bool:
        """Whether ``value`` is an array of this backend."""
        raise NotImplementedError

    def asarray(self, value: np.ndarray) -> Any:
        """Convert one NumPy array into this backend's array type."""
        raise NotImplementedError

    def asnumpy(self, value: Any) -> np.ndarray:
        """Convert one array of this backend into a NumPy array."""
        raise NotImplementedError

    def shape(self, value: Any) -> tuple[int, ...]:
        """The shape of an array of this backend."""
        return tuple(int(d) for d in value.shape)

    def dtype_name(self, value: Any) -> str:
        """The dtype of an array of this backend, by NumPy-style name (``"float32"``)."""
        dtype = value.dtype
        name = getattr(dtype, "name", None)
        return str(name) if isinstance(name, str) else str(dtype).rsplit(".", 1)[-1]

    def host_values(self, value: Any) -> np.ndarray | None:
        """Concrete values of a small array (``lengths``), or ``None`` when not
        available (inside a trace); validation then skips value checks."""
        return self.asnumpy(value)

    # -- trees -----------------------------------------------------------------

    def from_numpy(self, tree: Any) -> Any:
        """Convert NumPy arrays in a nested dict/list/tuple to this backend's arrays."""
        return tree_map(lambda leaf: self.asarray(np.asarray(leaf)), tree)

    def to_numpy(self, tree: Any) -> Any:
        """Convert this backend's arrays in a nested dict/list/tuple to NumPy arrays."""
        return tree_map(lambda leaf: leaf if isinstance(leaf, np.ndarray) else self.asnumpy(leaf), tree)
