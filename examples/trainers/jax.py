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
    if spec.loss == "bce":
        loss = optax.sigmoid_binary_cross_entropy(output, y).mean()
    elif spec.loss == "half_mse":
        loss = 0.5 * jnp.mean((output - y) ** 2)
    else:
        loss = jnp.mean((output - y) ** 2)
    if spec.budget_weight:
        loss = loss + rnnspec.skip_budget_loss(result.update_gate, spec.budget_weight)
    if spec.ponder_weight:
        loss = loss + spec.ponder_weight * result.ponder_cost.sum(axis=1).mean()
    return loss


def _schedule(spec: ModelSpec) -> optax.Schedule | float:
    """Adam's step size: constant, or multiplied by ``lr_decay_factor`` every ``lr_decay_every`` updates."""
    if spec.lr_decay_every is None:
        return spec.learning_rate
    return optax.exponential_decay(spec.learning_rate, spec.lr_decay_every, spec.lr_decay_factor, staircase=True)


class JaxTrainer:
    """Trains a :class:`Net` with optax (Adam after global-norm clipping) and the op's auxiliary loss."""

    def __init__(self, spec: ModelSpec, seed: int) -> None:
        self.spec = spec
        self.net = Net(spec, nnx.Rngs(seed))
        self._lr = _schedule(spec)
        adam = optax.adam(self._lr)
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

    @property
    def updates(self) -> int:
        """The updates made so far (the optimiser's step count)."""
        return int(self.optimizer.step[...])

    def step(self, x: np.ndarray, y: np.ndarray) -> float:
        return float(self._train_step(self.net, self.optimizer, jnp.asarray(x), jnp.asarray(y)))

    def learning_rate(self) -> float:
        # optax's schedules count the updates in the optimiser's state, as the optimiser's own step does.
        return float(self._lr(self.updates)) if callable(self._lr) else float(self._lr)

    def predict(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return {k: np.asarray(v) for k, v in self._predict(self.net, jnp.asarray(x)).items()}

    def state(self) -> dict[str, Any]:
        def pure(module: Any) -> Any:
            return jax.tree.map(lambda a: np.array(a), nnx.to_pure_dict(nnx.state(module)))

        return {"net": pure(self.net), "optimizer": pure(self.optimizer), "updates": self.updates}

    def load_state(self, state: dict[str, Any]) -> None:
        for module, key in ((self.net, "net"), (self.optimizer, "optimizer")):
            current = nnx.state(module)
            nnx.replace_by_pure_dict(current, jax.tree.map(jnp.asarray, state[key]))
            nnx.update(module, current)


def make_trainer(spec: ModelSpec, seed: int) -> JaxTrainer:
    """A :class:`JaxTrainer` for ``spec``, its weights drawn from ``nnx.Rngs(seed)``."""
    return JaxTrainer(spec, seed)
