"""TensorFlow trainer: an rnnspec Keras 3 layer, a ``Dense`` readout, Keras' Adam, ``tf.GradientTape``.

Importing this module imports TensorFlow and Keras, never torch (TensorFlow and
Triton, which torch may import, abort a process that loads both in that order).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from models import LAYER_CLASSES, ModelSpec, model_inputs

import rnnspec
from rnnspec.backends.tensorflow import keras as rnn_layers
from rnnspec.ops import OPS

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
        # Every step's output, of which the readout reads each row's last valid one (see models.py).
        more = {"return_sequences": True, **({"return_extras": True} if self.extras else {})}
        self.rnn = layer_class(spec.hidden_size, spec.num_layers, seed=seed, **spec.options, **more)
        self.head = keras.layers.Dense(spec.output_size)
        # The op's required per-step arrays (Phased LSTM's timestamps), zeros, for the call that builds the weights.
        required = {o.name: tf.zeros((1, 1)) for o in OPS[spec.op].array_options if o.required}
        self._forward(tf.zeros((1, 1, spec.input_size)), tf.ones((1,), tf.int32), required)  # builds the weights
        # The layer of the evaluation options: its weights are the trained layer's, copied in by predict.
        self._eval_rnn = (
            layer_class(spec.hidden_size, spec.num_layers, seed=seed, **{**spec.options, **spec.eval_options}, **more)
            if spec.eval_options
            else None
        )
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
        self._predict = tf.function(self._evaluate)

    def _forward(
        self, x: tf.Tensor, lengths: tf.Tensor, arrays: Mapping[str, tf.Tensor], rnn: Any = None
    ) -> dict[str, tf.Tensor]:
        """The readout ``"output"`` of each row's output at step ``lengths - 1`` and the layer's extra fields by
        name; ``rnn`` in place of the trained layer (its evaluation twin)."""
        returned = (rnn or self.rnn)(x, **arrays)  # over the padding too: see models.py
        outputs = returned[0] if self.extras else returned
        last = tf.gather(outputs, tf.maximum(lengths - 1, 0), axis=1, batch_dims=1)
        if not self.extras:
            return {"output": self.head(last)}
        return {"output": self.head(last), **dict(zip(self.extras, returned[1:], strict=True))}

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

    def _evaluate(self, x: tf.Tensor, lengths: tf.Tensor, arrays: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        return self._forward(x, lengths, arrays, self._eval_rnn)

    def _train_step_eager(
        self, x: tf.Tensor, lengths: tf.Tensor, arrays: Mapping[str, tf.Tensor], y: tf.Tensor
    ) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = self._loss(self._forward(x, lengths, arrays), y)
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

    def _inputs(
        self, x: np.ndarray, extras: Mapping[str, np.ndarray] | None
    ) -> tuple[tf.Tensor, tf.Tensor, dict[str, tf.Tensor]]:
        """The layer's input, the rows' lengths (every row full without them) and the per-step arrays."""
        inputs, arrays, lengths = model_inputs(self.spec, x, extras)
        steps = np.full(x.shape[0], x.shape[1], np.int32) if lengths is None else lengths
        return tf.constant(inputs), tf.constant(steps), {k: tf.constant(v) for k, v in arrays.items()}

    def step(self, x: np.ndarray, y: np.ndarray, extras: Mapping[str, np.ndarray] | None = None) -> float:
        return float(self._train_step(*self._inputs(x, extras), tf.constant(y)))

    def learning_rate(self) -> float:
        # Keras evaluates its schedule at the optimiser's iterations.
        return float(np.asarray(self.optimizer.learning_rate))

    def layer_params(self) -> list[dict[str, np.ndarray]]:
        params: list[dict[str, np.ndarray]] = self.rnn.numpy_params()
        return params

    def predict(self, x: np.ndarray, extras: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        if self._eval_rnn is not None:
            self._eval_rnn.load_canonical(self.rnn.canonical_params())
        return {k: v.numpy() for k, v in self._predict(*self._inputs(x, extras)).items()}

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
