"""Flax NNX layers over the ops of the JAX backend.

Each layer holds its parameters as ``nnx.Param`` in rnnspec's canonical layout
and calls the backend op in ``__call__``, so ``nnx.grad`` reaches every
parameter and ``nnx.jit`` compiles the whole layer::

    from flax import nnx
    from rnnspec.backends.jax.nnx import LSTM

    layer = LSTM(3, 8, num_layers=2, rngs=nnx.Rngs(0))
    result = layer(x)  # a SequenceResult: result.outputs (batch, time, 8), result.state

Layers: :class:`RNN`, :class:`LSTM`, :class:`GRU`, :class:`SkipRNN`,
:class:`SkipLSTM`, :class:`SkipGRU`, :class:`ACT`, :class:`IndRNN`, :class:`QRNN`,
:class:`PhasedLSTM`.
The constructors follow the PyTorch layers of :mod:`rnnspec.backends.torch.nn`
(``input_size``, ``hidden_size``, ``num_layers``, ``bias``, ``batch_first=True``
and the op's options), with Flax's ``param_dtype`` and ``rngs``.

Parameters live in ``layers``, one :class:`LayerParams` per layer of the stack,
under the spec's names: ``nnx.state(layer)`` holds ``layers/0/w_ih``,
``layers/1/b_hh``, ``layers/1/b_gate`` (the top layer's gate of a Skip RNN).
Weights from elsewhere load with :meth:`~_SpecLayer.load_canonical`:
``rnnspec.init_params(...)``, ``rnnspec.convert.from_torch(module)`` or
:func:`rnnspec.convert.flax.from_flax` (Flax's own cells).

Initialisation draws a seed from ``rngs.params()`` and fills every parameter
from :func:`rnnspec.init_params` (the op's paper init), on the host: build
layers outside ``nnx.jit``.

``bias=False``: the spec's ops always take biases, so the *cell* biases
(``b_ih``, ``b_hh``, qrnn's ``b``) are no parameters at all and enter the op as
zeros. The gate and halting biases (``b_gate``, ``b_halt``) belong to the
mechanism and stay trainable, with their paper init.

``batch_first=False`` transposes ``x`` (and qrnn's ``zoneout_mask``) from
``(time, batch, ...)`` on the way in and every per-step result back on the way
out; the state is the op's, one mapping per layer of ``(batch, ...)`` entries.

Flax's recurrent protocol (``flax.nnx.nn.recurrent.RNNBase``): ``__call__`` also takes the
keywords that ``flax.nnx.RNN`` takes, ``initial_carry``, ``rngs``,
``seq_lengths``, ``return_carry``, ``time_major`` and ``keep_order``, so a layer
is the forward or backward RNN of ``nnx.Bidirectional``::

    bi = nnx.Bidirectional(SkipGRU(3, 8, rngs=nnx.Rngs(0)), SkipGRU(3, 8, rngs=nnx.Rngs(1)))
    y = bi(x, seq_lengths=lengths)  # (batch, time, 16)

A call given any of them (a value other than None) follows Flax's convention
instead of returning the op's result:

- the carry is the op's state, one mapping per layer of the stack (what
  ``initial_state`` takes and ``result.state`` is); ``initial_carry`` is the
  initial state, None the op's start (zeros, or the learnt one);
- ``seq_lengths`` is ``lengths``: each row's valid prefix, whose final state
  is the carry; the outputs past it are zeros (the op's), where Flax's
  ``nnx.RNN`` runs on over the padding;
- ``time_major`` sets the layout of ``x``, the per-step arrays and the outputs
  for this call (None: the layer's, from ``batch_first``);
- ``reverse=True`` runs each row's valid prefix from its end; ``keep_order``
  True returns the outputs at their time positions (what the op returns),
  False or None (Flax's default) in the order they were computed: each row's
  valid prefix flipped, as ``nnx.RNN(..., reverse=True)`` returns them;
- it returns ``(carry, outputs)`` with ``return_carry=True`` and ``outputs``
  (the op's ``outputs`` only) otherwise. The other per-step results (Skip RNN's
  ``update_gate`` and ``update_prob``, ACT's ``ponder_*``) are dropped: a model
  whose loss needs them (a budget or ponder cost) calls the layer without these
  keywords and runs the backward direction with ``reverse=True`` itself.

``rngs`` is accepted and unused by the ops, which draw nothing; a layer with
``dropout`` or ``recurrent_dropout`` (and a :class:`QRNN` with ``zoneout``) draws
its masks from it when given, while ``deterministic`` is False (see the
``deterministic`` option; ``model.train()``/``model.eval()`` set it). Phased
LSTM's ``timestamps`` and QRNN's ``zoneout_mask`` are keywords of the call as
ever, which ``nnx.Bidirectional`` does not pass.

``checkpoint_every=K`` (every layer; None by default) is passed to the op:
reverse mode recomputes the activations of each segment of K steps instead
of keeping them all (same values and gradients, less memory; see
:mod:`rnnspec.backends.jax.checkpointing`). It is checked as the op checks it:
an integer >= 1, or None.

Importing this module imports jax and flax.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, cast

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx  # type: ignore[import-not-found,unused-ignore]

from rnnspec.backends.common.cells_core import CellCore
from rnnspec.backends.common.layers import ZONEOUT, LayerOption, ParamSlots, SizedLayer, check_layer_input
from rnnspec.backends.common.trainable import layer_fixed_params, with_trainable_options
from rnnspec.errors import OptionError

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
    "LayerParams",
    "PerStepBatchNorm",
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
    "weight_decay_mask",
]

#: Seeds drawn from ``rngs.params()`` lie in [0, 2**31 - 1): what jax.random.randint draws as int32.
_SEED_BOUND = 2**31 - 1


class LayerParams(ParamSlots, nnx.Module):  # type: ignore[misc,unused-ignore]
    """The parameters of one layer of the stack: an ``nnx.Param`` per spec name, except the left-out biases.

    Parameters
    ----------
    arrays
        The layer's canonical arrays (from :func:`rnnspec.init_params`), by name.
    left_out
        Names that are no parameters (``bias=False``): they enter the op as zeros.
    dtype
        The parameters' dtype.
    fixed
        Names held as an ``nnx.Variable`` that is no ``nnx.Param`` (a trainable flag of the layer False).
    """

    def __init__(
        self,
        arrays: Mapping[str, np.ndarray],
        left_out: frozenset[str],
        dtype: Any,
        fixed: frozenset[str] = frozenset(),
    ) -> None:
        self.dtype = jnp.dtype(dtype).name
        for name, array in self.hold(arrays, left_out).items():
            # A fixed one is no nnx.Param, which nnx.grad and the optimizers take by default.
            kind = nnx.Variable if name in fixed else nnx.Param
            setattr(self, name, kind(jnp.array(array, dtype=self.dtype)))

    def arrays(self) -> dict[str, jax.Array]:
        """The layer's arrays as the op takes them, in the spec's order (zeros for the left-out biases)."""
        return self.gather(lambda name: getattr(self, name)[...], lambda shape: jnp.zeros(shape, self.dtype))


def _check_deterministic(layer: str, name: str, value: Any) -> bool:
    return _check_flag(layer, name, value)


#: NNX's train/eval flag of every layer (each op has a dropout option; QRNN has zoneout too).
_DETERMINISTIC = LayerOption(
    "deterministic",
    False,
    "bool",
    "NNX's train/eval flag, as ``nnx.Dropout``'s: False draws the dropout masks (``dropout``, "
    "``recurrent_dropout``) and QRNN's zoneout masks, True passes no dropout mask and the zoneout masks' "
    "expectation; ``model.train()`` and ``model.eval()`` set it, and ``__call__``'s ``deterministic`` overrides it.",
    check=_check_deterministic,
)


class _SpecLayer(SizedLayer, nnx.Module):  # type: ignore[misc,unused-ignore]
    """A stack of an rnnspec op's layers as an NNX module; subclasses fix the op.

    Takes :class:`~rnnspec.backends.common.layers.SizedLayer`'s arguments and
    ``param_dtype`` and ``rngs`` (the init seed is drawn from ``rngs.params()``).
    """

    backend_name: ClassVar[str] = "jax"
    common_parameters: ClassVar[str] = """\
input_size, hidden_size, num_layers, bias, batch_first, checkpoint_every, param_dtype, rngs
    As :mod:`rnnspec.backends.jax.nnx` says."""
    extra_options: ClassVar[tuple[LayerOption, ...]] = (_DETERMINISTIC,)
    deterministic: bool

    def __init_subclass__(cls, **kwargs: Any) -> None:
        if "op" in cls.__dict__:  # the record's trainable flags (Phased LSTM's trainable_ratio_on), first
            cls.extra_options = with_trainable_options(cls.op, cls.extra_options)
        super().__init_subclass__(**kwargs)

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = True,
        *,
        checkpoint_every: int | None = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
        **options: Any,
    ) -> None:
        self._configure_sizes(input_size, hidden_size, num_layers, bias, batch_first, checkpoint_every, options)
        arrays = self._draw(seed=_seed(rngs))
        fixed = layer_fixed_params(self)
        self.layers = nnx.List([LayerParams(layer, self.left_out, param_dtype, fixed) for layer in arrays])
        self._add_state(rngs)

    def _add_state(self, rngs: nnx.Rngs) -> None:
        """Create what the layer holds besides its parameters (the dropout and QRNN's zoneout streams), after them."""
        dropping = getattr(self, "dropout", 0.0) > 0 or getattr(self, "recurrent_dropout", 0.0) > 0
        self.dropout_rngs = rngs["dropout"].fork() if dropping else None

    def _hold(self, options: dict[str, Any]) -> Any:
        # Tuples of pairs, not dicts: static metadata of the module's graph.
        return tuple(options.items())

    # -- parameters -----------------------------------------------------------------

    def reset_parameters(self, rngs: nnx.Rngs) -> None:
        """Refill the parameters from :func:`rnnspec.init_params`, with a seed drawn from ``rngs.params()``."""
        self.load_canonical(self._draw(seed=_seed(rngs)))

    def canonical_params(self) -> list[dict[str, jax.Array]]:
        """The params as the op takes them: one dict per layer (``nnx.grad`` reaches them through ``__call__``)."""
        return [layer.arrays() for layer in self._layer_slots()]

    def _layer_slots(self) -> list[LayerParams]:
        return list(self.layers)

    def _as_array(self, k: int, key: str, value: Any) -> jax.Array:
        return jnp.array(value, dtype=self.layers[k].dtype)  # a copy: the caller's array is never aliased

    def _set_param(self, k: int, key: str, value: jax.Array) -> None:
        getattr(self.layers[k], key)[...] = value

    @staticmethod
    def _to_numpy(value: jax.Array) -> np.ndarray:
        host = np.asarray(jax.device_get(value))
        if host.dtype.itemsize < 4:
            host = host.astype(np.float32)  # NumPy has no bfloat16; float32 holds both half formats exactly
        return np.array(host)

    # -- forward --------------------------------------------------------------------

    def __call__(
        self,
        x: jax.Array,
        initial_state: Sequence[Mapping[str, jax.Array]] | None = None,
        lengths: Any = None,
        reverse: bool | None = False,
        *,
        initial_carry: Sequence[Mapping[str, jax.Array]] | None = None,
        rngs: Any = None,
        seq_lengths: Any = None,
        return_carry: bool | None = None,
        time_major: bool | None = None,
        keep_order: bool | None = None,
        deterministic: bool | None = None,
        **arrays: Any,
    ) -> Any:
        """Run the op over ``x`` (``(batch, time, input_size)``, or time-major without ``batch_first``).

        Parameters
        ----------
        x
            The input sequence.
        initial_state
            One mapping per layer (the op's state), or None: the op's start.
        lengths
            Each row's number of valid steps ``(batch,)``, or None: all.
        reverse
            Run each row's valid prefix from its end; the outputs stay at their time positions.
        initial_carry, rngs, seq_lengths, return_carry, time_major, keep_order
            Flax's recurrent protocol (``nnx.RNN``'s keywords): given any of them (not None), the call
            follows Flax's convention, as :mod:`rnnspec.backends.jax.nnx` says. ``initial_carry`` and
            ``seq_lengths`` are ``initial_state`` and ``lengths`` under Flax's names (one or the other).
        deterministic
            None (the layer's ``deterministic``), or False to draw the dropout masks of ``dropout`` and
            ``recurrent_dropout`` (from ``rngs`` where given, else the layer's stream, forked from the
            constructor's ``rngs["dropout"]``), True to pass none.
        **arrays
            The op's per-step options (qrnn's ``zoneout_mask``, phased_lstm's ``timestamps``), laid out as ``x``.

        Returns
        -------
        result or (carry, outputs) or outputs
            The op's result (``SequenceResult``, ``SkipResult`` or ``ACTResult``); with Flax's keywords,
            ``(state, outputs)`` when ``return_carry`` is True, else ``outputs``.

        Raises
        ------
        rnnspec.errors.OptionError
            Both ``initial_state`` and ``initial_carry``, or both ``lengths`` and ``seq_lengths``; a flag of
            Flax's convention that is no bool.
        """
        draw = self._dropout_draw(deterministic, rngs)
        flax_keywords = (initial_carry, rngs, seq_lengths, return_carry, time_major, keep_order)
        if all(value is None for value in flax_keywords):
            # None (Flax's default) is the op's to refuse here, naming reverse, as it always was.
            return self._call_op(x, initial_state, lengths, cast(bool, reverse), arrays, draw)
        flags = _flags(self, reverse=reverse, return_carry=return_carry, time_major=time_major, keep_order=keep_order)
        return self._call_flax(
            x,
            initial_state=_one_of(self, "initial_carry", initial_carry, "initial_state", initial_state),
            lengths=_one_of(self, "seq_lengths", seq_lengths, "lengths", lengths),
            flags=flags,
            arrays=arrays,
            draw=draw,
        )

    def _dropout_draw(self, deterministic: bool | None, rngs: Any) -> Any:
        """The draw of one call's dropout masks, ``draw(shape, p)`` (Bernoulli(1 - p) / (1 - p) in the params'
        dtype), or None: ``deterministic`` (None: the layer's), or no dropout."""
        if deterministic is not None:
            _check_flag(f"{type(self).__name__} layer", "deterministic", deterministic)
        fixed = self.deterministic if deterministic is None else bool(deterministic)
        if fixed or self.dropout_rngs is None:
            return None
        if isinstance(rngs, nnx.Rngs):
            key = rngs["dropout"]()
        elif isinstance(rngs, nnx.RngStream):
            key = rngs()
        elif rngs is not None:  # a key
            key = rngs
        else:
            key = self.dropout_rngs()
        keys = iter(jax.random.split(key, 2 * self.num_layers))  # at most 2 * layers - 1 masks
        dtype = self.layers[0].dtype

        def draw(shape: tuple[int, ...], p: float) -> jax.Array:
            return jax.random.bernoulli(next(keys), 1.0 - p, shape).astype(dtype) * (1.0 / (1.0 - p))

        return draw

    def _call_flax(
        self,
        x: Any,
        *,
        initial_state: Any,
        lengths: Any,
        flags: dict[str, bool | None],
        arrays: dict[str, Any],
        draw: Any = None,
    ) -> Any:
        """The call in Flax's convention: the op in the layer's layout, the outputs in the call's."""
        time_major = not self.batch_first if flags["time_major"] is None else flags["time_major"]
        # The call's layout differs from the layer's: swap into the layer's, after checking x in the call's.
        swap = time_major == self.batch_first
        if swap:
            check_layer_input(
                f"{type(self).__name__} layer",
                x,
                input_size=self.input_size,
                dtype=self.layers[0].dtype,
                backend=self.backend_name,
                batch_first=not time_major,
            )
            x = self._swap(jnp.asarray(x))
            arrays = {k: self._swap_arrays(v) for k, v in arrays.items()}
        result = self._call_op(x, initial_state, lengths, bool(flags["reverse"]), arrays, draw)
        outputs = self._swap(result.outputs) if swap else result.outputs
        if flags["reverse"] and not flags["keep_order"]:
            outputs = _flip_valid(outputs, lengths, time_axis=0 if time_major else 1)
        return (result.state, outputs) if flags["return_carry"] else outputs

    def _prepare_call(self, x: Any, initial_state: Any, arrays: dict[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
        # NumPy inputs are welcome, as in any Flax layer; the op itself takes jax arrays only.
        arrays = {k: None if v is None else jax.tree.map(jnp.asarray, v) for k, v in arrays.items()}
        if initial_state is not None:
            initial_state = jax.tree.map(jnp.asarray, initial_state)
        return jnp.asarray(x), initial_state, arrays

    @staticmethod
    def _swap(a: Any) -> Any:
        return jnp.swapaxes(a, 0, 1)


def _one_of(layer: _SpecLayer, flax_name: str, flax_value: Any, name: str, value: Any) -> Any:
    """The value of an argument that Flax's convention names ``flax_name`` and rnnspec's ``name``."""
    if flax_value is not None and value is not None:
        expected = f"{flax_name} or {name}, not both (the same argument under Flax's and rnnspec's names)"
        raise OptionError(f"{type(layer).__name__} layer", flax_name, expected, "both", backend=layer.backend_name)
    return value if flax_value is None else flax_value


def _flags(layer: _SpecLayer, **flags: Any) -> dict[str, bool | None]:
    """Flax's flags of one call, each True, False or None (Flax's default), checked."""
    for name, value in flags.items():
        if value is not None and not isinstance(value, (bool, np.bool_)):
            layer_name = f"{type(layer).__name__} layer"
            raise OptionError(layer_name, name, "True, False or None", repr(value), backend=layer.backend_name)
    return {name: None if value is None else bool(value) for name, value in flags.items()}


def _flip_valid(a: jax.Array, lengths: Any, time_axis: int) -> jax.Array:
    """``a`` with each row's valid prefix flipped in time, as Flax's ``flip_sequences`` flips it.

    Row ``b``'s step ``t < lengths[b]`` takes step ``lengths[b] - 1 - t``; the padding after the prefix is
    flipped among itself (zeros, the op's). ``lengths`` None: the whole time axis is flipped.
    """
    if lengths is None:
        return jnp.flip(a, axis=time_axis)
    steps = a.shape[time_axis]
    if steps == 0:
        return a
    # (batch, time): the source step of each step; negative ones wrap into the padding, reversed.
    source = (jnp.asarray(lengths)[:, None] - 1 - jnp.arange(steps)[None, :]) % steps
    if time_axis == 0:
        source = source.T
    source = source.reshape(source.shape + (1,) * (a.ndim - 2))
    return jnp.take_along_axis(a, source, axis=time_axis)


def _seed(rngs: nnx.Rngs) -> int:
    """A host integer seed for :func:`rnnspec.init_params` from the ``params`` stream."""
    return int(jax.random.randint(rngs.params(), (), 0, _SEED_BOUND))


class RNN(_SpecLayer):
    op = "rnn"


class LSTM(_SpecLayer):
    op = "lstm"


class GRU(_SpecLayer):
    op = "gru"


class SkipRNN(_SpecLayer):
    op = "skip_rnn"


class SkipLSTM(_SpecLayer):
    op = "skip_lstm"


class SkipGRU(_SpecLayer):
    op = "skip_gru"


class ACT(_SpecLayer):
    op = "act"


class IndRNN(_SpecLayer):
    op = "indrnn"


def _check_flag(layer: str, name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise OptionError(layer, name, "True or False", repr(value))
    return bool(value)


class QRNN(_SpecLayer):
    """With ``zoneout=p > 0`` the layer makes the zoneout masks, laid out as ``x``, as ``nnx.Dropout`` draws:
    ``deterministic=False`` (the default; ``model.train()``) draws a Bernoulli(p) mask per layer from the
    ``rngs`` given to the call, else from the layer's own stream, forked from the constructor's
    ``rngs["dropout"]`` (its ``default`` stream where it has none); ``deterministic=True`` (``model.eval()``)
    passes one mask filled with p. ``__call__`` takes ``deterministic`` (None: the layer's) and
    ``zoneout_mask`` (an array shaped like the outputs with entries in [0, 1], or one per layer), which is
    used instead."""

    op = "qrnn"
    extra_options = (ZONEOUT, _DETERMINISTIC)
    zoneout: float
    deterministic: bool

    def _add_state(self, rngs: nnx.Rngs) -> None:
        super()._add_state(rngs)
        self.zoneout_rngs = rngs["dropout"].fork() if self.zoneout > 0 else None

    def __call__(self, x: Any, *args: Any, deterministic: bool | None = None, **kwargs: Any) -> Any:
        """Run the op as :meth:`_SpecLayer.__call__` does, with the zoneout masks where ``zoneout > 0`` and the
        call passes none; ``deterministic`` (None: the layer's) picks the drawn masks (False) or their
        expectation (True)."""
        if deterministic is not None:
            _check_flag(f"{type(self).__name__} layer", "deterministic", deterministic)
        # An x of another rank is refused by the call, naming it.
        if self.zoneout > 0 and kwargs.get("zoneout_mask") is None and np.ndim(x) == 3:
            fixed = self.deterministic if deterministic is None else bool(deterministic)
            kwargs["zoneout_mask"] = self._zoneout_masks(np.shape(x)[:2], fixed, kwargs.get("rngs"))
        return super().__call__(x, *args, deterministic=deterministic, **kwargs)

    def _zoneout_masks(self, leading: tuple[int, ...], deterministic: bool, rngs: Any) -> Any:
        """One mask filled with p (``deterministic``), or one Bernoulli(p) mask per layer, ``leading + (H,)``."""
        shape, dtype = (*leading, self.hidden_size), self.layers[0].dtype
        if deterministic:  # the expectation: f + (1 - f) * p
            return jnp.full(shape, self.zoneout, dtype)
        if isinstance(rngs, nnx.Rngs):
            key = rngs["dropout"]()
        elif isinstance(rngs, nnx.RngStream):
            key = rngs()
        elif rngs is not None:  # a key
            key = rngs
        else:
            assert self.zoneout_rngs is not None  # made with zoneout > 0
            key = self.zoneout_rngs()
        keys = jax.random.split(key, self.num_layers)
        return [jax.random.bernoulli(keys[k], self.zoneout, shape).astype(dtype) for k in range(self.num_layers)]


class PhasedLSTM(_SpecLayer):
    """``__call__`` also takes ``timestamps`` (batch, time): the time of each step, laid out as ``x``
    (time-major without ``batch_first``)."""

    op = "phased_lstm"


# -- cells: one step of an op ----------------------------------------------------------------


class _SpecCell(CellCore, nnx.Module):  # type: ignore[misc,unused-ignore]
    """One layer of an rnnspec op as an NNX module that computes one step; subclasses fix the op.

    Flax's cell protocol (``nnx.LSTMCell``'s): ``cell(carry, x)`` returns ``(new_carry, y)``, the carry
    the op's state of one layer (a dict), ``x`` ``(batch, input_size)``, ``y`` ``(batch, hidden_size)``;
    :meth:`initialize_carry` gives the op's start, so ``nnx.RNN(cell)`` runs it over a sequence. With
    ``return_extras=True`` (the Skip RNN and ACT cells) ``y`` is ``(y, extras)``, ``extras`` the op's
    extra per-step fields by name, each ``(batch,)`` (``nnx.RNN`` stacks them along time too). The
    params live in ``layers[0]``, as a one-layer layer's.
    """

    backend_name: ClassVar[str] = "jax"
    array_ops = ARRAY_OPS
    common_parameters: ClassVar[str] = """\
input_size, hidden_size, bias, return_extras, param_dtype, rngs
    As :mod:`rnnspec.backends.jax.nnx` says (Cells)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        if "op" in cls.__dict__:  # the record's trainable flags (Phased LSTM's trainable_ratio_on)
            cls.extra_options = with_trainable_options(cls.op, cls.extra_options)
        super().__init_subclass__(**kwargs)

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        return_extras: bool = False,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
        **options: Any,
    ) -> None:
        flags = {"bias": bias, "return_extras": return_extras}
        self._configure_cell(input_size=input_size, hidden_size=hidden_size, bias=bias, flags=flags, options=options)
        arrays = self._draw_cell(seed=_seed(rngs))
        self.layers = nnx.List([LayerParams(arrays, self.left_out, param_dtype, layer_fixed_params(self))])

    _hold = _SpecLayer._hold
    canonical_params = _SpecLayer.canonical_params
    _layer_slots = _SpecLayer._layer_slots
    _as_array = _SpecLayer._as_array
    _set_param = _SpecLayer._set_param
    _to_numpy = staticmethod(_SpecLayer._to_numpy)

    def reset_parameters(self, rngs: nnx.Rngs) -> None:
        """Refill the parameters from :func:`rnnspec.init_params`, with a seed drawn from ``rngs.params()``."""
        self.load_canonical([self._draw_cell(seed=_seed(rngs))])

    def _add_time(self, a: Any) -> Any:
        return jnp.expand_dims(a, 1)

    def _first_step(self, a: Any) -> Any:
        return a[:, 0]

    @property
    def num_feature_axes(self) -> int:
        """The feature axes of ``x`` (Flax's cell protocol): one."""
        return 1

    def initialize_carry(self, input_shape: tuple[int, ...], rngs: Any = None) -> dict[str, jax.Array]:
        """The state a sequence starts from for inputs of shape ``(batch, input_size)``: the op's start
        (zeros; Skip RNN's ``update_prob`` one) or the learnt ``h0``/``c0``. ``rngs`` is accepted and unused."""
        like = jnp.zeros((*tuple(input_shape)[:-1], self.input_size), self.layers[0].dtype)
        return self.start_state(like)

    def __call__(self, carry: Any, x: Any, **arrays: Any) -> tuple[dict[str, jax.Array], Any]:
        """One step from ``carry`` (the op's state; None: its start) and ``x`` ``(batch, input_size)``.

        ``arrays`` are the step's per-step arrays without a time axis (Phased LSTM's ``timestamps``
        ``(batch,)``, QRNN's ``zoneout_mask`` ``(batch, hidden_size)``). Returns ``(new_carry, y)``, or
        ``(new_carry, (y, extras))`` with ``return_extras=True``.
        """
        arrays = {k: None if v is None else jnp.asarray(v) for k, v in arrays.items()}
        carry = None if carry is None else jax.tree.map(jnp.asarray, carry)
        y, new_carry, extras = self.step(jnp.asarray(x), carry, arrays)
        return new_carry, ((y, extras) if self.return_extras else y)


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
    """The carry holds ``x_prev``, the last ``window - 1`` inputs; ``__call__`` also takes the step's
    ``zoneout_mask`` ``(batch, hidden_size)`` (None in evaluation; ``nnx.RNN`` passes none)."""

    op = "qrnn"


class PhasedLSTMCell(_SpecCell):
    """``__call__`` also takes the step's ``timestamps`` ``(batch,)``, required: ``nnx.RNN`` cannot pass
    them, so step it in a loop (or ``nnx.scan``)."""

    op = "phased_lstm"


# The IndRNN authors' deep stacks and weight decay without the recurrent weights (a module of its own, which
# imports this one's layers).
from .deep_indrnn import DeepIndRNN, PerStepBatchNorm, weight_decay_mask  # noqa: E402
