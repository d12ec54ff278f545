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

``checkpoint_every=K`` (every layer; None by default) is passed to the op:
reverse mode recomputes the activations of each segment of K steps instead
of keeping them all (same values and gradients, less memory; see
:mod:`rnnspec.backends.jax.checkpointing`). It is checked as the op checks it:
an integer >= 1, or None.

Importing this module imports jax and flax.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx  # type: ignore[import-not-found,unused-ignore]

from rnnspec.backends.common.layers import ParamSlots, SizedLayer
from rnnspec.backends.common.trainable import layer_fixed_params, with_trainable_options

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
        reverse: bool = False,
        **arrays: Any,
    ) -> Any:
        """Run the op over ``x`` (``(batch, time, input_size)``, or time-major without ``batch_first``).

        ``arrays`` are the op's per-step options (qrnn's ``zoneout_mask``), laid out as ``x``.
        Returns the op's result (``SequenceResult``, ``SkipResult`` or ``ACTResult``).
        """
        return self._call_op(x, initial_state, lengths, reverse, arrays)

    def _prepare_call(self, x: Any, initial_state: Any, arrays: dict[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
        # NumPy inputs are welcome, as in any Flax layer; the op itself takes jax arrays only.
        arrays = {k: None if v is None else jax.tree.map(jnp.asarray, v) for k, v in arrays.items()}
        if initial_state is not None:
            initial_state = jax.tree.map(jnp.asarray, initial_state)
        return jnp.asarray(x), initial_state, arrays

    @staticmethod
    def _swap(a: Any) -> Any:
        return jnp.swapaxes(a, 0, 1)


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
