"""Seed 004's log-space formulation of the linear recurrence and of QRNN pooling, the rejected alternative.

``h_t = a_t h_{t-1} + b_t`` from ``h_0 = 0`` is ``h_t = exp(A_t + logcumsumexp(log b - A)_t)`` with
``A = cumsum(log a)``: a cumsum and a logcumsumexp in place of the scan. It needs ``a > 0`` and
``b > 0`` (the cases draw such inputs); the spec's linear_recurrence page says why it was rejected.
The QRNN layer of the seed pools ``z = softplus(.)`` (strictly positive) this way: the suite times
it at the shapes of rnnspec's ``qrnn`` (fo, window 1) as the formulation users of that code run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .framework import Framework

__all__ = ["linear_recurrence", "qrnn_fo"]


def linear_recurrence(fw: Framework, a: Any, b: Any) -> Any:
    """``h`` ``(B, T, H)`` of the linear recurrence from zero, in log space (``a``, ``b`` > 0)."""
    log_a = fw.cumsum(fw.log(a), 1)
    return fw.exp(log_a + fw.logcumsumexp(fw.log(b) - log_a, 1))


def qrnn_fo(fw: Framework, x: Any, params: Sequence[Mapping[str, Any]]) -> Any:
    """The seed's fo-QRNN layer (window 1): gates by one matmul, pooling in log space, ``h = o * c``."""
    (p,) = params
    w = p["w"][:, :, 0]
    size = w.shape[0] // 3
    gates = fw.linear(x, w, p["b"])
    z, f, o = gates[..., :size], gates[..., size : 2 * size], gates[..., 2 * size :]
    log_f = fw.cumsum(fw.log_sigmoid(f), 1)
    log_b = fw.log_sigmoid(-f) + fw.log(fw.softplus(z))
    return fw.sigmoid(o) * fw.exp(log_f + fw.logcumsumexp(log_b - log_f, 1))
