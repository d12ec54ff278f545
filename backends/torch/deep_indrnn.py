"""Deep IndRNN as a ``torch.nn.Module``: residual and batch-normalised stacks, and weight decay without ``u``.

What the stack computes is :mod:`rnnspec.backends.common.deep_indrnn`'s. Each layer's
``w_ih``, ``b_ih`` and ``u`` live in a one-layer :class:`rnnspec.backends.torch.nn.IndRNN`
(``cells.<i>.layers.0.u``); the recurrence is the backend's ``indrnn_recurrence``.
Batch normalisation over batch and time is ``torch.nn.BatchNorm1d`` over the valid
steps, ``(N_valid, H)``; per-step statistics are :class:`PerStepBatchNorm`, which
follows ``BatchNorm1d``'s conventions (``momentum=0.1``, ``eps=1e-5``, running
variance unbiased) at each step. ``module.train()``/``module.eval()`` switch
between batch and running statistics, and dropout on and off.

Importing this module imports torch; :mod:`rnnspec.backends.torch.nn` re-exports its public names.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from rnnspec.backends.common.deep_indrnn import DeepIndRNNConfig, ParamKind, check_length, decays, draw_deep_params
from rnnspec.backends.common.deep_indrnn import param_kind as _spec_param_kind
from rnnspec.backends.common.layers import layer_backend
from rnnspec.errors import OptionError, ShapeError
from rnnspec.results import SequenceResult

__all__ = ["DeepIndRNN", "PerStepBatchNorm", "param_groups"]

_BACKEND = "torch"


class PerStepBatchNorm(nn.Module):
    """Batch normalisation over the batch separately at each time step of ``(batch, time, H)`` inputs.

    ``weight`` and ``bias`` (``H``) are shared over time, as the IndRNN authors'; the running statistics are
    one row per step, ``running_mean`` and ``running_var`` ``(max_length, H)``, updated as
    ``torch.nn.BatchNorm1d`` updates its own (``(1 - momentum) * running + momentum * batch``, the batch
    variance unbiased) at each step with at least two valid rows; the others keep theirs.

    Parameters
    ----------
    num_features
        ``H``.
    max_length
        The most steps a sequence may have.
    eps, momentum
        ``BatchNorm1d``'s.
    device, dtype
        Where the parameters and buffers live.
    """

    running_mean: torch.Tensor
    running_var: torch.Tensor
    num_batches_tracked: torch.Tensor

    def __init__(
        self,
        num_features: int,
        max_length: int,
        eps: float = 1e-5,
        momentum: float = 0.1,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        self.num_features = num_features
        self.max_length = max_length
        self.eps = eps
        self.momentum = momentum
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.ones(num_features, **factory))
        self.bias = nn.Parameter(torch.zeros(num_features, **factory))
        self.register_buffer("running_mean", torch.zeros(max_length, num_features, **factory))
        self.register_buffer("running_var", torch.ones(max_length, num_features, **factory))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Normalise ``x`` ``(batch, time, H)``; ``mask`` ``(batch, time)`` marks the valid steps (None: all).

        Masked steps enter no statistic and come out as zeros.
        """
        steps = x.shape[1]
        if steps > self.max_length:
            expected = f"at most max_length = {self.max_length} steps"
            raise ShapeError(type(self).__name__, "x", expected, f"{steps} steps", backend=_BACKEND)
        weights = torch.ones_like(x[..., :1]) if mask is None else mask.to(x.dtype)[..., None]
        if self.training:
            count = weights.sum(0)  # (time, 1): the valid rows at each step
            mean = (x * weights).sum(0) / count.clamp(min=1)
            var = ((x - mean) ** 2 * weights).sum(0) / count.clamp(min=1)
            with torch.no_grad():
                self.num_batches_tracked += 1
                kept = count > 1
                unbiased = var * count / (count - 1).clamp(min=1)
                rows = slice(0, steps)
                self.running_mean[rows] = torch.where(
                    kept, (1 - self.momentum) * self.running_mean[rows] + self.momentum * mean, self.running_mean[rows]
                )
                self.running_var[rows] = torch.where(
                    kept,
                    (1 - self.momentum) * self.running_var[rows] + self.momentum * unbiased,
                    self.running_var[rows],
                )
        else:
            mean, var = self.running_mean[:steps], self.running_var[:steps]
        y = (x - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias
        return y if mask is None else y * weights

    def extra_repr(self) -> str:
        return f"{self.num_features}, max_length={self.max_length}, eps={self.eps}, momentum={self.momentum}"


class DeepIndRNN(nn.Module):
    """The IndRNN authors' deep stack: residual blocks, batch normalisation before or after the activation.

    Layer ``i`` computes ``s_i = W_i y_{i-1} + b_i (+ s_{i-block_layers})``, the batch normalisation
    "before" on ``s_i``, ``h_{i,t} = act(. + u_i * h_{i,t-1})``, dropout, the batch normalisation "after";
    see :mod:`rnnspec.backends.common.deep_indrnn` for the equations and the authors' choices.

    Parameters
    ----------
    input_size, hidden_size
        The sizes of ``x``'s features and of every layer.
    num_layers
        The depth ``L`` (the authors': 6 plain; 11 or 21 residual).
    batch_first
        ``x`` and the outputs are ``(batch, time, ...)``; False: ``(time, batch, ...)``.
    residual
        Identity shortcuts over ``block_layers`` layers between the pre-activation sums.
    block_layers
        The layers a shortcut skips (the authors' ``--residual_layers``, 2).
    batch_norm
        None, ``"before"`` (on the pre-activation sum) or ``"after"`` (on each layer's output).
    bn_statistics
        ``"batch_time"`` (``BatchNorm1d`` over batch and time) or ``"per_step"`` (:class:`PerStepBatchNorm`).
    max_length
        The running statistics' rows with ``"per_step"`` (required then, refused otherwise).
    dropout
        The probability of dropping a unit, one mask per sequence shared over time, after each layer.
    activation
        ``"relu"`` (the paper's) or ``"tanh"``.
    seq_len, mag, last_layer_init
        The init of ``u``, as :class:`~rnnspec.backends.torch.nn.IndRNN` takes them (``last_layer_init``: the
        top layer's).
    checkpoint_every
        Passed to ``indrnn_recurrence``.
    device, dtype
        Where the parameters live, their dtype.

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
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        from .nn import IndRNN  # the layer module re-exports this one

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
        self._init_options = {"seq_len": seq_len, "mag": mag, "last_layer_init": last_layer_init}
        # Checks the sizes and the init options (naming them) before any module is made.
        draw_deep_params(
            input_size, hidden_size, num_layers, seed=0, activation=activation, init_options=self._init_options
        )
        top = num_layers - 1
        self.cells = nn.ModuleList(
            IndRNN(
                input_size if i == 0 else hidden_size,
                hidden_size,
                activation=activation,
                seq_len=seq_len,
                mag=mag,
                last_layer_init=last_layer_init and i == top,
                checkpoint_every=checkpoint_every,
                device=device,
                dtype=dtype,
            )
            for i in range(num_layers)
        )
        self.norms: nn.ModuleList | None = None
        if batch_norm is not None:
            dtype = torch.get_default_dtype() if dtype is None else dtype

            def norm() -> nn.Module:
                if self.config.per_step:
                    return PerStepBatchNorm(hidden_size, int(self.config.max_length or 0), device=device, dtype=dtype)
                return nn.BatchNorm1d(hidden_size, device=device, dtype=dtype)

            self.norms = nn.ModuleList(norm() for _ in range(num_layers))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw the IndRNN params again (:func:`~rnnspec.backends.common.deep_indrnn.draw_deep_params`, seeded
        from torch's global generator) and reset the batch normalisations."""
        seed = int(torch.randint(0, 2**62, (), dtype=torch.int64))
        drawn = draw_deep_params(
            self.input_size,
            self.hidden_size,
            self.config.num_layers,
            seed=seed,
            activation=self.config.activation,
            init_options=self._init_options,
        )
        for cell, params in zip(self._cells(), drawn, strict=True):
            cell.load_canonical([params])
        for norm in self.norms or ():
            if isinstance(norm, nn.BatchNorm1d):
                norm.reset_parameters()

    def forward(
        self,
        x: torch.Tensor,
        initial_state: Sequence[Mapping[str, torch.Tensor]] | None = None,
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
        if not isinstance(x, torch.Tensor) or x.dim() != 3:
            actual = f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise ShapeError(name, "x", "a tensor (batch, time, input_size)", actual, backend=_BACKEND)
        if not self.batch_first:
            x = x.transpose(0, 1)
        config = self.config
        batch, steps = x.shape[0], x.shape[1]
        check_length(name, steps, config, backend=_BACKEND)
        if initial_state is not None and (isinstance(initial_state, Mapping) or len(initial_state) != len(self.cells)):
            expected = f"None or {len(self.cells)} mappings {{'h': (batch, H)}}, one per layer"
            raise ShapeError(name, "initial_state", expected, f"{type(initial_state).__name__}", backend=_BACKEND)
        mask = None
        if lengths is not None:
            lengths = torch.as_tensor(lengths, device=x.device)
            mask = torch.arange(steps, device=x.device)[None, :] < lengths[:, None]
        backend = layer_backend(_BACKEND)
        sums: list[torch.Tensor] = []
        finals = []
        y = x
        for i, (cell, source) in enumerate(zip(self._cells(), config.shortcuts, strict=True)):
            p = cell.canonical_params()[0]
            s = y @ p["w_ih"].T + p["b_ih"]
            if source is not None:
                s = s + sums[source]
            sums.append(s)
            z = self._normalise(i, s, mask) if config.batch_norm == "before" else s
            start = None if initial_state is None else initial_state[i]["h"]
            h = backend.indrnn_recurrence(
                z,
                p["u"],
                start,
                activation=config.activation,
                lengths=lengths,
                checkpoint_every=self.checkpoint_every,
            )
            finals.append({"h": _final(h, lengths, start)})
            if config.dropout > 0 and self.training:
                keep = F.dropout(h.new_ones(batch, 1, self.hidden_size), config.dropout, training=True)
                h = h * keep
            y = self._normalise(i, h, mask) if config.batch_norm == "after" else h
        outputs = y if self.batch_first else y.transpose(0, 1)
        return SequenceResult(outputs, tuple(finals))

    def _cells(self) -> list[Any]:
        """The IndRNN layer of each depth."""
        return list(self.cells)

    def _normalise(self, i: int, a: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Layer ``i``'s batch normalisation of ``a`` ``(batch, time, H)`` over the valid steps only."""
        assert self.norms is not None
        norm = self.norms[i]
        if isinstance(norm, PerStepBatchNorm):
            return cast(torch.Tensor, norm(a, mask))
        if mask is None:
            return cast(torch.Tensor, norm(a.reshape(-1, a.shape[-1]))).reshape(a.shape)
        # Only the valid steps enter BatchNorm1d (its statistics); the padded ones come out as zeros.
        return torch.zeros_like(a).index_put((mask,), cast(torch.Tensor, norm(a[mask])))

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"{self.input_size}, {self.hidden_size}, num_layers={c.num_layers}, residual={c.residual}, "
            f"batch_norm={c.batch_norm!r}, bn_statistics={c.bn_statistics!r}, dropout={c.dropout}"
        )


def _final(h: torch.Tensor, lengths: torch.Tensor | None, start: torch.Tensor | None) -> torch.Tensor:
    """Each row's state after its last valid step (its initial state, or zeros, for a row of length 0)."""
    initial = torch.zeros_like(h[:, 0]) if start is None else start.to(h.dtype).expand_as(h[:, 0])
    if h.shape[1] == 0:
        return initial
    if lengths is None:
        return h[:, -1]
    last = (lengths.to(torch.long) - 1).clamp(min=0)
    picked = h[torch.arange(h.shape[0], device=h.device), last]
    return torch.where((lengths > 0)[:, None], picked, initial)


def _kinds(module: nn.Module) -> Iterable[tuple[str, nn.Parameter, ParamKind]]:
    """Every parameter of ``module`` once, by its qualified name, with its kind for weight decay."""
    from .nn import _SpecModule  # the layer module re-exports this one

    kinds: dict[int, ParamKind] = {}
    norms = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, PerStepBatchNorm)
    for sub in module.modules():
        if isinstance(sub, _SpecModule):
            for stack in (sub.layers, getattr(sub, "layers_reverse", ())):
                for layer in stack:
                    for key, param in layer.named_parameters(recurse=False):
                        kinds[id(param)] = _spec_param_kind(sub.op, key)
        elif isinstance(sub, norms):
            for param in sub.parameters(recurse=False):
                kinds[id(param)] = "norm"
    for name, param in module.named_parameters():
        kind = kinds.get(id(param), "bias" if name.rsplit(".", 1)[-1] == "bias" else "weight")
        yield name, param, kind


def param_groups(
    module: nn.Module, weight_decay: float, *, biases: bool = False, norms: bool = False
) -> list[dict[str, Any]]:
    """Optimizer param groups that decay every weight but the recurrent ones (IndRNN's ``u``).

    ``torch.optim.AdamW(param_groups(model, 1e-4), lr=2e-4)``: the first group has ``weight_decay``, the
    second 0. The recurrent weights (the params each rnnspec layer's record names recurrent, in any
    :mod:`rnnspec.backends.torch.nn` layer of ``module``: :class:`DeepIndRNN`'s and a plain ``IndRNN``'s
    ``u``) are never decayed; the biases (rnnspec's ``b_ih``..., any other module's ``bias``) and the
    normalisations' params (``BatchNorm``, ``LayerNorm``, ``GroupNorm``, :class:`PerStepBatchNorm`) are
    decayed only with ``biases=True`` / ``norms=True``: the IndRNN authors decay neither. Shared parameters
    appear once.

    Raises
    ------
    rnnspec.errors.OptionError
        ``weight_decay`` not a finite number >= 0, or a flag not a bool.
    """
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)) or not math.isfinite(weight_decay):
        raise OptionError("param_groups", "weight_decay", "a finite number >= 0", repr(weight_decay))
    if weight_decay < 0:
        raise OptionError("param_groups", "weight_decay", "a finite number >= 0", repr(weight_decay))
    for flag, value in (("biases", biases), ("norms", norms)):
        if not isinstance(value, bool):
            raise OptionError("param_groups", flag, "True or False", repr(value))
    decayed: list[nn.Parameter] = []
    kept: list[nn.Parameter] = []
    for _, param, kind in _kinds(module):
        (decayed if decays(kind, biases=biases, norms=norms) else kept).append(param)
    return [{"params": decayed, "weight_decay": float(weight_decay)}, {"params": kept, "weight_decay": 0.0}]
