"""JAX trainer: an rnnspec Flax NNX layer, an ``nnx.Linear`` readout, optax's Adam, all under ``nnx.jit``."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from models import LAYER_CLASSES, ModelSpec

import rnnspec
from rnnspec.backends.jax import nnx as rnn_layers

__all__ = ["JaxTrainer", "make_trainer"]


class Net(nnx.Module):  # type: ignore[misc]
    """The recurrent layer of ``spec`` and a linear readout of its last output."""

    def __init__(self, spec: ModelSpec, rngs: nnx.Rngs) -> None:
        layer_class = getattr(rnn_layers, LAYER_CLASSES[spec.op])
        self.rnn = layer_class(spec.input_size, spec.hidden_size, spec.num_layers, **spec.options, rngs=rngs)
        self.head = nnx.Linear(spec.hidden_size, spec.output_size, rngs=rngs)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, Any]:
        result = self.rnn(x)
        return self.head(result.outputs[:, -1]), result


def _loss(spec: ModelSpec, net: Net, x: jax.Array, y: jax.Array) -> jax.Array:
    output, result = net(x)
    loss = optax.sigmoid_binary_cross_entropy(output, y).mean() if spec.loss == "bce" else jnp.mean((output - y) ** 2)
    if spec.budget_weight:
        loss = loss + rnnspec.skip_budget_loss(result.update_gate, spec.budget_weight)
    if spec.ponder_weight:
        loss = loss + spec.ponder_weight * result.ponder_cost.sum(axis=1).mean()
    return loss


class JaxTrainer:
    """Trains a :class:`Net` with optax (Adam after global-norm clipping) and the op's auxiliary loss."""

    def __init__(self, spec: ModelSpec, seed: int) -> None:
        self.spec = spec
        self.net = Net(spec, nnx.Rngs(seed))
        adam = optax.adam(spec.learning_rate)
        tx = adam if spec.clip_norm is None else optax.chain(optax.clip_by_global_norm(spec.clip_norm), adam)
        self.optimizer = nnx.Optimizer(self.net, tx, wrt=nnx.Param)

        def train_step(net: Net, optimizer: nnx.Optimizer, x: jax.Array, y: jax.Array) -> jax.Array:
            loss, grads = nnx.value_and_grad(lambda n: _loss(spec, n, x, y))(net)
            optimizer.update(net, grads)
            if spec.indrnn_bound is not None:
                for layer in net.rnn.layers:
                    layer.u[...] = rnnspec.indrnn_constrain(layer.u[...], spec.indrnn_bound)
            return loss

        def predict(net: Net, x: jax.Array) -> dict[str, jax.Array]:
            output, result = net(x)
            fields = ("update_gate", "ponder_cost", "ponder_steps")
            return {"output": output, **{f: getattr(result, f) for f in fields if f in result._fields}}

        self._train_step = nnx.jit(train_step)
        self._predict = nnx.jit(predict)

    def step(self, x: np.ndarray, y: np.ndarray) -> float:
        return float(self._train_step(self.net, self.optimizer, jnp.asarray(x), jnp.asarray(y)))

    def predict(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return {k: np.asarray(v) for k, v in self._predict(self.net, jnp.asarray(x)).items()}


def make_trainer(spec: ModelSpec, seed: int) -> JaxTrainer:
    """A :class:`JaxTrainer` for ``spec``, its weights drawn from ``nnx.Rngs(seed)``."""
    return JaxTrainer(spec, seed)
