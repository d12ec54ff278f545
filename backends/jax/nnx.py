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

``rngs`` is accepted and unused: the ops draw nothing (QRNN's zoneout mask is
the caller's). Phased LSTM's ``timestamps`` and QRNN's ``zoneout_mask`` are
keywords of the call as ever, which ``nnx.Bidirectional`` does not pass.

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

from rnnspec.backends.common.layers import ParamSlots, SizedLayer, check_layer_input
from rnnspec.backends.common.trainable import layer_fixed_params, with_trainable_options
from rnnspec.errors import OptionError

__all__ = ["ACT", "GRU", "LSTM", "QRNN", "RNN", "IndRNN", "LayerParams", "PhasedLSTM", "SkipGRU", "SkipLSTM", "SkipRNN"]

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


class _SpecLayer(SizedLayer, nnx.Module):  # type: ignore[misc,unused-ignore]
    """A stack of an rnnspec op's layers as an NNX module; subclasses fix the op.

    Takes :class:`~rnnspec.backends.common.layers.SizedLayer`'s arguments and
    ``param_dtype`` and ``rngs`` (the init seed is drawn from ``rngs.params()``).
    """

    backend_name: ClassVar[str] = "jax"
    common_parameters: ClassVar[str] = """\
input_size, hidden_size, num_layers, bias, batch_first, checkpoint_every, param_dtype, rngs
    As :mod:`rnnspec.backends.jax.nnx` says."""

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
        flax_keywords = (initial_carry, rngs, seq_lengths, return_carry, time_major, keep_order)
        if all(value is None for value in flax_keywords):
            # None (Flax's default) is the op's to refuse here, naming reverse, as it always was.
            return self._call_op(x, initial_state, lengths, cast(bool, reverse), arrays)
        flags = _flags(self, reverse=reverse, return_carry=return_carry, time_major=time_major, keep_order=keep_order)
        return self._call_flax(
            x,
            initial_state=_one_of(self, "initial_carry", initial_carry, "initial_state", initial_state),
            lengths=_one_of(self, "seq_lengths", seq_lengths, "lengths", lengths),
            flags=flags,
            arrays=arrays,
        )

    def _call_flax(
        self, x: Any, *, initial_state: Any, lengths: Any, flags: dict[str, bool | None], arrays: dict[str, Any]
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
        result = self._call_op(x, initial_state, lengths, bool(flags["reverse"]), arrays)
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


class QRNN(_SpecLayer):
    """``__call__`` also takes ``zoneout_mask`` (``None`` in evaluation; in training a {0, 1} array shaped like
    the outputs, or one per layer, drawn by the caller)."""

    op = "qrnn"


class PhasedLSTM(_SpecLayer):
    """``__call__`` also takes ``timestamps`` (batch, time): the time of each step, laid out as ``x``
    (time-major without ``batch_first``)."""

    op = "phased_lstm"
