"""What the cases need from a framework: its backend, timed callables, and the array ops of the ports.

Each framework has an adapter (:mod:`.fw_torch`, :mod:`.fw_jax`, :mod:`.fw_tensorflow`),
imported only when that framework's cases run, each in its own process. The adapter's
callables wait for their results, so that :func:`.timing.alternate` times the work.
The array ops are the few the Python-loop ports (:mod:`.ports`) and the log-space
formulation (:mod:`.logspace`) are written with; the rnn, gru and lstm steps built from them
are the textbook ones, in the spec's gate layout (which is torch's).

The training section (:mod:`.training`) asks two more things of an adapter: :meth:`Framework.model`,
a paper task's model (a :class:`Net`) built from rnnspec's layer or from the framework's own and
updated as its users train it (module, loss, backward, Adam), and :meth:`Framework.adam`, the same
update for a model written as a function of its parameters (the Python-loop ports).
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

import rnnspec

__all__ = ["ADAPTERS", "LAYER_CLASSES", "Framework", "Net", "leaves", "load", "task_loss"]

#: The adapter module of each framework backend.
ADAPTERS = {"torch": "fw_torch", "jax": "fw_jax", "tensorflow": "fw_tensorflow"}
#: The class of each op's layer, by the same name in every framework's rnnspec layers
#: (``rnnspec.backends.torch.nn``, ``rnnspec.backends.jax.nnx``, ``rnnspec.backends.tensorflow.keras``).
LAYER_CLASSES = {
    "rnn": "RNN",
    "lstm": "LSTM",
    "gru": "GRU",
    "skip_gru": "SkipGRU",
    "skip_lstm": "SkipLSTM",
    "act": "ACT",
    "indrnn": "IndRNN",
    "qrnn": "QRNN",
}


@dataclass(frozen=True)
class Net:
    """A paper task's model: a stack of recurrent layers and a linear readout of the last step's output.

    Parameters
    ----------
    op
        The rnnspec op of the recurrent layers (a key of :data:`LAYER_CLASSES`).
    features, hidden, layers, outputs
        Input features, units per layer, layers in the stack, readout outputs.
    options
        The rnnspec layer's options (and init options), as ``(name, value)`` pairs.
    native
        The framework's own layer of the same size: ``"GRU"``, ``"LSTM"`` or ``"RNN"`` (torch's names;
        Keras' ``SimpleRNN``, Flax's ``SimpleCell``), or None where the framework has none.
    activation
        The native ``"RNN"``'s nonlinearity (``"tanh"`` or ``"relu"``).
    loss
        ``"mse"`` on the readout, or ``"bce"`` (binary cross-entropy on one logit).
    learning_rate
        Adam's step size.
    """

    op: str
    features: int
    hidden: int
    layers: int = 1
    outputs: int = 1
    options: tuple[tuple[str, Any], ...] = ()
    native: str | None = None
    activation: str = "tanh"
    loss: str = "mse"
    learning_rate: float = 1e-3

    @property
    def kwargs(self) -> dict[str, Any]:
        """The rnnspec layer's options as keyword arguments."""
        return dict(self.options)


def task_loss(fw: Framework, output: Any, y: Any, kind: str) -> Any:
    """The task's loss of the readout ``output`` against ``y``: mean squared error, or binary cross-entropy
    on logits (``softplus(z) - y z``, its stable form), written with ``fw``'s ops."""
    if kind == "bce":
        return fw.mean(fw.softplus(output) - y * output)
    return fw.mean((output - y) * (output - y))


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

    @abstractmethod
    def model(
        self, net: Net, x: Any, y: Any, *, training: bool, host: Sequence[Mapping[str, np.ndarray]] | None = None
    ) -> Callable[[], Any]:
        """A callable running ``net`` on ``x``, results waited for: one optimiser update with ``training``.

        The model is built as the framework's users build it: rnnspec's layer of ``net.op`` holding
        the canonical parameters ``host``, or without ``host`` the framework's own layer ``net.native``
        (with the framework's init), then a linear readout of the last step's output, :func:`task_loss`
        against ``y`` and Adam, in the framework's usual training step (compiled where the framework
        compiles: ``nnx.jit``; a ``tf.function``). Without ``training``, the model's forward pass alone.
        """

    @abstractmethod
    def adam(self, loss: Callable[[Any], Any], params: Any, learning_rate: float) -> Callable[[], Any]:
        """A callable taking one Adam step on ``params`` (from :meth:`params`) down ``loss(params)``.

        The update of a model written as a function of its parameters (a Python-loop port), as its
        users would run it: ``loss`` and its gradient eagerly, by the framework's autodiff; the
        framework's Adam step on the gradients compiled where the framework compiles (``jax.jit``
        of optax's, Keras' in a ``tf.function``), as a model's optimiser step is.
        """

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
    def mean(self, x: Any) -> Any:
        """The mean of every entry (a scalar)."""

    @abstractmethod
    def swap01(self, x: Any) -> Any:
        """``x`` with its first two axes swapped (batch-major to time-major and back)."""

    def fma(self, a: Any, b: Any, c: Any) -> Any:
        """``a * b + c``, fused into one pass where the framework can."""
        return a * b + c

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

    def rnn_cell(self, x: Any, h: Any, p: Mapping[str, Any]) -> Any:
        """One tanh rnn step."""
        return self.tanh(self.linear(x, p["w_ih"], p["b_ih"]) + self.linear(h, p["w_hh"], p["b_hh"]))

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
