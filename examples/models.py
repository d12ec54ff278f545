"""What the examples train, described without a framework, and how a framework's trainer is found.

A :class:`ModelSpec` names an rnnspec op and its sizes; every trainer
(``trainers/torch.py``, ``trainers/jax.py``, ``trainers/tensorflow.py``) builds
the same model from it with its framework's layers: the op's layer, then a
linear readout of the last step's output. Only the chosen framework is imported.

A batch is ``(x, y)`` or ``(x, y, extras)``: ``extras`` maps names to arrays
that come with ``x`` (:func:`model_inputs` says what each model reads of them):
``"lengths"`` (batch,), each row's number of valid steps, whose last the readout
reads; the op's per-step arrays (Phased LSTM's ``"timestamps"`` (batch, time)),
which the layer takes by keyword; and the (batch, time) arrays that
:attr:`ModelSpec.input_extras` names, appended to ``x`` as features.

The layer runs over every step of the padded batch, its padding too: every op
of the examples is causal, so a row's outputs up to its length are those of the
row alone, and the readout of its last valid step is the model's answer for the
row (the gradient is the same too). Running the padding costs what the layers'
``lengths`` would cost, where they run every step; torch's fused LSTM kernel on
packed rows of mixed lengths is much slower on the CPU than on the padded batch.
The padding of a per-step array must be valid input of the op (timestamps that
do not decrease: :class:`tasks.FrequencyTask` repeats each row's last time).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

__all__ = [
    "LAYER_CLASSES",
    "LOSSES",
    "Batch",
    "ModelSpec",
    "Trainer",
    "learning_rate_at",
    "limit_threads",
    "make_trainer",
    "model_inputs",
]

#: The layer class of each op, by the same name in every framework's layers.
LAYER_CLASSES = {
    "rnn": "RNN",
    "lstm": "LSTM",
    "gru": "GRU",
    "skip_rnn": "SkipRNN",
    "skip_lstm": "SkipLSTM",
    "skip_gru": "SkipGRU",
    "act": "ACT",
    "indrnn": "IndRNN",
    "phased_lstm": "PhasedLSTM",
}

#: A training batch: ``(x, y)``, or ``(x, y, extras)`` with the arrays that come with ``x`` by name.
Batch = tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, Mapping[str, np.ndarray]]

#: The task losses a :class:`ModelSpec` may name (``loss``), each averaged over the batch.
LOSSES = {
    "mse": "mean squared error",
    "half_mse": "half the mean squared error, TF1's tf.nn.l2_loss(y - out) / batch for one output",
    "bce": "binary cross-entropy of one logit per output",
}


@dataclass(frozen=True)
class ModelSpec:
    """A recurrent layer (an rnnspec op) and a linear readout of its last output.

    Parameters
    ----------
    name
        The name the reports and plots use.
    op
        The rnnspec op of the layer, a key of :data:`LAYER_CLASSES`.
    input_size, hidden_size, output_size, num_layers
        The sizes.
    options
        The layer's options, by the names all three frameworks' layers take
        (``cell``, ``max_steps``, ``seq_len``, ``mag``, ``last_layer_init``,
        ``trainable_initial_state``...).
    loss
        A key of :data:`LOSSES`: ``"mse"`` (regression), ``"half_mse"`` (0.5 x the MSE:
        the Skip RNN authors' ``tf.nn.l2_loss(y - out) / batch`` for one output, which
        halves the task's gradient against the budget loss) or ``"bce"`` (one logit per
        output, binary cross-entropy).
    budget_weight
        lambda of the skip ops' budget loss (:func:`rnnspec.skip_budget_loss`).
    ponder_weight
        tau of ACT's ponder cost: ``tau * mean over the batch of the ponder cost summed over time``.
    learning_rate
        Adam's step size (of the first update).
    lr_decay_every, lr_decay_factor
        A step schedule: the step size is multiplied by ``lr_decay_factor`` after
        every ``lr_decay_every`` updates (:func:`learning_rate_at`); constant if
        ``lr_decay_every`` is None.
    clip_norm
        The global gradient norm is clipped to this, unless None.
    indrnn_bound
        IndRNN's recurrent weights ``u`` are projected into ``[-bound, bound]``
        after every update (:func:`rnnspec.indrnn_constrain`), unless None.
    input_extras
        The batch's extras ``(batch, time)`` appended to ``x`` as features, in this order
        (``input_size`` counts them): the Phased LSTM paper's LSTM baseline reads the
        timestamps as a second feature.
    eval_options
        Layer options that replace those of ``options`` when the model is evaluated
        (:meth:`Trainer.predict`): Phased LSTM's ``{"leak": 0.0}``, the paper's closed gate
        at test time. Evaluation runs a second layer built with them that holds the
        trained weights.
    """

    name: str
    op: str
    input_size: int
    hidden_size: int
    output_size: int = 1
    num_layers: int = 1
    options: dict[str, Any] = field(default_factory=dict)
    loss: str = "mse"
    budget_weight: float = 0.0
    ponder_weight: float = 0.0
    learning_rate: float = 1e-3
    lr_decay_every: int | None = None
    lr_decay_factor: float = 0.1
    clip_norm: float | None = 1.0
    indrnn_bound: float | None = None
    input_extras: tuple[str, ...] = ()
    eval_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"ModelSpec {self.name!r}: loss must be one of {sorted(LOSSES)}, got {self.loss!r}")
        if self.lr_decay_every is not None and self.lr_decay_every < 1:
            raise ValueError(
                f"ModelSpec {self.name!r}: lr_decay_every must be a positive number of updates or None, "
                f"got {self.lr_decay_every!r}"
            )

    def config(self) -> dict[str, Any]:
        """The spec's fields as plain values, for a checkpoint's config; ``input_extras`` and
        ``eval_options`` only where set, so that checkpoints saved before they existed still resume."""
        values = asdict(self)
        for name in ("input_extras", "eval_options"):
            if not values[name]:
                del values[name]
        return values

    def parameter_count(self) -> int:
        """The number of trainable numbers, layer and readout (from :func:`rnnspec.init_params`)."""
        import rnnspec

        arrays = rnnspec.init_params(
            self.op,
            input_size=self.input_size,
            hidden_size=self.hidden_size,
            num_layers=self.num_layers,
            **self.options,
        )
        layer = sum(int(np.prod(a.shape)) for params in arrays for a in params.values())
        return layer + (self.hidden_size + 1) * self.output_size


def learning_rate_at(spec: ModelSpec, updates: int) -> float:
    """The step size of the update that follows ``updates`` updates: update ``n`` (from 1) uses
    ``learning_rate * lr_decay_factor ** ((n - 1) // lr_decay_every)``.

    >>> spec = ModelSpec("m", "rnn", 1, 1, learning_rate=2e-4, lr_decay_every=20_000)
    >>> [learning_rate_at(spec, n) for n in (0, 19_999, 20_000)]
    [0.0002, 0.0002, 2e-05]
    """
    if spec.lr_decay_every is None:
        return spec.learning_rate
    return float(spec.learning_rate * spec.lr_decay_factor ** (updates // spec.lr_decay_every))


class Trainer(Protocol):
    """A model of one framework, built from a :class:`ModelSpec`, with its optimiser.

    :meth:`state` and :meth:`load_state` make a checkpoint: after
    ``load_state(state())`` in a new trainer of the same spec, training goes on
    exactly as in the trainer that gave the state.
    """

    spec: ModelSpec
    #: The updates made so far.
    updates: int

    def step(self, x: np.ndarray, y: np.ndarray, extras: Mapping[str, np.ndarray] | None = None) -> float:
        """One optimiser update on a batch (``extras``: see :func:`model_inputs`); returns the training loss
        (task loss plus auxiliary losses)."""
        ...

    def predict(self, x: np.ndarray, extras: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Run the model on ``x`` and its ``extras`` (no update), with :attr:`ModelSpec.eval_options`.

        Returns ``"output"`` (batch, output_size) (logits for ``bce``) and, for the
        adaptive ops, ``"update_gate"`` (skip ops) or ``"ponder_cost"`` and
        ``"ponder_steps"`` (ACT), each (batch, time).
        """
        ...

    def learning_rate(self) -> float:
        """The step size of the next update, as the framework's optimiser holds it."""
        ...

    def layer_params(self) -> list[dict[str, np.ndarray]]:
        """The recurrent layer's params as NumPy arrays, one mapping per layer of the stack (the op's layout)."""
        ...

    def state(self) -> dict[str, Any]:
        """Everything training depends on, as NumPy arrays and Python numbers: the weights, the optimiser's
        state (moments, step count, hence the place in the learning-rate schedule) and :attr:`updates`."""
        ...

    def load_state(self, state: dict[str, Any]) -> None:
        """Put back a :meth:`state` of a trainer of the same spec and framework."""
        ...


def model_inputs(
    spec: ModelSpec, x: np.ndarray, extras: Mapping[str, np.ndarray] | None
) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray | None]:
    """What the model of ``spec`` reads of a batch: its input, the per-step arrays its layer takes, the lengths.

    Parameters
    ----------
    spec
        The model.
    x
        The batch's input ``(batch, time, features)``.
    extras
        The arrays that come with ``x`` by name (None: none).

    Returns
    -------
    tuple
        ``x`` with the extras of :attr:`ModelSpec.input_extras` appended as features (cast to
        ``x``'s dtype); the extras named among the op's per-step arrays (Phased LSTM's
        ``timestamps``), by name, for the layer's keywords; ``extras["lengths"]`` as int32, or None:
        the readout reads each row's output at step ``lengths - 1``.

    Raises
    ------
    ValueError
        An extra that ``input_extras`` names is missing from the batch.
    """
    from rnnspec.ops import OPS

    extras = dict(extras or {})
    missing = [name for name in spec.input_extras if name not in extras]
    if missing:
        raise ValueError(
            f"ModelSpec {spec.name!r}: input_extras {missing} missing from the batch's extras {sorted(extras)}"
        )
    if spec.input_extras:
        features = [np.asarray(extras[name], dtype=x.dtype)[:, :, None] for name in spec.input_extras]
        x = np.concatenate([x, *features], axis=-1)
    per_step = {name: extras[name] for name in OPS[spec.op].per_step[1:] if name in extras}
    lengths = extras.get("lengths")
    return x, per_step, None if lengths is None else np.asarray(lengths, dtype=np.int32)


def limit_threads(threads: int) -> None:
    """Ask every framework for ``threads`` CPU threads; call it before the first framework import.

    On a machine shared with other jobs, one thread per process is often much
    faster than the frameworks' default of one per core, whose threads wait on
    each other while the cores are busy elsewhere.
    """
    n = str(threads)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        os.environ.setdefault(name, n)
    if threads == 1:
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1".strip()


def make_trainer(backend: str, spec: ModelSpec, seed: int) -> Trainer:
    """Build ``spec`` with the framework of ``backend`` (``torch``, ``jax`` or ``tensorflow``), imported now."""
    module = importlib.import_module(f"trainers.{backend}")
    trainer: Trainer = module.make_trainer(spec, seed)
    return trainer
