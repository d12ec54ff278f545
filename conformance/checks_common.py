"""Helpers shared by the checks of the suite (values, gradients, properties)."""

from __future__ import annotations

import numpy as np

from rnnspec.backend import Backend
from rnnspec.reference import decision_margin
from rnnspec.reference.stack import reverse_valid

from .cases import Case
from .frameworks import bfloat16_maker
from .tolerances import DECISION_MARGIN

__all__ = ["context", "dtypes_of", "flip_valid", "full_lengths", "wide_margin"]


def dtypes_of(backend: Backend) -> tuple[str, ...]:
    """The dtypes the suite draws for ``backend``: those it declares among the spec's (bfloat16 only
    where the suite can make the backend's bfloat16 arrays, see :func:`.frameworks.bfloat16_maker`)."""
    declared = backend.implementation.dtypes
    return tuple(
        d
        for d in ("float32", "float64", "float16", "bfloat16")
        if d in declared and (d != "bfloat16" or bfloat16_maker(backend) is not None)
    )


def wide_margin(case: Case) -> bool:
    """Whether the case's discrete decisions are far enough from their thresholds to compare."""
    args, kwargs = case.args, case.kwargs
    return decision_margin(case.spec.op, *args, **kwargs) > DECISION_MARGIN[case.spec.dtype]


def context(backend: Backend, case: Case, *, call: str = "run") -> str:
    """What a failure message carries beside the differences: the call and its repro.

    ``call`` is the :class:`Case` method the check ran (``run_compiled`` for the compiled check).
    """
    s = case.spec
    return (
        f"[backend {backend.name!r}, op {s.op}, options {dict(s.options)}, dtype {s.dtype}, "
        f"batch {s.batch}, time {s.time}, sizes I={s.input_size} H={s.hidden_size}, layers {s.num_layers}, "
        f"lengths {s.lengths}, reverse {s.reverse}, initial_state {s.initial_state}, seed {s.seed}]\n"
        f"repro:\n{s.repro(backend.name, call=call)}"
    )


def full_lengths(case: Case) -> np.ndarray:
    """Each row's length in the case's call, as int64 (``time`` for every row when it passes none)."""
    batch, time = case.args[0].shape[:2]  # x, or a primitive's first array (B, T, H)
    lengths = case.kwargs.get("lengths")
    if lengths is None:
        return np.full((batch,), time, dtype=np.int64)
    return np.asarray(lengths, dtype=np.int64)


def flip_valid(a: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Reverse each row's valid prefix along axis 1 (``tf.reverse_sequence``); padding stays in place.

    Its own inverse: ``flip_valid(flip_valid(a, n), n) == a``. The reference's definition.
    """
    flipped: np.ndarray = reverse_valid(a, lengths)
    return flipped
