"""The NumPy reference with qrnn's convolution window shifted one step into the past.

For a window K > 1 the gates at step t read x_{t-K} .. x_{t-1} instead of
x_{t-K+1} .. x_t (an off-by-one in the causal padding): the input is delayed
by one step, with zeros first, before the reference runs. K = 1 is right. The
reverse mode is that of the same wrong function.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from rnnspec.reference import Reference
from rnnspec.results import SequenceResult


def _window(params: Any) -> int:
    return int(np.asarray(params[0]["w"]).shape[-1])


def delayed(x: Any) -> np.ndarray:
    """``x`` one step later along time: ``out[:, t] = x[:, t - 1]``, zeros at t = 0."""
    x = np.asarray(x)
    out = np.zeros_like(x)
    out[:, 1:] = x[:, :-1]
    return out


def advanced(g: Any) -> np.ndarray:
    """The adjoint of :func:`delayed`: ``out[:, t] = g[:, t + 1]``, zeros at the last step."""
    g = np.asarray(g)
    out = np.zeros_like(g)
    out[:, :-1] = g[:, 1:]
    return out


class Mutant(Reference):
    """Wrong on purpose: qrnn's window (K > 1) lags one step behind."""

    capabilities: ClassVar[frozenset[str]] = frozenset({"vjp"})

    def qrnn(
        self,
        x: Any,
        params: Any,
        *,
        mode: str = "fo",
        zoneout_mask: Any = None,
        lengths: Any = None,
        initial_state: Any = None,
        reverse: bool = False,
        checkpoint_every: int | None = None,
    ) -> SequenceResult:
        if _window(params) > 1:
            x = delayed(x)
        return super().qrnn(
            x,
            params,
            mode=mode,
            zoneout_mask=zoneout_mask,
            lengths=lengths,
            initial_state=initial_state,
            reverse=reverse,
            checkpoint_every=checkpoint_every,
        )

    def vjp(self, op: str, arguments: dict[str, Any], cotangents: Mapping[str, Any]) -> dict[str, Any]:
        if op != "qrnn" or _window(arguments["params"]) <= 1:
            return super().vjp(op, arguments, cotangents)
        grads = super().vjp(op, {**arguments, "x": delayed(arguments["x"])}, cotangents)
        grads["x"] = advanced(grads["x"])
        return grads
