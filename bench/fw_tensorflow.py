"""The tensorflow adapter of the suite (see :class:`.framework.Framework`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from .framework import Framework, leaves

__all__ = ["Adapter"]


class Adapter(Framework):
    """tensorflow: ``tf.function(jit_compile=True)`` when compiled, ``tf.GradientTape`` for the backward pass."""

    name = "tensorflow"

    def __init__(self, device: str = "cpu") -> None:
        super().__init__(device)
        tf.get_logger().setLevel("ERROR")  # every case traces its own functions: retracing notes are expected

    def tensor(self, array: np.ndarray) -> Any:
        return tf.constant(array)

    def params(self, host: Sequence[Mapping[str, np.ndarray]]) -> Any:
        return [{k: tf.Variable(v) for k, v in layer.items()} for layer in host]

    def wait(self, value: Any) -> None:
        for leaf in tf.nest.flatten(value):
            if leaf is not None:
                np.asarray(leaf)  # the call is done only when its values are

    def forward(self, fn: Callable[..., Any], *args: Any, compile: bool = False) -> Callable[[], Any]:
        run = self.compiled("forward", fn, lambda: tf.function(fn, jit_compile=True)) if compile else fn

        def call() -> Any:
            out = run(*args)
            self.wait(out)
            return out

        return call

    def train(self, fn: Callable[[Any, Any], Any], x: Any, params: Any, *, compile: bool = False) -> Callable[[], Any]:
        def grads(x: Any, params: Any) -> Any:
            sources = list(leaves([x, params]))  # the traced arguments, under tf.function
            with tf.GradientTape() as tape:
                tape.watch([s for s in sources if not isinstance(s, tf.Variable)])
                loss = tf.reduce_sum(fn(x, params))
            return tape.gradient(loss, sources)

        run = self.compiled("train", fn, lambda: tf.function(grads, jit_compile=True)) if compile else grads

        def call() -> Any:
            out = run(x, params)
            self.wait(out)
            return out

        return call

    def clone(self, x: Any) -> Any:
        return tf.identity(x + 0.0)  # tf.identity alone may alias

    def describe(self) -> dict[str, str]:
        import keras

        gpus = tf.config.list_physical_devices("GPU")
        return {"version": tf.__version__, "keras": keras.__version__, "device": "gpu" if gpus else "cpu"}

    def sigmoid(self, x: Any) -> Any:
        return tf.sigmoid(x)

    def tanh(self, x: Any) -> Any:
        return tf.tanh(x)

    def relu(self, x: Any) -> Any:
        return tf.nn.relu(x)

    def matmul_t(self, x: Any, w: Any) -> Any:
        return tf.matmul(x, w, transpose_b=True)

    def where(self, cond: Any, a: Any, b: Any) -> Any:
        return tf.where(cond, a, b)

    def minimum(self, a: Any, b: Any) -> Any:
        return tf.minimum(a, b)

    def concat(self, xs: Sequence[Any], axis: int) -> Any:
        return tf.concat(list(xs), axis=axis)

    def stack(self, xs: Sequence[Any], axis: int) -> Any:
        return tf.stack(list(xs), axis=axis)

    def zeros(self, shape: tuple[int, ...]) -> Any:
        return tf.zeros(shape, tf.float32)

    def to_float(self, mask: Any) -> Any:
        return tf.cast(mask, tf.float32)

    def stop_gradient(self, x: Any) -> Any:
        return tf.stop_gradient(x)

    def all(self, mask: Any) -> bool:
        return bool(tf.reduce_all(mask))

    def log(self, x: Any) -> Any:
        return tf.math.log(x)

    def exp(self, x: Any) -> Any:
        return tf.exp(x)

    def softplus(self, x: Any) -> Any:
        return tf.nn.softplus(x)

    def log_sigmoid(self, x: Any) -> Any:
        return tf.math.log_sigmoid(x)

    def cumsum(self, x: Any, axis: int) -> Any:
        return tf.cumsum(x, axis=axis)

    def logcumsumexp(self, x: Any, axis: int) -> Any:
        return tf.math.cumulative_logsumexp(x, axis=axis)
