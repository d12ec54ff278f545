"""Deep IndRNN, framework-free: the authors' residual and batch-normalised stacks (Li et al., CVPR 2018).

The IndRNN authors stack many layers (6 plain layers for sequential MNIST, 11
and 21 residual layers for character-level Penn Treebank; seed 003 and their
Theano/Lasagne and PyTorch code). This module describes that stack once; the
``torch.nn``, Keras and Flax NNX layers (``DeepIndRNN`` in
:mod:`rnnspec.backends.torch.nn`, :mod:`rnnspec.backends.tensorflow.keras`,
:mod:`rnnspec.backends.jax.nnx`) build it from their framework's linear algebra,
batch normalisation and dropout, around the backend's ``indrnn_recurrence``
(the recurrence is never written again), each layer's ``w_ih``, ``b_ih`` and
``u`` held by the framework's own ``IndRNN`` layer.

Equations
---------
Layers ``i = 0 .. L-1`` of ``H`` units, ``y_{-1} = x``, ``k = block_layers``:

.. math::

    s_i &= W_i\\, y_{i-1} + b_i + [\\text{residual},\\ i \\ge k,\\ i \\bmod k = 0]\\; s_{i-k} \\\\
    z_i &= \\mathrm{BN}_i(s_i) \\text{ if batch\\_norm = "before", else } s_i \\\\
    h_{i,t} &= \\mathrm{act}(z_{i,t} + u_i \\odot h_{i,t-1}) \\\\
    y_i &= \\mathrm{BN}_i(\\mathrm{drop}(h_i)) \\text{ if batch\\_norm = "after", else } \\mathrm{drop}(h_i)

and the output is ``y_{L-1}``. The shortcut is the authors' (their
``--use_residual``, ``--residual_layers 2``): an identity over ``k`` layers
between the *pre-activation sums* ``s`` (what enters the recurrence, before the
batch normalisation), so a block is ``BN -> recurrence -> [dropout] -> W -> BN ->
recurrence -> [dropout] -> W`` plus its input, the "pre-activation" residual
block of their PyTorch code. The first layer's ``W_0`` (``H x input_size``) is the
projection that puts ``x`` into the stream: ``s_0`` is the first block's input, so
no other weights are needed when ``input_size != hidden_size``. With ``k = 2``,
``L = 2 n + 1`` layers hold ``n`` blocks and a last layer: the authors' 11-layer
(5 blocks) and 21-layer (10 blocks) models; the layers after the last whole block
run without a shortcut (``L = 6``: shortcuts into layers 2 and 4).

Batch normalisation sits "before" the activation (on ``s``, before the
recurrence adds ``u * h``: the authors' choice for language modelling, where a
batch's final state starts the next) or "after" it (on each layer's output:
``--use_bn_afterrnn``, faster to converge on sequential MNIST). Its statistics
are either over the batch and time together (``"batch_time"``) or over the batch
separately at each time step (``"per_step"``: the authors' language models, whose
output at step ``t`` may use nothing after it). Per-step scale and shift are
shared over time (``H`` each) and the running statistics are one row per step,
``(max_length, H)``: the authors size them from the training ``seq_len``; a
sequence longer than ``max_length`` is refused (there are no statistics for its
later steps). Padded steps (past a row's length) enter no statistic: the
layers compute the moments over the valid steps only, and the outputs at padded
steps are zeros, as the op's.

Dropout (``dropout > 0``) is the authors': one mask per sequence, shared over
time, after each layer's recurrence (before the batch normalisation "after").

Initialisation: ``u`` and ``b_ih`` as :func:`rnnspec.init_params` draws an IndRNN
stack (``seq_len``, ``mag``, ``last_layer_init`` for the top layer), ``w_ih`` from
``N(0, 1 / (2 * fan_in))``, the authors' deep model's (Lasagne's
``HeNormal(gain=sqrt(1/2))`` in their character-level script), since the single
layer's ``N(0, 0.001**2)`` vanishes through a deep stack.

Weight decay: the authors decay neither the recurrent weights ``u`` ("If weight
decay is used, no need to add the recurrent weights", seed 003) nor the biases,
nor (by default: their ``--bn_decay``) the batch normalisation's scale.
:func:`decays` says which; each framework's helper applies it to any module
holding rnnspec layers (the recurrent params are those the op's record names,
``OPS[op].hints.recurrent``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from rnnspec.errors import OptionError, ShapeError
from rnnspec.init import init_params
from rnnspec.ops import OPS

from .layers import CELL_BIASES

__all__ = [
    "BATCH_NORM",
    "BIAS_PARAMS",
    "BN_STATISTICS",
    "DeepIndRNNConfig",
    "ParamKind",
    "check_length",
    "decays",
    "draw_deep_params",
    "param_kind",
    "shortcut_sources",
]

#: Where batch normalisation sits: none, before the activation (on the pre-activation sum), after it.
BATCH_NORM = (None, "before", "after")
#: Over what its statistics run: batch and time together, or the batch at each step separately.
BN_STATISTICS = ("batch_time", "per_step")
#: The params of rnnspec's records that are biases (the cell biases, the gate and halting biases).
BIAS_PARAMS = CELL_BIASES | {"b_gate", "b_halt"}

#: What weight decay sees in a param: a recurrent weight (never decayed), a bias, a normalisation's param, or
#: any other weight.
ParamKind = Literal["recurrent", "bias", "norm", "weight"]


def param_kind(op: str, name: str) -> ParamKind:
    """The kind of the param ``name`` of an rnnspec layer of ``op``: its record's recurrent params (IndRNN's
    ``u``), its biases, or another weight."""
    if name in OPS[op].hints.recurrent:
        return "recurrent"
    return "bias" if name in BIAS_PARAMS else "weight"


def decays(kind: ParamKind, *, biases: bool = False, norms: bool = False) -> bool:
    """Whether weight decay applies to a param of ``kind``: never the recurrent weights; the biases and the
    normalisations' scales and shifts when asked (the authors decay neither); every other weight."""
    if kind == "recurrent":
        return False
    if kind == "bias":
        return biases
    if kind == "norm":
        return norms
    return True


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


@dataclass(frozen=True)
class DeepIndRNNConfig:
    """The checked options of a deep IndRNN stack (see the module's docstring for what each does).

    Build it with :meth:`check`, which names the layer and the argument of a bad value.
    """

    num_layers: int
    residual: bool
    block_layers: int
    batch_norm: str | None
    bn_statistics: str
    max_length: int | None
    dropout: float
    activation: str

    @classmethod
    def check(
        cls,
        layer: str,
        *,
        num_layers: Any,
        residual: Any,
        block_layers: Any,
        batch_norm: Any,
        bn_statistics: Any,
        max_length: Any,
        dropout: Any,
        activation: Any,
    ) -> DeepIndRNNConfig:
        """The options, checked.

        Raises
        ------
        rnnspec.errors.OptionError
            A value outside its allowed set, naming ``layer`` and the argument; ``max_length`` missing with
            ``bn_statistics="per_step"`` (or given without it).
        """
        if not _is_int(num_layers) or num_layers < 1:
            raise OptionError(layer, "num_layers", "an integer >= 1", repr(num_layers))
        if not isinstance(residual, bool):
            raise OptionError(layer, "residual", "True or False", repr(residual))
        if not _is_int(block_layers) or block_layers < 1:
            raise OptionError(layer, "block_layers", "an integer >= 1 (the authors' 2)", repr(block_layers))
        if batch_norm not in BATCH_NORM or not isinstance(batch_norm, (str, type(None))):
            raise OptionError(layer, "batch_norm", "None, 'before' or 'after'", repr(batch_norm))
        if bn_statistics not in BN_STATISTICS or not isinstance(bn_statistics, str):
            raise OptionError(layer, "bn_statistics", "'batch_time' or 'per_step'", repr(bn_statistics))
        per_step = batch_norm is not None and bn_statistics == "per_step"
        if per_step and (not _is_int(max_length) or max_length < 1):
            expected = "an integer >= 1 with bn_statistics='per_step' (one row of running statistics per step)"
            raise OptionError(layer, "max_length", expected, repr(max_length))
        if not per_step and max_length is not None:
            expected = "None unless batch_norm is set and bn_statistics='per_step'"
            raise OptionError(layer, "max_length", expected, repr(max_length))
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise OptionError(layer, "dropout", "a probability in [0, 1)", repr(dropout))
        allowed = OPS["indrnn"].option("activation").allowed
        if activation not in allowed or not isinstance(activation, str):
            raise OptionError(layer, "activation", " or ".join(repr(a) for a in allowed), repr(activation))
        return cls(
            num_layers=int(num_layers),
            residual=residual,
            block_layers=int(block_layers),
            batch_norm=batch_norm,
            bn_statistics=bn_statistics,
            max_length=None if max_length is None else int(max_length),
            dropout=float(dropout),
            activation=activation,
        )

    @property
    def shortcuts(self) -> tuple[int | None, ...]:
        """:func:`shortcut_sources` of this stack."""
        return shortcut_sources(self.num_layers, self.residual, self.block_layers)

    @property
    def per_step(self) -> bool:
        """Whether the layers normalise with per-step statistics."""
        return self.batch_norm is not None and self.bn_statistics == "per_step"


def shortcut_sources(num_layers: int, residual: bool, block_layers: int = 2) -> tuple[int | None, ...]:
    """For each layer ``i``, the layer ``j`` whose pre-activation sum ``s_j`` its own adds (None: none).

    The authors' rule: ``i >= k`` and ``i % k == 0`` adds ``s_{i-k}`` (``k = block_layers``), so 11 layers
    with ``k = 2`` give ``(None, None, 0, None, 2, None, 4, None, 6, None, 8)``.
    """
    k = block_layers
    return tuple(i - k if residual and i >= k and i % k == 0 else None for i in range(num_layers))


def check_length(layer: str, steps: int, config: DeepIndRNNConfig, *, backend: str | None = None) -> None:
    """Refuse a sequence longer than the per-step statistics hold (a no-op for other statistics).

    Raises
    ------
    rnnspec.errors.ShapeError
        ``steps > max_length`` with per-step statistics, naming ``x``'s time axis and ``max_length``.
    """
    if config.per_step and config.max_length is not None and steps > config.max_length:
        expected = f"at most max_length = {config.max_length} steps (one row of per-step statistics each)"
        raise ShapeError(layer, "x", expected, f"{steps} steps", backend=backend)


def draw_deep_params(
    input_size: int,
    hidden_size: int,
    num_layers: int,
    *,
    seed: int,
    activation: str = "relu",
    init_options: Mapping[str, Any] | None = None,
) -> list[dict[str, np.ndarray]]:
    """Canonical IndRNN params (``w_ih``, ``b_ih``, ``u``, float64) for each layer of a deep stack.

    ``u`` and ``b_ih`` come from :func:`rnnspec.init_params` for an IndRNN stack of ``num_layers``
    (``init_options``: ``seq_len``, ``mag``, ``last_layer_init``, checked there); ``w_ih`` from
    ``N(0, 1 / (2 * fan_in))`` (see the module's docstring).
    """
    given = {k: v for k, v in (init_options or {}).items() if v is not None or k != "mag"}
    stack = init_params(
        "indrnn",
        input_size=input_size,
        hidden_size=hidden_size,
        num_layers=num_layers,
        seed=seed,
        dtype="float64",
        activation=activation,
        **given,
    )
    rng = np.random.default_rng(seed)
    out = []
    for layer in stack:
        fan_in = layer["w_ih"].shape[1]
        w = rng.normal(0.0, math.sqrt(1.0 / (2.0 * fan_in)), size=layer["w_ih"].shape)
        out.append({**layer, "w_ih": w})
    return out
