"""Flax NNX layers over the ops of the JAX backend.

Each layer holds its parameters as ``nnx.Param`` in rnnspec's canonical layout
and calls the backend op in ``__call__``, so ``nnx.grad`` reaches every
parameter and ``nnx.jit`` compiles the whole layer::

    from flax import nnx
    from rnnspec.backends.jax.nnx import LSTM

    layer = LSTM(3, 8, num_layers=2, rngs=nnx.Rngs(0))
    result = layer(x)  # a SequenceResult: result.outputs (batch, time, 8), result.state

Layers: :class:`RNN`, :class:`LSTM`, :class:`GRU`, :class:`SkipRNN`,
:class:`SkipLSTM`, :class:`SkipGRU`, :class:`ACT`, :class:`IndRNN`, :class:`QRNN`.
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

from rnnspec.backends.layers import (
    CELL_BIASES,
    TIME_FIELDS,
    ParamFiles,
    check_checkpoint_every,
    check_layer_input,
    layer_backend,
)
from rnnspec.errors import CallError, OptionError, ParameterError
from rnnspec.init import init_params

__all__ = ["ACT", "GRU", "LSTM", "QRNN", "RNN", "IndRNN", "LayerParams", "SkipGRU", "SkipLSTM", "SkipRNN"]

#: Seeds drawn from ``rngs.params()`` lie in [0, 2**31 - 1): what jax.random.randint draws as int32.
_SEED_BOUND = 2**31 - 1


class LayerParams(nnx.Module):  # type: ignore[misc,unused-ignore]
    """The parameters of one layer of the stack: an ``nnx.Param`` per spec name, except the left-out biases.

    Parameters
    ----------
    arrays
        The layer's canonical arrays (from :func:`rnnspec.init_params`), by name.
    left_out
        Names that are no parameters (``bias=False``): they enter the op as zeros.
    dtype
        The parameters' dtype.
    """

    def __init__(self, arrays: Mapping[str, np.ndarray], left_out: frozenset[str], dtype: Any) -> None:
        self.shapes = tuple((name, tuple(int(n) for n in array.shape)) for name, array in arrays.items())
        self.left_out = tuple(name for name in arrays if name in left_out)
        self.dtype = jnp.dtype(dtype).name
        for name, array in arrays.items():
            if name not in left_out:
                setattr(self, name, nnx.Param(jnp.array(array, dtype=self.dtype)))

    def arrays(self) -> dict[str, jax.Array]:
        """The layer's arrays as the op takes them, in the spec's order (zeros for the left-out biases)."""
        out: dict[str, jax.Array] = {}
        for name, shape in self.shapes:
            if name in self.left_out:
                out[name] = jnp.zeros(shape, self.dtype)
            else:
                out[name] = getattr(self, name)[...]
        return out


class _SpecLayer(ParamFiles, nnx.Module):  # type: ignore[misc,unused-ignore]
    """A stack of an rnnspec op's layers as an NNX module; subclasses fix the op."""

    #: The op of the spec.
    op: ClassVar[str]
    #: The backend whose op the layer calls.
    backend_name: ClassVar[str] = "jax"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int,
        bias: bool,
        batch_first: bool,
        options: Mapping[str, Any],
        init_options: Mapping[str, Any],
        param_dtype: Any,
        rngs: nnx.Rngs,
        checkpoint_every: int | None,
    ) -> None:
        name = type(self).__name__
        for flag, value in (("bias", bias), ("batch_first", batch_first)):
            if not isinstance(value, bool):
                raise OptionError(name, flag, "True or False", repr(value))
        self.checkpoint_every = check_checkpoint_every(name, self.op, checkpoint_every)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        # Tuples of pairs, not dicts: static metadata of the module's graph.
        self.options = tuple(options.items())
        self.init_options = tuple(init_options.items())
        # init_params checks the sizes and every option, naming the argument; re-raised under the layer's name.
        arrays = self._draw(_seed(rngs))
        left_out = frozenset() if bias else CELL_BIASES
        self.layers = nnx.List([LayerParams(layer, left_out, param_dtype) for layer in arrays])

    # -- parameters -----------------------------------------------------------------

    def _draw(self, seed: int) -> list[dict[str, np.ndarray]]:
        try:
            return init_params(
                self.op,
                input_size=self.input_size,
                hidden_size=self.hidden_size,
                num_layers=self.num_layers,
                seed=seed,
                dtype="float64",
                **dict(self.options),
                **dict(self.init_options),
            )
        except CallError as err:
            raise type(err)(type(self).__name__, err.argument, err.expected, err.actual) from None

    def reset_parameters(self, rngs: nnx.Rngs) -> None:
        """Refill the parameters from :func:`rnnspec.init_params`, with a seed drawn from ``rngs.params()``."""
        self.load_canonical(self._draw(_seed(rngs)))

    def load_canonical(self, params: Sequence[Mapping[str, Any]]) -> None:
        """Copy canonical params (one mapping per layer, NumPy or jax arrays) into the layer.

        Left-out biases (``bias=False``) stay zero whatever ``params`` holds.

        Raises
        ------
        rnnspec.errors.ParameterError
            A wrong number of layers, or a missing or misshapen entry, named.
        """
        name = type(self).__name__
        if len(params) != len(self.layers):
            raise ParameterError(name, "params", f"{len(self.layers)} layers", f"{len(params)} layers")
        for k, (layer, values) in enumerate(zip(self._stack(), params, strict=True)):
            for key, shape in layer.shapes:
                if key not in values:
                    raise ParameterError(name, f"params[{k}]", f"a key {key!r}", repr(sorted(values)))
                if key in layer.left_out:
                    continue
                value = jnp.array(values[key], dtype=layer.dtype)  # a copy: the caller's array is never aliased
                if tuple(value.shape) != shape:
                    raise ParameterError(name, f"params[{k}][{key!r}]", f"shape {shape}", f"shape {value.shape}")
                getattr(layer, key)[...] = value

    def canonical_params(self) -> list[dict[str, jax.Array]]:
        """The params as the op takes them: one dict per layer (``nnx.grad`` reaches them through ``__call__``)."""
        return [layer.arrays() for layer in self._stack()]

    def numpy_params(self) -> list[dict[str, np.ndarray]]:
        """A copy of the params as NumPy arrays (float32 for half-precision layers)."""
        out = []
        for layer in self.canonical_params():
            out.append({k: _to_numpy(v) for k, v in layer.items()})
        return out

    def _stack(self) -> list[LayerParams]:
        return list(self.layers)

    # -- forward --------------------------------------------------------------------

    def __call__(
        self,
        x: jax.Array,
        initial_state: Sequence[Mapping[str, jax.Array]] | None = None,
        lengths: Any = None,
        reverse: bool = False,
    ) -> Any:
        """Run the op over ``x`` (``(batch, time, input_size)``, or time-major without ``batch_first``).

        Returns the op's result (``SequenceResult``, ``SkipResult`` or ``ACTResult``).
        """
        return self._run(x, initial_state, lengths, reverse, {})

    def _run(
        self,
        x: jax.Array,
        initial_state: Sequence[Mapping[str, jax.Array]] | None,
        lengths: Any,
        reverse: bool,
        arrays: Mapping[str, Any],
    ) -> Any:
        # NumPy inputs are welcome, as in any Flax layer; the op itself takes jax arrays only.
        x = jnp.asarray(x)
        arrays = {k: None if v is None else jax.tree.map(jnp.asarray, v) for k, v in arrays.items()}
        if initial_state is not None:
            initial_state = jax.tree.map(jnp.asarray, initial_state)
        params = self.canonical_params()
        check_layer_input(
            f"{type(self).__name__} layer",
            x,
            input_size=self.input_size,
            dtype=str(next(iter(params[0].values())).dtype),
            backend=self.backend_name,
            batch_first=self.batch_first,
        )
        if not self.batch_first:
            x = jnp.swapaxes(x, 0, 1)
            arrays = {k: _transpose_arrays(v) for k, v in arrays.items()}
        method = getattr(layer_backend(self.backend_name), self.op)
        result = method(
            x,
            params,
            **dict(self.options),
            **arrays,
            lengths=lengths,
            initial_state=initial_state,
            reverse=reverse,
            checkpoint_every=self.checkpoint_every,
        )
        if self.batch_first:
            return result
        fields = {f: jnp.swapaxes(getattr(result, f), 0, 1) for f in TIME_FIELDS if f in result._fields}
        return result._replace(**fields)


def _seed(rngs: nnx.Rngs) -> int:
    """A host integer seed for :func:`rnnspec.init_params` from the ``params`` stream."""
    return int(jax.random.randint(rngs.params(), (), 0, _SEED_BOUND))


def _to_numpy(value: jax.Array) -> np.ndarray:
    host = np.asarray(jax.device_get(value))
    if host.dtype.itemsize < 4:
        host = host.astype(np.float32)  # NumPy has no bfloat16; float32 holds both half formats exactly
    return np.array(host)


def _transpose_arrays(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return [jnp.swapaxes(v, 0, 1) for v in value]
    return jnp.swapaxes(value, 0, 1)


# -- the classic cells ----------------------------------------------------------------


class RNN(_SpecLayer):
    """Elman RNN (``activation`` ``"tanh"`` or ``"relu"``), rnnspec op ``rnn``.

    .. math:: h_t = \\mathrm{act}(W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh})
    """

    op = "rnn"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = True,
        *,
        activation: str = "tanh",
        checkpoint_every: int | None = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ) -> None:
        options = {"activation": activation}
        super().__init__(
            input_size, hidden_size, num_layers, bias, batch_first, options, {}, param_dtype, rngs, checkpoint_every
        )


class LSTM(_SpecLayer):
    """LSTM, rnnspec op ``lstm`` (PyTorch's layout and init; gate blocks i, f, g, o).

    .. math::

        c_t = f_t c_{t-1} + i_t g_t, \\qquad h_t = o_t \\tanh(c_t)
    """

    op = "lstm"

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
    ) -> None:
        super().__init__(
            input_size, hidden_size, num_layers, bias, batch_first, {}, {}, param_dtype, rngs, checkpoint_every
        )


class GRU(_SpecLayer):
    """GRU, rnnspec op ``gru`` (gate blocks r, z, n); ``reset_after=False`` is Cho's placement.

    .. math:: h_t = (1 - z_t) n_t + z_t h_{t-1}
    """

    op = "gru"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = True,
        *,
        reset_after: bool = True,
        checkpoint_every: int | None = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ) -> None:
        options = {"reset_after": reset_after}
        super().__init__(
            input_size, hidden_size, num_layers, bias, batch_first, options, {}, param_dtype, rngs, checkpoint_every
        )


# -- Skip RNN ---------------------------------------------------------------------


class SkipRNN(_SpecLayer):
    """Skip RNN over rnn cells (Campos et al. 2018), rnnspec op ``skip_rnn``; ``b_gate`` starts at 1.

    .. math:: s_t = u_t S(s_{t-1}, x_t) + (1 - u_t) s_{t-1}, \\qquad u_t = [\\tilde u_t \\geq 0.5]

    With ``trainable_initial_state=True`` every layer learns ``h0``, used when no
    ``initial_state`` is passed.
    """

    op = "skip_rnn"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = True,
        *,
        activation: str = "tanh",
        trainable_initial_state: bool = False,
        checkpoint_every: int | None = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ) -> None:
        options = {"activation": activation}
        init = {"trainable_initial_state": trainable_initial_state}
        super().__init__(
            input_size, hidden_size, num_layers, bias, batch_first, options, init, param_dtype, rngs, checkpoint_every
        )


class SkipLSTM(_SpecLayer):
    """Skip RNN over lstm cells, rnnspec op ``skip_lstm``; learns ``h0`` and ``c0`` with ``trainable_initial_state``."""

    op = "skip_lstm"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = True,
        *,
        trainable_initial_state: bool = False,
        checkpoint_every: int | None = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ) -> None:
        init = {"trainable_initial_state": trainable_initial_state}
        super().__init__(
            input_size, hidden_size, num_layers, bias, batch_first, {}, init, param_dtype, rngs, checkpoint_every
        )


class SkipGRU(_SpecLayer):
    """Skip RNN over gru cells, rnnspec op ``skip_gru``."""

    op = "skip_gru"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = True,
        *,
        reset_after: bool = True,
        trainable_initial_state: bool = False,
        checkpoint_every: int | None = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ) -> None:
        options = {"reset_after": reset_after}
        init = {"trainable_initial_state": trainable_initial_state}
        super().__init__(
            input_size, hidden_size, num_layers, bias, batch_first, options, init, param_dtype, rngs, checkpoint_every
        )


# -- ACT, IndRNN, QRNN ------------------------------------------------------------


class ACT(_SpecLayer):
    """Adaptive Computation Time over one layer of ``cell`` (Graves 2016), rnnspec op ``act``; ``b_halt`` starts at 1.

    .. math:: s_t = \\sum_n p^n_t s^n_t, \\qquad \\rho_t = N(t) + R(t)

    ``w_ih`` has ``input_size + 1`` columns (the last reads the flag). One layer only.
    """

    op = "act"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = True,
        *,
        cell: str = "rnn",
        epsilon: float = 0.01,
        max_steps: int = 100,
        checkpoint_every: int | None = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ) -> None:
        options = {"cell": cell, "epsilon": epsilon, "max_steps": max_steps}
        super().__init__(
            input_size, hidden_size, num_layers, bias, batch_first, options, {}, param_dtype, rngs, checkpoint_every
        )


class IndRNN(_SpecLayer):
    """IndRNN (Li et al. 2018), rnnspec op ``indrnn``, with the authors' init.

    .. math:: h_t = \\mathrm{act}(W_{ih} x_t + b_{ih} + u \\odot h_{t-1})

    ``seq_len``, ``mag`` and ``last_layer_init`` choose the range of ``u`` as
    :func:`rnnspec.init_params` documents. No constraint is applied to ``u`` in
    ``__call__``: apply :func:`rnnspec.indrnn_constrain` after optimizer steps.
    """

    op = "indrnn"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = True,
        *,
        activation: str = "relu",
        seq_len: int | None = None,
        mag: float | None = None,
        last_layer_init: bool = False,
        checkpoint_every: int | None = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ) -> None:
        options = {"activation": activation}
        init: dict[str, Any] = {"seq_len": seq_len, "last_layer_init": last_layer_init}
        if mag is not None:  # init_params refuses mag without seq_len, but only when given
            init["mag"] = mag
        super().__init__(
            input_size, hidden_size, num_layers, bias, batch_first, options, init, param_dtype, rngs, checkpoint_every
        )


class QRNN(_SpecLayer):
    """QRNN (Bradbury et al. 2016), rnnspec op ``qrnn``: ``mode`` f, fo or ifo, convolution width ``window``.

    .. math:: c_t = f_t c_{t-1} + (1 - f_t) z_t \\;\\text{(f, fo)}, \\qquad c_t = f_t c_{t-1} + i_t z_t \\;\\text{(ifo)}

    ``__call__`` also takes ``zoneout_mask`` (``None`` in evaluation; in training
    a {0, 1} array shaped like the outputs, or one per layer, drawn by the caller).
    """

    op = "qrnn"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = True,
        *,
        mode: str = "fo",
        window: int = 1,
        checkpoint_every: int | None = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ) -> None:
        options = {"mode": mode}
        init = {"window": window}
        super().__init__(
            input_size, hidden_size, num_layers, bias, batch_first, options, init, param_dtype, rngs, checkpoint_every
        )

    def __call__(
        self,
        x: jax.Array,
        initial_state: Sequence[Mapping[str, jax.Array]] | None = None,
        lengths: Any = None,
        reverse: bool = False,
        zoneout_mask: Any = None,
    ) -> Any:
        """Run qrnn over ``x``; ``zoneout_mask`` is laid out as ``x`` (time-major without ``batch_first``)."""
        return self._run(x, initial_state, lengths, reverse, {"zoneout_mask": zoneout_mask})
