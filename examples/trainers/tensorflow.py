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
        learning_rate: float | keras.optimizers.schedules.LearningRateSchedule = spec.learning_rate
        if spec.lr_decay_every is not None:
            learning_rate = keras.optimizers.schedules.ExponentialDecay(
                spec.learning_rate, spec.lr_decay_every, spec.lr_decay_factor, staircase=True
            )
        # epsilon 1e-8, as torch's and optax's Adam and TF1's AdamOptimizer (Keras' default: 1e-7).
        self.optimizer = keras.optimizers.Adam(learning_rate, epsilon=1e-8, global_clipnorm=spec.clip_norm)
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
        elif self.spec.loss == "half_mse":
            loss = 0.5 * tf.reduce_mean(tf.square(output - y))
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

    @property
    def updates(self) -> int:
        """The updates made so far (the optimiser's ``iterations``)."""
        return int(self.optimizer.iterations.numpy())

    def step(self, x: np.ndarray, y: np.ndarray) -> float:
        return float(self._train_step(tf.constant(x), tf.constant(y)))

    def learning_rate(self) -> float:
        # Keras evaluates its schedule at the optimiser's iterations.
        return float(np.asarray(self.optimizer.learning_rate))

    def predict(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return {k: v.numpy() for k, v in self._predict(tf.constant(x)).items()}

    def _state_variables(self) -> dict[str, list[Any]]:
        return {"net": [*self.rnn.weights, *self.head.weights], "optimizer": list(self.optimizer.variables)}

    def state(self) -> dict[str, Any]:
        arrays = {key: [np.array(v.numpy()) for v in variables] for key, variables in self._state_variables().items()}
        return {**arrays, "updates": self.updates}

    def load_state(self, state: dict[str, Any]) -> None:
        for key, variables in self._state_variables().items():
            if len(variables) != len(state[key]):
                raise ValueError(
                    f"TensorFlowTrainer.load_state: {key} expected {len(variables)} arrays, got {len(state[key])}"
                )
            for variable, value in zip(variables, state[key], strict=True):
                variable.assign(value)


def make_trainer(spec: ModelSpec, seed: int) -> TensorFlowTrainer:
    """A :class:`TensorFlowTrainer` for ``spec``, its weights drawn with ``seed``."""
    return TensorFlowTrainer(spec, seed)
