"""The NumPy reference with linear_recurrence accumulating in float16 for float16 inputs.

The spec asks a backend that offers float16 to carry the state across steps
in float32 or better (``spec/ops/sequence.md``, "Dtypes"). This one carries
it in float16: it runs the reference one step at a time, as the spec's
chunked run with chunks of one step (each row's length in the chunk at step
``t`` is ``clip(lengths - t, 0, 1)``; with ``reverse=True`` the chunks run last
to first), feeding each step's float16 result back as the next step's
``initial``. Each step is thus ``h_t = round_to_float16(a_t * h_{t-1} + b_t)``,
correctly rounded, and the rounding errors add up over the steps. A row that
has ended keeps its state; ``h`` is zero past a row's length, as in the
reference.

float32 and float64 calls are the reference's. The reverse mode (``vjp``) is
the reference's: only the float16 values are wrong.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from rnnspec.reference import Reference


class Mutant(Reference):
    """Wrong on purpose: linear_recurrence rounds its carried state to float16 at every step."""

    capabilities: ClassVar[frozenset[str]] = frozenset({"vjp"})

    def linear_recurrence(
        self,
        a: Any,
        b: Any,
        initial: Any = None,
        *,
        lengths: Any = None,
        reverse: bool = False,
        checkpoint_every: int | None = None,
    ) -> Any:
        a, b = np.asarray(a), np.asarray(b)
        batch, time, hidden = a.shape
        if a.dtype != np.float16 or time == 0:
            return super().linear_recurrence(
                a, b, initial, lengths=lengths, reverse=reverse, checkpoint_every=checkpoint_every
            )
        full = np.full((batch,), time, dtype=np.int64) if lengths is None else np.asarray(lengths, dtype=np.int64)
        state = np.zeros((batch, hidden), np.float16) if initial is None else np.asarray(initial)
        h = np.zeros_like(a)
        for t in reversed(range(time)) if reverse else range(time):
            step = np.clip(full - t, 0, 1)
            out = super().linear_recurrence(
                a[:, t : t + 1],
                b[:, t : t + 1],
                state,
                lengths=step,
                reverse=reverse,
                checkpoint_every=checkpoint_every,
            )
            h[:, t] = out[:, 0]  # zero where the row has ended
            state = np.where(step[:, None] > 0, out[:, 0], state)  # the state in float16: the bug
        return h
