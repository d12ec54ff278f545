"""The shapes and repeats of a full run and of a quick one."""

from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = ["FULL", "QUICK", "Shape", "Sizes", "sizes"]

Shape = tuple[int, int, int]  # (batch, time, hidden); inputs have hidden features too


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
    #: linear_recurrence against a copy and the log-space formulation.
    linear: Shape
    #: qrnn (fo, window 1) against the log-space formulation.
    qrnn: Shape
    #: indrnn and the adaptive ops against their Python-loop ports.
    port: Shape
    #: The skip ops timed.
    skip_ops: tuple[str, ...] = ("skip_gru", "skip_lstm")
    #: Whether every section but lstm/gru is timed with the backward pass too.
    training: bool = True


FULL = Sizes(
    repeats=5,
    classic=((16, 256, 256), (1, 1000, 64)),
    skip_single=(1, 1000, 128),
    skip_batch=(64, 256, 128),
    act=(16, 256, 256),
    linear=(16, 4096, 512),
    qrnn=(16, 1024, 256),
    port=(16, 256, 256),
)

QUICK = Sizes(
    repeats=3,
    classic=((4, 32, 32),),
    skip_single=(1, 32, 32),
    skip_batch=(8, 32, 32),
    act=(2, 16, 32),
    linear=(4, 512, 64),
    qrnn=(4, 128, 32),
    port=(4, 16, 32),
    skip_ops=("skip_gru",),
    training=False,
)


def sizes(quick: bool, repeats: int | None = None) -> Sizes:
    """The quick or full sizes, with ``repeats`` in place of their own when given."""
    chosen = QUICK if quick else FULL
    return chosen if repeats is None else replace(chosen, repeats=repeats)
