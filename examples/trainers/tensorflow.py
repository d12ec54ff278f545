"""TensorFlow trainer: an rnnspec Keras 3 layer, a ``Dense`` readout, Keras' Adam, ``tf.GradientTape``.

Importing this module imports TensorFlow and Keras, never torch (TensorFlow and
Triton, which torch may import, abort a process that loads both in that order).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf
from models import LAYER_CLASSES, ModelSpec

import rnnspec
from rnnspec.backends.tensorflow import keras as rnn_layers

__all__ = ["TensorFlowTrainer", "make_trainer"]

#: The ops whose layers return extra per-step fields (``return_extras=True``), and those fields in order.
_EXTRAS = {
    "skip_rnn": ("update_gate", "update_prob"),
    "skip_lstm": ("update_gate", "update_prob"),
    "skip_gru": ("update_gate", "update_prob"),
    "act": ("ponder_steps", "ponder_remainder", "ponder_cost"),
}


class TensorFlowTrainer:
    """Trains the layer of ``spec`` and a readout with Adam (global-norm clipping) and the op's auxiliary loss."""

    def __init__(self, spec: ModelSpec, seed: int) -> None:
        keras.utils.set_random_seed(seed)
        self.spec = spec
        self.extras = _EXTRAS.get(spec.op, ())
        layer_class = getattr(rnn_layers, LAYER_CLASSES[spec.op])
        more = {"return_extras": True} if self.extras else {}
        self.rnn = layer_class(spec.hidden_size, spec.num_layers, seed=seed, **spec.options, **more)
        self.head = keras.layers.Dense(spec.output_size)
        self._forward(tf.zeros((1, 1, spec.input_size)))  # builds the weights
        self.variables = [*self.rnn.trainable_variables, *self.head.trainable_variables]
        self.optimizer = keras.optimizers.Adam(spec.learning_rate, global_clipnorm=spec.clip_norm)
        self.optimizer.build(self.variables)
        self._train_step = tf.function(self._train_step_eager)
        self._predict = tf.function(self._forward)

    def _forward(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        """The readout ``"output"`` and the layer's extra fields by name."""
        returned = self.rnn(x)
        if not self.extras:
            return {"output": self.head(returned)}
        return {"output": self.head(returned[0]), **dict(zip(self.extras, returned[1:], strict=True))}

    def _loss(self, result: dict[str, Any], y: tf.Tensor) -> tf.Tensor:
        output = result["output"]
        if self.spec.loss == "bce":
            loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=output))
        else:
            loss = tf.reduce_mean(tf.square(output - y))
        if self.spec.budget_weight:
            loss += rnnspec.skip_budget_loss(result["update_gate"], self.spec.budget_weight)
        if self.spec.ponder_weight:
            loss += self.spec.ponder_weight * tf.reduce_mean(tf.reduce_sum(result["ponder_cost"], axis=1))
        return loss

    def _train_step_eager(self, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = self._loss(self._forward(x), y)
        grads = tape.gradient(loss, self.variables)
        self.optimizer.apply_gradients(zip(grads, self.variables, strict=True))
        if self.spec.indrnn_bound is not None:
            # rnnspec.indrnn_constrain's projection; it would clip a tf tensor with NumPy, outside the graph.
            bound = self.spec.indrnn_bound
            for weights in self.rnn.stack:
                u = weights.variable("u")
                u.assign(tf.clip_by_value(u, -bound, bound))
        return loss

    def step(self, x: np.ndarray, y: np.ndarray) -> float:
        return float(self._train_step(tf.constant(x), tf.constant(y)))

    def predict(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return {k: v.numpy() for k, v in self._predict(tf.constant(x)).items()}


def make_trainer(spec: ModelSpec, seed: int) -> TensorFlowTrainer:
    """A :class:`TensorFlowTrainer` for ``spec``, its weights drawn with ``seed``."""
    return TensorFlowTrainer(spec, seed)
