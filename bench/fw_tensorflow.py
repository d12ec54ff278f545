"""The tensorflow adapter of the suite (see :class:`.framework.Framework`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from .framework import LAYER_CLASSES, Framework, Net, leaves, task_loss

__all__ = ["Adapter"]


#: Keras' own layer of each of torch's names.
_KERAS = {"GRU": "GRU", "LSTM": "LSTM", "RNN": "SimpleRNN"}


def _fma_eager(a: Any, b: Any, c: Any) -> Any:
    return a * b + c


_fma = tf.function(_fma_eager, jit_compile=True)  # one fused loop under XLA


def _layers(net: Net, host: Sequence[Mapping[str, np.ndarray]] | None) -> list[Any]:
    """The Keras layers of ``net``: rnnspec's layer (its weights ``host`` are loaded once it is built), or
    without ``host`` Keras' own, stacked (the lower ones return their sequences); then a ``Dense`` readout."""
    import keras

    if host is None:
        layer = getattr(keras.layers, _KERAS[str(net.native)])
        more = {"activation": net.activation} if net.native == "RNN" else {}
        stack = [layer(net.hidden, return_sequences=k < net.layers - 1, **more) for k in range(net.layers)]
    else:
        from rnnspec.backends.tensorflow import keras as rnn_layers

        stack = [getattr(rnn_layers, LAYER_CLASSES[net.op])(net.hidden, net.layers, seed=0, **net.kwargs)]
    return [*stack, keras.layers.Dense(net.outputs)]


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

    def model(
        self, net: Net, x: Any, y: Any, *, training: bool, host: Sequence[Mapping[str, np.ndarray]] | None = None
    ) -> Callable[[], Any]:
        """The update in a ``tf.function``, as custom Keras training loops (and the examples' trainer) run it.

        Graph mode, not XLA: under ``jit_compile=True`` the CPU gradient of a recurrent layer's while loop
        costs O(T^2) (T=400 takes 26x the time of T=100, for rnnspec's IndRNN and Keras' SimpleRNN alike:
        the saved activations are copied at every step), so at the papers' lengths it would time that.
        """
        import keras

        layers = _layers(net, host)

        def output(x: Any) -> Any:
            for layer in layers:
                x = layer(x)
            return x

        output(tf.zeros((1, 1, net.features)))  # builds the weights
        if host is not None:
            layers[0].load_canonical(host)
        if not training:
            return self.forward(tf.function(output), x)
        variables = [v for layer in layers for v in layer.trainable_variables]
        optimizer = keras.optimizers.Adam(net.learning_rate)
        optimizer.build(variables)

        def update(x: Any, y: Any) -> Any:
            with tf.GradientTape() as tape:
                loss = task_loss(self, output(x), y, net.loss)
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
            return loss

        step = tf.function(update)  # graph mode, not XLA: see model's docstring

        def call() -> Any:
            loss = step(x, y)
            self.wait(loss)
            return loss

        return call

    def adam(self, loss: Callable[[Any], Any], params: Any, learning_rate: float) -> Callable[[], Any]:
        import keras

        variables = list(leaves(params))  # tf.Variables (from :meth:`params`)
        optimizer = keras.optimizers.Adam(learning_rate)
        optimizer.build(variables)

        def apply(grads: list[Any]) -> None:
            optimizer.apply_gradients(zip(grads, variables, strict=True))

        step = tf.function(apply)

        def call() -> Any:
            with tf.GradientTape() as tape:
                value = loss(params)
            step(tape.gradient(value, variables))
            self.wait(value)
            return value

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

    def mean(self, x: Any) -> Any:
        return tf.reduce_mean(x)

    def swap01(self, x: Any) -> Any:
        return tf.transpose(x, [1, 0, *range(2, len(x.shape))])

    def fma(self, a: Any, b: Any, c: Any) -> Any:
        return _fma(a, b, c)

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
