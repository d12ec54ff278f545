"""Deep IndRNN as a Flax NNX module: residual and batch-normalised stacks, and weight decay without ``u``.

What the stack computes is :mod:`rnnspec.backends.common.deep_indrnn`'s. Each layer's
``w_ih``, ``b_ih`` and ``u`` live in a one-layer :class:`rnnspec.backends.jax.nnx.IndRNN`
(``cells/<i>/layers/0/u``); the recurrence is the JAX backend's ``indrnn_recurrence``.
Batch normalisation over batch and time is ``nnx.BatchNorm`` with the valid steps as its
``mask``; per-step statistics are :class:`PerStepBatchNorm`, which follows
``nnx.BatchNorm``'s conventions (``momentum=0.99``, ``epsilon=1e-5``, the running
variance biased, ``scale``/``bias`` params and ``mean``/``var`` batch stats) at each step.
Dropout is ``nnx.Dropout`` with one mask per sequence (``broadcast_dims=(1,)``).
``model.train()``/``model.eval()`` set ``use_running_average`` and ``deterministic``
as for Flax's own layers.

Importing this module imports jax and flax; :mod:`rnnspec.backends.jax.nnx` re-exports its public names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx  # type: ignore[import-not-found,unused-ignore]

from rnnspec.backends.common.deep_indrnn import DeepIndRNNConfig, ParamKind, check_length, decays, draw_deep_params
from rnnspec.backends.common.deep_indrnn import param_kind as _spec_param_kind
from rnnspec.backends.common.layers import layer_backend
from rnnspec.errors import OptionError, ShapeError
from rnnspec.results import SequenceResult

__all__ = ["DeepIndRNN", "PerStepBatchNorm", "weight_decay_mask"]

_BACKEND = "jax"
#: Seeds drawn from ``rngs.params()`` lie in [0, 2**31 - 1): what jax.random.randint draws as int32.
_SEED_BOUND = 2**31 - 1


class PerStepBatchNorm(nnx.Module):  # type: ignore[misc,unused-ignore]
    """Batch normalisation over the batch separately at each time step of ``(batch, time, H)`` inputs.

    ``scale`` and ``bias`` (``H``) are shared over time, as the IndRNN authors'; the running statistics
    ``mean`` and ``var`` (``nnx.BatchStat``) are one row per step, ``(max_length, H)``, updated as
    ``nnx.BatchNorm`` updates its own (``momentum * running + (1 - momentum) * batch``, the batch variance
    biased) at each step with a valid row; the others keep theirs.
    """

    def __init__(
        self,
        num_features: int,
        max_length: int,
        *,
        use_running_average: bool = False,
        momentum: float = 0.99,
        epsilon: float = 1e-5,
        param_dtype: Any = jnp.float32,
    ) -> None:
        self.num_features, self.max_length = num_features, max_length
        self.use_running_average = use_running_average
        self.momentum, self.epsilon = momentum, epsilon
        self.scale = nnx.Param(jnp.ones((num_features,), param_dtype))
        self.bias = nnx.Param(jnp.zeros((num_features,), param_dtype))
        self.mean = nnx.BatchStat(jnp.zeros((max_length, num_features), param_dtype))
        self.var = nnx.BatchStat(jnp.ones((max_length, num_features), param_dtype))

    def __call__(
        self, x: jax.Array, use_running_average: bool | None = None, *, mask: jax.Array | None = None
    ) -> jax.Array:
        """Normalise ``x`` ``(batch, time, H)``; ``mask`` ``(batch, time)`` marks the valid steps (None: all).

        Masked steps enter no statistic and come out as zeros.
        """
        steps = x.shape[1]
        if steps > self.max_length:
            expected = f"at most max_length = {self.max_length} steps"
            raise ShapeError(type(self).__name__, "x", expected, f"{steps} steps", backend=_BACKEND)
        running = self.use_running_average if use_running_average is None else use_running_average
        weights = jnp.ones_like(x[..., :1]) if mask is None else mask.astype(x.dtype)[..., None]
        if running:
            mean, var = self.mean[...][:steps], self.var[...][:steps]
        else:
            count = weights.sum(0)  # (time, 1): the valid rows at each step
            mean = (x * weights).sum(0) / jnp.maximum(count, 1)
            var = ((x - mean) ** 2 * weights).sum(0) / jnp.maximum(count, 1)
            kept = count > 0
            old_mean, old_var = self.mean[...][:steps], self.var[...][:steps]
            m = self.momentum
            new_mean = jnp.where(kept, m * old_mean + (1 - m) * jax.lax.stop_gradient(mean), old_mean)
            new_var = jnp.where(kept, m * old_var + (1 - m) * jax.lax.stop_gradient(var), old_var)
            self.mean[...] = self.mean[...].at[:steps].set(new_mean)
            self.var[...] = self.var[...].at[:steps].set(new_var)
        y = (x - mean) / jnp.sqrt(var + self.epsilon) * self.scale[...] + self.bias[...]
        return y if mask is None else y * weights


class DeepIndRNN(nnx.Module):  # type: ignore[misc,unused-ignore]
    """The IndRNN authors' deep stack: residual blocks, batch normalisation before or after the activation.

    Layer ``i`` computes ``s_i = W_i y_{i-1} + b_i (+ s_{i-block_layers})``, the batch normalisation
    "before" on ``s_i``, ``h_{i,t} = act(. + u_i * h_{i,t-1})``, dropout, the batch normalisation "after";
    see :mod:`rnnspec.backends.common.deep_indrnn` for the equations and the authors' choices.

    Parameters
    ----------
    input_size, hidden_size, num_layers, batch_first
        As :class:`rnnspec.backends.jax.nnx.IndRNN` takes them (``num_layers``: the depth ``L``).
    residual, block_layers
        Identity shortcuts over ``block_layers`` layers (the authors' 2) between the pre-activation sums.
    batch_norm
        None, ``"before"`` (on the pre-activation sum) or ``"after"`` (on each layer's output).
    bn_statistics
        ``"batch_time"`` (``nnx.BatchNorm`` over batch and time) or ``"per_step"`` (:class:`PerStepBatchNorm`).
    max_length
        The running statistics' rows with ``"per_step"`` (required then, refused otherwise).
    dropout
        The probability of dropping a unit, one mask per sequence shared over time, after each layer
        (``nnx.Dropout``, drawing from ``rngs``' ``dropout`` stream).
    activation, seq_len, mag, last_layer_init, checkpoint_every, param_dtype
        As :class:`rnnspec.backends.jax.nnx.IndRNN` takes them (``last_layer_init``: the top layer's).
    rngs
        The init seed is drawn from ``rngs.params()``; dropout draws from ``rngs``.

    Raises
    ------
    rnnspec.errors.OptionError
        A bad option, naming ``DeepIndRNN`` and the argument.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        batch_first: bool = True,
        *,
        residual: bool = False,
        block_layers: int = 2,
        batch_norm: str | None = None,
        bn_statistics: str = "batch_time",
        max_length: int | None = None,
        dropout: float = 0.0,
        activation: str = "relu",
        seq_len: int | None = None,
        mag: float | None = None,
        last_layer_init: bool = False,
        checkpoint_every: int | None = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ) -> None:
        from .nnx import IndRNN  # the layer module re-exports this one

        name = type(self).__name__
        self.config = DeepIndRNNConfig.check(
            name,
            num_layers=num_layers,
            residual=residual,
            block_layers=block_layers,
            batch_norm=batch_norm,
            bn_statistics=bn_statistics,
            max_length=max_length,
            dropout=dropout,
            activation=activation,
        )
        if not isinstance(batch_first, bool):
            raise OptionError(name, "batch_first", "True or False", repr(batch_first))
        self.input_size, self.hidden_size, self.batch_first = input_size, hidden_size, batch_first
        self.checkpoint_every = checkpoint_every
        init_options = {"seq_len": seq_len, "mag": mag, "last_layer_init": last_layer_init}
        seed = int(jax.random.randint(rngs.params(), (), 0, _SEED_BOUND))
        drawn = draw_deep_params(
            input_size, hidden_size, num_layers, seed=seed, activation=activation, init_options=init_options
        )
        top = num_layers - 1
        cells = []
        for i, params in enumerate(drawn):
            cell = IndRNN(
                input_size if i == 0 else hidden_size,
                hidden_size,
                activation=activation,
                seq_len=seq_len,
                mag=mag,
                last_layer_init=last_layer_init and i == top,
                checkpoint_every=checkpoint_every,
                param_dtype=param_dtype,
                rngs=rngs,
            )
            cell.load_canonical([params])
            cells.append(cell)
        self.cells = nnx.List(cells)
        norms = None
        if batch_norm is not None:
            norms = nnx.List(
                [
                    PerStepBatchNorm(hidden_size, int(self.config.max_length or 0), param_dtype=param_dtype)
                    if self.config.per_step
                    else nnx.BatchNorm(hidden_size, param_dtype=param_dtype, rngs=rngs)
                    for _ in range(num_layers)
                ]
            )
        self.norms = nnx.data(norms)
        self.drop = nnx.data(nnx.Dropout(dropout, broadcast_dims=(1,), rngs=rngs) if dropout > 0 else None)

    def __call__(
        self,
        x: jax.Array,
        initial_state: Sequence[Mapping[str, jax.Array]] | None = None,
        lengths: Any = None,
    ) -> SequenceResult:
        """Run the stack over ``x`` ``(batch, time, input_size)`` (time-major without ``batch_first``).

        ``initial_state``: one mapping ``{"h": (batch, H)}`` per layer, or None (zeros); ``lengths``: each row's
        valid steps. Returns a ``SequenceResult``: the top layer's outputs (zeros at padded steps) and each
        layer's final state ``{"h": ...}`` (the state after its last valid step).

        Raises
        ------
        rnnspec.errors.ShapeError
            ``x`` not 3-D, or longer than ``max_length`` with per-step statistics; ``initial_state`` not one
            mapping per layer. The recurrence checks the rest (``lengths``, the state's shapes), naming it.
        """
        name = type(self).__name__
        x = jnp.asarray(x)
        if x.ndim != 3:
            raise ShapeError(name, "x", "an array (batch, time, input_size)", f"shape {x.shape}", backend=_BACKEND)
        if not self.batch_first:
            x = jnp.swapaxes(x, 0, 1)
        config = self.config
        steps = x.shape[1]
        check_length(name, steps, config, backend=_BACKEND)
        if initial_state is not None and (isinstance(initial_state, Mapping) or len(initial_state) != len(self.cells)):
            expected = f"None or {len(self.cells)} mappings {{'h': (batch, H)}}, one per layer"
            raise ShapeError(name, "initial_state", expected, type(initial_state).__name__, backend=_BACKEND)
        mask = None
        if lengths is not None:
            lengths = jnp.asarray(lengths)
            mask = jnp.arange(steps)[None, :] < lengths[:, None]
        backend = layer_backend(_BACKEND)
        sums: list[jax.Array] = []
        finals = []
        y = x
        for i, (cell, source) in enumerate(zip(self.cells, config.shortcuts, strict=True)):
            p = cell.canonical_params()[0]
            s = y @ p["w_ih"].T + p["b_ih"]
            if source is not None:
                s = s + sums[source]
            sums.append(s)
            z = self._normalise(i, s, mask) if config.batch_norm == "before" else s
            start = None if initial_state is None else jnp.asarray(initial_state[i]["h"])
            h = backend.indrnn_recurrence(
                z,
                p["u"],
                start,
                activation=config.activation,
                lengths=lengths,
                checkpoint_every=self.checkpoint_every,
            )
            finals.append({"h": _final(h, lengths, start)})
            if self.drop is not None:
                h = self.drop(h)
            y = self._normalise(i, h, mask) if config.batch_norm == "after" else h
        outputs = y if self.batch_first else jnp.swapaxes(y, 0, 1)
        return SequenceResult(outputs, tuple(finals))

    def _normalise(self, i: int, a: jax.Array, mask: jax.Array | None) -> jax.Array:
        """Layer ``i``'s batch normalisation of ``a`` ``(batch, time, H)`` over the valid steps only."""
        assert self.norms is not None
        norm = self.norms[i]
        if isinstance(norm, PerStepBatchNorm):
            return norm(a, mask=mask)
        if mask is None:
            return norm(a)  # type: ignore[no-any-return]
        # Only the valid steps enter the statistics; the padded ones come out as zeros.
        return norm(a, mask=mask[..., None]) * mask[..., None].astype(a.dtype)  # type: ignore[no-any-return]


def _final(h: jax.Array, lengths: jax.Array | None, start: jax.Array | None) -> jax.Array:
    """Each row's state after its last valid step (its initial state, or zeros, for a row of length 0)."""
    initial = jnp.zeros_like(h[:, 0]) if start is None else jnp.broadcast_to(start.astype(h.dtype), h[:, 0].shape)
    if h.shape[1] == 0:
        return initial
    if lengths is None:
        return h[:, -1]
    last = jnp.maximum(lengths.astype(jnp.int32) - 1, 0)
    picked = h[jnp.arange(h.shape[0]), last]
    return jnp.where((lengths > 0)[:, None], picked, initial)


def _path_key(entry: Any) -> Any:
    """One entry of a JAX key path as the name or index it stands for."""
    for attribute in ("key", "idx", "name"):
        if hasattr(entry, attribute):
            return getattr(entry, attribute)
    return entry


def _kinds(module: nnx.Module) -> dict[tuple[Any, ...], ParamKind]:
    """The kind for weight decay of every ``nnx.Param`` of ``module``, by its path in ``nnx.state``."""
    from .nnx import _SpecLayer  # the layer module re-exports this one

    norms = (nnx.BatchNorm, nnx.LayerNorm, nnx.GroupNorm, nnx.RMSNorm, PerStepBatchNorm)
    kinds: dict[tuple[Any, ...], ParamKind] = {}
    owned: dict[tuple[Any, ...], ParamKind | str] = {}
    for path, sub in nnx.iter_modules(module):
        if isinstance(sub, _SpecLayer):
            owned[tuple(path)] = f"spec:{sub.op}"
        elif isinstance(sub, norms):
            owned[tuple(path)] = "norm"
    for path, _ in nnx.to_flat_state(nnx.state(module, nnx.Param)):
        path = tuple(path)
        kind: ParamKind = "bias" if path[-1] == "bias" else "weight"
        # The innermost owner decides: an rnnspec layer's record, or a normalisation.
        for depth in range(len(path) - 1, -1, -1):
            owner = owned.get(path[:depth])
            if owner == "norm":
                kind = "norm"
                break
            if isinstance(owner, str) and owner.startswith("spec:"):
                kind = _spec_param_kind(owner.removeprefix("spec:"), str(path[-1]))
                break
        kinds[path] = kind
    return kinds


def weight_decay_mask(module: nnx.Module, *, biases: bool = False, norms: bool = False) -> Callable[[Any], Any]:
    """A mask for ``optax.adamw(..., mask=)`` or ``optax.add_decayed_weights(..., mask=)``: decay every
    ``nnx.Param`` of ``module`` but the recurrent weights (IndRNN's ``u``).

    ``nnx.Optimizer(model, optax.adamw(2e-4, weight_decay=1e-4, mask=weight_decay_mask(model)),
    wrt=nnx.Param)``. The mask is a function of the params tree (``nnx.state(model, nnx.Param)``, with or
    without its ``Param`` wrappers, as the optimizer passes it) that gives the same tree of bools: False for
    the recurrent weights (the params each rnnspec layer's record names recurrent, in any
    :mod:`rnnspec.backends.jax.nnx` layer of ``module``: :class:`DeepIndRNN`'s and a plain ``IndRNN``'s
    ``u``), for the biases (rnnspec's ``b_ih``..., any other module's ``bias``) unless ``biases=True``, and
    for the normalisations' params (``BatchNorm``, ``LayerNorm``, ``GroupNorm``, ``RMSNorm``,
    :class:`PerStepBatchNorm`) unless ``norms=True``: the IndRNN authors decay neither.

    Raises
    ------
    rnnspec.errors.OptionError
        A flag not a bool (when the mask is made); a params tree with a path ``module`` has no param at (when
        it is applied).
    """
    for flag, value in (("biases", biases), ("norms", norms)):
        if not isinstance(value, bool):
            raise OptionError("weight_decay_mask", flag, "True or False", repr(value))
    decided = {path: decays(kind, biases=biases, norms=norms) for path, kind in _kinds(module).items()}

    def mask(params: Any) -> Any:
        def decide(path: Any, _: Any) -> bool:
            keys = tuple(_path_key(entry) for entry in path)
            if keys and keys[-1] == "value":  # a Param wrapper's own field
                keys = keys[:-1]
            if keys not in decided:
                expected = "a tree of the module's nnx.Param (nnx.state(module, nnx.Param))"
                raise OptionError("weight_decay_mask", "params", expected, f"a leaf at {keys}")
            return decided[keys]

        return jax.tree_util.tree_map_with_path(decide, params)

    return mask
