"""``torch.nn.Module`` layers over the ops of the PyTorch backend.

Each layer holds its parameters as ``nn.Parameter`` in rnnspec's canonical
layout and calls the backend op in ``forward``, so autograd reaches every
parameter::

    import torch
    from rnnspec.backends.torch.nn import LSTM

    layer = LSTM(3, 8, num_layers=2)
    result = layer(torch.randn(5, 7, 3))  # a SequenceResult
    result.outputs.sum().backward()

Layers: :class:`RNN`, :class:`LSTM`, :class:`GRU`, :class:`SkipRNN`,
:class:`SkipLSTM`, :class:`SkipGRU`, :class:`ACT`, :class:`IndRNN`, :class:`QRNN`.

Parameters live in ``layers``, one submodule per layer of the stack, under the
spec's names: ``state_dict`` keys read ``layers.0.w_ih``, ``layers.1.b_hh``,
``layers.0.b_gate`` (the top layer's gate of a Skip RNN).

``bias=False``: the spec's ops always take biases, so the *cell* biases
(``b_ih``, ``b_hh``, qrnn's ``b``) are kept at zero as non-persistent buffers:
they follow ``.to()``/``.double()``, receive no gradient and are left out of
``state_dict`` (as torch's ``bias=False`` modules have no bias entries). The
gate and halting biases (``b_gate``, ``b_halt``) are part of the mechanism, not
of the cell, and stay trainable parameters with their paper init.

``batch_first=False`` transposes ``x`` (and qrnn's ``zoneout_mask``) from
``(time, batch, ...)`` on the way in and every per-step result (``outputs``,
``update_gate``, ``update_prob``, ``ponder_*``) back on the way out. The state
is never transposed: it is the op's, one mapping per layer of ``(batch, ...)``
entries, what ``initial_state`` accepts.

``checkpoint_every=K`` (every layer; None by default) is passed to the op:
the backward pass recomputes the activations of each segment of K steps
instead of keeping them all (same values and gradients, less memory; see
:mod:`rnnspec.backends.torch.checkpointing`). It is checked as the op checks
it: an integer >= 1, or None.

Importing this module imports torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, cast

import numpy as np
import torch
from torch import nn

from rnnspec.backends.layers import (
    CELL_BIASES,
    TIME_FIELDS,
    ParamFiles,
    check_checkpoint_every,
    check_layer_input,
    layer_backend,
)
from rnnspec.errors import CallError, DtypeError, OptionError, ParameterError
from rnnspec.init import init_params

__all__ = ["ACT", "GRU", "LSTM", "QRNN", "RNN", "IndRNN", "SkipGRU", "SkipLSTM", "SkipRNN"]


class _Layer(nn.Module):  # type: ignore[misc,unused-ignore]
    """The parameters (and, with ``bias=False``, the zero bias buffers) of one layer of the stack."""

    def __init__(self, names: Sequence[str]) -> None:
        super().__init__()
        self.names = tuple(names)

    def tensors(self) -> dict[str, torch.Tensor]:
        """The layer's arrays by the spec's names, in the spec's order (the live parameters)."""
        return {name: getattr(self, name) for name in self.names}


class _SpecModule(ParamFiles, nn.Module):  # type: ignore[misc,unused-ignore]
    """A stack of an rnnspec op's layers as a torch module; subclasses fix the op."""

    #: The op of the spec.
    op: ClassVar[str]
    #: The backend whose op the layer calls.
    backend_name: ClassVar[str] = "torch"
    #: The options of ``init_params`` only (they shape or initialise params, the op never sees them).
    init_option_names: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int,
        bias: bool,
        batch_first: bool,
        options: Mapping[str, Any],
        init_options: Mapping[str, Any],
        device: Any,
        dtype: Any,
        checkpoint_every: int | None,
    ) -> None:
        super().__init__()
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
        self.options = dict(options)
        self.init_options = dict(init_options)
        # init_params checks the sizes and every option, naming the argument; re-raised under the layer's name.
        arrays = self._draw(seed=0)
        dtype = torch.get_default_dtype() if dtype is None else dtype
        self.layers = nn.ModuleList()
        for layer_arrays in arrays:
            layer = _Layer(tuple(layer_arrays))
            for key, array in layer_arrays.items():
                tensor = torch.empty(array.shape, device=device, dtype=dtype)
                if self._frozen(key):
                    layer.register_buffer(key, tensor, persistent=False)
                else:
                    layer.register_parameter(key, nn.Parameter(tensor))
            self.layers.append(layer)
        self.reset_parameters()

    # -- parameters -----------------------------------------------------------------

    def _frozen(self, key: str) -> bool:
        return not self.bias and key in CELL_BIASES

    def _draw(self, seed: int) -> list[dict[str, np.ndarray]]:
        try:
            return init_params(
                self.op,
                input_size=self.input_size,
                hidden_size=self.hidden_size,
                num_layers=self.num_layers,
                seed=seed,
                dtype="float64",
                **self.options,
                **self.init_options,
            )
        except CallError as err:
            raise type(err)(type(self).__name__, err.argument, err.expected, err.actual) from None

    def reset_parameters(self) -> None:
        """Fill the parameters from :func:`rnnspec.init_params` (the op's paper init).

        The seed is drawn from torch's global generator, so ``torch.manual_seed``
        makes it reproducible. With ``bias=False`` the cell biases stay zero.
        """
        seed = int(torch.randint(0, 2**62, (), dtype=torch.int64))
        self.load_canonical(self._draw(seed))

    def load_canonical(self, params: Sequence[Mapping[str, Any]]) -> None:
        """Copy canonical params (one mapping per layer, NumPy arrays or tensors) into the layer.

        With ``bias=False`` the cell biases stay zero whatever ``params`` holds.
        """
        if len(params) != len(self.layers):
            raise ParameterError(type(self).__name__, "params", f"{len(self.layers)} layers", f"{len(params)} layers")
        with torch.no_grad():
            for k, (layer, values) in enumerate(zip(self._stack(), params, strict=True)):
                for key, target in layer.tensors().items():
                    if key not in values:
                        raise ParameterError(
                            type(self).__name__, f"params[{k}]", f"a key {key!r}", repr(sorted(values))
                        )
                    if self._frozen(key):
                        target.zero_()
                        continue
                    value = torch.as_tensor(
                        np.asarray(values[key]) if not torch.is_tensor(values[key]) else values[key]
                    )
                    if tuple(value.shape) != tuple(target.shape):
                        raise ParameterError(
                            type(self).__name__,
                            f"params[{k}][{key!r}]",
                            f"shape {tuple(target.shape)}",
                            f"shape {tuple(value.shape)}",
                        )
                    target.copy_(value)

    def canonical_params(self) -> list[dict[str, torch.Tensor]]:
        """The params as the op takes them: one dict per layer of the live tensors (autograd reaches them)."""
        return [layer.tensors() for layer in self._stack()]

    def _stack(self) -> list[_Layer]:
        return [cast(_Layer, layer) for layer in self.layers]

    def numpy_params(self) -> list[dict[str, np.ndarray]]:
        """A copy of the params as NumPy arrays (float32 for half-precision layers)."""
        out = []
        for layer in self.canonical_params():
            out.append({k: _to_numpy(v) for k, v in layer.items()})
        return out

    # -- forward --------------------------------------------------------------------

    def forward(
        self,
        x: torch.Tensor,
        initial_state: Sequence[Mapping[str, torch.Tensor]] | None = None,
        lengths: Any = None,
        reverse: bool = False,
    ) -> Any:
        """Run the op over ``x`` (``(batch, time, input_size)``, or time-major without ``batch_first``).

        Returns the op's result (``SequenceResult``, ``SkipResult`` or ``ACTResult``).
        """
        return self._run(x, initial_state, lengths, reverse, {})

    def _run(
        self,
        x: Any,  # a torch.Tensor, checked: callers pass NumPy arrays too
        initial_state: Sequence[Mapping[str, torch.Tensor]] | None,
        lengths: Any,
        reverse: bool,
        arrays: Mapping[str, Any],
    ) -> Any:
        if not isinstance(x, torch.Tensor):
            # Refused here, before the layout is changed: NumPy's transpose(0, 1) would fail with its own error.
            expected = "a torch.Tensor (torch.from_numpy(x) for a NumPy array)"
            raise DtypeError(f"{type(self).__name__} layer", "x", expected, type(x).__name__, backend=self.backend_name)
        params = self.canonical_params()
        dtype = str(next(iter(params[0].values())).dtype).removeprefix("torch.")
        check_layer_input(
            f"{type(self).__name__} layer",
            x,
            input_size=self.input_size,
            dtype=dtype,
            backend=self.backend_name,
            batch_first=self.batch_first,
        )
        if not self.batch_first:
            x = x.transpose(0, 1)
            arrays = {k: _transpose_arrays(v) for k, v in arrays.items()}
        method = getattr(layer_backend(self.backend_name), self.op)
        result = method(
            x,
            params,
            **self.options,
            **arrays,
            lengths=lengths,
            initial_state=initial_state,
            reverse=reverse,
            checkpoint_every=self.checkpoint_every,
        )
        if self.batch_first:
            return result
        return result._replace(**{f: getattr(result, f).transpose(0, 1) for f in TIME_FIELDS if f in result._fields})

    def extra_repr(self) -> str:
        parts = [f"{self.input_size}", f"{self.hidden_size}"]
        if self.num_layers != 1:
            parts.append(f"num_layers={self.num_layers}")
        if not self.bias:
            parts.append("bias=False")
        if not self.batch_first:
            parts.append("batch_first=False")
        parts += [f"{k}={v!r}" for k, v in {**self.options, **self.init_options}.items()]
        if self.checkpoint_every is not None:
            parts.append(f"checkpoint_every={self.checkpoint_every}")
        return ", ".join(parts)


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu()
    if t.dtype in (torch.float16, torch.bfloat16):
        t = t.float()
    return np.array(t.numpy())


def _transpose_arrays(value: Any) -> Any:
    if value is None:
        return None
    if torch.is_tensor(value):
        return value.transpose(0, 1)
    return [v.transpose(0, 1) for v in value]


# -- the classic cells, with torch interop ----------------------------------------


class _Classic(_SpecModule):
    """rnn, lstm and gru: convertible from and to ``torch.nn.RNN``/``LSTM``/``GRU``."""

    torch_class: ClassVar[str]

    @classmethod
    def _torch_kwargs(cls, module: Any) -> dict[str, Any]:
        return {}

    @classmethod
    def from_torch(cls, module: Any) -> Any:
        """The layer holding the weights of a unidirectional ``torch.nn.{RNN,LSTM,GRU}`` (same device and dtype).

        Raises :class:`rnnspec.errors.ParameterError` for a module rnnspec cannot
        express (see :func:`rnnspec.convert.from_torch`) and
        :class:`rnnspec.errors.OptionError` for a bidirectional or another class of module.
        """
        from rnnspec.convert import from_torch

        if type(module).__name__ != cls.torch_class or not isinstance(module, nn.RNNBase):
            raise OptionError(
                f"{cls.__name__}.from_torch", "module", f"a torch.nn.{cls.torch_class}", type(module).__name__
            )
        if module.bidirectional:
            raise OptionError(
                f"{cls.__name__}.from_torch",
                "module",
                "a unidirectional module (convert each direction with rnnspec.convert.from_torch)",
                "bidirectional=True",
            )
        params = from_torch(module)  # checks proj_size
        weight = module.weight_ih_l0
        layer = cls(
            module.input_size,
            module.hidden_size,
            num_layers=module.num_layers,
            bias=bool(module.bias),
            batch_first=bool(module.batch_first),
            device=weight.device,
            dtype=weight.dtype,
            **cls._torch_kwargs(module),
        )
        layer.load_canonical(params)
        return layer

    def to_torch(self) -> Any:
        """A ``torch.nn.{RNN,LSTM,GRU}`` with the same weights, ``batch_first``, device and dtype.

        With ``bias=False`` the module has no biases, as this layer's are zero.
        """
        from rnnspec.convert import to_torch

        if self.options.get("reset_after", True) is not True:
            expected = "True (torch's GRU resets after the matmul)"
            raise OptionError(f"{type(self).__name__}.to_torch", "reset_after", expected, "False")
        params = self.numpy_params()
        first = self.canonical_params()[0]["w_ih"]
        if self.bias:
            module = to_torch(params, self.op, batch_first=self.batch_first, **self.options)
        else:
            kwargs = {"nonlinearity": self.options["activation"]} if self.op == "rnn" else {}
            module = getattr(nn, self.torch_class)(
                self.input_size,
                self.hidden_size,
                num_layers=self.num_layers,
                bias=False,
                batch_first=self.batch_first,
                device=first.device,
                dtype=first.dtype,
                **kwargs,
            )
            with torch.no_grad():
                for k, layer in enumerate(self.canonical_params()):
                    getattr(module, f"weight_ih_l{k}").copy_(layer["w_ih"].detach())
                    getattr(module, f"weight_hh_l{k}").copy_(layer["w_hh"].detach())
        return module.to(device=first.device, dtype=first.dtype)


class RNN(_Classic):
    """Elman RNN (``activation`` ``"tanh"`` or ``"relu"``), rnnspec op ``rnn``."""

    op = "rnn"
    torch_class = "RNN"

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
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        options = {"activation": activation}
        super().__init__(
            input_size, hidden_size, num_layers, bias, batch_first, options, {}, device, dtype, checkpoint_every
        )

    @classmethod
    def _torch_kwargs(cls, module: Any) -> dict[str, Any]:
        return {"activation": module.nonlinearity}


class LSTM(_Classic):
    """LSTM, rnnspec op ``lstm`` (PyTorch's layout and init)."""

    op = "lstm"
    torch_class = "LSTM"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = True,
        *,
        checkpoint_every: int | None = None,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(
            input_size, hidden_size, num_layers, bias, batch_first, {}, {}, device, dtype, checkpoint_every
        )


class GRU(_Classic):
    """GRU, rnnspec op ``gru``; ``reset_after=False`` is Cho's placement (no torch equivalent)."""

    op = "gru"
    torch_class = "GRU"

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
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        options = {"reset_after": reset_after}
        super().__init__(
            input_size, hidden_size, num_layers, bias, batch_first, options, {}, device, dtype, checkpoint_every
        )

    @classmethod
    def _torch_kwargs(cls, module: Any) -> dict[str, Any]:
        return {"reset_after": True}


# -- Skip RNN ---------------------------------------------------------------------


class _Skip(_SpecModule):
    init_option_names = ("trainable_initial_state",)


class SkipRNN(_Skip):
    """Skip RNN over rnn cells (Campos et al. 2018), rnnspec op ``skip_rnn``; ``b_gate`` starts at 1.

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
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        options = {"activation": activation}
        init = {"trainable_initial_state": trainable_initial_state}
        super().__init__(
            input_size, hidden_size, num_layers, bias, batch_first, options, init, device, dtype, checkpoint_every
        )


class SkipLSTM(_Skip):
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
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        init = {"trainable_initial_state": trainable_initial_state}
        super().__init__(
            input_size, hidden_size, num_layers, bias, batch_first, {}, init, device, dtype, checkpoint_every
        )


class SkipGRU(_Skip):
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
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        options = {"reset_after": reset_after}
        init = {"trainable_initial_state": trainable_initial_state}
        super().__init__(
            input_size, hidden_size, num_layers, bias, batch_first, options, init, device, dtype, checkpoint_every
        )


# -- ACT, IndRNN, QRNN ------------------------------------------------------------


class ACT(_SpecModule):
    """Adaptive Computation Time over one layer of ``cell`` (Graves 2016), rnnspec op ``act``; ``b_halt`` starts at 1.

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
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        options = {"cell": cell, "epsilon": epsilon, "max_steps": max_steps}
        super().__init__(
            input_size, hidden_size, num_layers, bias, batch_first, options, {}, device, dtype, checkpoint_every
        )


class IndRNN(_SpecModule):
    """IndRNN (Li et al. 2018), rnnspec op ``indrnn``, with the authors' init.

    ``seq_len``, ``mag`` and ``last_layer_init`` choose the range of ``u`` as
    :func:`rnnspec.init_params` documents. No constraint is applied to ``u`` in
    ``forward``: call :func:`rnnspec.indrnn_constrain` after optimizer steps.
    """

    op = "indrnn"
    init_option_names = ("seq_len", "mag", "last_layer_init")

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
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        options = {"activation": activation}
        init: dict[str, Any] = {"seq_len": seq_len, "last_layer_init": last_layer_init}
        if mag is not None:  # init_params refuses mag without seq_len, but only when given
            init["mag"] = mag
        super().__init__(
            input_size, hidden_size, num_layers, bias, batch_first, options, init, device, dtype, checkpoint_every
        )


class QRNN(_SpecModule):
    """QRNN (Bradbury et al. 2016), rnnspec op ``qrnn``: ``mode`` f, fo or ifo, convolution width ``window``.

    ``forward`` also takes ``zoneout_mask`` (``None`` in evaluation; in training
    a {0, 1} array shaped like the outputs, or one per layer, drawn by the caller).
    """

    op = "qrnn"
    init_option_names = ("window",)

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
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        options = {"mode": mode}
        init = {"window": window}
        super().__init__(
            input_size, hidden_size, num_layers, bias, batch_first, options, init, device, dtype, checkpoint_every
        )

    def forward(
        self,
        x: torch.Tensor,
        initial_state: Sequence[Mapping[str, torch.Tensor]] | None = None,
        lengths: Any = None,
        reverse: bool = False,
        zoneout_mask: Any = None,
    ) -> Any:
        """Run qrnn over ``x``; ``zoneout_mask`` is laid out as ``x`` (time-major without ``batch_first``)."""
        return self._run(x, initial_state, lengths, reverse, {"zoneout_mask": zoneout_mask})
