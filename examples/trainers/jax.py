"""JAX trainer: an rnnspec Flax NNX layer, an ``nnx.Linear`` readout, optax's Adam, all under ``nnx.jit``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from models import LAYER_CLASSES, ModelSpec, model_inputs

import rnnspec
from rnnspec.backends.jax import nnx as rnn_layers

__all__ = ["JaxTrainer", "make_trainer"]


#: A batch as the jitted functions take it: the input, the lengths (or None), the layer's per-step arrays.
Inputs = tuple[jax.Array, jax.Array | None, dict[str, jax.Array]]


def _layer(spec: ModelSpec, options: Mapping[str, Any], rngs: nnx.Rngs) -> Any:
    """The recurrent layer of ``spec``, built with ``options``."""
    layer_class = getattr(rnn_layers, LAYER_CLASSES[spec.op])
    return layer_class(spec.input_size, spec.hidden_size, spec.num_layers, **options, rngs=rngs)


def _last_output(outputs: jax.Array, lengths: jax.Array | None) -> jax.Array:
    """Each row's output at its last valid step (the last step without ``lengths``)."""
    if lengths is None:
        return outputs[:, -1]
    return outputs[jnp.arange(outputs.shape[0]), jnp.maximum(lengths - 1, 0)]


class Net(nnx.Module):  # type: ignore[misc]
    """The recurrent layer of ``spec`` and a linear readout of its last output."""

    def __init__(self, spec: ModelSpec, rngs: nnx.Rngs) -> None:
        self.rnn = _layer(spec, spec.options, rngs)
        self.head = nnx.Linear(spec.hidden_size, spec.output_size, rngs=rngs)

    def __call__(self, inputs: Inputs, rnn: Any = None) -> tuple[jax.Array, Any]:
        """The readout and the layer's result; ``rnn`` in place of the net's own layer (its evaluation twin)."""
        x, lengths, arrays = inputs
        result = (self.rnn if rnn is None else rnn)(x, **arrays)  # over the padding too: see models.py
        return self.head(_last_output(result.outputs, lengths)), result


def _loss(spec: ModelSpec, net: Net, inputs: Inputs, y: jax.Array) -> jax.Array:
    output, result = net(inputs)
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

        # The layer of the evaluation options, outside the net: its weights are the net's, copied in by predict.
        self._eval_rnn = (
            _layer(spec, {**spec.options, **spec.eval_options}, nnx.Rngs(seed)) if spec.eval_options else None
        )

        def train_step(net: Net, optimizer: nnx.Optimizer, inputs: Inputs, y: jax.Array) -> jax.Array:
            loss, grads = nnx.value_and_grad(lambda n: _loss(spec, n, inputs, y))(net)
            optimizer.update(net, grads)
            if spec.indrnn_bound is not None:
                for layer in net.rnn.layers:
                    layer.u[...] = rnnspec.indrnn_constrain(layer.u[...], spec.indrnn_bound)
            return loss

        def predict(net: Net, eval_rnn: Any, inputs: Inputs) -> dict[str, jax.Array]:
            output, result = net(inputs, eval_rnn)
            fields = ("update_gate", "ponder_cost", "ponder_steps")
            return {"output": output, **{f: getattr(result, f) for f in fields if f in result._fields}}

        self._train_step = nnx.jit(train_step)
        self._predict = nnx.jit(predict)

    @property
    def updates(self) -> int:
        """The updates made so far (the optimiser's step count)."""
        return int(self.optimizer.step[...])

    def _inputs(self, x: np.ndarray, extras: Mapping[str, np.ndarray] | None) -> Inputs:
        inputs, arrays, lengths = model_inputs(self.spec, x, extras)
        given = None if lengths is None else jnp.asarray(lengths)
        return jnp.asarray(inputs), given, {k: jnp.asarray(v) for k, v in arrays.items()}

    def step(self, x: np.ndarray, y: np.ndarray, extras: Mapping[str, np.ndarray] | None = None) -> float:
        return float(self._train_step(self.net, self.optimizer, self._inputs(x, extras), jnp.asarray(y)))

    def learning_rate(self) -> float:
        # optax's schedules count the updates in the optimiser's state, as the optimiser's own step does.
        return float(self._lr(self.updates)) if callable(self._lr) else float(self._lr)

    def layer_params(self) -> list[dict[str, np.ndarray]]:
        params: list[dict[str, np.ndarray]] = self.net.rnn.numpy_params()
        return params

    def predict(self, x: np.ndarray, extras: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        if self._eval_rnn is not None:
            self._eval_rnn.load_canonical(self.net.rnn.canonical_params())
        result = self._predict(self.net, self._eval_rnn, self._inputs(x, extras))
        return {k: np.asarray(v) for k, v in result.items()}

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
