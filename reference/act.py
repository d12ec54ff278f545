"""Adaptive Computation Time over one layer of a base cell, forward and reverse mode.

Each input step runs the cell repeatedly on ``[x_t, flag]`` until the halting
units reach ``1 - epsilon`` or ``max_steps``; rows halt independently. A NaN
halting unit halts its row at once, with a NaN remainder. Rows that
have halted keep being computed (with weight 0) while others ponder, which
keeps the arithmetic batched; their values never reach a result or a gradient.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from rnnspec.results import ACTResult

from .activations import Array, sigmoid
from .cells import Cell, make_cell, with_recurrent_mask
from .cotangents import read_sequence_cotangents
from .independent import IndRNNCell
from .precision import round_to
from .stack import full_lengths, reverse_valid

__all__ = ["ACTRun"]

_FIELDS = ("outputs", "state", "ponder_steps", "ponder_remainder", "ponder_cost")


def _f64(a: Any) -> Array:
    return np.asarray(a, dtype=np.float64)


def _cell(name: str) -> Cell:
    # The pondered cell runs with its own options at their defaults.
    defaults = {"activation": "tanh", "reset_after": True}
    return IndRNNCell() if name == "indrnn" else make_cell(name, defaults)


class ACTRun:
    """A run of ``act`` on validated, normalised arguments."""

    def __init__(self, op: str, args: Mapping[str, Any]) -> None:
        x = args["x"]
        batch, time, _ = x.shape
        self.op = op
        self.dtype = x.dtype
        self.reverse = args["reverse"]
        self.epsilon = float(args["epsilon"])
        self.max_steps = int(args["max_steps"])
        recurrent = args.get("recurrent_mask")
        # Recurrent dropout: every inner step's recurrent product reads the masked state.
        self.cell = with_recurrent_mask(_cell(args["cell"]), None if recurrent is None else _f64(recurrent[0]))
        (params,) = args["params"]
        self.p = {k: _f64(v) for k, v in params.items()}
        hidden = self.p["w_halt"].shape[1]
        self.lengths = full_lengths(args["lengths"], batch, time)
        self.valid = np.arange(time)[None, :] < self.lengths[:, None]
        if args["initial_state"] is None:
            state = {n: np.zeros((batch, hidden)) for n in self.cell.state_names}
        else:
            state = {k: _f64(v) for k, v in args["initial_state"][0].items()}
        inp = reverse_valid(_f64(x), self.lengths) if self.reverse else _f64(x)
        self.x_shape = inp.shape
        outputs = np.zeros((batch, time, hidden))
        fields = {k: np.zeros((batch, time)) for k in ("ponder_steps", "ponder_remainder")}
        self.tape: list[dict[str, Any]] = []
        for t in range(time):
            new, record = self._ponder(state, inp[:, t])
            keep = self.valid[:, t, None]
            state = {k: np.where(keep, new[k], state[k]) for k in state}
            outputs[:, t] = np.where(keep, new["h"], 0.0)
            fields["ponder_steps"][:, t] = np.where(keep[:, 0], record["steps"], 0.0)
            fields["ponder_remainder"][:, t] = np.where(keep[:, 0], record["remainder"], 0.0)
            self.tape.append(record)
        fields["ponder_cost"] = fields["ponder_steps"] + fields["ponder_remainder"]
        if self.reverse:
            outputs = reverse_valid(outputs, self.lengths)
            fields = {k: reverse_valid(v, self.lengths) for k, v in fields.items()}
        self.outputs, self.fields, self.state = outputs, fields, state

    def _ponder(self, state: dict[str, Array], x: Array) -> tuple[dict[str, Array], dict[str, Any]]:
        batch = x.shape[0]
        flag0, flag1 = np.zeros((batch, 1)), np.ones((batch, 1))
        total = np.zeros((batch, 1))  # sum of the halting units of the steps taken so far
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
            # "Not below" rather than ">=": a NaN halting sum halts the row at once, as the spec says,
            # where ">=" would never hold and the row would ponder max_steps.
            stop = active & (~(total + h < 1.0 - self.epsilon) | (n == self.max_steps))
            rest = np.where(np.isnan(h), h, 1.0 - total)  # R(t): NaN where the halting unit is NaN
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

    def margin(self) -> float:
        """The smallest distance of a halting sum from 1 - epsilon, over valid steps and the inner
        steps each row took (the decisions that fix N)."""
        gaps = [
            np.where(self.valid[:, t, None], rec["gap"], np.inf).min()
            for t, step in enumerate(self.tape)
            for rec in step["inner"]
        ]
        return float(min(gaps, default=np.inf))

    def result(self) -> ACTResult:
        """The result, rounded to the input dtype."""
        cast = self.dtype
        f = round_to(self.fields, cast)
        state = (round_to(self.state, cast),)
        return ACTResult(
            round_to(self.outputs, cast), state, f["ponder_steps"], f["ponder_remainder"], f["ponder_cost"]
        )

    def vjp(self, cotangents: Mapping[str, Any]) -> dict[str, Any]:
        """Cotangents of x, params and initial state from those of the result fields."""
        ct = read_sequence_cotangents(self.op, cotangents, _FIELDS, self.outputs, (self.state,))
        d_out, d_rem = ct["outputs"], ct["ponder_remainder"] + ct["ponder_cost"]  # N carries no gradient
        if self.reverse:
            d_out, d_rem = (reverse_valid(a, self.lengths) for a in (d_out, d_rem))
        d_state = dict(ct["state"][0])
        d_p = {k: np.zeros_like(v) for k, v in self.p.items()}
        d_x = np.zeros(self.x_shape)
        features = self.x_shape[2]
        for t in reversed(range(self.x_shape[1])):
            keep = self.valid[:, t, None]
            d_mean = {k: np.where(keep, v, 0.0) for k, v in d_state.items()}
            d_mean["h"] = d_mean["h"] + np.where(keep, d_out[:, t], 0.0)
            inner = self.tape[t]["inner"]
            # d weight^n = <d s_t, s^n>; the stopping step's weight is R, which also takes the field's cotangent.
            d_weight = [sum((d_mean[k] * rec["s"][k]).sum(axis=1, keepdims=True) for k in d_mean) for rec in inner]
            d_r = np.zeros_like(d_weight[0]) if inner else np.zeros((self.x_shape[0], 1))
            for rec, dw in zip(inner, d_weight, strict=True):
                d_r = np.where(rec["stop"], dw + np.where(keep, d_rem[:, t, None], 0.0), d_r)
            d_next = {k: np.zeros_like(v) for k, v in d_mean.items()}
            for rec, dw in zip(reversed(inner), reversed(d_weight), strict=True):
                before_stop = rec["active"] & ~rec["stop"]
                # p^n = h^n before the stop, and R = 1 - sum of those h^n: d h^n = d p^n - d R.
                d_h = np.where(before_stop, dw - d_r, 0.0)
                d_a = d_h * rec["h"] * (1.0 - rec["h"])
                d_p["w_halt"] += d_a.T @ rec["s"]["h"]
                d_p["b_halt"] += d_a.sum(axis=0)
                d_s = {k: d_next[k] + rec["weight"] * d_mean[k] for k in d_mean}
                d_s["h"] = d_s["h"] + d_a @ self.p["w_halt"]
                d_next, d_xin, grads = self.cell.step_vjp(self.p, rec["cache"], d_s, np.zeros_like(d_s["h"]))
                d_x[:, t] += d_xin[:, :features]
                for k, g in grads.items():
                    d_p[k] += g
            d_state = {k: d_next[k] + np.where(keep, 0.0, d_state[k]) for k in d_state}
        if self.reverse:
            d_x = reverse_valid(d_x, self.lengths)
        cast = self.dtype
        return {
            "x": round_to(d_x, cast),
            "params": [round_to(d_p, cast)],
            "initial_state": (round_to(d_state, cast),),
        }
