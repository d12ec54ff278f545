"""The NumPy reference with a "chunked fast path" for long lstm calls that drops the cell state.

From ``T >= 64`` steps on, lstm runs the sequence in chunks of 64 steps (the
last one shorter), as a kernel with a fixed time tile would, carrying the
state from chunk to chunk exactly as the spec's chunked run does (each row's
length in a chunk is ``clip(lengths - offset, 0, 64)``; with ``reverse=True``
the chunks run last to first). The bug: every chunk, the first included,
starts with the cell state ``c`` of every layer and every row reset to zero;
``h`` is carried right. So the caller's initial ``c`` is dropped, a row longer
than 64 steps loses its ``c`` at each chunk boundary, and (forward direction)
a row that ended before the last chunk ends with ``c = 0``. The chunks run in
float64 and the result is rounded once to the input dtype, so the reset is
the only difference from the reference.

Calls with ``T < 64`` are the reference's (so is a ``T = 64`` call without an
initial state: one chunk, from the zero state anyway). The reverse mode
(``vjp``) is the reference's, right: only the values are wrong.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from rnnspec.reference import Reference
from rnnspec.reference.precision import round_to
from rnnspec.results import SequenceResult

#: The chunk length of the fast path, and the shortest sequence that takes it.
CHUNK = 64


def _f64(tree: Any) -> Any:
    if tree is None:
        return None
    if isinstance(tree, dict):
        return {k: _f64(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_f64(v) for v in tree)
    return np.asarray(tree, dtype=np.float64)


class Mutant(Reference):
    """Wrong on purpose: lstm with T >= 64 forgets its cell state every 64 steps."""

    capabilities: ClassVar[frozenset[str]] = frozenset({"vjp"})

    def lstm(
        self,
        x: Any,
        params: Any,
        *,
        lengths: Any = None,
        initial_state: Any = None,
        reverse: bool = False,
        checkpoint_every: int | None = None,
    ) -> SequenceResult:
        x = np.asarray(x)
        batch, time, _ = x.shape
        if time < CHUNK:
            return super().lstm(
                x,
                params,
                lengths=lengths,
                initial_state=initial_state,
                reverse=reverse,
                checkpoint_every=checkpoint_every,
            )
        dtype = x.dtype
        x64, params64 = _f64(x), _f64(params)
        full = np.full((batch,), time, dtype=np.int64) if lengths is None else np.asarray(lengths, dtype=np.int64)
        if initial_state is None:
            state = tuple(dict.fromkeys(("h", "c"), np.zeros((batch, p["w_hh"].shape[1]))) for p in params64)
        else:
            state = _f64(initial_state)
        offsets = list(range(0, time, CHUNK))
        outputs: dict[int, np.ndarray] = {}
        for offset in reversed(offsets) if reverse else offsets:
            stop = min(offset + CHUNK, time)
            # The bug: each chunk starts from c = 0 (h is carried).
            start = tuple({k: np.zeros_like(v) if k == "c" else v for k, v in s.items()} for s in state)
            part = super().lstm(
                x64[:, offset:stop],
                params64,
                lengths=None if lengths is None else np.clip(full - offset, 0, stop - offset),
                initial_state=start,
                reverse=reverse,
                checkpoint_every=checkpoint_every,
            )
            outputs[offset] = np.asarray(part.outputs)
            state = part.state
        whole = np.concatenate([outputs[offset] for offset in offsets], axis=1)
        return SequenceResult(round_to(whole, dtype), round_to(tuple(dict(s) for s in state), dtype))
