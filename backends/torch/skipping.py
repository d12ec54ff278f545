"""Which loop the adaptive ops (skip_rnn/lstm/gru, act) run, and the row bookkeeping of the skipping one.

Two loops compute the same values:

- ``"training"``: every row computes at every step (Skip RNN's candidate at
  skipped steps too, since the straight-through gradient needs it; ACT's halted
  rows with weight 0), so autograd sees the spec's graph. In plain eager
  autograd on float32/float64 CPU tensors its steps run in native kernels
  (``backends/common/kernels/cells.c``), recorded as ``"native-training"``
  (:func:`record_training`);
- ``"skipping"``: when autograd is not needed, only the rows that update (Skip
  RNN) or still ponder (ACT) run the cell; a step where none does costs only
  its bookkeeping.

:func:`choose_path` picks the skipping loop when neither
:func:`rnnspec.backends.torch.fused.plain_path` nor ``RNNSPEC_TORCH_PLAIN``
forces the plain path and no gradient can flow (``torch.is_grad_enabled()`` is
False, or no tensor argument requires grad). :func:`.fused.last_path` tells
which loop the last call of an op took.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

import numpy as np
import torch

from .fused import plain_forced, record_path

__all__ = ["LoopPath", "choose_path", "host_dtype", "record_training", "row_index", "select_rows"]

LoopPath = Literal["skipping", "training"]


def choose_path(op: str, tensors: Iterable[torch.Tensor]) -> LoopPath:
    """The loop ``op`` takes on ``tensors`` (every tensor argument), recorded for :func:`.fused.last_path`."""
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    path: LoopPath = "training" if grad or plain_forced() else "skipping"
    record_path(op, path)
    return path


def record_training(op: str, native: bool) -> None:
    """Record which form of the training loop ``op`` runs: ``"native-training"`` (native kernels) or ``"training"``."""
    record_path(op, "native-training" if native else "training")


def host_dtype(dtype: torch.dtype) -> np.dtype[np.floating]:
    """The NumPy dtype of a float32 or float64 torch dtype, for bookkeeping on the host in the same precision."""
    return np.dtype(np.float64 if dtype == torch.float64 else np.float32)


def row_index(mask: np.ndarray, device: torch.device) -> torch.Tensor | None:
    """The rows where ``mask`` (host bool) holds, as an index on ``device``; None when it holds for every row."""
    if bool(mask.all()):
        return None
    return torch.from_numpy(np.flatnonzero(mask)).to(device)


def select_rows(state: Mapping[str, torch.Tensor], rows: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """The entries of ``state`` at ``rows`` (a gather, so never a view of the caller's tensors); all when None."""
    if rows is None:
        return dict(state)
    return {k: v.index_select(0, rows) for k, v in state.items()}
