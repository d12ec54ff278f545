"""The machinery every sequence op of the torch backend shares, as the reference's :mod:`.stack` and :mod:`.scan`.

- :func:`normalise_lengths`: ``lengths`` (None, NumPy, a list, a CPU or CUDA
  int tensor) as int64 on x's device, with what is known on the host;
- :func:`reverse_valid`: each row's valid prefix reversed (a gather), which is
  how ``reverse=True`` is realised, as in the reference;
- :func:`scan`: the masked time loop (past a row's length the state is frozen
  and the output is zero);
- :data:`ARRAY_OPS`: torch's array operations for the framework-free core
  (:mod:`rnnspec.backends.common`: start states, the stack of layers, segments).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rnnspec.backends.common.arrays import ArrayOps

__all__ = [
    "ARRAY_OPS",
    "Lengths",
    "State",
    "fresh",
    "normalise_lengths",
    "reverse_valid",
    "scan",
    "zero_past",
]

#: The state of one layer: named entries such as ``{"h": ..., "c": ...}``.
State = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Lengths:
    """Each row's length, normalised.

    Attributes
    ----------
    values
        ``(batch,)`` int64 on x's device.
    time
        The length of the time axis.
    full
        True when every row is known to have full length without a device sync
        (``lengths=None``, or host values all equal to ``time``); False when some
        row is shorter or the values live on an accelerator.
    host
        The values as int64 NumPy when they were given on the host, else None.
    """

    values: torch.Tensor
    time: int
    full: bool
    host: np.ndarray | None

    def valid(self) -> torch.Tensor | None:
        """``(batch, time)`` bool, True where a step lies within its row's length; None when every row is full."""
        if self.full:
            return None
        steps = torch.arange(self.time, device=self.values.device)
        return steps[None, :] < self.values[:, None]

    def on_host(self) -> np.ndarray:
        """The values as int64 NumPy (copies them from the device when needed)."""
        if self.host is not None:
            return self.host
        return np.asarray(self.values.cpu().numpy(), dtype=np.int64)


def normalise_lengths(lengths: Any, batch: int, time: int, device: torch.device) -> Lengths:
    """``lengths`` as :class:`Lengths` on ``device``: None is every row at full length."""
    if lengths is None:
        host = np.full((batch,), time, dtype=np.int64)
        return Lengths(torch.full((batch,), time, dtype=torch.int64, device=device), time, True, host)
    if isinstance(lengths, torch.Tensor):
        values = lengths.detach().to(device=device, dtype=torch.int64).reshape(batch)
        if lengths.device.type != "cpu":
            return Lengths(values, time, False, None)  # no device sync for a hint
        host = np.asarray(lengths.detach().numpy(), dtype=np.int64).reshape(batch)
    else:
        host = np.asarray(lengths).astype(np.int64).reshape(batch)
        values = torch.from_numpy(host.copy()).to(device)
    return Lengths(values, time, bool(np.all(host == time)), host)


def zero_past(value: torch.Tensor, lengths: Any) -> torch.Tensor:
    """``value`` (batch, time, ...) with the steps past each row's length zeroed (:mod:`rnnspec.padding`)."""
    batch, time = value.shape[:2]
    n = normalise_lengths(lengths, batch, time, value.device)
    if n.full:
        return value
    padding = torch.arange(time, device=value.device)[None, :] >= n.values[:, None]
    return value.masked_fill(padding.reshape(padding.shape + (1,) * (value.ndim - 2)), 0)


def reverse_valid(a: torch.Tensor, lengths: Lengths) -> torch.Tensor:
    """Reverse each row's valid prefix along axis 1; the padding stays in place.

    Its own inverse, and (as a gather) its own reverse mode.
    """
    if lengths.full:
        return a.flip(1)
    steps = torch.arange(a.shape[1], device=a.device)[None, :]
    n = lengths.values[:, None]
    index = torch.where(steps < n, n - 1 - steps, steps)
    index = index.reshape(index.shape + (1,) * (a.ndim - 2)).expand(a.shape)
    return torch.gather(a, 1, index)


def fresh(state: Mapping[str, torch.Tensor]) -> State:
    """A copy of a layer's state (contiguous), so that a result never aliases an input."""
    return {k: v.clone(memory_format=torch.contiguous_format) for k, v in state.items()}


#: One step: (the layer's state, the step's inputs) -> the new state. The output is its ``"h"``.
StepFn = Callable[[State, Sequence[torch.Tensor]], State]


def scan(
    step: StepFn,
    inputs: Sequence[torch.Tensor],
    state: Mapping[str, torch.Tensor],
    valid: torch.Tensor | None,
    out_size: int,
) -> tuple[torch.Tensor, State]:
    """Run ``step`` over time from ``state``; ``inputs`` are ``(batch, time, ...)`` arrays read at each step.

    ``valid`` ``(batch, time)`` is True where a step lies within its row's length
    (None: every step): past it the state is frozen and the output is zero.
    Returns the outputs (``(batch, time, out_size)``, the new ``"h"`` of each
    step) and the final state.
    """
    batch, time = inputs[0].shape[:2]
    current: State = dict(state)
    if time == 0:
        return inputs[0].new_zeros((batch, 0, out_size)), fresh(current)
    outputs = []
    # Split along time once: autograd's backward of each slice a[:, t] would build a gradient the size of the
    # whole of a, T of them, quadratic in the length; unbind's backward stacks the steps' gradients once.
    columns = [a.unbind(1) for a in inputs]
    valid_columns = None if valid is None else valid.unbind(1)
    for t in range(time):
        new = step(current, [c[t] for c in columns])
        if valid_columns is None:
            current = new
            outputs.append(new["h"])
        else:
            keep = valid_columns[t][:, None]
            current = {k: torch.where(keep, new[k], v) for k, v in current.items()}
            outputs.append(torch.where(keep, new["h"], 0.0))
    return torch.stack(outputs, dim=1), current


def _filled(x: torch.Tensor, tail: tuple[int, ...], value: float) -> torch.Tensor:
    return x.new_full((x.shape[0], *tail), value)


def _broadcast(x: torch.Tensor, p: torch.Tensor, tail: tuple[int, ...]) -> torch.Tensor:
    return p.expand((x.shape[0], *tail))


def _clip_lengths(lengths: torch.Tensor, start: int, width: int) -> torch.Tensor:
    return (lengths.to(torch.int64) - start).clamp(0, width)


def _concat(pieces: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(pieces, dim=1)


def _final(h: torch.Tensor, lengths: Any, initial: torch.Tensor | None, reverse: bool) -> torch.Tensor:
    """A primitive's state after a segment, read off its h: the step each row processed last."""
    last = h[:, 0] if reverse else h[:, -1]
    if lengths is None:
        return last
    steps = torch.as_tensor(lengths, device=h.device).to(torch.int64)
    index = torch.zeros_like(steps) if reverse else (steps - 1).clamp(min=0)
    picked = h[torch.arange(h.shape[0], device=h.device), index]
    before = torch.zeros_like(last) if initial is None else initial
    return torch.where((steps > 0)[:, None], picked, before)


#: torch's array operations for the framework-free core.
ARRAY_OPS = ArrayOps(
    is_array=torch.is_tensor,
    lengths=lambda lengths, x: normalise_lengths(lengths, x.shape[0], x.shape[1], x.device),
    filled=_filled,
    broadcast=_broadcast,
    reverse_valid=reverse_valid,
    clip_lengths=_clip_lengths,
    concat=_concat,
    final_state=_final,
)
