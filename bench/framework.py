"""What the cases need from a framework: its backend, timed callables, and the array ops of the ports.

Each framework has an adapter (:mod:`.fw_torch`, :mod:`.fw_jax`, :mod:`.fw_tensorflow`),
imported only when that framework's cases run, each in its own process. The adapter's
callables wait for their results, so that :func:`.timing.alternate` times the work.
The array ops are the few the Python-loop ports (:mod:`.ports`) and the log-space
formulation (:mod:`.logspace`) are written with; the gru and lstm steps built from them
are the textbook ones, in the spec's gate layout (which is torch's).
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

import rnnspec

__all__ = ["ADAPTERS", "Framework", "leaves", "load"]

#: The adapter module of each framework backend.
ADAPTERS = {"torch": "fw_torch", "jax": "fw_jax", "tensorflow": "fw_tensorflow"}


def leaves(tree: Any) -> Iterator[Any]:
    """The arrays of a tree of mappings, lists and tuples, in order."""
    if isinstance(tree, Mapping):
        for key in tree:
            yield from leaves(tree[key])
    elif isinstance(tree, list | tuple):
        for item in tree:
            yield from leaves(item)
    elif tree is not None:
        yield tree


class Framework(ABC):
    """A framework's side of the suite: inputs, timed callables and array ops."""

    #: The backend's name, as ``rnnspec.get_backend`` takes it.
    name: str = ""

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self.backend = rnnspec.get_backend(self.name)
        self._compiled: dict[tuple[str, Callable[..., Any]], Callable[..., Any]] = {}

    def compiled(self, kind: str, fn: Callable[..., Any], make: Callable[[], Callable[..., Any]]) -> Callable[..., Any]:
        """``make()``, the compiled form of ``fn`` for ``kind`` (forward or train), made once per ``fn``.

        Cases that time the same function on other arrays of the same shapes reuse its compilation.
        """
        key = (kind, fn)
        if key not in self._compiled:
            self._compiled[key] = make()
        return self._compiled[key]

    # -- inputs and timed callables ------------------------------------------

    @abstractmethod
    def tensor(self, array: np.ndarray) -> Any:
        """``array`` as a framework array on the device."""

    def params(self, host: Sequence[Mapping[str, np.ndarray]]) -> Any:
        """Canonical parameters (a list of mappings of NumPy arrays) as framework arrays."""
        return [{k: self.tensor(v) for k, v in layer.items()} for layer in host]

    @abstractmethod
    def wait(self, value: Any) -> None:
        """Return once every array of ``value`` is computed."""

    @abstractmethod
    def forward(self, fn: Callable[..., Any], *args: Any, compile: bool = False) -> Callable[[], Any]:
        """A callable running ``fn(*args)`` without gradients, results waited for.

        ``compile``: under the framework's compiler (``jax.jit``, ``tf.function(jit_compile=True)``);
        torch ignores it (its backend's paths run eagerly).
        """

    @abstractmethod
    def train(self, fn: Callable[[Any, Any], Any], x: Any, params: Any, *, compile: bool = False) -> Callable[[], Any]:
        """A callable computing the gradients of ``sum(fn(x, params))`` with respect to ``x`` and ``params``."""

    def copy(self, x: Any) -> Callable[[], Any]:
        """A callable copying ``x`` (the memory-bandwidth yardstick), result waited for."""
        return self.forward(self.clone, x)

    @abstractmethod
    def clone(self, x: Any) -> Any:
        """A copy of ``x`` in new memory."""

    def describe(self) -> dict[str, str]:
        """The framework's version and device, for the results' header."""
        return {"version": self.backend.version, "device": self.device}

    # -- array ops of the ports ------------------------------------------------

    @abstractmethod
    def sigmoid(self, x: Any) -> Any: ...

    @abstractmethod
    def tanh(self, x: Any) -> Any: ...

    @abstractmethod
    def relu(self, x: Any) -> Any: ...

    @abstractmethod
    def matmul_t(self, x: Any, w: Any) -> Any:
        """``x @ w.T``."""

    @abstractmethod
    def where(self, cond: Any, a: Any, b: Any) -> Any: ...

    @abstractmethod
    def minimum(self, a: Any, b: Any) -> Any: ...

    @abstractmethod
    def concat(self, xs: Sequence[Any], axis: int) -> Any: ...

    @abstractmethod
    def stack(self, xs: Sequence[Any], axis: int) -> Any: ...

    @abstractmethod
    def zeros(self, shape: tuple[int, ...]) -> Any: ...

    @abstractmethod
    def to_float(self, mask: Any) -> Any:
        """A boolean array as float32 0/1."""

    @abstractmethod
    def stop_gradient(self, x: Any) -> Any: ...

    @abstractmethod
    def all(self, mask: Any) -> bool:
        """Whether every entry of a boolean array is true (read on the host)."""

    @abstractmethod
    def log(self, x: Any) -> Any: ...

    @abstractmethod
    def exp(self, x: Any) -> Any: ...

    @abstractmethod
    def softplus(self, x: Any) -> Any: ...

    @abstractmethod
    def log_sigmoid(self, x: Any) -> Any: ...

    @abstractmethod
    def cumsum(self, x: Any, axis: int) -> Any: ...

    @abstractmethod
    def logcumsumexp(self, x: Any, axis: int) -> Any: ...

    def linear(self, x: Any, w: Any, b: Any) -> Any:
        """``x @ w.T + b``."""
        return self.matmul_t(x, w) + b

    def gru_cell(self, x: Any, h: Any, p: Mapping[str, Any]) -> Any:
        """One gru step (gate blocks r, z, n; reset after the matmul)."""
        size = h.shape[-1]
        gi, gh = self.linear(x, p["w_ih"], p["b_ih"]), self.linear(h, p["w_hh"], p["b_hh"])
        r = self.sigmoid(gi[..., :size] + gh[..., :size])
        z = self.sigmoid(gi[..., size : 2 * size] + gh[..., size : 2 * size])
        n = self.tanh(gi[..., 2 * size :] + r * gh[..., 2 * size :])
        return (1.0 - z) * n + z * h

    def lstm_cell(self, x: Any, h: Any, c: Any, p: Mapping[str, Any]) -> tuple[Any, Any]:
        """One lstm step (gate blocks i, f, g, o): the new ``(h, c)``."""
        size = h.shape[-1]
        a = self.linear(x, p["w_ih"], p["b_ih"]) + self.linear(h, p["w_hh"], p["b_hh"])
        i, f = self.sigmoid(a[..., :size]), self.sigmoid(a[..., size : 2 * size])
        g, o = self.tanh(a[..., 2 * size : 3 * size]), self.sigmoid(a[..., 3 * size :])
        c = f * c + i * g
        return o * self.tanh(c), c


def load(name: str, device: str = "cpu") -> Framework:
    """The adapter of the framework backend ``name`` (importing the framework)."""
    module = importlib.import_module(f"{__package__}.{ADAPTERS[name]}")
    adapter: Framework = module.Adapter(device)
    return adapter
