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

``proj_size`` (torch.nn.LSTM's keyword): the layers whose op's state is ``h``
and ``c`` (:class:`LSTM`, :class:`SkipLSTM`, :class:`PhasedLSTM`) take it, and
accept only 0, torch's default: rnnspec's ops have no projection, so a nonzero
value is refused (:class:`rnnspec.errors.OptionError`). The other layers do not
take it, as ``torch.nn.GRU`` does not: it is an unknown keyword there
(:class:`rnnspec.errors.UnknownArgumentError`, a ``TypeError``).

``state_format`` says what ``forward`` returns. ``"rnnspec"`` (the default):
the op's result (``SequenceResult``, ``SkipResult``, ``ACTResult``), the state
as one mapping per layer. ``"torch"``: torch.nn's form, so that code written for
``torch.nn.RNN``/``GRU``/``LSTM`` runs unchanged::

    layer = LSTM(3, 8, num_layers=2, batch_first=False, state_format="torch")
    out, (h_n, c_n) = layer(x, (h0, c0))  # h0, c0, h_n, c_n: (num_layers, batch, 8)

``forward(x, hx)`` then takes the initial state as torch.nn does (``hx``: a
tensor ``h0`` for a state of ``h`` only, a pair ``(h0, c0)`` for a state of
``h`` and ``c``, each ``(num_layers, batch, hidden_size)`` whatever
``batch_first``; None: the op's start, or the learnt one) and returns
``(output, h_n)`` or ``(output, (h_n, c_n))``: ``output`` in the layer's layout,
``h_n`` and ``c_n`` each layer's final state stacked along a first axis, as
``torch.nn.LSTM``'s with one direction. The per-step results besides
``outputs`` (Skip RNN's ``update_gate`` and ``update_prob``, ACT's ``ponder_*``)
are dropped: a model whose loss needs them (a budget or ponder cost) keeps the
default form. The form is read from the op's record (``rnnspec.ops.OPS[op].state``):
an op's state has one when its entries are ``h``, or ``h`` and ``c``, each of
shape ``(H,)`` in every layer of the stack (rnn, lstm, gru, act, indrnn,
phased_lstm); any other entry (Skip RNN's ``update_prob`` and
``cum_update_prob``, kept by the top layer only; QRNN's ``x_prev``, next to a
``c`` without ``h``) has no torch.nn form, and ``state_format="torch"`` is
refused when the layer is built, naming those entries. ``lengths``,
``reverse`` and the per-step arrays (``timestamps``, ``zoneout_mask``) are taken
in either form.

Bidirectional
-------------
``bidirectional=True`` (every layer; keyword-only) runs each sequence both ways, as
``torch.nn.LSTM(bidirectional=True)`` does: ``outputs`` is the forward direction's
outputs and the reverse direction's (each row's valid prefix read backwards, its
outputs at their original time positions) concatenated on the last axis, forward
first, ``(batch, time, 2 * hidden_size)``. How a stack is wired depends on the op:

- rnn, lstm, gru, indrnn, qrnn and phased_lstm, whose layers are independent of one
  another, are wired as torch.nn's: layer k > 0 of either direction reads the
  concatenated outputs of both directions of layer k - 1 (its input size is
  ``2 * hidden_size``). Each layer of each direction is one call of the op.
- The Skip RNN ops (one update gate for the whole stack, kept by the top layer) and
  act cannot be cut into layers: each direction is a whole stack over ``x``, and the
  top layers' outputs are concatenated. Their per-step results besides ``outputs``
  (``update_gate``, ``update_prob``, ``ponder_*``) are each direction's, stacked on a
  new last axis ``(batch, time, 2)``, forward first (torch.nn has nothing comparable).

The reverse direction's parameters live in ``layers_reverse``, one submodule per
layer as ``layers`` (``state_dict`` keys ``layers.0.w_ih``,
``layers_reverse.0.w_ih``), each drawn by :func:`rnnspec.init_params` for its input
size. ``canonical_params()``, ``numpy_params()`` and ``load_canonical()`` take and
give ``{"forward": [...], "reverse": [...]}``, one list of per-layer mappings per
direction (the form of :func:`rnnspec.convert.from_torch` with ``direction="both"``);
``save_params``/``load_params`` (rnnspec's parameter files hold one stack) are
refused: save the ``state_dict``. The state is one per direction too: ``initial_state``
(None, or ``{"forward": ..., "reverse": ...}``, each None or the op's state, one
mapping per layer) and ``result.state`` (``{"forward": (...), "reverse": (...)}``).
With ``state_format="torch"``, ``hx``, ``h_n`` and ``c_n`` are ``(2 * num_layers,
batch, hidden_size)`` in torch.nn's order: layer 0 forward, layer 0 reverse, layer 1
forward, ... ``forward``'s ``reverse=True`` is refused (both directions run already).
qrnn's ``zoneout_mask`` (one array, or one per layer) and Phased LSTM's ``timestamps``
are given to both directions (a QRNN's own zoneout masks are drawn per layer and direction).
The ``recurrent_dropout`` masks are drawn per layer and direction; ``dropout`` drops a layer-wise
stack's concatenated outputs of layer k - 1 (both directions, one mask), as torch.nn does, and each
direction's boundaries of a Skip RNN or ACT stack.

Importing this module imports torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any, ClassVar, cast

import numpy as np
import torch
from torch import nn

from rnnspec.backends.common.cells_core import CellCore
from rnnspec.backends.common.layers import (
    ZONEOUT,
    LayerCore,
    LayerOption,
    ParamSlots,
    SizedLayer,
    check_layer_input,
    dropout_masks,
    layer_backend,
    time_fields,
)
from rnnspec.backends.common.trainable import layer_fixed_params, with_trainable_options
from rnnspec.errors import CallError, DtypeError, OptionError, ParameterError, ShapeError, UnknownArgumentError
from rnnspec.init import init_params
from rnnspec.ops import OPS
from rnnspec.results import SequenceResult

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
    "param_groups",
]


# -- torch.nn's conventions: proj_size and the state's form ------------------------------------------------

#: The values of ``state_format``: the op's result, or torch.nn's ``(output, h_n)``/``(output, (h_n, c_n))``.
STATE_FORMATS = ("rnnspec", "torch")
#: The state entries that torch.nn's form holds, in its order: ``h_n``, then ``c_n``.
_TORCH_ENTRIES = ("h", "c")
#: The directions of a bidirectional layer, in the order of its outputs and of torch.nn's ``h_n``.
DIRECTIONS = ("forward", "reverse")
#: The ops whose layers run one after another, each reading only the outputs of the one below (``run_layers``):
#: a bidirectional stack of them is wired as torch.nn's, layer by layer. The others' stacks are coupled (the
#: Skip RNN's one update gate, kept by the top layer; act), so each direction runs its whole stack over ``x``.
_LAYERWISE_OPS = frozenset({"rnn", "lstm", "gru", "indrnn", "qrnn", "phased_lstm"})


def _torch_state_entries(op: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The entries of ``op``'s state that torch.nn's form holds (in its order) and those it has no place for.

    An entry fits when it is named ``h`` or ``c`` and is ``(H,)`` in every layer of the stack (torch.nn
    stacks the layers' into ``(num_layers, batch, H)``); without an ``h`` that fits nothing is mapped (a ``c``
    alone, qrnn's pooling state, is no torch.nn state). The state has torch.nn's form when nothing is left over.
    """
    state = OPS[op].state
    fits = {s.name for s in state if s.name in _TORCH_ENTRIES and tuple(s.shape) == ("H",) and s.layers == "all"}
    mapped = tuple(name for name in _TORCH_ENTRIES if name in fits) if "h" in fits else ()
    return mapped, tuple(s.name for s in state if s.name not in mapped)


def _no_torch_form(op: str, unmapped: tuple[str, ...]) -> str:
    entries = ", ".join(repr(name) for name in unmapped)
    return f"{op}'s state entries {entries} have no torch.nn form (h_n, or h_n and c_n)"


def _check_proj_size(op: str, layer: str, name: str, value: Any) -> int:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value == 0:
        return 0
    raise OptionError(layer, name, f"0: rnnspec's {op} has no projection", repr(value))


def _check_state_format(op: str, layer: str, name: str, value: Any) -> str:
    if not isinstance(value, str) or value not in STATE_FORMATS:
        raise OptionError(layer, name, " or ".join(repr(f) for f in STATE_FORMATS), repr(value))
    unmapped = _torch_state_entries(op)[1]
    if value == "torch" and unmapped:
        raise OptionError(layer, name, f"'rnnspec': {_no_torch_form(op, unmapped)}", repr(value))
    return value


def _torch_options(op: str) -> tuple[LayerOption, ...]:
    """The constructor options of torch.nn's conventions that a layer of ``op`` takes.

    ``proj_size`` where the state holds ``h`` and ``c`` (torch.nn.LSTM's keyword; the others, as torch.nn.GRU,
    do not take it), then ``state_format``, described from the op's record.
    """
    mapped, unmapped = _torch_state_entries(op)
    options = []
    if mapped == _TORCH_ENTRIES:
        description = f"torch.nn.LSTM's projection size: only 0 (rnnspec's {op} has no projection)."
        options.append(LayerOption("proj_size", 0, "int", description, check=partial(_check_proj_size, op)))
    if unmapped:
        description = (
            f"``'rnnspec'`` only (``forward`` returns the op's result): {_no_torch_form(op, unmapped)}, so "
            "``'torch'`` is refused."
        )
    else:
        returned = "``(output, (h_n, c_n))``" if mapped == _TORCH_ENTRIES else "``(output, h_n)``"
        initial = "``(h0, c0)``" if mapped == _TORCH_ENTRIES else "``h0``"
        dropped = ", ".join(f"``{f}``" for f in OPS[op].result_fields if f not in ("outputs", "state"))
        description = (
            "``'rnnspec'``: ``forward`` returns the op's result; ``'torch'``: torch.nn's form, ``forward(x, hx)`` "
            f"taking ``hx`` = {initial} and returning {returned}, each ``(num_layers, batch, hidden_size)`` "
            + (f"({dropped} dropped; " if dropped else "(")
            + "see :mod:`rnnspec.backends.torch.nn`)."
        )
    options.append(LayerOption("state_format", "rnnspec", "str", description, check=partial(_check_state_format, op)))
    return tuple(options)


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
input_size, hidden_size, num_layers, bias, batch_first, bidirectional, checkpoint_every, device, dtype
    As :mod:`rnnspec.backends.torch.nn` says."""

    #: The state entries of torch.nn's form, in its order (``("h",)`` or ``("h", "c")``; empty: it has none).
    torch_state_entries: ClassVar[tuple[str, ...]] = ()
    #: The constructor's ``state_format`` and, for a state of h and c, ``proj_size`` (always 0).
    state_format: str
    proj_size: int
    #: Whether both directions run (the reverse one's parameters in ``layers_reverse``).
    bidirectional: bool
    #: The direction whose layers ``_layer_slots`` and ``canonical_params`` give while a bidirectional layer
    #: loads one direction (None: both).
    _viewing: str | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        if "op" in cls.__dict__:
            # The record's trainable flags (Phased LSTM's trainable_ratio_on) first, then torch.nn's conventions.
            own = _torch_options(cls.op)
            names = {o.name for o in own}
            inherited = tuple(o for o in cls.extra_options if o.name not in names)
            cls.extra_options = with_trainable_options(cls.op, inherited + own)
            cls.torch_state_entries = _torch_state_entries(cls.op)[0]
        super().__init_subclass__(**kwargs)

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = True,
        *,
        bidirectional: bool = False,
        checkpoint_every: int | None = None,
        device: Any = None,
        dtype: Any = None,
        **options: Any,
    ) -> None:
        super().__init__()
        if not isinstance(bidirectional, bool):
            raise OptionError(type(self).__name__, "bidirectional", "True or False", repr(bidirectional))
        self.bidirectional = bidirectional
        arrays = self._configure_sizes(
            input_size, hidden_size, num_layers, bias, batch_first, checkpoint_every, options
        )
        dtype = torch.get_default_dtype() if dtype is None else dtype
        fixed = layer_fixed_params(self)

        def stack(drawn: list[dict[str, np.ndarray]]) -> nn.ModuleList:
            return nn.ModuleList([_Layer(layer, self.left_out, device, dtype, fixed) for layer in drawn])

        if bidirectional:
            both = self._draw_directions(seed=0)
            self.layers, self.layers_reverse = stack(both["forward"]), stack(both["reverse"])
        else:
            self.layers = stack(arrays)
        self.reset_parameters()

    # -- parameters -----------------------------------------------------------------

    def reset_parameters(self) -> None:
        """Fill the parameters from :func:`rnnspec.init_params` (the op's paper init).

        The seed is drawn from torch's global generator, so ``torch.manual_seed``
        makes it reproducible. With ``bias=False`` the cell biases stay zero.
        """
        seed = int(torch.randint(0, 2**62, (), dtype=torch.int64))
        self.load_canonical(self._draw_directions(seed=seed) if self.bidirectional else self._draw(seed=seed))

    def _draw_directions(self, *, seed: int) -> dict[str, list[dict[str, np.ndarray]]]:
        """Fresh params of both directions of a bidirectional layer, from :func:`rnnspec.init_params`.

        Each direction's first layer (a coupled op's whole stack) is drawn as a unidirectional layer's; layer
        k > 0 of a layer-wise op reads both directions below, so it is drawn as the first layer of a stack of
        ``num_layers - k`` over ``2 * hidden_size`` inputs (its own input size, and the top layer's init where
        the op has one).
        """
        seeds = np.random.default_rng(seed).integers(0, 2**62, size=(len(DIRECTIONS), self.num_layers))
        drawn = {}
        for d, direction in enumerate(DIRECTIONS):
            layers = self._draw(seed=int(seeds[d, 0]))
            if self.op in _LAYERWISE_OPS:
                for k in range(1, self.num_layers):
                    # The constructor's draw checked every option; 2 * hidden_size is a valid size.
                    layers[k] = init_params(
                        self.op,
                        input_size=2 * self.hidden_size,
                        hidden_size=self.hidden_size,
                        num_layers=self.num_layers - k,
                        seed=int(seeds[d, k]),
                        dtype="float64",
                        **dict(self.options),
                        **dict(self.init_options),
                    )[0]
            drawn[direction] = layers
        return drawn

    def canonical_params(self) -> Any:
        """The params as the op takes them: one dict per layer of the live tensors (autograd reaches them).

        A bidirectional layer gives ``{"forward": [...], "reverse": [...]}``, one such list per direction.
        """
        if self.bidirectional and self._viewing is None:
            return {direction: [layer.tensors() for layer in self._stack(direction)] for direction in DIRECTIONS}
        return [layer.tensors() for layer in self._layer_slots()]

    def _stack(self, direction: str) -> list[_Layer]:
        """The layers of one direction (``"forward"``: ``layers``; ``"reverse"``: ``layers_reverse``)."""
        return [cast(_Layer, layer) for layer in (self.layers if direction == "forward" else self.layers_reverse)]

    def _layer_slots(self) -> list[_Layer]:
        return self._stack(self._viewing or "forward")

    def _as_array(self, k: int, key: str, value: Any) -> torch.Tensor:
        return torch.as_tensor(value if torch.is_tensor(value) else np.asarray(value))

    def _set_param(self, k: int, key: str, value: torch.Tensor) -> None:
        with torch.no_grad():
            getattr(self._layer_slots()[k], key).copy_(value)

    def load_canonical(self, params: Any) -> None:
        """Copy canonical params (one mapping per layer, NumPy or torch arrays) into the layer, cast to its dtype.

        A bidirectional layer takes ``{"forward": [...], "reverse": [...]}``, one list of per-layer mappings
        per direction (what its :meth:`canonical_params` gives).

        Raises
        ------
        rnnspec.errors.ParameterError
            A wrong number of layers, a missing, extra or misshapen entry, named (under
            ``params['reverse']`` for a bidirectional layer's reverse direction); for a bidirectional layer, a
            ``params`` that is no mapping of the two directions.
        """
        if not self.bidirectional:
            LayerCore.load_canonical(self, params)
            return
        name = type(self).__name__
        if not isinstance(params, Mapping) or sorted(params) != sorted(DIRECTIONS):
            expected = (
                "{'forward': [...], 'reverse': [...]}, one sequence of mappings per layer for each direction "
                "(a bidirectional layer's params)"
            )
            actual = f"a mapping of keys {sorted(params)}" if isinstance(params, Mapping) else type(params).__name__
            raise ParameterError(name, "params", expected, actual)
        for direction in DIRECTIONS:
            self._viewing = direction
            try:
                LayerCore.load_canonical(self, params[direction])
            except CallError as err:
                argument = f"params[{direction!r}]" + err.argument.removeprefix("params")
                raise type(err)(err.op, argument, err.expected, err.actual, backend=err.backend) from None
            finally:
                self._viewing = None

    load_canonical._checks_canonical = True  # type: ignore[attr-defined]  # LayerCore's load checks each direction

    def numpy_params(self) -> Any:
        """A copy of the params as NumPy arrays (float32 for half-precision layers); per direction when
        bidirectional, as :meth:`canonical_params`."""
        params = self.canonical_params()
        if not self.bidirectional:
            return [{k: self._to_numpy(v) for k, v in layer.items()} for layer in params]
        return {d: [{k: self._to_numpy(v) for k, v in layer.items()} for layer in params[d]] for d in DIRECTIONS}

    def _refuse_param_files(self, method: str) -> None:
        if self.bidirectional:
            expected = (
                f"False for {method} (rnnspec's parameter files hold one direction's stack: save the "
                "state_dict with torch.save, or numpy_params())"
            )
            raise OptionError(f"{type(self).__name__}.{method}", "bidirectional", expected, "True")

    def save_params(self, path: Any) -> None:
        """Write the params to a parameter file (see :meth:`LayerCore.save_params`); refused when bidirectional."""
        self._refuse_param_files("save_params")
        LayerCore.save_params(self, path)

    def load_params(self, path: Any) -> None:
        """Read the params of a parameter file (see :meth:`LayerCore.load_params`); refused when bidirectional."""
        self._refuse_param_files("load_params")
        LayerCore.load_params(self, path)

    def _param_dtype(self) -> torch.dtype:
        return next(iter(self._stack("forward")[0].tensors().values())).dtype

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
        initial_state: Any = None,
        lengths: Any = None,
        reverse: bool = False,
        *,
        hx: Any = None,
        **arrays: Any,
    ) -> Any:
        """Run the op over ``x`` (``(batch, time, input_size)``, or time-major without ``batch_first``).

        ``arrays`` are the op's per-step options (qrnn's ``zoneout_mask``), laid out as ``x``.

        With ``state_format="rnnspec"`` (the default) ``initial_state`` is the op's (one mapping per
        layer) and the op's result is returned (``SequenceResult``, ``SkipResult`` or ``ACTResult``).
        With ``state_format="torch"`` the second argument (or ``hx=``) is torch.nn's ``hx``: ``h0``, or
        ``(h0, c0)``, each ``(num_layers, batch, hidden_size)``; ``(output, h_n)`` or
        ``(output, (h_n, c_n))`` is returned, as ``torch.nn.RNN``/``GRU``/``LSTM`` return them.

        A bidirectional layer runs both directions (see :mod:`rnnspec.backends.torch.nn`): its
        ``initial_state`` is ``{"forward": ..., "reverse": ...}`` and its ``hx`` ``(2 * num_layers, ...)``;
        ``reverse=True`` is refused.

        Raises
        ------
        rnnspec.errors.UnknownArgumentError
            ``hx`` without ``state_format="torch"``, or both ``hx`` and ``initial_state``.
        rnnspec.errors.DtypeError, rnnspec.errors.ShapeError
            An ``hx`` not of torch.nn's form for this layer, of another dtype, or misshapen; a bidirectional
            layer's ``initial_state`` not of the two directions.
        rnnspec.errors.OptionError
            ``reverse=True`` for a bidirectional layer.
        """
        name = f"{type(self).__name__} layer"
        if self.bidirectional and reverse is not False:
            expected = "False for a bidirectional layer (it runs both directions)"
            raise OptionError(name, "reverse", expected, repr(reverse), backend=self.backend_name)
        call = self._call_bidirectional if self.bidirectional else self._call_op
        if self.state_format != "torch":
            if hx is not None:
                expected = "initial_state, the op's form (hx is torch.nn's: build the layer with state_format='torch')"
                raise UnknownArgumentError(name, "hx", expected, "an hx", backend=self.backend_name)
            return call(x, initial_state, lengths, reverse, arrays)
        if hx is not None and initial_state is not None:
            expected = "one initial state (the second argument and hx= are the same)"
            raise UnknownArgumentError(name, "hx", expected, "both initial_state and hx", backend=self.backend_name)
        given = initial_state if hx is None else hx
        state = None if given is None else self._state_from_torch(x, given)
        result = call(x, state, lengths, reverse, arrays)
        if self.bidirectional:  # torch.nn's order: layer 0 forward, layer 0 reverse, layer 1 forward, ...
            finals = [result.state[d][k] for k in range(self.num_layers) for d in DIRECTIONS]
        else:
            finals = list(result.state)
        stacked = tuple(torch.stack([layer[key] for layer in finals]) for key in self.torch_state_entries)
        return result.outputs, stacked[0] if len(stacked) == 1 else stacked

    def _bernoulli(self, shape: tuple[int, ...], p: float) -> torch.Tensor:
        """A Bernoulli(1 - p) / (1 - p) dropout mask of ``shape`` from torch's global generator (as ``nn.Dropout``
        draws), in the layer's dtype and on its device."""
        weight = next(iter(self._stack("forward")[0].tensors().values()))
        keep = torch.rand(shape, device=weight.device) >= p
        return keep.to(weight.dtype) * (1.0 / (1.0 - p))

    def _call_op(
        self,
        x: Any,
        initial_state: Any,
        lengths: Any,
        reverse: bool,
        arrays: Mapping[str, Any],
        draw: Any = None,
    ) -> Any:
        # The dropout masks are drawn in training (module.train()), none in evaluation.
        draw = self._bernoulli if self.training else None
        return super()._call_op(x, initial_state, lengths, reverse, arrays, draw)

    def _call_bidirectional(
        self, x: Any, initial_state: Any, lengths: Any, reverse: bool, arrays: Mapping[str, Any]
    ) -> Any:
        """Run both directions over ``x`` in the layer's layout (see :mod:`rnnspec.backends.torch.nn`)."""
        name = f"{type(self).__name__} layer"
        per_step = OPS[self.op].per_step[1:]
        for key, value in arrays.items():
            if key not in per_step:
                expected = f"one of {list(per_step)}" if per_step else "no per-step option (this op takes none)"
                raise UnknownArgumentError(name, key, expected, repr(key), backend=self.backend_name)
            if isinstance(value, (list, tuple)) and len(value) != self.num_layers:
                expected = f"one array, or {self.num_layers} (one per layer, each given to both directions)"
                raise ShapeError(name, key, expected, f"{len(value)} arrays", backend=self.backend_name)
        x, _, given = self._prepare_call(x, None, dict(arrays))
        dtype = str(self._param_dtype()).removeprefix("torch.")
        check_layer_input(
            name, x, input_size=self.input_size, dtype=dtype, backend=self.backend_name, batch_first=self.batch_first
        )
        initial = self._direction_states(name, initial_state)
        if not self.batch_first:
            x = self._swap(x)
            given = {k: self._swap_arrays(v) for k, v in given.items()}
        params = self.canonical_params()
        method = getattr(layer_backend(self.backend_name), self.op)
        batch, steps = int(x.shape[0]), int(x.shape[1])

        def masks(layers: int) -> dict[str, Any]:
            """One direction's dropout masks for an op call of ``layers`` layers (training only)."""
            if not self.training:
                return {}
            return dropout_masks(self, batch=batch, time=steps, draw=self._bernoulli, layers=layers)

        def run(inp: Any, stack: list[Any], state: Any, backwards: bool, own: Mapping[str, Any]) -> Any:
            return method(
                inp,
                stack,
                **dict(self.options),
                **own,
                lengths=lengths,
                initial_state=state,
                reverse=backwards,
                checkpoint_every=self.checkpoint_every,
            )

        if self.op in _LAYERWISE_OPS:
            # torch.nn's wiring: layer k of each direction reads both directions' outputs of layer k - 1.
            inp = x
            finals: dict[str, list[Any]] = {d: [] for d in DIRECTIONS}
            for k in range(self.num_layers):
                own = {key: v[k] if isinstance(v, (list, tuple)) else v for key, v in given.items()}
                dropout = float(getattr(self, "dropout", 0.0))
                if k > 0 and self.training and dropout > 0:
                    # torch.nn's dropout of both directions' outputs of layer k - 1, per element (each op call
                    # below runs one layer: the boundaries are this loop's).
                    inp = inp * self._bernoulli(tuple(inp.shape), dropout)
                outputs = []
                for d, direction in enumerate(DIRECTIONS):
                    state = None if initial[direction] is None else [initial[direction][k]]
                    mine = {**masks(1), **self._direction_arrays(inp, own)}
                    res = run(inp, [params[direction][k]], state, d == 1, mine)
                    outputs.append(res.outputs)
                    finals[direction].append(res.state[0])
                inp = torch.cat(outputs, dim=-1)
            # The state is one per direction: no SequenceResult's state of one stack.
            result: Any = SequenceResult(inp, cast(Any, {d: tuple(finals[d]) for d in DIRECTIONS}))
        else:
            # A coupled stack: each direction whole over x; the per-step extras on a new last axis.
            results = [
                run(x, params[d], initial[d], j == 1, {**masks(self.num_layers), **given})
                for j, d in enumerate(DIRECTIONS)
            ]
            extras = {
                f: torch.stack([getattr(r, f) for r in results], dim=-1)
                for f in OPS[self.op].result_fields
                if f not in ("outputs", "state")
            }
            joined = torch.cat([r.outputs for r in results], dim=-1)
            states = {d: tuple(r.state) for d, r in zip(DIRECTIONS, results, strict=True)}
            result = results[0]._replace(outputs=joined, state=states, **extras)
        if self.batch_first:
            return result
        return result._replace(**{f: self._swap(getattr(result, f)) for f in time_fields(self.op)})

    def _direction_arrays(self, inp: torch.Tensor, arrays: Mapping[str, Any]) -> Mapping[str, Any]:
        """The per-step arrays of one layer of one direction of a bidirectional layer-wise stack, which reads the
        batch-major ``inp``: the call's (QRNN adds the masks of its zoneout)."""
        return arrays

    def _direction_states(self, name: str, initial_state: Any) -> dict[str, Any]:
        """A bidirectional layer's ``initial_state`` per direction: None, or one mapping per layer."""
        if initial_state is None:
            return dict.fromkeys(DIRECTIONS)
        form = (
            "None or {'forward': ..., 'reverse': ...}, each None or the op's state (one mapping per layer) "
            "(a bidirectional layer's initial state)"
        )
        if not isinstance(initial_state, Mapping) or sorted(initial_state) != sorted(DIRECTIONS):
            actual = (
                f"a mapping of keys {sorted(initial_state)}"
                if isinstance(initial_state, Mapping)
                else type(initial_state).__name__
            )
            raise DtypeError(name, "initial_state", form, actual, backend=self.backend_name)
        out = {}
        for direction in DIRECTIONS:
            state = initial_state[direction]
            if state is not None and (isinstance(state, Mapping) or len(state) != self.num_layers):
                expected = f"None or a sequence of {self.num_layers} mappings (one per layer)"
                actual = "one mapping" if isinstance(state, Mapping) else f"{len(state)} entries"
                raise ShapeError(name, f"initial_state[{direction!r}]", expected, actual, backend=self.backend_name)
            out[direction] = None if state is None else list(state)
        return out

    def _state_from_torch(self, x: Any, hx: Any) -> Any:
        """torch.nn's ``hx`` as the op's initial state: one mapping of ``(batch, H)`` tensors per layer (per
        direction, ``{"forward": [...], "reverse": [...]}``, when bidirectional)."""
        name = f"{type(self).__name__} layer"
        entries = self.torch_state_entries
        layout = "(2 * num_layers, batch, hidden_size)" if self.bidirectional else "(num_layers, batch, hidden_size)"
        if len(entries) == 1:
            form = f"a tensor {layout}" + (" (a pair (h0, c0) is an LSTM's)" if isinstance(hx, tuple) else "")
            tensors, arguments = [hx], ["hx"]
        else:
            form = f"a pair (h0, c0) of tensors {layout}"
            if not isinstance(hx, (tuple, list)) or len(hx) != len(entries):
                actual = f"a {type(hx).__name__} of {len(hx)}" if isinstance(hx, (tuple, list)) else type(hx).__name__
                raise DtypeError(name, "hx", form, actual, backend=self.backend_name)
            tensors, arguments = list(hx), [f"hx[{j}]" for j in range(len(entries))]
        # x's batch, where x is what the op takes (a bad x is refused by the call, naming x).
        batch = x.shape[0 if self.batch_first else 1] if isinstance(x, torch.Tensor) and x.dim() == 3 else None
        directions = len(DIRECTIONS) if self.bidirectional else 1
        want = (directions * self.num_layers, "batch" if batch is None else int(batch), self.hidden_size)
        dtype = self._param_dtype()
        for tensor, argument in zip(tensors, arguments, strict=True):
            if not isinstance(tensor, torch.Tensor):
                raise DtypeError(name, argument, form, type(tensor).__name__, backend=self.backend_name)
            shape = tuple(tensor.shape)
            if len(shape) != 3 or any(w != n for w, n in zip(want, shape, strict=True) if not isinstance(w, str)):
                expected = f"shape {layout} = ({', '.join(str(w) for w in want)})"
                raise ShapeError(name, argument, expected, f"shape {shape}", backend=self.backend_name)
            if tensor.dtype != dtype:
                expected = f"dtype {str(dtype).removeprefix('torch.')}, the layer's parameters'"
                actual = f"dtype {str(tensor.dtype).removeprefix('torch.')}"
                raise DtypeError(name, argument, expected, actual, backend=self.backend_name)
        if self.bidirectional:  # torch.nn's order: layer 0 forward, layer 0 reverse, layer 1 forward, ...
            return {
                direction: [
                    {key: t[len(DIRECTIONS) * k + d] for key, t in zip(entries, tensors, strict=True)}
                    for k in range(self.num_layers)
                ]
                for d, direction in enumerate(DIRECTIONS)
            }
        return [{key: t[k] for key, t in zip(entries, tensors, strict=True)} for k in range(self.num_layers)]

    def _prepare_call(self, x: Any, initial_state: Any, arrays: dict[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
        if not isinstance(x, torch.Tensor):
            # Refused here, before the layout is changed: NumPy's transpose(0, 1) would fail with its own error.
            expected = "a torch.Tensor (torch.from_numpy(x) for a NumPy array)"
            raise DtypeError(f"{type(self).__name__} layer", "x", expected, type(x).__name__, backend=self.backend_name)
        return x, initial_state, arrays

    @staticmethod
    def _swap(a: Any) -> Any:
        return a.transpose(0, 1)

    def describe(self) -> str:
        """The constructor's arguments that differ from the defaults, as ``repr`` shows them."""
        parts = [super().describe()]
        if self.bidirectional:
            parts.append("bidirectional=True")
        for option in _torch_options(self.op):
            value = getattr(self, option.name)
            if value != option.default:
                parts.append(f"{option.name}={value!r}")
        return ", ".join(parts)

    def extra_repr(self) -> str:
        return self.describe()


# -- the classic cells, with torch interop ----------------------------------------


class _Classic(_SpecModule):
    """rnn, lstm and gru: convertible from and to ``torch.nn.RNN``/``LSTM``/``GRU`` (of the layer's name)."""

    @classmethod
    def from_torch(cls, module: Any, *, state_format: str = "rnnspec") -> Any:
        """The layer holding the weights of a ``torch.nn.{RNN,LSTM,GRU}`` (same device and dtype), bidirectional
        (stacked too) when ``module`` is, with its ``dropout`` between layers.

        ``state_format="torch"`` makes it a drop-in replacement of ``module`` (``forward(x, hx)`` returning
        ``(output, h_n)`` or ``(output, (h_n, c_n))``; see :mod:`rnnspec.backends.torch.nn`).

        Raises :class:`rnnspec.errors.ParameterError` for a module rnnspec cannot
        express (see :func:`rnnspec.convert.from_torch`) and
        :class:`rnnspec.errors.OptionError` for another class of module.
        """
        from rnnspec.convert import from_torch
        from rnnspec.convert.torch import module_op

        torch_class = OPS[cls.op].layer  # the class of torch.nn of the same name
        if type(module).__name__ != torch_class or not isinstance(module, nn.RNNBase):
            raise OptionError(
                f"{cls.__name__}.from_torch", "module", f"a torch.nn.{torch_class}", type(module).__name__
            )
        bidirectional = bool(module.bidirectional)
        params = from_torch(module, direction="both" if bidirectional else None)  # checks proj_size
        weight = module.weight_ih_l0
        layer = cls(
            module.input_size,
            module.hidden_size,
            num_layers=module.num_layers,
            bias=bool(module.bias),
            batch_first=bool(module.batch_first),
            bidirectional=bidirectional,
            device=weight.device,
            dtype=weight.dtype,
            state_format=state_format,
            # torch.nn's dropout between layers is this layer's; with one layer it has none (torch warned).
            dropout=float(module.dropout) if module.num_layers > 1 else 0.0,
            **module_op(module)[1],
        )
        layer.load_canonical(params)
        return layer

    def to_torch(self) -> Any:
        """A ``torch.nn.{RNN,LSTM,GRU}`` with the same weights, ``batch_first``, ``bidirectional``, ``dropout``,
        device and dtype (``recurrent_dropout``, which torch.nn lacks, is left out).

        With ``bias=False`` the module has no biases, as this layer's are zero.
        """
        from rnnspec.convert import to_torch

        options = dict(self.options)
        if options.get("reset_after", True) is not True:
            expected = "True (torch's GRU resets after the matmul)"
            raise OptionError(f"{type(self).__name__}.to_torch", "reset_after", expected, "False")
        first = self._stack("forward")[0].w_ih
        module = to_torch(self.numpy_params(), self.op, batch_first=self.batch_first, bias=self.bias, **options)
        module.dropout = self.dropout  # torch.nn has no recurrent dropout: recurrent_dropout stays behind
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
    """With ``zoneout=p > 0`` the layer makes the zoneout masks, laid out as ``x``: in training
    (``module.train()``, torch's default) a Bernoulli(p) mask per layer from torch's global generator (as
    ``nn.Dropout`` draws), in evaluation (``module.eval()``) one mask filled with p; a bidirectional layer draws
    one per layer and direction. ``forward`` also takes ``zoneout_mask`` (an array shaped like the outputs with
    entries in [0, 1], or one per layer), which is used instead."""

    op = "qrnn"
    extra_options = (ZONEOUT,)
    zoneout: float

    def _zoneout_mask(self, x: torch.Tensor) -> torch.Tensor:
        """One layer's mask for ``x`` (its first two axes, the layer's dtype): drawn in training, p in evaluation."""
        shape = (x.shape[0], x.shape[1], self.hidden_size)
        if not self.training:  # the expectation: f + (1 - f) * p
            return torch.full(shape, self.zoneout, dtype=self._param_dtype(), device=x.device)
        return (torch.rand(shape, device=x.device) < self.zoneout).to(self._param_dtype())

    def _prepare_call(self, x: Any, initial_state: Any, arrays: dict[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
        x, initial_state, arrays = super()._prepare_call(x, initial_state, arrays)
        # A bidirectional layer draws per direction (_direction_arrays); an x of another rank is refused next.
        if self.zoneout > 0 and arrays.get("zoneout_mask") is None and not self.bidirectional and x.dim() == 3:
            draws = self.num_layers if self.training else 1
            masks = [self._zoneout_mask(x) for _ in range(draws)]
            arrays["zoneout_mask"] = masks if self.training else masks[0]
        return x, initial_state, arrays

    def _direction_arrays(self, inp: torch.Tensor, arrays: Mapping[str, Any]) -> Mapping[str, Any]:
        if self.zoneout > 0 and arrays.get("zoneout_mask") is None:
            return {**arrays, "zoneout_mask": self._zoneout_mask(inp)}
        return arrays

    def describe(self) -> str:
        return super().describe() + (f", zoneout={self.zoneout!r}" if self.zoneout else "")


class PhasedLSTM(_SpecModule):
    """``forward`` also takes ``timestamps`` (batch, time): the time of each step, laid out as ``x``
    (time-major without ``batch_first``)."""

    op = "phased_lstm"


# -- cells: one step of an op ----------------------------------------------------------------


class _SpecCell(CellCore, nn.Module):  # type: ignore[misc,unused-ignore]
    """One layer of an rnnspec op as a torch module that computes one step; subclasses fix the op.

    ``cell(x, state)`` returns ``(y, new_state)``, as ``torch.nn.RNNCell`` returns its new ``h``:
    ``x`` ``(batch, input_size)``, ``state`` the op's state of one layer (a dict; None: the op's
    start), ``y`` ``(batch, hidden_size)``. With ``return_extras=True`` (the Skip RNN and ACT cells)
    it returns ``(y, new_state, extras)``, ``extras`` the op's extra per-step fields by name, each
    ``(batch,)``. The params live in ``layers[0]``, as a one-layer layer's.
    """

    backend_name: ClassVar[str] = "torch"
    array_ops = ARRAY_OPS
    common_parameters: ClassVar[str] = """\
input_size, hidden_size, bias, return_extras, device, dtype
    As :mod:`rnnspec.backends.torch.nn` says (Cells)."""

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
        device: Any = None,
        dtype: Any = None,
        **options: Any,
    ) -> None:
        super().__init__()
        flags = {"bias": bias, "return_extras": return_extras}
        self._configure_cell(input_size=input_size, hidden_size=hidden_size, bias=bias, flags=flags, options=options)
        self.bias = bias
        dtype = torch.get_default_dtype() if dtype is None else dtype
        arrays = self._draw_cell(seed=0)
        self.layers = nn.ModuleList([_Layer(arrays, self.left_out, device, dtype, layer_fixed_params(self))])
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Fill the parameters from :func:`rnnspec.init_params`, with a seed from torch's global generator."""
        self.load_canonical([self._draw_cell(seed=int(torch.randint(0, 2**62, (), dtype=torch.int64)))])

    def canonical_params(self) -> list[dict[str, torch.Tensor]]:
        """The params as the op takes them: one dict (one layer) of the live tensors."""
        return [layer.tensors() for layer in self._layer_slots()]

    def _layer_slots(self) -> list[_Layer]:
        return [cast(_Layer, layer) for layer in self.layers]

    _as_array = _SpecModule._as_array
    _set_param = _SpecModule._set_param
    _to_numpy = staticmethod(_SpecModule._to_numpy)

    def _add_time(self, a: Any) -> Any:
        return a.unsqueeze(1)

    def _first_step(self, a: Any) -> Any:
        return a[:, 0]

    def initial_state(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The state a sequence starts from for the batch of ``x`` ``(batch, input_size)``: the op's start
        (zeros; Skip RNN's ``update_prob`` one) or the learnt ``h0``/``c0``."""
        return self.start_state(x)

    def forward(self, x: Any, state: Any = None, **arrays: Any) -> Any:
        """One step from ``x`` ``(batch, input_size)`` and ``state`` (None: the op's start).

        ``arrays`` are the step's per-step arrays without a time axis (Phased LSTM's ``timestamps``
        ``(batch,)``, QRNN's ``zoneout_mask`` ``(batch, hidden_size)``). Returns ``(y, new_state)``, or
        ``(y, new_state, extras)`` with ``return_extras=True``.
        """
        if not isinstance(x, torch.Tensor):
            expected = "a torch.Tensor (batch, input_size) (torch.from_numpy(x) for a NumPy array)"
            raise DtypeError(type(self).__name__, "x", expected, type(x).__name__, backend=self.backend_name)
        y, new_state, extras = self.step(x, state, arrays)
        return (y, new_state, extras) if self.return_extras else (y, new_state)

    def extra_repr(self) -> str:
        return self.describe()


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
    """The state carries ``x_prev``, the last ``window - 1`` inputs; ``forward`` also takes the step's
    ``zoneout_mask`` ``(batch, hidden_size)`` (None in evaluation)."""

    op = "qrnn"


class PhasedLSTMCell(_SpecCell):
    """``forward`` also takes the step's ``timestamps`` ``(batch,)``, required."""

    op = "phased_lstm"


# The IndRNN authors' deep stacks and weight decay without the recurrent weights (a module of its own, which
# imports this one's layers).
from .deep_indrnn import DeepIndRNN, PerStepBatchNorm, param_groups  # noqa: E402
