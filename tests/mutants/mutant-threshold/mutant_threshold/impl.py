"""The NumPy reference with ACT halting one inner step late on an exact tie.

The spec halts at the first inner step whose halting units sum to at least
``1 - epsilon``: ``N(t) = min{n : h^1 + ... + h^n >= 1 - epsilon}``. This
mutant halts only once the sum exceeds it (``> 1 - epsilon``), a classic slip
of the comparison. The two differ only where a partial sum equals
``1 - epsilon`` exactly (computed as the reference computes it, in float64):
there the mutant ponders one more step (unless ``max_steps`` stops it), which
changes N(t), R(t), the weights, the outputs and the state.

The comparison sits inline in the reference's ``ACTRun._ponder``, with no
hook to override, so :class:`LateHaltingRun` subclasses ``ACTRun`` and
replaces ``_ponder`` with a copy of the reference's loop that differs in that
one operator (marked below). The rest of the run, its reverse mode included,
is the reference's ``ACTRun``, so the reverse mode is that of the same wrong
function, and without a tie the mutant is the reference.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from rnnspec.methods import spec_method
from rnnspec.reference import Reference
from rnnspec.reference.act import ACTRun
from rnnspec.reference.activations import sigmoid


class LateHaltingRun(ACTRun):
    """The reference's ACT run, halting on ``> 1 - epsilon``."""

    def _ponder(self, state: dict[str, Any], x: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        # A copy of ACTRun._ponder but for the halting comparison.
        batch = x.shape[0]
        flag0, flag1 = np.zeros((batch, 1)), np.ones((batch, 1))
        total = np.zeros((batch, 1))
        halted = np.zeros((batch, 1), dtype=bool)
        steps, remainder = np.zeros(batch), np.zeros(batch)
        mean = {k: np.zeros_like(v) for k, v in state.items()}
        inner: list[dict[str, Any]] = []
        s = state
        for n in range(1, self.max_steps + 1):
            if halted.all():
                break
            active = ~halted
            xin = np.concatenate([x, flag0 if n == 1 else flag1], axis=1)
            s, _, cache = self.cell.step(self.p, s, xin)
            h = sigmoid(s["h"] @ self.p["w_halt"].T + self.p["b_halt"])
            # the bug: "not <=" for "not <" (a sum exactly on 1 - epsilon does not halt; a NaN still does)
            stop = active & (~(total + h <= 1.0 - self.epsilon) | (n == self.max_steps))
            rest = np.where(np.isnan(h), h, 1.0 - total)
            weight = np.where(stop, rest, np.where(active, h, 0.0))
            for k in mean:
                mean[k] = mean[k] + weight * s[k]
            steps = np.where(stop[:, 0], n, steps)
            remainder = np.where(stop[:, 0], rest[:, 0], remainder)
            gap = np.where(active, np.abs(total + h - (1.0 - self.epsilon)), np.inf)
            inner.append({"cache": cache, "s": s, "h": h, "weight": weight, "active": active, "stop": stop, "gap": gap})
            total = np.where(active, total + h, total)
            halted = halted | stop
        return mean, {"inner": inner, "steps": steps, "remainder": remainder}


class Mutant(Reference):
    """Wrong on purpose: act halts on ``> 1 - epsilon`` instead of ``>= 1 - epsilon``."""

    capabilities: ClassVar[frozenset[str]] = frozenset({"vjp"})

    act = spec_method("act", lambda op, arguments: LateHaltingRun(op, arguments).result())

    def vjp(self, op: str, arguments: dict[str, Any], cotangents: Mapping[str, Any]) -> dict[str, Any]:
        if op == "act":
            return LateHaltingRun(op, arguments).vjp(cotangents)
        return super().vjp(op, arguments, cotangents)
