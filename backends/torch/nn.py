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
:class:`SkipLSTM`, :class:`SkipGRU`, :class:`ACT`, :class:`IndRNN`, :class:`QRNN`,
:class:`PhasedLSTM`.

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

from rnnspec.backends.common.layers import ParamSlots, SizedLayer
from rnnspec.backends.common.trainable import layer_fixed_params, with_trainable_options
from rnnspec.errors import DtypeError, OptionError
from rnnspec.ops import OPS

__all__ = ["ACT", "GRU", "LSTM", "QRNN", "RNN", "IndRNN", "PhasedLSTM", "SkipGRU", "SkipLSTM", "SkipRNN"]


class _Layer(ParamSlots, nn.Module):  # type: ignore[misc,unused-ignore]
    """The parameters (and, with ``bias=False``, the zero bias buffers) of one layer of the stack; the ``fixed``
    ones (a trainable flag of the layer False) are parameters without ``requires_grad``."""

    def __init__(
        self,
        arrays: Mapping[str, np.ndarray],
        left_out: frozenset[str],
        device: Any,
        dtype: Any,
        fixed: frozenset[str] = frozenset(),
    ) -> None:
        super().__init__()
        kept = self.hold(arrays, left_out)
        for key, shape in self.shapes:
            if key in kept:
                weight = nn.Parameter(torch.empty(shape, device=device, dtype=dtype), requires_grad=key not in fixed)
                self.register_parameter(key, weight)
            else:  # follows .to()/.double(), receives no gradient, stays out of state_dict
                self.register_buffer(key, torch.zeros(shape, device=device, dtype=dtype), persistent=False)

    def tensors(self) -> dict[str, torch.Tensor]:
        """The layer's arrays by the spec's names, in the spec's order (the live parameters)."""
        return {name: getattr(self, name) for name, _ in self.shapes}


class _SpecModule(SizedLayer, nn.Module):  # type: ignore[misc,unused-ignore]
    """A stack of an rnnspec op's layers as a torch module; subclasses fix the op.

    Takes :class:`~rnnspec.backends.common.layers.SizedLayer`'s arguments and
    ``device`` and ``dtype`` (where the parameters live, their dtype: torch's default if None).
    """

    backend_name: ClassVar[str] = "torch"
    common_parameters: ClassVar[str] = """\
input_size, hidden_size, num_layers, bias, batch_first, checkpoint_every, device, dtype
    As :mod:`rnnspec.backends.torch.nn` says."""

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
        device: Any = None,
        dtype: Any = None,
        **options: Any,
    ) -> None:
        super().__init__()
        arrays = self._configure_sizes(
            input_size, hidden_size, num_layers, bias, batch_first, checkpoint_every, options
        )
        dtype = torch.get_default_dtype() if dtype is None else dtype
        fixed = layer_fixed_params(self)
        self.layers = nn.ModuleList([_Layer(layer, self.left_out, device, dtype, fixed) for layer in arrays])
        self.reset_parameters()

    # -- parameters -----------------------------------------------------------------

    def reset_parameters(self) -> None:
        """Fill the parameters from :func:`rnnspec.init_params` (the op's paper init).

        The seed is drawn from torch's global generator, so ``torch.manual_seed``
        makes it reproducible. With ``bias=False`` the cell biases stay zero.
        """
        seed = int(torch.randint(0, 2**62, (), dtype=torch.int64))
        self.load_canonical(self._draw(seed=seed))

    def canonical_params(self) -> list[dict[str, torch.Tensor]]:
        """The params as the op takes them: one dict per layer of the live tensors (autograd reaches them)."""
        return [layer.tensors() for layer in self._layer_slots()]

    def _layer_slots(self) -> list[_Layer]:
        return [cast(_Layer, layer) for layer in self.layers]

    def _as_array(self, k: int, key: str, value: Any) -> torch.Tensor:
        return torch.as_tensor(value if torch.is_tensor(value) else np.asarray(value))

    def _set_param(self, k: int, key: str, value: torch.Tensor) -> None:
        with torch.no_grad():
            getattr(self.layers[k], key).copy_(value)

    @staticmethod
    def _to_numpy(value: torch.Tensor) -> np.ndarray:
        t = value.detach().cpu()
        if t.dtype in (torch.float16, torch.bfloat16):
            t = t.float()
        return np.array(t.numpy())

    # -- forward --------------------------------------------------------------------

    def forward(
        self,
        x: torch.Tensor,
        initial_state: Sequence[Mapping[str, torch.Tensor]] | None = None,
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
        if not isinstance(x, torch.Tensor):
            # Refused here, before the layout is changed: NumPy's transpose(0, 1) would fail with its own error.
            expected = "a torch.Tensor (torch.from_numpy(x) for a NumPy array)"
            raise DtypeError(f"{type(self).__name__} layer", "x", expected, type(x).__name__, backend=self.backend_name)
        return x, initial_state, arrays

    @staticmethod
    def _swap(a: Any) -> Any:
        return a.transpose(0, 1)

    def extra_repr(self) -> str:
        return self.describe()


# -- the classic cells, with torch interop ----------------------------------------


class _Classic(_SpecModule):
    """rnn, lstm and gru: convertible from and to ``torch.nn.RNN``/``LSTM``/``GRU`` (of the layer's name)."""

    @classmethod
    def from_torch(cls, module: Any) -> Any:
        """The layer holding the weights of a unidirectional ``torch.nn.{RNN,LSTM,GRU}`` (same device and dtype).

        Raises :class:`rnnspec.errors.ParameterError` for a module rnnspec cannot
        express (see :func:`rnnspec.convert.from_torch`) and
        :class:`rnnspec.errors.OptionError` for a bidirectional or another class of module.
        """
        from rnnspec.convert import from_torch
        from rnnspec.convert.torch import module_op

        torch_class = OPS[cls.op].layer  # the class of torch.nn of the same name
        if type(module).__name__ != torch_class or not isinstance(module, nn.RNNBase):
            raise OptionError(
                f"{cls.__name__}.from_torch", "module", f"a torch.nn.{torch_class}", type(module).__name__
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
            **module_op(module)[1],
        )
        layer.load_canonical(params)
        return layer

    def to_torch(self) -> Any:
        """A ``torch.nn.{RNN,LSTM,GRU}`` with the same weights, ``batch_first``, device and dtype.

        With ``bias=False`` the module has no biases, as this layer's are zero.
        """
        from rnnspec.convert import to_torch

        options = dict(self.options)
        if options.get("reset_after", True) is not True:
            expected = "True (torch's GRU resets after the matmul)"
            raise OptionError(f"{type(self).__name__}.to_torch", "reset_after", expected, "False")
        first = self.canonical_params()[0]["w_ih"]
        module = to_torch(self.numpy_params(), self.op, batch_first=self.batch_first, bias=self.bias, **options)
        return module.to(device=first.device, dtype=first.dtype)


class RNN(_Classic):
    op = "rnn"


class LSTM(_Classic):
    """PyTorch's layout and init."""

    op = "lstm"


class GRU(_Classic):
    """``reset_after=False`` is Cho's placement (no torch equivalent)."""

    op = "gru"


class SkipRNN(_SpecModule):
    op = "skip_rnn"


class SkipLSTM(_SpecModule):
    op = "skip_lstm"


class SkipGRU(_SpecModule):
    op = "skip_gru"


class ACT(_SpecModule):
    op = "act"


class IndRNN(_SpecModule):
    op = "indrnn"


class QRNN(_SpecModule):
    """``forward`` also takes ``zoneout_mask`` (``None`` in evaluation; in training a {0, 1} array shaped like
    the outputs, or one per layer, drawn by the caller)."""

    op = "qrnn"


class PhasedLSTM(_SpecModule):
    """``forward`` also takes ``timestamps`` (batch, time): the time of each step, laid out as ``x``
    (time-major without ``batch_first``)."""

    op = "phased_lstm"
