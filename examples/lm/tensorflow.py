"""TensorFlow language model: Keras' ``Embedding``, rnnspec Keras layers, a ``Dense`` readout, Keras' Adam.

Importing this module imports TensorFlow and Keras, never torch (TensorFlow and
Triton, which torch may import, abort a process that loads both in that order).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from lm import EvalStream, LMSpec, check_arrays
from rnnspec.backends.tensorflow import keras as rnn_layers

__all__ = ["TensorFlowLMTrainer", "make_trainer"]

#: The rnnspec layer class of each op.
_LAYERS = {"qrnn": "QRNN", "lstm": "LSTM"}
#: A carried state: each layer's flat state list, as the Keras layers return and take it.
State = list[list[tf.Tensor]]


class TensorFlowLMTrainer:
    """Trains an embedding, the rnnspec Keras layers of ``spec`` and a readout with Adam (global-norm clipping).

    The QRNN's zoneout (``--zoneout``) is the Keras layer's own, drawn from its seed generator in training.
    """

    def __init__(self, spec: LMSpec, seed: int, batch: int) -> None:
        keras.utils.set_random_seed(seed)
        self.spec = spec
        layer_class = getattr(rnn_layers, _LAYERS[spec.op])
        more = {"zoneout": spec.zoneout} if spec.op == "qrnn" else {}
        self.embed = keras.layers.Embedding(spec.vocab_size, spec.embed_size)
        self.rnns = [
            layer_class(
                spec.hidden_size,
                seed=seed + k,
                return_sequences=True,
                return_state=True,
                **spec.layer_options(k),
                **more,
            )
            for k in range(spec.num_layers)
        ]
        self.head = keras.layers.Dense(spec.vocab_size)
        self._zero = self._zero_state(batch)  # builds the weights
        self.state = self._zero
        self.layers = [self.embed, *self.rnns, self.head]
        self.trainable = [v for layer in self.layers for v in layer.trainable_variables]
        self.optimizer = keras.optimizers.Adam(spec.learning_rate, global_clipnorm=spec.clip_norm)
        self.optimizer.build(self.trainable)
        self._train_step = tf.function(self._train_step_eager)
        self._eval_chunk = tf.function(self._eval_chunk_eager)

    def _forward(self, x: tf.Tensor, state: State | None, training: bool) -> tuple[tf.Tensor, State]:
        h = self.embed(x)
        new_state = []
        for k, rnn in enumerate(self.rnns):
            returned = rnn(h, initial_state=None if state is None else state[k], training=training)
            h = returned[0]
            new_state.append(list(returned[1:]))
        return self.head(h), new_state

    def _zero_state(self, batch: int) -> State:
        """Zeros shaped as the state of a batch of ``batch`` (a one-step run's, zeroed)."""
        _, state = self._forward(tf.zeros((batch, 1), tf.int32), None, False)
        return [[tf.zeros_like(s) for s in layer] for layer in state]

    def _train_step_eager(self, x: tf.Tensor, y: tf.Tensor, state: State) -> tuple[tf.Tensor, State]:
        with tf.GradientTape() as tape:
            logits, new_state = self._forward(x, state, True)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
        grads = tape.gradient(loss, self.trainable)
        self.optimizer.apply_gradients(zip(grads, self.trainable, strict=True))
        return loss, new_state

    def _eval_chunk_eager(self, x: tf.Tensor, y: tf.Tensor, state: State) -> tuple[tf.Tensor, State]:
        logits, new_state = self._forward(x, state, False)
        return tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)), new_state

    def step(self, x: np.ndarray, y: np.ndarray) -> float:
        loss, self.state = self._train_step(tf.constant(x), tf.constant(y), self.state)
        return float(loss)

    def reset_state(self) -> None:
        self.state = self._zero

    def evaluate(self, stream: EvalStream) -> float:
        total = 0.0
        state = self._zero if stream.inputs.shape[0] == self._zero[0][0].shape[0] else None
        state = self._zero_state(stream.inputs.shape[0]) if state is None else state
        for start in range(0, stream.inputs.shape[1], stream.seq):
            x = tf.constant(stream.inputs[:, start : start + stream.seq])
            y = tf.constant(stream.targets[:, start : start + stream.seq])
            loss, state = self._eval_chunk(x, y, state)
            total += float(loss)
        return total / stream.chars

    def parameter_count(self) -> int:
        return sum(int(np.prod(v.shape)) for v in self.trainable)

    def _variables(self) -> dict[str, Any]:
        """Every variable to restore by a name of its place (the layers' names depend on what was built before)."""
        named = {f"model/{i}": v for i, v in enumerate(v for layer in self.layers for v in layer.variables)}
        return named | {f"adam/{i}": v for i, v in enumerate(self.optimizer.variables)}

    def arrays(self) -> dict[str, np.ndarray]:
        out = {k: np.asarray(v.numpy()) for k, v in self._variables().items()}
        for m, layer in enumerate(self.state):
            out |= {f"state/{m}/{j}": np.asarray(s.numpy()) for j, s in enumerate(layer)}
        return out

    def load_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        variables = self._variables()
        expected = {k: tuple(v.shape) for k, v in variables.items()}
        expected |= {
            f"state/{m}/{j}": tuple(s.shape) for m, layer in enumerate(self._zero) for j, s in enumerate(layer)
        }
        check_arrays(type(self).__name__, expected, arrays)
        for key, variable in variables.items():
            variable.assign(arrays[key])
        self.state = [
            [tf.constant(arrays[f"state/{m}/{j}"]) for j in range(len(layer))] for m, layer in enumerate(self._zero)
        ]


def make_trainer(spec: LMSpec, seed: int, batch: int) -> TensorFlowLMTrainer:
    """A :class:`TensorFlowLMTrainer` for ``spec``, its weights drawn with ``seed``."""
    return TensorFlowLMTrainer(spec, seed, batch)
