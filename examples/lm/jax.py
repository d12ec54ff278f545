"""JAX language model: ``nnx.Embed``, rnnspec Flax NNX layers, an ``nnx.Linear`` readout, optax's Adam, ``nnx.jit``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from lm import EvalStream, LMSpec, check_arrays, flatten_state, unflatten_state
from rnnspec.backends.jax import nnx as rnn_layers

__all__ = ["JaxLMTrainer", "make_trainer"]

#: The rnnspec layer class of each op.
_LAYERS = {"qrnn": "QRNN", "lstm": "LSTM"}
#: A carried state: the op's state (one mapping per layer) of each layer module.
State = list[list[dict[str, jax.Array]]]


class Net(nnx.Module):  # type: ignore[misc]
    """Embedding, one rnnspec layer module per layer of ``spec`` (each its own window), readout at every step."""

    def __init__(self, spec: LMSpec, rngs: nnx.Rngs) -> None:
        layer_class = getattr(rnn_layers, _LAYERS[spec.op])
        self.embed = nnx.Embed(spec.vocab_size, spec.embed_size, rngs=rngs)
        self.rnns = nnx.List(
            [
                layer_class(spec.layer_input(k), spec.hidden_size, **spec.layer_options(k), rngs=rngs)
                for k in range(spec.num_layers)
            ]
        )
        self.head = nnx.Linear(spec.hidden_size, spec.vocab_size, rngs=rngs)

    def __call__(self, x: jax.Array, state: State | None, masks: list[jax.Array] | None) -> tuple[jax.Array, State]:
        h = self.embed(x)
        new_state = []
        for k, rnn in enumerate(self.rnns):
            more = {} if masks is None else {"zoneout_mask": masks[k]}
            result = rnn(h, initial_state=None if state is None else state[k], **more)
            h = result.outputs
            new_state.append(list(result.state))
        return self.head(h), new_state


def _flat(tree: Any) -> dict[str, Any]:
    """The leaves of a pytree by their key path."""
    return {jax.tree_util.keystr(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


class JaxLMTrainer:
    """Trains a :class:`Net` with optax (Adam after global-norm clipping), the state carried from chunk to chunk."""

    def __init__(self, spec: LMSpec, seed: int, batch: int) -> None:
        self.spec = spec
        self.net = Net(spec, nnx.Rngs(seed))
        tx = optax.chain(optax.clip_by_global_norm(spec.clip_norm), optax.adam(spec.learning_rate))
        self.optimizer = nnx.Optimizer(self.net, tx, wrt=nnx.Param)
        self.key = jax.random.PRNGKey(seed + 1)
        zoneout = spec.zoneout if spec.op == "qrnn" else 0.0

        def loss_of(net: Net, x: jax.Array, y: jax.Array, state: State, masks: Any) -> tuple[jax.Array, State]:
            logits, new_state = net(x, state, masks)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new_state

        def train_step(
            net: Net, optimizer: nnx.Optimizer, x: jax.Array, y: jax.Array, state: State, key: jax.Array
        ) -> tuple[jax.Array, State, jax.Array]:
            masks = None
            if zoneout > 0:
                key, *draws = jax.random.split(key, spec.num_layers + 1)
                shape = (*x.shape, spec.hidden_size)
                masks = [jax.random.bernoulli(d, zoneout, shape).astype(jnp.float32) for d in draws]
            grad_fn = nnx.value_and_grad(lambda n: loss_of(n, x, y, state, masks), has_aux=True)
            (loss, new_state), grads = grad_fn(net)
            optimizer.update(net, grads)
            return loss, new_state, key

        def eval_chunk(net: Net, x: jax.Array, y: jax.Array, state: State) -> tuple[jax.Array, State]:
            # Zoneout's expectation in evaluation: every mask entry p.
            masks = (
                None
                if zoneout == 0
                else [jnp.full((*x.shape, spec.hidden_size), zoneout, jnp.float32)] * spec.num_layers
            )
            logits, new_state = net(x, state, masks)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).sum(), new_state

        self._train_step = nnx.jit(train_step)
        self._eval_chunk = nnx.jit(eval_chunk)
        self._zero = self._zero_state(batch)
        self.state: State = self._zero

    def _zero_state(self, batch: int) -> State:
        """Zeros shaped as the state of a batch of ``batch`` (a one-step run's, zeroed)."""
        _, state = self.net(jnp.zeros((batch, 1), jnp.int32), None, None)
        return jax.tree.map(jnp.zeros_like, state)

    def step(self, x: np.ndarray, y: np.ndarray) -> float:
        loss, self.state, self.key = self._train_step(
            self.net, self.optimizer, jnp.asarray(x), jnp.asarray(y), self.state, self.key
        )
        return float(loss)

    def reset_state(self) -> None:
        self.state = self._zero

    def evaluate(self, stream: EvalStream) -> float:
        total, state = 0.0, self._zero_state(stream.inputs.shape[0])
        for start in range(0, stream.inputs.shape[1], stream.seq):
            x = jnp.asarray(stream.inputs[:, start : start + stream.seq])
            y = jnp.asarray(stream.targets[:, start : start + stream.seq])
            loss, state = self._eval_chunk(self.net, x, y, state)
            total += float(loss)
        return total / stream.chars

    def parameter_count(self) -> int:
        return sum(int(leaf.size) for leaf in jax.tree.leaves(nnx.state(self.net, nnx.Param)))

    def arrays(self) -> dict[str, np.ndarray]:
        out = {f"model/{k}": np.asarray(v) for k, v in _flat(nnx.state(self.net, nnx.Param)).items()}
        out |= {f"adam/{k}": np.asarray(v) for k, v in _flat(nnx.state(self.optimizer)).items()}
        out |= {k: np.asarray(v) for k, v in flatten_state("state", self.state).items()}
        return out | {"rng/zoneout": np.asarray(self.key)}

    def load_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        trees = {"model": nnx.state(self.net, nnx.Param), "adam": nnx.state(self.optimizer)}
        expected = {f"{name}/{k}": tuple(np.shape(v)) for name, tree in trees.items() for k, v in _flat(tree).items()}
        expected |= {k: tuple(np.shape(v)) for k, v in flatten_state("state", self._zero).items()}
        check_arrays(type(self).__name__, expected | {"rng/zoneout": tuple(self.key.shape)}, arrays)
        for name, tree in trees.items():
            paths, treedef = jax.tree_util.tree_flatten_with_path(tree)
            leaves = [jnp.asarray(arrays[f"{name}/{jax.tree_util.keystr(path)}"]) for path, _ in paths]
            nnx.update(self.net if name == "model" else self.optimizer, jax.tree_util.tree_unflatten(treedef, leaves))
        state = unflatten_state("state", arrays, self.spec.num_layers)
        self.state = self._zero if state is None else jax.tree.map(jnp.asarray, state)
        self.key = jnp.asarray(arrays["rng/zoneout"])


def make_trainer(spec: LMSpec, seed: int, batch: int) -> JaxLMTrainer:
    """A :class:`JaxLMTrainer` for ``spec``, its weights drawn from ``nnx.Rngs(seed)``."""
    return JaxLMTrainer(spec, seed, batch)
