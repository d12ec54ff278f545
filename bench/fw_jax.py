"""The jax adapter of the suite (see :class:`.framework.Framework`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .framework import LAYER_CLASSES, Framework, Net, task_loss

__all__ = ["Adapter"]


@jax.jit
def _fma(a: Any, b: Any, c: Any) -> Any:
    return a * b + c  # one fused loop under XLA


def _model(net: Net, host: Sequence[Mapping[str, np.ndarray]] | None) -> Any:
    """The NNX module of ``net``: rnnspec's layer holding ``host`` (or without it Flax's ``nnx.RNN`` over its
    cells), and an ``nnx.Linear`` readout."""
    from flax import nnx

    rngs = nnx.Rngs(0)
    native = host is None

    class Model(nnx.Module):  # type: ignore[misc,unused-ignore]
        def __init__(self) -> None:
            if native:
                self.layers = nnx.List([nnx.RNN(_cell(net, k, rngs)) for k in range(net.layers)])
            else:
                from rnnspec.backends.jax import nnx as layers

                layer = getattr(layers, LAYER_CLASSES[net.op])(
                    net.features, net.hidden, net.layers, **net.kwargs, rngs=rngs
                )
                layer.load_canonical(host)
                self.layers = nnx.List([layer])
            self.head = nnx.Linear(net.hidden, net.outputs, rngs=rngs)

        def __call__(self, x: Any) -> Any:
            for layer in self.layers:
                x = layer(x) if native else layer(x).outputs
            return self.head(x[:, -1])

    return Model()


def _cell(net: Net, k: int, rngs: Any) -> Any:
    """Flax's cell matching ``net.native`` for layer ``k`` of the stack."""
    from flax import nnx

    features = net.features if k == 0 else net.hidden
    if net.native == "RNN":
        activation = jax.nn.relu if net.activation == "relu" else jnp.tanh
        return nnx.SimpleCell(features, net.hidden, activation_fn=activation, rngs=rngs)
    cell = {"GRU": nnx.GRUCell, "LSTM": nnx.LSTMCell}[str(net.native)]
    return cell(features, net.hidden, rngs=rngs)


class Adapter(Framework):
    """jax: ``jax.jit`` when compiled, ``jax.grad`` for the backward pass, arrays on the default device."""

    name = "jax"

    def tensor(self, array: np.ndarray) -> Any:
        return jnp.asarray(array)

    def wait(self, value: Any) -> None:
        jax.block_until_ready(value)  # type: ignore[no-untyped-call]

    def forward(self, fn: Callable[..., Any], *args: Any, compile: bool = False) -> Callable[[], Any]:
        run = self.compiled("forward", fn, lambda: jax.jit(fn)) if compile else fn

        def call() -> Any:
            out = run(*args)
            self.wait(out)
            return out

        return call

    def train(self, fn: Callable[[Any, Any], Any], x: Any, params: Any, *, compile: bool = False) -> Callable[[], Any]:
        grad = jax.grad(lambda x, p: jnp.sum(fn(x, p)), argnums=(0, 1))
        run = self.compiled("train", fn, lambda: jax.jit(grad)) if compile else grad

        def call() -> Any:
            out = run(x, params)
            self.wait(out)
            return out

        return call

    def model(
        self, net: Net, x: Any, y: Any, *, training: bool, host: Sequence[Mapping[str, np.ndarray]] | None = None
    ) -> Callable[[], Any]:
        import optax  # type: ignore[import-untyped,unused-ignore]
        from flax import nnx

        model = _model(net, host)
        if not training:
            run = nnx.jit(lambda model, x: model(x))
            return lambda: self._waited(run(model, x))
        optimizer = nnx.Optimizer(model, optax.adam(net.learning_rate), wrt=nnx.Param)

        @nnx.jit  # type: ignore[untyped-decorator,unused-ignore]
        def step(model: Any, optimizer: Any, x: Any, y: Any) -> Any:
            loss, grads = nnx.value_and_grad(lambda m: task_loss(self, m(x), y, net.loss))(model)
            optimizer.update(model, grads)
            return loss

        return lambda: self._waited(step(model, optimizer, x, y))

    def adam(self, loss: Callable[[Any], Any], params: Any, learning_rate: float) -> Callable[[], Any]:
        import optax  # type: ignore[import-untyped,unused-ignore]

        tx = optax.adam(learning_rate)
        held = {"params": params, "state": tx.init(params)}
        grad = jax.value_and_grad(loss)

        @jax.jit
        def step(grads: Any, state: Any, params: Any) -> tuple[Any, Any]:
            updates, state = tx.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        def call() -> Any:
            value, grads = grad(held["params"])
            held["params"], held["state"] = step(grads, held["state"], held["params"])
            self.wait(held["params"])
            return value

        return call

    def _waited(self, value: Any) -> Any:
        self.wait(value)
        return value

    def clone(self, x: Any) -> Any:
        return jnp.copy(x)

    def copy(self, x: Any) -> Callable[[], Any]:
        # jnp.copy outside jit is one device copy; under jit XLA would elide it.
        return self.forward(self.clone, x)

    def describe(self) -> dict[str, str]:
        return {"version": jax.__version__, "device": f"{jax.default_backend()} ({jax.devices()[0].device_kind})"}

    def sigmoid(self, x: Any) -> Any:
        return jax.nn.sigmoid(x)

    def tanh(self, x: Any) -> Any:
        return jnp.tanh(x)

    def relu(self, x: Any) -> Any:
        return jax.nn.relu(x)

    def mean(self, x: Any) -> Any:
        return jnp.mean(x)

    def swap01(self, x: Any) -> Any:
        return jnp.swapaxes(x, 0, 1)

    def fma(self, a: Any, b: Any, c: Any) -> Any:
        return _fma(a, b, c)

    def matmul_t(self, x: Any, w: Any) -> Any:
        return x @ w.T

    def where(self, cond: Any, a: Any, b: Any) -> Any:
        return jnp.where(cond, a, b)

    def minimum(self, a: Any, b: Any) -> Any:
        return jnp.minimum(a, b)

    def concat(self, xs: Sequence[Any], axis: int) -> Any:
        return jnp.concatenate(list(xs), axis=axis)

    def stack(self, xs: Sequence[Any], axis: int) -> Any:
        return jnp.stack(list(xs), axis=axis)

    def zeros(self, shape: tuple[int, ...]) -> Any:
        return jnp.zeros(shape, jnp.float32)

    def to_float(self, mask: Any) -> Any:
        return mask.astype(jnp.float32)

    def stop_gradient(self, x: Any) -> Any:
        return jax.lax.stop_gradient(x)

    def all(self, mask: Any) -> bool:
        return bool(jnp.all(mask))

    def log(self, x: Any) -> Any:
        return jnp.log(x)

    def exp(self, x: Any) -> Any:
        return jnp.exp(x)

    def softplus(self, x: Any) -> Any:
        return jax.nn.softplus(x)

    def log_sigmoid(self, x: Any) -> Any:
        return jax.nn.log_sigmoid(x)

    def cumsum(self, x: Any, axis: int) -> Any:
        return jnp.cumsum(x, axis=axis)

    def logcumsumexp(self, x: Any, axis: int) -> Any:
        return jax.lax.cumlogsumexp(x, axis=axis)
