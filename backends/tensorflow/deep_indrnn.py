"""Deep IndRNN as a Keras 3 layer: residual and batch-normalised stacks, and weight decay without ``u``.

What the stack computes is :mod:`rnnspec.backends.common.deep_indrnn`'s. Each layer's
``w_ih``, ``b_ih`` and ``u`` live in a one-layer :class:`rnnspec.backends.tensorflow.keras.IndRNN`
(``cell_<i>/layer_0/u``); the recurrence is the TensorFlow backend's ``indrnn_recurrence``.
Batch normalisation over batch and time is ``keras.layers.BatchNormalization`` with the valid
steps as its ``mask``; per-step statistics are :class:`PerStepBatchNormalization`, which follows
``BatchNormalization``'s conventions (``momentum=0.99``, ``epsilon=1e-3``, the moving variance
biased, ``gamma``/``beta`` and ``moving_mean``/``moving_variance``) at each step. Dropout is
``keras.layers.Dropout`` with one mask per sequence (``noise_shape=(None, 1, units)``). The call's
``training`` switches between batch and moving statistics, and dropout on and off, as Keras' own
layers. A Keras mask (right padding: True on a prefix of each row) gives each row's length.

Importing this module imports tensorflow and keras; :mod:`rnnspec.backends.tensorflow.keras`
re-exports its public names.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import keras
import tensorflow as tf

from rnnspec.backends.common.deep_indrnn import DeepIndRNNConfig, ParamKind, check_length, decays, draw_deep_params
from rnnspec.backends.common.deep_indrnn import param_kind as _spec_param_kind
from rnnspec.backends.common.layers import layer_backend
from rnnspec.errors import CallError, OptionError, ShapeError
from rnnspec.results import SequenceResult

from .implementation import run_op

__all__ = ["DeepIndRNN", "PerStepBatchNormalization", "exclude_from_weight_decay", "no_decay_variables"]

_BACKEND = "tensorflow"
_SEED_BOUND = 2**31 - 1


@keras.saving.register_keras_serializable(package="rnnspec")
class PerStepBatchNormalization(keras.layers.Layer):  # type: ignore[misc,unused-ignore]
    """Batch normalisation over the batch separately at each time step of ``(batch, time, H)`` inputs.

    ``gamma`` and ``beta`` (``H``) are shared over time, as the IndRNN authors'; the moving statistics are
    one row per step, ``moving_mean`` and ``moving_variance`` ``(max_length, H)``, updated as
    ``keras.layers.BatchNormalization`` updates its own (``momentum * moving + (1 - momentum) * batch``, the
    batch variance biased) at each step with a valid row; the others keep theirs.
    """

    def __init__(self, max_length: int, momentum: float = 0.99, epsilon: float = 1e-3, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_length, self.momentum, self.epsilon = int(max_length), float(momentum), float(epsilon)
        self.supports_masking = True

    def build(self, input_shape: Any) -> None:
        features = int(input_shape[-1])
        self.gamma = self.add_weight(shape=(features,), initializer="ones", name="gamma")
        self.beta = self.add_weight(shape=(features,), initializer="zeros", name="beta")
        rows = (self.max_length, features)
        self.moving_mean = self.add_weight(shape=rows, initializer="zeros", name="moving_mean", trainable=False)
        self.moving_variance = self.add_weight(shape=rows, initializer="ones", name="moving_variance", trainable=False)
        self.built = True

    def call(self, inputs: Any, training: Any = None, mask: Any = None) -> Any:
        """Normalise ``inputs`` ``(batch, time, H)``; ``mask`` ``(batch, time)`` marks the valid steps (None: all).

        Masked steps enter no statistic and come out as zeros.
        """
        x = tf.convert_to_tensor(inputs)
        steps = x.shape[1] if x.shape[1] is not None else tf.shape(x)[1]
        if isinstance(steps, int) and steps > self.max_length:
            expected = f"at most max_length = {self.max_length} steps"
            raise ShapeError(type(self).__name__, "inputs", expected, f"{steps} steps", backend=_BACKEND)
        weights = tf.ones_like(x[..., :1]) if mask is None else tf.cast(mask, x.dtype)[..., None]
        old_mean = tf.cast(self.moving_mean, x.dtype)[:steps]
        old_var = tf.cast(self.moving_variance, x.dtype)[:steps]
        if training:
            count = tf.reduce_sum(weights, 0)  # (time, 1): the valid rows at each step
            mean = tf.reduce_sum(x * weights, 0) / tf.maximum(count, 1)
            var = tf.reduce_sum((x - mean) ** 2 * weights, 0) / tf.maximum(count, 1)
            kept = count > 0
            m = self.momentum
            new_mean = tf.where(kept, m * old_mean + (1 - m) * tf.stop_gradient(mean), old_mean)
            new_var = tf.where(kept, m * old_var + (1 - m) * tf.stop_gradient(var), old_var)
            for variable, new in ((self.moving_mean, new_mean), (self.moving_variance, new_var)):
                kept_rows = tf.convert_to_tensor(variable)[steps:]  # the rows past this sequence keep theirs
                variable.assign(tf.concat([tf.cast(new, variable.dtype), kept_rows], 0))
        else:
            mean, var = old_mean, old_var
        gamma, beta = tf.cast(self.gamma, x.dtype), tf.cast(self.beta, x.dtype)
        y = (x - mean) / tf.sqrt(var + self.epsilon) * gamma + beta
        return y if mask is None else y * weights

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "max_length": self.max_length,
            "momentum": self.momentum,
            "epsilon": self.epsilon,
        }


@keras.saving.register_keras_serializable(package="rnnspec")
class DeepIndRNN(keras.layers.Layer):  # type: ignore[misc,unused-ignore]
    """The IndRNN authors' deep stack: residual blocks, batch normalisation before or after the activation.

    Layer ``i`` computes ``s_i = W_i y_{i-1} + b_i (+ s_{i-block_layers})``, the batch normalisation
    "before" on ``s_i``, ``h_{i,t} = act(. + u_i * h_{i,t-1})``, dropout, the batch normalisation "after";
    see :mod:`rnnspec.backends.common.deep_indrnn` for the equations and the authors' choices.

    Parameters
    ----------
    units, num_layers
        The size of every layer, the depth ``L``.
    residual, block_layers
        Identity shortcuts over ``block_layers`` layers (the authors' 2) between the pre-activation sums.
    batch_norm
        None, ``"before"`` (on the pre-activation sum) or ``"after"`` (on each layer's output).
    bn_statistics
        ``"batch_time"`` (``BatchNormalization`` over batch and time) or ``"per_step"``
        (:class:`PerStepBatchNormalization`).
    max_length
        The moving statistics' rows with ``"per_step"`` (required then, refused otherwise).
    dropout
        The probability of dropping a unit, one mask per sequence shared over time, after each layer.
    activation, seq_len, mag, last_layer_init, checkpoint_every
        As :class:`rnnspec.backends.tensorflow.keras.IndRNN` takes them (``last_layer_init``: the top layer's).
    return_sequences
        Return the outputs ``(batch, time, units)``; False: each row's last valid output (Keras' default).
    seed
        The init seed (None: drawn from Python's ``random``, which ``keras.utils.set_random_seed`` seeds).
    **kwargs
        Keras' layer arguments (``name``, ``dtype``).

    Raises
    ------
    rnnspec.errors.OptionError
        A bad option, naming ``DeepIndRNN`` and the argument.
    """

    def __init__(
        self,
        units: int,
        num_layers: int = 1,
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
        return_sequences: bool = False,
        seed: int | None = None,
        checkpoint_every: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
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
        if not isinstance(return_sequences, bool):
            raise OptionError(name, "return_sequences", "True or False", repr(return_sequences))
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise OptionError(name, "seed", "None or an integer >= 0", repr(seed))
        self.units, self.return_sequences, self.seed = units, return_sequences, seed
        self.checkpoint_every = checkpoint_every
        self._init_options: dict[str, Any] = {"seq_len": seq_len, "mag": mag, "last_layer_init": last_layer_init}
        # Checks units and the init options (naming them) now, rather than at the first call.
        draw_deep_params(1, units, num_layers, seed=0, activation=activation, init_options=self._init_options)
        self.supports_masking = True

    def build(self, input_shape: Any) -> None:
        """Create every layer's weights for inputs ``(batch, time, input_size)``, with the deep stack's init."""
        from .keras import IndRNN  # the layer module re-exports this one

        shape = tuple(input_shape)
        if len(shape) != 3 or shape[-1] is None:
            expected = "(batch, time, features) with a known number of features"
            raise ShapeError(type(self).__name__, "inputs", expected, f"shape {shape}")
        config, top = self.config, self.config.num_layers - 1
        seed = self.seed if self.seed is not None else random.randrange(_SEED_BOUND)
        drawn = draw_deep_params(
            int(shape[-1]),
            self.units,
            config.num_layers,
            seed=seed,
            activation=config.activation,
            init_options=self._init_options,
        )
        self.cells = []
        for i, params in enumerate(drawn):
            cell = IndRNN(
                self.units,
                activation=config.activation,
                checkpoint_every=self.checkpoint_every,
                name=f"cell_{i}",
                dtype=self.dtype_policy,
                seq_len=self._init_options["seq_len"],
                mag=self._init_options["mag"],
                last_layer_init=bool(self._init_options["last_layer_init"]) and i == top,
            )
            cell.load_canonical([params])  # builds it for the input size params imply
            self.cells.append(cell)
        self.norms = []
        if config.batch_norm is not None:
            for i in range(config.num_layers):
                if config.per_step:
                    norm: Any = PerStepBatchNormalization(int(config.max_length or 0), name=f"norm_{i}")
                else:
                    norm = keras.layers.BatchNormalization(name=f"norm_{i}")
                norm.build((None, None, self.units))
                self.norms.append(norm)
        self.drop = None
        if config.dropout > 0:
            self.drop = keras.layers.Dropout(config.dropout, noise_shape=(None, 1, self.units), seed=seed)
        self.built = True

    def call(self, inputs: Any, mask: Any = None, training: Any = None, initial_state: Any = None) -> Any:
        """Run the stack over ``inputs`` ``(batch, time, features)``: the outputs with ``return_sequences``,
        else each row's last valid output; ``mask`` (right padding) gives each row's length, and
        ``initial_state`` is None or one mapping ``{"h": (batch, units)}`` per layer."""
        try:
            result = self.run(inputs, mask=mask, training=training, initial_state=initial_state)
        except CallError as err:
            # Keras would re-raise it as a RuntimeError (rnnspec's errors take four arguments): marked as
            # annotated, it passes through unchanged, as the other layers' errors do.
            err._keras_call_info_injected = True  # type: ignore[attr-defined]
            raise
        if self.return_sequences:
            return result.outputs
        return _last(result.outputs, None if mask is None else tf.reduce_sum(tf.cast(mask, tf.int32), 1))

    def run(
        self,
        inputs: Any,
        *,
        mask: Any = None,
        training: Any = None,
        initial_state: Sequence[Mapping[str, Any]] | None = None,
    ) -> SequenceResult:
        """The stack's ``SequenceResult``: the top layer's outputs (zeros at padded steps) and each layer's final
        state ``{"h": ...}`` (after its last valid step).

        Raises
        ------
        rnnspec.errors.ShapeError
            More steps than ``max_length`` with per-step statistics; ``initial_state`` not one mapping per layer.
        """
        name = type(self).__name__
        x = tf.cast(tf.convert_to_tensor(inputs), self.compute_dtype)
        if not self.built:
            self.build(x.shape)
        config = self.config
        if x.shape[1] is not None:
            check_length(name, int(x.shape[1]), config, backend=_BACKEND)
        if initial_state is not None and (isinstance(initial_state, Mapping) or len(initial_state) != len(self.cells)):
            expected = f"None or {len(self.cells)} mappings {{'h': (batch, units)}}, one per layer"
            raise ShapeError(name, "initial_state", expected, type(initial_state).__name__, backend=_BACKEND)
        lengths = valid = None
        if mask is not None:
            lengths = tf.reduce_sum(tf.cast(mask, tf.int32), 1)
            valid = tf.range(tf.shape(x)[1])[None, :] < lengths[:, None]
        sums: list[Any] = []
        finals = []
        y = x
        for i, (cell, source) in enumerate(zip(self.cells, config.shortcuts, strict=True)):
            p = cell.stack[0].tensors(x.dtype)
            s = tf.linalg.matmul(y, p["w_ih"], transpose_b=True) + p["b_ih"]
            if source is not None:
                s = s + sums[source]
            sums.append(s)
            z = self._normalise(i, s, valid, training) if config.batch_norm == "before" else s
            start = None if initial_state is None else tf.cast(initial_state[i]["h"], x.dtype)
            h = self._recurrence(z, p["u"], start, lengths)
            finals.append({"h": _final(h, lengths, start)})
            if self.drop is not None:
                h = self.drop(h, training=training)
            y = self._normalise(i, h, valid, training) if config.batch_norm == "after" else h
        return SequenceResult(y, tuple(finals))

    def _recurrence(self, z: Any, u: Any, start: Any, lengths: Any) -> Any:
        arguments = {
            "pre": z,
            "u": u,
            "initial": start,
            "activation": self.config.activation,
            "lengths": lengths,
            "reverse": False,
            "checkpoint_every": self.checkpoint_every,
        }
        if z.shape.is_fully_defined():  # the public entry point: every argument checked
            return layer_backend(_BACKEND).indrnn_recurrence(**arguments)
        # A trace with a dimension unknown (Keras' functional build, model.fit's relaxed shapes): the shapes are
        # the layer's own, so the arguments are already normalised and the op runs directly.
        return run_op("indrnn_recurrence", arguments)

    def _normalise(self, i: int, a: Any, valid: Any, training: Any) -> Any:
        """Layer ``i``'s batch normalisation of ``a`` ``(batch, time, H)`` over the valid steps only."""
        norm = self.norms[i]
        if valid is None:
            return norm(a, training=training)
        # Only the valid steps enter the statistics; the padded ones come out as zeros.
        return norm(a, training=training, mask=valid) * tf.cast(valid, a.dtype)[..., None]

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
        shape = tuple(input_shape)
        return (shape[0], shape[1], self.units) if self.return_sequences else (shape[0], self.units)

    def compute_mask(self, inputs: Any, mask: Any = None) -> Any:
        return mask if self.return_sequences else None

    def get_config(self) -> dict[str, Any]:
        c = self.config
        return {
            **super().get_config(),
            "units": self.units,
            "num_layers": c.num_layers,
            "residual": c.residual,
            "block_layers": c.block_layers,
            "batch_norm": c.batch_norm,
            "bn_statistics": c.bn_statistics,
            "max_length": c.max_length,
            "dropout": c.dropout,
            "activation": c.activation,
            **self._init_options,
            "return_sequences": self.return_sequences,
            "seed": self.seed,
            "checkpoint_every": self.checkpoint_every,
        }


def _final(h: Any, lengths: Any, start: Any) -> Any:
    """Each row's state after its last valid step (its initial state, or zeros, for a row of length 0)."""
    initial = tf.zeros_like(h[:, 0]) if start is None else tf.broadcast_to(start, tf.shape(h[:, 0]))
    if h.shape[1] == 0:
        return initial
    if lengths is None:
        return h[:, -1]
    return tf.where((lengths > 0)[:, None], _last(h, lengths), initial)


def _last(outputs: Any, lengths: Any) -> Any:
    """Each row's output at its last valid step (zeros for a row of length 0)."""
    if lengths is None:
        return outputs[:, -1]
    last = tf.maximum(lengths - 1, 0)
    picked = tf.gather(outputs, last, axis=1, batch_dims=1)
    return tf.where((lengths > 0)[:, None], picked, tf.zeros_like(picked))


def _kinds(layer: Any) -> Iterable[tuple[Any, ParamKind]]:
    """Every trainable variable of ``layer`` once, with its kind for weight decay."""
    from .keras import _SpecLayer  # the layer module re-exports this one

    norms = (
        keras.layers.BatchNormalization,
        keras.layers.LayerNormalization,
        keras.layers.GroupNormalization,
        PerStepBatchNormalization,
    )
    kinds: dict[int, ParamKind] = {}
    for sub in layer._flatten_layers(include_self=True, recursive=True):
        if isinstance(sub, _SpecLayer) and sub.built:
            for weights in sub._layer_slots():
                for key, variable in weights._variables_by_name.items():
                    kinds[id(variable)] = _spec_param_kind(sub.op, key)
        elif isinstance(sub, norms):
            for variable in sub.trainable_weights:
                kinds[id(variable)] = "norm"
    seen: set[int] = set()
    for variable in layer.trainable_weights:
        if id(variable) not in seen:
            seen.add(id(variable))
            yield variable, kinds.get(id(variable), "bias" if variable.name == "bias" else "weight")


def no_decay_variables(layer: Any, *, biases: bool = False, norms: bool = False) -> list[Any]:
    """The trainable variables of ``layer`` (a built layer or model) that weight decay must leave alone.

    The recurrent weights (the params each rnnspec layer's record names recurrent, in any
    :mod:`rnnspec.backends.tensorflow.keras` layer of ``layer``: :class:`DeepIndRNN`'s and a plain ``IndRNN``'s
    ``u``) always; the biases (rnnspec's ``b_ih``..., any other layer's ``bias``) unless ``biases=True``; the
    normalisations' ``gamma``/``beta`` unless ``norms=True``: the IndRNN authors decay neither.

    Raises
    ------
    rnnspec.errors.OptionError
        A flag not a bool.
    """
    for flag, value in (("biases", biases), ("norms", norms)):
        if not isinstance(value, bool):
            raise OptionError("no_decay_variables", flag, "True or False", repr(value))
    return [v for v, kind in _kinds(layer) if not decays(kind, biases=biases, norms=norms)]


def exclude_from_weight_decay(optimizer: Any, layer: Any, *, biases: bool = False, norms: bool = False) -> None:
    """``optimizer.exclude_from_weight_decay(var_list=no_decay_variables(layer, ...))``: an ``AdamW`` (any Keras
    optimizer with ``weight_decay``) then decays every trainable variable of ``layer`` but those. Call it
    before the optimizer is built (its first step), after ``layer`` is."""
    optimizer.exclude_from_weight_decay(var_list=no_decay_variables(layer, biases=biases, norms=norms))
