"""The jax adapter of the suite (see :class:`.framework.Framework`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .framework import Framework

__all__ = ["Adapter"]


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
