"""The shapes and repeats of a full run and of a quick one."""

from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = ["FULL", "QUICK", "Shape", "Sizes", "Task", "sizes"]

Shape = tuple[int, int, int]  # (batch, time, hidden); inputs have hidden features too


@dataclass(frozen=True)
class Task:
    """The size of a paper task's model and batch (the training section)."""

    batch: int
    steps: int
    hidden: int
    features: int
    layers: int = 1

    def text(self) -> str:
        """``"B=50 T=1000 H=128 I=2 layers=2"`` (no ``layers`` for one)."""
        more = f" layers={self.layers}" if self.layers > 1 else ""
        return f"B={self.batch} T={self.steps} H={self.hidden} I={self.features}{more}"


@dataclass(frozen=True)
class Sizes:
    """Shapes ``(batch, time, hidden)`` of each section's cases, and the timed repeats of every case."""

    repeats: int
    #: lstm and gru against torch.nn / keras.
    classic: tuple[Shape, ...]
    #: skip_gru and skip_lstm at batch 1, every row updating at the same steps.
    skip_single: Shape
    #: skip_gru at a larger batch, rows skipping independently (staggered phases).
    skip_batch: Shape
    #: act against its base cell.
    act: Shape
    #: phased_lstm at inference: open ratio 0.05 against 1 and the lstm.
    phased: Shape
    #: linear_recurrence against a copy and the log-space formulation.
    linear: Shape
    #: qrnn (fo, window 1) against the log-space formulation.
    qrnn: Shape
    #: indrnn and the adaptive ops against their Python-loop ports.
    port: Shape
    #: The training section's tasks: Skip RNN's adding task (skip_gru), IndRNN's adding problem,
    #: ACT's parity (the input size is the bit count) and a QRNN layer.
    skip_adding: Task
    indrnn_adding: Task
    act_parity: Task
    qrnn_layer: Task
    #: The skip ops timed.
    skip_ops: tuple[str, ...] = ("skip_gru", "skip_lstm")
    #: Whether every section but lstm/gru and training is timed with the backward pass too.
    training: bool = True


FULL = Sizes(
    repeats=5,
    classic=((16, 256, 256), (1, 1000, 64)),
    skip_single=(1, 1000, 128),
    skip_batch=(64, 256, 128),
    act=(16, 256, 256),
    phased=(16, 256, 512),
    linear=(16, 4096, 512),
    qrnn=(16, 1024, 256),
    port=(16, 256, 256),
    skip_adding=Task(batch=256, steps=50, hidden=110, features=2),
    indrnn_adding=Task(batch=50, steps=1000, hidden=128, features=2, layers=2),
    act_parity=Task(batch=128, steps=1, hidden=128, features=8),
    qrnn_layer=Task(batch=16, steps=1024, hidden=256, features=256),
)

QUICK = Sizes(
    repeats=3,
    classic=((4, 32, 32),),
    skip_single=(1, 32, 32),
    skip_batch=(8, 32, 32),
    act=(2, 16, 32),
    phased=(4, 32, 32),
    linear=(4, 512, 64),
    qrnn=(4, 128, 32),
    port=(4, 16, 32),
    # One shape throughout: eager JAX compiles each op once per shape, and the cases share them.
    skip_adding=Task(batch=4, steps=5, hidden=16, features=2),
    indrnn_adding=Task(batch=4, steps=5, hidden=16, features=2, layers=2),
    act_parity=Task(batch=4, steps=1, hidden=16, features=2),
    qrnn_layer=Task(batch=4, steps=5, hidden=16, features=2),
    skip_ops=("skip_gru",),
    training=False,
)


def sizes(quick: bool, repeats: int | None = None) -> Sizes:
    """The quick or full sizes, with ``repeats`` in place of their own when given."""
    chosen = QUICK if quick else FULL
    return chosen if repeats is None else replace(chosen, repeats=repeats)
