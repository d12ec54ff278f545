"""Keras 3 layers over the ops of the TensorFlow backend.

Each layer holds its weights in rnnspec's canonical layout and calls the
backend op in ``call``, so ``model.fit``, ``tf.GradientTape`` and
``tf.distribute`` reach every weight::

    import keras
    from rnnspec.backends.tensorflow.keras import SkipGRU

    model = keras.Sequential([
        keras.Input((None, 3)),
        keras.layers.Masking(),
        SkipGRU(8, num_layers=2, return_sequences=True, budget_loss_weight=1e-4),
        keras.layers.Dense(1),
    ])
    model.compile("adam", "mse")  # the budget loss is added to the model's losses

Layers: :class:`RNN`, :class:`LSTM`, :class:`GRU`, :class:`SkipRNN`,
:class:`SkipLSTM`, :class:`SkipGRU`, :class:`ACT`, :class:`IndRNN`, :class:`QRNN`,
:class:`PhasedLSTM`, registered with Keras as ``rnnspec>LSTM`` and so on, so a
model that uses them saves with ``model.save("m.keras")`` and loads with
``keras.models.load_model``.

Constructors follow Keras': ``units``, then ``num_layers``, ``use_bias``,
``return_sequences``, ``return_state``, ``go_backwards``, the op's options
(``reset_after``, ``activation``, ``mode``, ...) and ``seed``. The input size is
read from the first input, as every Keras layer does.

Weights live in ``stack``, one sublayer per layer of the op's stack, under the
spec's names: ``layer.weights`` reads ``lstm/layer_0/w_ih``,
``lstm/layer_1/b_hh``, ``skip_gru/layer_1/w_gate``. :meth:`~_SpecLayer.load_canonical`
takes ``rnnspec.init_params(...)``, ``rnnspec.convert.from_torch(module)`` or
``rnnspec.convert.from_keras(keras_layer)``; :meth:`~_SpecLayer.canonical_params`
gives them back as the op takes them.

Initialisation is the op's paper init from :func:`rnnspec.init_params`, with
``seed``, or a seed drawn from Python's ``random`` (which
``keras.utils.set_random_seed`` seeds).

``use_bias=False``: the spec's ops always take biases, so the *cell* biases
(``b_ih``, ``b_hh``, qrnn's ``b``) are no weights at all and enter the op as
zeros; the gate and halting biases (``b_gate``, ``b_halt``) belong to the
mechanism and stay trainable.

What ``call`` returns
---------------------
The output, ``(batch, time, units)`` with ``return_sequences=True``, else each
row's last valid output ``(batch, units)`` (zeros for a row of length 0). With
``return_state=True`` the final state follows, flattened layer by layer in the
spec's order (:attr:`~_SpecLayer.state_names`): ``[output, h]`` for a one-layer
GRU, ``[output, h, c]`` for an LSTM, as Keras' own layers, and for a stack
``[output, h_0, c_0, h_1, c_1]``. The skip layers' top state also carries
``update_prob`` and ``cum_update_prob`` ``(batch, 1)``, qrnn's ``x_prev``
``(batch, window - 1, input)``. ``initial_state`` takes the same flat list (or
the op's own structure, one mapping per layer), so a returned state continues
the sequence.

``go_backwards=True`` runs the op with ``reverse=True``: each row backwards over
its valid steps, from its last to its first. As Keras' own layers, the layer then
returns the sequence in reversed time order (``outputs[:, j]`` is the output of
the step that read ``inputs[:, time - 1 - j]``; the extra fields too), and
without ``return_sequences`` the output of the last step processed, the one that
read each row's first valid input. The mask passed on with
``return_sequences=True`` is reversed with the outputs.

The extra fields of the adaptive ops (``update_gate`` and ``update_prob`` of the
skip layers; ``ponder_steps``, ``ponder_remainder`` and ``ponder_cost`` of
:class:`ACT`, each ``(batch, time)``) are appended last with
``return_extras=True``, so the list reads ``[output, *state, *extras]``. Their
losses attach themselves with ``add_loss``: ``budget_loss_weight`` (the skip
layers, :func:`rnnspec.skip_budget_loss`) and ``ponder_loss_weight`` (ACT,
``tau`` times the ponder cost summed over time, averaged over the batch).

Masking
-------
A Keras mask (from ``keras.layers.Masking``, an ``Embedding(mask_zero=True)``,
or ``mask=`` in the call) becomes the op's ``lengths``: each row's number of
True entries. Each row may be right-padded (True on a prefix: the op's own
semantics) or left-padded (True on a suffix, what ``pad_sequences`` makes by
default), rows of both kinds in one batch. A left-padded row runs as Keras' own
layers run it, its state kept over the masked steps: its valid steps go through
the op first, from the initial state, and its per-step results (outputs and
extras) go back to where the steps were. At the masked steps the outputs are
zero (past a right-padded row's end, before a left-padded row's start) and the
final state is that of the last valid step. A mask with a masked step between
two valid ones raises :class:`rnnspec.errors.LengthsError` eagerly; inside a
traced function (``model.predict``, ``model.fit``) an assertion with the same
message fails when the step runs (``tf.errors.InvalidArgumentError``). With
``return_sequences=True`` the mask is passed on.

Per-step inputs
---------------
``call`` also takes the op's per-step array options by keyword, laid out as the
inputs (``(batch, time, ...)``): Phased LSTM's ``timestamps``, or qrnn's
``zoneout_mask`` in place of the one the layer draws. Real ones are cast to the
layer's compute dtype, as the inputs are; a left-padded row's move with its
inputs. Another keyword is an :class:`rnnspec.errors.UnknownArgumentError`.

Bidirectional
-------------
``keras.layers.Bidirectional(SkipGRU(8, return_sequences=True))`` wraps any of
the layers: it makes the backward layer from the layer's config with
``go_backwards=True``, flips its sequence back, and merges the two directions
(``merge_mode``, ``"concat"`` by default). The two directions hold separate
weights (``forward_layer.stack``, ``backward_layer.stack``), each direction's
losses attach themselves, and with ``return_state=True`` the forward states come
first, then the backward ones. Bidirectional knows a layer's output and states
only: ``return_extras`` is for a layer called directly, and so is
:class:`PhasedLSTM`, whose ``timestamps`` Bidirectional does not pass on. The
layers are never ``stateful`` (an attribute Bidirectional reads, always False).

Dropout
-------
``dropout=p`` drops between stacked layers, as ``torch.nn.LSTM(dropout=p)``
(not Keras' input ``dropout``); ``recurrent_dropout=p`` is Keras' (one mask per
layer, shared over time). A call with ``training=True`` draws the masks from the
layer's seed generator (the backward layer of Bidirectional its own); any other
call passes none.

Checkpointing
-------------
``checkpoint_every=K`` (every layer; None by default) is passed to the op:
the gradient recomputes the activations of each segment of K steps instead
of keeping them all (same values and gradients, less memory; see
:mod:`rnnspec.backends.tensorflow.checkpointing`). It is checked as the op
checks it (an integer >= 1, or None) and saved in the layer's config.

Importing this module imports tensorflow and keras.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import keras
import numpy as np
import tensorflow as tf

from rnnspec.backends.common.cells_core import CellCore
from rnnspec.backends.common.layers import (
    CELL_BIASES,
    ZONEOUT,
    LayerCore,
    LayerOption,
    ParamSlots,
    dropout_masks,
    input_size_of,
    layer_backend,
    time_fields,
)
from rnnspec.backends.common.trainable import layer_fixed_params, with_trainable_options
from rnnspec.errors import CallError, DtypeError, LengthsError, OptionError, ShapeError, UnknownArgumentError
from rnnspec.losses import skip_budget_loss
from rnnspec.ops import OPS
from rnnspec.shapes import evaluate

from .implementation import run_op
from .sequence import ARRAY_OPS

__all__ = [
    "ACT",
    "GRU",
    "LSTM",
    "QRNN",
    "RNN",
    "ACTCell",
    "DeepIndRNN",
    "GRUCell",
    "IndRNN",
    "IndRNNCell",
    "LSTMCell",
    "PerStepBatchNormalization",
    "PhasedLSTM",
    "PhasedLSTMCell",
    "QRNNCell",
    "RNNCell",
    "SkipGRU",
    "SkipGRUCell",
    "SkipLSTM",
    "SkipLSTMCell",
    "SkipRNN",
    "SkipRNNCell",
    "exclude_from_weight_decay",
    "no_decay_variables",
]

#: The backend the layers' call-time errors name.
_BACKEND = "tensorflow"
#: Seeds drawn for ``seed=None`` lie in [0, 2**31 - 1).
_SEED_BOUND = 2**31 - 1


def _check_weight(layer: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
        raise OptionError(layer, name, "a finite number >= 0 (0 adds no loss)", repr(value))
    return float(value)


def _loss_weight(name: str, loss: str) -> LayerOption:
    """A layer's option weighing the loss it adds with ``add_loss`` at every call (0, the default, adds none)."""
    description = f"{loss}, added with ``add_loss`` at every call; 0 (the default) adds nothing."
    return LayerOption(name, 0.0, "float", description, check=_check_weight)


class CanonicalWeights(ParamSlots, keras.layers.Layer):  # type: ignore[misc,unused-ignore]
    """The weights of one layer of the stack, one Keras variable per spec name (a container, never called).

    Parameters
    ----------
    arrays
        The layer's canonical arrays by name (from :func:`rnnspec.init_params`), in the spec's order.
    left_out
        Names that are no weights (``use_bias=False``): they enter the op as zeros.
    fixed
        Names of weights made with ``trainable=False`` (a trainable flag of the layer False).
    **kwargs
        Keras' layer arguments (``name``, ``dtype``).
    """

    def __init__(
        self,
        arrays: Mapping[str, np.ndarray],
        left_out: frozenset[str],
        fixed: frozenset[str] = frozenset(),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._variables_by_name: dict[str, Any] = {}
        for name, array in self.hold(arrays, left_out).items():
            variable = self.add_weight(shape=array.shape, initializer="zeros", name=name, trainable=name not in fixed)
            variable.assign(np.asarray(array, dtype=variable.dtype))
            self._variables_by_name[name] = variable
        self.built = True

    def variable(self, name: str) -> Any:
        """The Keras variable of the spec name ``name``."""
        return self._variables_by_name[name]

    def tensors(self, dtype: Any) -> dict[str, tf.Tensor]:
        """The arrays as the op takes them, in ``dtype``, in the spec's order (zeros for the left-out biases)."""
        # Reading the variable inside a GradientTape (or model.fit) records the gradient path.
        return self.gather(
            lambda name: tf.cast(tf.convert_to_tensor(self._variables_by_name[name]), dtype),
            lambda shape: tf.zeros(shape, dtype),
        )


class _SpecLayer(LayerCore, keras.layers.Layer):  # type: ignore[misc,unused-ignore]
    """A stack of an rnnspec op's layers as a Keras layer; subclasses fix the op (and add their options).

    Parameters
    ----------
    units, num_layers, use_bias, return_sequences, return_state, go_backwards, return_extras, seed, checkpoint_every
        As the module's docstring says.
    **kwargs
        The op's options, listed by each layer, and Keras' layer arguments (``name``, ``dtype``, ``trainable``).
    """

    backend_name: ClassVar[str] = "tensorflow"
    hidden_argument: ClassVar[str] = "units"
    common_parameters: ClassVar[str] = """\
units, num_layers, use_bias, return_sequences, return_state, go_backwards, seed, checkpoint_every
    As :mod:`rnnspec.backends.tensorflow.keras` says.
return_extras
    Append the op's extra per-step fields ``(batch, time)`` to the returned list (its skip and ACT layers).
**kwargs
    Keras' layer arguments (``name``, ``dtype``, ``trainable``)."""
    #: The extra result fields ``return_extras=True`` appends (empty: the option is refused), from the record.
    extra_fields: ClassVar[tuple[str, ...]] = ()
    #: Keras' RNN attributes that ``keras.layers.Bidirectional`` reads: the layers carry no state from one
    #: call to the next.
    stateful: ClassVar[bool] = False
    states: ClassVar[None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        if "op" in cls.__dict__:  # the record's trainable flags (Phased LSTM's trainable_ratio_on), first
            cls.extra_options = with_trainable_options(cls.op, cls.extra_options)
        super().__init_subclass__(**kwargs)
        if "op" in cls.__dict__:
            cls.extra_fields = time_fields(cls.op)[1:]
            keras.saving.register_keras_serializable(package="rnnspec")(cls)

    @classmethod
    def _takes(cls, keyword: str) -> bool:
        return keyword != "return_extras" or bool(cls.extra_fields)

    def __init__(
        self,
        units: int,
        num_layers: int = 1,
        *,
        use_bias: bool = True,
        return_sequences: bool = False,
        return_state: bool = False,
        go_backwards: bool = False,
        return_extras: bool = False,
        seed: int | None = None,
        checkpoint_every: int | None = None,
        **kwargs: Any,
    ) -> None:
        name = type(self).__name__
        if return_extras is not False and not self.extra_fields:
            raise OptionError(name, "return_extras", "False (this op has no extra result fields)", repr(return_extras))
        ours = {o.name for o in self.all_options()}
        super().__init__(**{k: v for k, v in kwargs.items() if k not in ours})
        flags = {
            "use_bias": use_bias,
            "return_sequences": return_sequences,
            "return_state": return_state,
            "go_backwards": go_backwards,
            "return_extras": return_extras,
        }
        options = {k: v for k, v in kwargs.items() if k in ours}
        self._configure(num_layers=num_layers, checkpoint_every=checkpoint_every, flags=flags, options=options)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
            raise OptionError(name, "seed", "None or an integer >= 0", repr(seed))
        self.units = units
        self.use_bias = use_bias
        self.return_sequences = return_sequences
        self.return_state = return_state
        self.go_backwards = go_backwards
        self.return_extras = return_extras
        self.seed = None if seed is None else int(seed)
        self.supports_masking = True
        # Checks units, num_layers and every option now, naming the argument, rather than at the first call.
        self._draw(input_size=1, hidden_size=units, seed=0)
        self._add_state()

    def _add_state(self) -> None:
        """Create what the layer tracks besides its weights (the dropout seed; QRNN's zoneout seed)."""
        dropping = getattr(self, "dropout", 0.0) > 0 or getattr(self, "recurrent_dropout", 0.0) > 0
        # A stream of its own, apart from zoneout's and from the other direction's of keras.layers.Bidirectional
        # (a copy of the layer with go_backwards flipped and the same seed).
        own = None if self.seed is None else np.random.default_rng([self.seed, 1, self.go_backwards]).integers(2**31)
        seed = None if own is None else int(own)
        self.dropout_seed = keras.random.SeedGenerator(seed) if dropping else None

    # -- configuration ------------------------------------------------------------------

    def get_config(self) -> dict[str, Any]:
        """The constructor's arguments, for ``model.save`` / ``keras.models.load_model``."""
        config: dict[str, Any] = {
            **super().get_config(),
            "units": self.units,
            "num_layers": self.num_layers,
            "use_bias": self.use_bias,
            "return_sequences": self.return_sequences,
            "return_state": self.return_state,
            "go_backwards": self.go_backwards,
            "seed": self.seed,
            "checkpoint_every": self.checkpoint_every,
            **self.keyword_options(),
        }
        if self.extra_fields:
            config["return_extras"] = self.return_extras
        return config

    # -- weights --------------------------------------------------------------------------

    def build(self, input_shape: Any) -> None:
        """Create the weights for inputs ``(batch, time, input_size)`` and fill them with the op's init."""
        shape = tuple(input_shape)
        if len(shape) != 3 or shape[-1] is None:
            expected = "(batch, time, features) with a known number of features"
            raise ShapeError(type(self).__name__, "inputs", expected, f"shape {shape}")
        self.input_size = int(shape[-1])
        seed = self.seed if self.seed is not None else random.randrange(_SEED_BOUND)
        arrays = self._draw(input_size=self.input_size, hidden_size=self.units, seed=seed)
        left_out = frozenset() if self.use_bias else CELL_BIASES
        fixed = layer_fixed_params(self)
        self.stack = [
            CanonicalWeights(layer, left_out, fixed, name=f"layer_{k}", dtype=self.dtype_policy)
            for k, layer in enumerate(arrays)
        ]
        self.input_spec = keras.layers.InputSpec(ndim=3, axes={-1: self.input_size})
        self.built = True

    def _prepare_load(self, params: Sequence[Mapping[str, Any]]) -> None:
        if not self.built:  # built for the input size that params imply
            self.build((None, None, input_size_of(type(self).__name__, self.op, params[0], self.options)))

    def _layer_slots(self) -> list[CanonicalWeights]:
        return list(self.stack)

    def _as_array(self, k: int, key: str, value: Any) -> np.ndarray:
        return np.asarray(value)

    def _set_param(self, k: int, key: str, value: np.ndarray) -> None:
        variable = self.stack[k].variable(key)
        variable.assign(value.astype(variable.dtype))  # assign copies: the caller's array is never aliased

    def canonical_params(self) -> list[dict[str, tf.Tensor]]:
        """The params as the op takes them, in the weights' dtype: one dict per layer (gradients reach them)."""
        return [layer.tensors(self.variable_dtype) for layer in self.stack]

    @staticmethod
    def _to_numpy(value: tf.Tensor) -> np.ndarray:
        return np.array(value.numpy())

    def save_params(self, path: str | os.PathLike[str]) -> None:
        """Write the params to a parameter file, as :meth:`ParamFiles.save_params`; the layer must be built.

        :meth:`load_params` builds an unbuilt layer for the input size the file implies.
        """
        if not self.built:
            expected = "a built layer (call it once, or load params into it)"
            raise OptionError(type(self).__name__, "save_params", expected, "an unbuilt layer")
        super().save_params(path)

    # -- state ----------------------------------------------------------------------------

    @property
    def state_names(self) -> tuple[tuple[int, str], ...]:
        """``(layer, entry)`` of each state tensor that ``return_state`` returns, in order."""
        spec = OPS[self.op]
        return tuple(
            (k, s.name)
            for k in range(self.num_layers)
            for s in spec.layer_state(top=k == self.num_layers - 1, options=self.options)
        )

    def _state_shapes(self, batch: Any) -> list[tuple[Any, ...]]:
        spec = OPS[self.op]
        shapes = []
        input_size = getattr(self, "input_size", None)
        for k in range(self.num_layers):
            dims = {
                **spec.fixed_dims(self.options),
                "H": self.units,
                "I": input_size if k == 0 else self.units,
                "K": self.init_options.get("window", 1),
            }
            for s in spec.layer_state(top=k == self.num_layers - 1, options=self.options):
                shapes.append((batch, *(evaluate(e, dims) for e in s.shape)))
        return shapes

    def _initial_state(self, initial_state: Any) -> tuple[dict[str, Any], ...] | None:
        """The op's structure (one mapping per layer) from Keras' flat list, a single tensor, or that structure."""
        if initial_state is None:
            return None
        if isinstance(initial_state, Sequence) and all(isinstance(s, Mapping) for s in initial_state):
            return tuple(
                {k: tf.cast(tf.convert_to_tensor(v), self.compute_dtype) for k, v in s.items()} for s in initial_state
            )
        flat = list(initial_state) if isinstance(initial_state, Sequence) else [initial_state]
        names = self.state_names
        if len(flat) != len(names):
            listed = ", ".join(f"{entry}[{k}]" for k, entry in names)
            raise ShapeError(
                type(self).__name__,
                "initial_state",
                f"{len(names)} tensors ({listed}), or one mapping per layer",
                f"{len(flat)} tensors",
            )
        state: list[dict[str, Any]] = [{} for _ in range(self.num_layers)]
        for (k, entry), value in zip(names, flat, strict=True):
            state[k][entry] = tf.cast(tf.convert_to_tensor(value), self.compute_dtype)
        return tuple(state)

    # -- call -------------------------------------------------------------------------------

    def _padding(self, mask: Any, x: tf.Tensor) -> tuple[tf.Tensor | None, tf.Tensor | None]:
        """``(lengths, shift)`` from a Keras mask over ``x``: each row's number of valid steps, and how far its
        first valid step lies from the start (0 for right padding, ``time - length`` for left padding).

        ``shift`` is None when every row is known to be right-padded (an eager call), and the call is then
        exactly the op's. A mask that is neither raises eagerly; in a trace, an assertion fails when it runs.
        """
        if mask is None:
            return None, None
        name = type(self).__name__
        mask = tf.convert_to_tensor(mask)
        if not (mask.dtype.is_bool or mask.dtype.is_integer or mask.dtype.is_floating):
            raise DtypeError(
                name, "mask", "a boolean tensor (batch, time), or 0 and 1", f"dtype {mask.dtype.name}", backend=_BACKEND
            )
        expected = f"shape {_shape(x.shape[:2])} (batch, time)"
        if mask.shape.rank is not None and (mask.shape.rank != 2 or not mask.shape.is_compatible_with(x.shape[:2])):
            raise ShapeError(name, "mask", expected, f"shape {_shape(mask.shape)}", backend=_BACKEND)
        if not tf.executing_eagerly() and not (mask.shape.is_fully_defined() and x.shape[:2].is_fully_defined()):
            # Sizes unknown in the trace: checked when it runs.
            check = tf.debugging.assert_equal(
                tf.shape(mask), tf.shape(x)[:2], message=str(ShapeError(name, "mask", expected, "another shape"))
            )
            with tf.control_dependencies([check]):
                mask = tf.identity(mask)
        mask = tf.cast(mask, tf.bool)
        time = x.shape[1] if x.shape[1] is not None else tf.shape(x)[1]
        lengths = tf.reduce_sum(tf.cast(mask, tf.int32), axis=1)
        steps = tf.range(time)[None, :]
        right = tf.reduce_all(tf.equal(mask, steps < lengths[:, None]), axis=1)
        left = tf.reduce_all(tf.equal(mask, steps >= time - lengths[:, None]), axis=1)
        shift = tf.where(right, 0, time - lengths)
        refused = "True on a prefix of each row (right padding) or on a suffix (left padding, as pad_sequences makes)"
        if tf.executing_eagerly():
            bad = np.flatnonzero(~np.asarray(right | left))
            if bad.size:
                actual = f"row {int(bad[0])} with a masked step between two valid ones"
                raise LengthsError(name, "mask", refused, actual, backend=_BACKEND)
            return lengths, (None if bool(tf.reduce_all(right)) else shift)
        actual = "a row with a masked step between two valid ones"
        message = str(LengthsError(name, "mask", refused, actual, backend=_BACKEND))
        check = tf.debugging.Assert(tf.reduce_all(right | left), [message])
        with tf.control_dependencies([check]):
            return tf.identity(lengths), tf.identity(shift)

    def _array_options(self, x: tf.Tensor, training: Any) -> dict[str, Any]:
        """The arrays the layer makes for one call: its dropout masks in training (``training=True``)."""
        if not training or self.dropout_seed is None:
            return {}
        seed = self.dropout_seed

        def draw(shape: tuple[Any, ...], p: float) -> tf.Tensor:
            keep = keras.random.uniform(tf.stack(shape), seed=seed, dtype="float32") >= p
            mask = tf.cast(keep, x.dtype) * tf.constant(1.0 / (1.0 - p), x.dtype)
            return tf.ensure_shape(mask, [x.shape[0], *([x.shape[1]] if len(shape) == 3 else []), self.units])

        return dropout_masks(self, batch=tf.shape(x)[0], time=tf.shape(x)[1], draw=draw)

    def _run(
        self,
        x: tf.Tensor,
        lengths: tf.Tensor | None,
        initial_state: tuple[dict[str, Any], ...] | None,
        arrays: Mapping[str, Any],
    ) -> Any:
        params = [layer.tensors(x.dtype) for layer in self.stack]
        if x.shape.is_fully_defined():
            # The public entry point: every argument checked, errors naming the op and the backend.
            method = getattr(layer_backend(self.backend_name), self.op)
            return method(
                x,
                params,
                **self.options,
                **arrays,
                lengths=lengths,
                initial_state=initial_state,
                reverse=self.go_backwards,
                checkpoint_every=self.checkpoint_every,
            )
        # Inside a trace with a dimension unknown (Keras' functional build, model.fit's relaxed shapes) the
        # shape checks cannot run on static sizes; the weights are the layer's own and x's feature size is held
        # by input_spec, so the arguments are already normalised and the op runs directly (it reads every size
        # at run time).
        arguments = {
            "x": x,
            "params": params,
            **self.options,
            **arrays,
            "lengths": lengths,
            "initial_state": initial_state,
            "reverse": self.go_backwards,
            "checkpoint_every": self.checkpoint_every,
        }
        return run_op(self.op, arguments)

    def call(
        self, inputs: Any, mask: Any = None, training: Any = None, initial_state: Any = None, **arrays: Any
    ) -> Any:
        """Run the op over ``inputs`` ``(batch, time, features)``; see the module's docstring for what returns.

        ``arrays`` are the op's per-step options the caller passes (Phased LSTM's ``timestamps``), laid out as
        ``inputs`` (``(batch, time, ...)``).
        """
        try:
            return self._call(inputs, mask, training, initial_state, arrays)
        except CallError as err:
            # Keras re-raises a layer's error as ``type(err)(message)``, which rnnspec's errors (op, argument,
            # expected, actual) cannot take, so it would become a RuntimeError; marked as already annotated,
            # it passes through every enclosing layer and model unchanged, and ``except LengthsError`` works.
            err._keras_call_info_injected = True  # type: ignore[attr-defined]
            raise

    def _call(self, inputs: Any, mask: Any, training: Any, initial_state: Any, arrays: Mapping[str, Any]) -> Any:
        given = self._given_arrays(arrays)
        x = tf.convert_to_tensor(inputs)
        if not (x.dtype.is_floating or x.dtype.is_integer or x.dtype.is_bool):
            expected = "a real tensor (batch, time, features): floating, integer or boolean"
            raise DtypeError(type(self).__name__, "inputs", expected, f"dtype {x.dtype.name}", backend=_BACKEND)
        if x.dtype != self.compute_dtype:
            x = tf.cast(x, self.compute_dtype)
        x = self._check_features(x)
        lengths, shift = self._padding(mask, x)
        if shift is not None:
            # Left-padded rows run with their valid steps first (the op's right padding): the state then
            # starts from the initial state at the first valid step, as Keras' own layers keep it over masked
            # steps; their per-step results go back where the steps were.
            x = _shift_rows(x, shift)
            given = {k: tf.nest.map_structure(lambda a: _shift_rows(a, shift), v) for k, v in given.items()}
        own = self._array_options(x, training)
        result = self._run(x, lengths, self._initial_state(initial_state), {**own, **given})
        self._add_losses(result)  # sums over time: the same whichever order the steps are in

        def per_step(a: tf.Tensor) -> tf.Tensor:
            # Back where the steps were, then in processing order for go_backwards, as Keras' layers return it.
            a = a if shift is None else _shift_rows(a, -shift)
            return tf.reverse(a, axis=[1]) if self.go_backwards else a

        if self.return_sequences:
            output = per_step(result.outputs)
        else:
            output = _last_output(result.outputs, lengths, reverse=self.go_backwards)
        if not self.return_state and not self.return_extras:
            return output
        outputs = [output]
        if self.return_state:
            outputs += [result.state[k][entry] for k, entry in self.state_names]
        if self.return_extras:
            outputs += [per_step(getattr(result, f)) for f in self.extra_fields]
        return outputs

    def _given_arrays(self, arrays: Mapping[str, Any]) -> dict[str, Any]:
        """The per-step options the caller passes, real ones as tensors of the layer's compute dtype (as the
        inputs are cast); another keyword is refused, naming it."""
        per_step = OPS[self.op].per_step[1:]
        for key in arrays:
            if key not in per_step:
                expected = f"one of {list(per_step)}" if per_step else "no per-step option (this op takes none)"
                raise UnknownArgumentError(type(self).__name__, key, expected, repr(key), backend=_BACKEND)

        def tensor(value: Any) -> tf.Tensor:
            value = tf.convert_to_tensor(value)
            return tf.cast(value, self.compute_dtype) if _is_real(value) else value

        # A sequence is one array per layer (qrnn's zoneout masks).
        return {
            k: tuple(tensor(a) for a in v) if isinstance(v, (list, tuple)) else tensor(v)
            for k, v in arrays.items()
            if v is not None
        }

    def _add_losses(self, result: Any) -> None:
        return None

    def _check_features(self, x: tf.Tensor) -> tf.Tensor:
        """``x``, refused (naming ``inputs``) when its feature size is not the one the weights were built for.

        The op would blame its weights (``params[0]['w_ih']``) for the caller's input, and inside a trace whose
        feature size is unknown (``model.predict`` on data of another width) XLA's matmul would fail raw: the
        check then runs with the graph, carrying the same message.
        """
        layer = type(self).__name__
        error = ShapeError(
            layer,
            "inputs",
            f"(batch, time, {self.input_size}): the feature size the layer was built for",
            f"shape {tuple(x.shape)}",
            backend=_BACKEND,
        )
        if x.shape.rank != 3:
            raise ShapeError(layer, "inputs", "(batch, time, features)", f"shape {tuple(x.shape)}", backend=_BACKEND)
        if x.shape[-1] is not None:
            if int(x.shape[-1]) != self.input_size:
                raise error
            return x
        check = tf.debugging.assert_equal(tf.shape(x)[-1], self.input_size, message=str(error))
        with tf.control_dependencies([check]):
            return tf.identity(x)

    def _output_shapes(self, sequences_shape: Any) -> list[tuple[Any, ...]]:
        """The shape of each tensor the call returns, for inputs of shape ``sequences_shape``."""
        batch, time = sequences_shape[0], sequences_shape[1]
        shapes = [(batch, time, self.units) if self.return_sequences else (batch, self.units)]
        if self.return_state:
            shapes += self._state_shapes(batch)
        if self.return_extras:
            shapes += [(batch, time)] * len(self.extra_fields)
        return shapes

    def compute_output_shape(self, sequences_shape: Any, initial_state_shape: Any = None) -> Any:
        """The outputs' shapes, as Keras' RNN layers give them (what ``keras.layers.Bidirectional`` asks)."""
        shapes = self._output_shapes(sequences_shape)
        return shapes[0] if len(shapes) == 1 else tuple(shapes)

    def compute_output_spec(
        self, inputs: Any, mask: Any = None, training: Any = None, initial_state: Any = None, **arrays: Any
    ) -> Any:
        """The outputs' shapes and dtype, without running the op (Keras' functional API)."""
        specs = [keras.KerasTensor(shape, dtype=self.compute_dtype) for shape in self._output_shapes(inputs.shape)]
        return specs[0] if len(specs) == 1 else specs

    def compute_mask(self, inputs: Any, mask: Any = None) -> Any:
        """The input mask for the sequence output (``return_sequences=True``; reversed with ``go_backwards``),
        None for everything else."""
        if mask is not None and self.return_sequences and self.go_backwards:
            mask = keras.ops.flip(mask, axis=1)
        first = mask if self.return_sequences else None
        count = 1 + (len(self.state_names) if self.return_state else 0)
        count += len(self.extra_fields) if self.return_extras else 0
        return first if count == 1 else [first] + [None] * (count - 1)


def _is_real(value: Any) -> bool:
    """Whether ``value`` (a tensor, a NumPy array, a list) holds real numbers (floating or integer)."""
    dtype = getattr(value, "dtype", None)
    if dtype is None:
        return bool(np.asarray(value).dtype.kind in "fiu")
    return bool(tf.as_dtype(dtype).is_floating or tf.as_dtype(dtype).is_integer)


def _shape(shape: tf.TensorShape) -> str:
    return "<unknown rank>" if shape.rank is None else str(tuple(shape.as_list()))


def _shift_rows(a: tf.Tensor, shift: tf.Tensor) -> tf.Tensor:
    """Row ``b`` of ``a`` ``(batch, time, ...)`` rotated by ``shift[b]`` steps towards the start (negative: the end)."""
    time = a.shape[1] if a.shape[1] is not None else tf.shape(a)[1]
    index = tf.math.floormod(tf.range(time)[None, :] + shift[:, None], tf.maximum(time, 1))
    return tf.ensure_shape(tf.gather(a, index, axis=1, batch_dims=1), a.shape)


def _last_output(outputs: tf.Tensor, lengths: tf.Tensor | None, *, reverse: bool = False) -> tf.Tensor:
    """Each row's output at the last step processed ``(batch, H)``: its last valid step, or with ``reverse``
    (``outputs`` aligned with the inputs, valid steps first) its first; zeros for a row of length 0."""
    time = outputs.shape[1]
    if time == 0:
        return tf.reduce_sum(outputs, axis=1)  # zeros (batch, H): no step, no output
    if reverse:
        return outputs[:, 0]  # zero for a row of length 0: the op's outputs are zero past a row's length
    if lengths is None:
        return outputs[:, -1]
    index = tf.maximum(lengths - 1, 0)
    last = tf.gather(outputs, index, axis=1, batch_dims=1)
    # Past a row's length the op's outputs are zero, and so is a row of length 0's "last" output.
    return tf.where(tf.reshape(lengths > 0, [-1, 1]), last, tf.zeros_like(last))


# -- the layers -------------------------------------------------------------------------


class RNN(_SpecLayer):
    op = "rnn"


class LSTM(_SpecLayer):
    op = "lstm"


class GRU(_SpecLayer):
    op = "gru"


class _Skip(_SpecLayer):
    """The skip layers: the budget loss."""

    extra_options = (
        _loss_weight("budget_loss_weight", "lambda of :func:`rnnspec.skip_budget_loss` (Campos et al. eq. 8)"),
    )
    budget_loss_weight: float

    def _add_losses(self, result: Any) -> None:
        if self.budget_loss_weight > 0:
            # float32 at least: a float16 sum over time would round away the small per-step costs.
            gate = tf.cast(result.update_gate, tf.float32) if result.update_gate.dtype.size < 4 else result.update_gate
            self.add_loss(skip_budget_loss(gate, self.budget_loss_weight))


class SkipRNN(_Skip):
    op = "skip_rnn"


class SkipLSTM(_Skip):
    op = "skip_lstm"


class SkipGRU(_Skip):
    op = "skip_gru"


class ACT(_SpecLayer):
    op = "act"
    extra_options = (
        _loss_weight("ponder_loss_weight", "tau: ``tau * mean over the batch of the ponder cost summed over time``"),
    )
    ponder_loss_weight: float

    def _add_losses(self, result: Any) -> None:
        if self.ponder_loss_weight > 0:
            cost = tf.cast(result.ponder_cost, tf.float32) if result.ponder_cost.dtype.size < 4 else result.ponder_cost
            self.add_loss(tf.reduce_mean(tf.reduce_sum(cost, axis=1)) * self.ponder_loss_weight)


class IndRNN(_SpecLayer):
    """The constraint applies to ``stack[k].variable("u")``."""

    op = "indrnn"


class QRNN(_SpecLayer):
    """``seed`` also seeds the zoneout draws: a call with ``training=True`` draws the masks, any other call
    passes the mask filled with ``zoneout``."""

    op = "qrnn"
    extra_options = (ZONEOUT,)
    zoneout: float

    def _add_state(self) -> None:
        super()._add_state()
        self.zoneout_seed = keras.random.SeedGenerator(self.seed) if self.zoneout > 0 else None

    def _array_options(self, x: tf.Tensor, training: Any) -> dict[str, Any]:
        return {**super()._array_options(x, training), **self._zoneout_masks(x, training)}

    def _zoneout_masks(self, x: tf.Tensor, training: Any) -> dict[str, Any]:
        if self.zoneout_seed is None:
            return {"zoneout_mask": None}
        shape = tf.stack([tf.shape(x)[0], tf.shape(x)[1], self.units])
        if not training:  # the expectation: f + (1 - f) * p
            expected = tf.fill(shape, tf.constant(self.zoneout, x.dtype))
            return {"zoneout_mask": tf.ensure_shape(expected, [x.shape[0], x.shape[1], self.units])}
        masks = []
        for _ in range(self.num_layers):
            draw = keras.random.uniform(shape, seed=self.zoneout_seed, dtype="float32")
            mask = tf.cast(draw < self.zoneout, x.dtype)
            masks.append(tf.ensure_shape(mask, [x.shape[0], x.shape[1], self.units]))
        return {"zoneout_mask": tuple(masks)}


class PhasedLSTM(_SpecLayer):
    """``call`` also takes ``timestamps`` (batch, time): the time of each step, moved with the inputs
    where a mask left-pads them."""

    op = "phased_lstm"


# -- cells: one step of an op ----------------------------------------------------------------


class _SpecCell(CellCore, keras.layers.Layer):  # type: ignore[misc,unused-ignore]
    """One layer of an rnnspec op as a Keras RNN cell; subclasses fix the op.

    Keras' cell protocol: ``call(inputs, states, training=None)`` returns ``(output, new_states)``,
    ``states`` the op's state entries as a flat list in the record's order (:attr:`state_names`;
    QRNN's ``x_prev`` flattened to ``(batch, (window - 1) * input_size)``), with ``state_size``,
    ``output_size``, ``get_initial_state`` (the op's start, or the learnt ``h0``/``c0``) and
    ``get_config``, so ``keras.layers.RNN(cell)`` runs it over a sequence. With
    ``return_extras=True`` (the Skip RNN and ACT cells) the output ``(batch, units + n)`` holds the op's
    ``n`` extra per-step fields as its last columns, in the record's order (Keras' RNN takes an output
    of one size only). The weights live in ``stack[0]``, as a one-layer layer's.
    """

    backend_name: ClassVar[str] = "tensorflow"
    hidden_argument: ClassVar[str] = "units"
    array_ops = ARRAY_OPS
    common_parameters: ClassVar[str] = """\
units, use_bias, return_extras, seed
    As :mod:`rnnspec.backends.tensorflow.keras` says (Cells).
**kwargs
    Keras' layer arguments (``name``, ``dtype``, ``trainable``)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        if "op" in cls.__dict__:  # the record's trainable flags (Phased LSTM's trainable_ratio_on)
            cls.extra_options = with_trainable_options(cls.op, cls.extra_options)
        super().__init_subclass__(**kwargs)
        if "op" in cls.__dict__:
            keras.saving.register_keras_serializable(package="rnnspec")(cls)

    def __init__(
        self,
        units: int,
        *,
        use_bias: bool = True,
        return_extras: bool = False,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        ours = {o.name for o in self.all_options()}
        super().__init__(**{k: v for k, v in kwargs.items() if k not in ours})
        flags = {"use_bias": use_bias, "return_extras": return_extras}
        options = {k: v for k, v in kwargs.items() if k in ours}
        self._configure_cell(input_size=0, hidden_size=units, bias=use_bias, flags=flags, options=options)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
            raise OptionError(type(self).__name__, "seed", "None or an integer >= 0", repr(seed))
        self.units = units
        self.use_bias = use_bias
        self.seed = None if seed is None else int(seed)
        # Checks units and every option now, naming the argument, rather than at the first call.
        self._draw_cell(input_size=1, seed=0)

    def get_config(self) -> dict[str, Any]:
        """The constructor's arguments, for ``model.save`` / ``keras.models.load_model``."""
        config: dict[str, Any] = {
            **super().get_config(),
            "units": self.units,
            "use_bias": self.use_bias,
            "seed": self.seed,
            **self.keyword_options(),
        }
        if self.extra_fields:
            config["return_extras"] = self.return_extras
        return config

    def build(self, input_shape: Any) -> None:
        """Create the weights for inputs ``(batch, input_size)`` and fill them with the op's init."""
        shape = tuple(input_shape)
        if len(shape) != 2 or shape[-1] is None:
            expected = "(batch, features) with a known number of features"
            raise ShapeError(type(self).__name__, "inputs", expected, f"shape {shape}")
        self.input_size = int(shape[-1])
        seed = self.seed if self.seed is not None else random.randrange(_SEED_BOUND)
        weights = CanonicalWeights(
            self._draw_cell(seed=seed), self.left_out, layer_fixed_params(self), name="layer_0", dtype=self.dtype_policy
        )
        self.stack = [weights]
        self.built = True

    def _prepare_load(self, params: Sequence[Mapping[str, Any]]) -> None:
        if not self.built:  # built for the input size that params imply
            self.build((None, input_size_of(type(self).__name__, self.op, params[0], self.options)))

    _layer_slots = _SpecLayer._layer_slots
    _as_array = _SpecLayer._as_array
    _set_param = _SpecLayer._set_param
    _to_numpy = staticmethod(_SpecLayer._to_numpy)
    canonical_params = _SpecLayer.canonical_params

    # -- Keras' cell protocol -------------------------------------------------------------

    def _state_sizes(self) -> list[tuple[int, ...]]:
        if not self.built and any("I" in e for s in OPS[self.op].layer_state(top=True) for e in s.shape):
            expected = "a built cell (cell.build((None, input_size)) first: the state's size depends on it)"
            raise OptionError(type(self).__name__, "state_size", expected, "an unbuilt cell")
        if not self.built:
            dims = {**OPS[self.op].fixed_dims(dict(self.options)), "H": self.units}
            state = OPS[self.op].layer_state(top=True, options=dict(self.options))
            return [tuple(evaluate(e, dims) for e in s.shape) for s in state]
        return list(self.state_shapes().values())

    @property
    def state_size(self) -> list[int]:
        """The size of each state tensor of Keras' flat list (an entry of several axes flattened)."""
        return [int(np.prod(shape)) for shape in self._state_sizes()]

    @property
    def output_size(self) -> int:
        """``units``, and one column per extra field with ``return_extras=True``."""
        return self.units + (len(self.extra_fields) if self.return_extras else 0)

    def get_initial_state(self, batch_size: Any = None) -> list[tf.Tensor]:
        """The op's start state (or the learnt ``h0``/``c0``) as Keras' flat list, for ``batch_size`` rows."""
        like = tf.zeros(tf.stack([batch_size, self.input_size]), self.compute_dtype)
        return self._flat(self.start_state(like))

    def _flat(self, state: Mapping[str, Any]) -> list[tf.Tensor]:
        return [
            tf.reshape(state[k], [-1, int(np.prod(shape))])
            for k, shape in zip(self.state_names, self._state_sizes(), strict=True)
        ]

    def _add_time(self, a: Any) -> Any:
        return tf.expand_dims(a, 1)

    def _first_step(self, a: Any) -> Any:
        return a[:, 0]

    def _run_op(self, x: Any, params: list[dict[str, Any]], state: dict[str, Any], arrays: dict[str, Any]) -> Any:
        if x.shape.is_fully_defined():
            return super()._run_op(x, params, state, arrays)
        # In a trace with the batch unknown (Keras' functional build, model.fit) the shape checks cannot run;
        # the weights are the cell's own, so the op runs directly, as the layers run it there.
        arguments = {
            "x": x,
            "params": params,
            **dict(self.options),
            **arrays,
            "lengths": None,
            "initial_state": (state,),
            "reverse": False,
            "checkpoint_every": None,
        }
        return run_op(self.op, arguments)

    def call(self, inputs: Any, states: Any, training: Any = None, **arrays: Any) -> tuple[tf.Tensor, list[tf.Tensor]]:
        """One step: ``(output, new_states)`` from ``inputs`` ``(batch, input_size)`` and Keras' flat
        ``states``; ``arrays`` are the step's per-step arrays (Phased LSTM's ``timestamps`` ``(batch,)``)."""
        try:
            x = tf.cast(tf.convert_to_tensor(inputs), self.compute_dtype)
            flat = list(states) if isinstance(states, (list, tuple)) else [states]
            names = self.state_names
            if len(flat) != len(names):
                expected = f"{len(names)} tensors ({', '.join(names)}), Keras' flat list of the op's state"
                raise ShapeError(type(self).__name__, "states", expected, f"{len(flat)} tensors", backend=_BACKEND)
            state = {
                k: tf.reshape(tf.cast(v, self.compute_dtype), [-1, *shape])
                for k, v, shape in zip(names, flat, self._state_sizes(), strict=True)
            }
            given = {
                k: None if v is None else tf.cast(tf.convert_to_tensor(v), self.compute_dtype)
                for k, v in arrays.items()
            }
            y, new_state, extras = self.step(x, state, given)
        except CallError as err:
            err._keras_call_info_injected = True  # type: ignore[attr-defined]  # as the layers' call: kept as is
            raise
        if self.return_extras:
            y = tf.concat([y, *(tf.reshape(tf.cast(extras[f], y.dtype), [-1, 1]) for f in self.extra_fields)], axis=-1)
        return y, self._flat(new_state)


class RNNCell(_SpecCell):
    op = "rnn"


class LSTMCell(_SpecCell):
    op = "lstm"


class GRUCell(_SpecCell):
    op = "gru"


class SkipRNNCell(_SpecCell):
    op = "skip_rnn"


class SkipLSTMCell(_SpecCell):
    op = "skip_lstm"


class SkipGRUCell(_SpecCell):
    op = "skip_gru"


class ACTCell(_SpecCell):
    op = "act"


class IndRNNCell(_SpecCell):
    op = "indrnn"


class QRNNCell(_SpecCell):
    """The state carries ``x_prev``, the last ``window - 1`` inputs, flattened in Keras' list: build the
    cell (``cell.build((None, input_size))``) before ``keras.layers.RNN(cell)`` reads its ``state_size``.
    No zoneout: ``call`` takes the step's ``zoneout_mask`` ``(batch, units)``, which Keras' RNN does not pass."""

    op = "qrnn"


class PhasedLSTMCell(_SpecCell):
    """``call`` takes the step's ``timestamps`` ``(batch,)``, required: Keras' RNN cannot pass them, so
    call the cell step by step."""

    op = "phased_lstm"


# The IndRNN authors' deep stacks and weight decay without the recurrent weights (a module of its own, which
# imports this one's layers).
from .deep_indrnn import (  # noqa: E402
    DeepIndRNN,
    PerStepBatchNormalization,
    exclude_from_weight_decay,
    no_decay_variables,
)
