"""The NumPy reference: the executable definition of every op of the spec.

Forward results come from the ``"numpy"`` backend (``rnnspec.get_backend("numpy")``,
or the functions re-exported here, which validate the same way); the reverse
mode of every op is :func:`vjp`. Both compute in float64.

The names in ``__all__`` are the reference's public API, the only part of it
the conformance suite uses: the ops, :func:`vjp`, :func:`decision_margin`, the
:class:`Reference` implementation and :func:`reverse_valid`, the spec's
convention for ``reverse=True``. Its submodules are private.
"""

from __future__ import annotations

import importlib
from typing import Any

from rnnspec.ops import OPS
from rnnspec.results import SequenceResult

from .implementation import Reference
from .runs import start
from .stack import reverse_valid
from .vjp import _BACKEND, vjp

# The ops' modules (reference/<module>.py, which the records name) are imported before the functions of the
# same names are defined below: a submodule imported later, at an op's first call, would become the package's
# attribute in place of the function (``rnnspec.reference.qrnn`` the module, no longer the op).
for _name in sorted({spec.module_name for spec in OPS.values()}):
    importlib.import_module(f"{__name__}.{_name}")

__all__ = [
    "Reference",
    "decision_margin",
    "gru",
    "indrnn",
    "indrnn_recurrence",
    "linear_recurrence",
    "lstm",
    "phased_lstm",
    "qrnn",
    "reverse_valid",
    "rnn",
    "vjp",
]


def rnn(x: Any, params: Any, **options: Any) -> SequenceResult:
    """The reference ``rnn``; see :meth:`rnnspec.Backend.rnn`."""
    return _BACKEND.rnn(x, params, **options)


def lstm(x: Any, params: Any, **options: Any) -> SequenceResult:
    """The reference ``lstm``; see :meth:`rnnspec.Backend.lstm`."""
    return _BACKEND.lstm(x, params, **options)


def gru(x: Any, params: Any, **options: Any) -> SequenceResult:
    """The reference ``gru``; see :meth:`rnnspec.Backend.gru`."""
    return _BACKEND.gru(x, params, **options)


def indrnn(x: Any, params: Any, **options: Any) -> SequenceResult:
    """The reference ``indrnn``; see :meth:`rnnspec.Backend.indrnn`."""
    return _BACKEND.indrnn(x, params, **options)


def qrnn(x: Any, params: Any, **options: Any) -> SequenceResult:
    """The reference ``qrnn``; see :meth:`rnnspec.Backend.qrnn`."""
    return _BACKEND.qrnn(x, params, **options)


def phased_lstm(x: Any, params: Any, **options: Any) -> SequenceResult:
    """The reference ``phased_lstm``; see :meth:`rnnspec.Backend.phased_lstm`."""
    return _BACKEND.phased_lstm(x, params, **options)


def linear_recurrence(a: Any, b: Any, initial: Any = None, **options: Any) -> Any:
    """The reference ``linear_recurrence``; see :meth:`rnnspec.Backend.linear_recurrence`."""
    return _BACKEND.linear_recurrence(a, b, initial, **options)


def indrnn_recurrence(pre: Any, u: Any, initial: Any = None, **options: Any) -> Any:
    """The reference ``indrnn_recurrence``; see :meth:`rnnspec.Backend.indrnn_recurrence`."""
    return _BACKEND.indrnn_recurrence(pre, u, initial, **options)


def decision_margin(op: str, *args: Any, **options: Any) -> float:
    """How far the call's discrete decisions lie from their thresholds.

    For the skip ops, the smallest ``|u~_t - 0.5|`` over valid steps; for
    ``act``, the smallest distance of a halting sum from ``1 - epsilon`` among
    the decisions that fixed N(t); ``inf`` for ops without decisions. Two
    correct backends may decide differently within rounding of a threshold:
    the conformance suite compares such calls only where this margin is wide.
    """
    run = start(op, _BACKEND.check_call(op, *args, **options))
    margin = getattr(run, "margin", None)
    return float("inf") if margin is None else float(margin())
