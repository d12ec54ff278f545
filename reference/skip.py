"""Skip RNN's state-update gate over a stack of base cells, forward and reverse mode.

Time is the outer loop and layers the inner one, since all layers share the
one gate that the top layer's candidate drives. Every step computes every
candidate (the straight-through gradient needs it); skipping work is a
backend's inference fast path, never the reference's business.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rnnspec.ops import OPS
from rnnspec.results import SkipResult

from .activations import Array, sigmoid
from .cells import Cell, make_cell
from .cotangents import read_sequence_cotangents
from .precision import round_to
from .stack import full_lengths, reverse_valid

__all__ = ["SkipRun", "binarize"]

_GATE = ("update_prob", "cum_update_prob")


def binarize(u: Array) -> Array:
    """u >= 0.5 -> 1 else 0: ties go up, unlike round-half-to-even."""
    return (u >= 0.5).astype(np.float64)


def _f64(a: Any) -> Array:
    return np.asarray(a, dtype=np.float64)


class SkipRun:
    """A run of ``skip_<base>`` on validated, normalised arguments."""

    def __init__(self, op: str, args: Mapping[str, Any]) -> None:
        base = OPS[op].base
        assert base is not None, f"{op} wraps no base op"
        x = args["x"]
        batch, time, _ = x.shape
        self.op = op
        self.dtype = x.dtype
        self.reverse = args["reverse"]
        options = {k: v for k, v in args.items() if k not in ("x", "params", "lengths", "initial_state", "reverse")}
        self.params = [{k: _f64(v) for k, v in p.items()} for p in args["params"]]
        recurrent = args.get("recurrent_mask") or [None] * len(self.params)
        # One cell per layer: each reads its own recurrent dropout mask.
        self.cells: list[Cell] = [make_cell(base, options, None if m is None else _f64(m)) for m in recurrent]
        self.cell = self.cells[0]
        self.lengths = full_lengths(args["lengths"], batch, time)
        # Layer k > 0 reads the candidate of layer k - 1 times the dropout mask of the boundary between them.
        between = args.get("dropout_mask") or ()
        self.drop: list[Array | None] = [None] + [
            reverse_valid(_f64(m), self.lengths) if self.reverse else _f64(m) for m in between
        ]
        self.drop += [None] * (len(self.params) - len(self.drop))
        self.valid = np.arange(time)[None, :] < self.lengths[:, None]
        self.learnt_initial = args["initial_state"] is None
        states = self._initial_state(args["initial_state"], batch)
        self.initial = states
        inp = reverse_valid(_f64(x), self.lengths) if self.reverse else _f64(x)
        self.x_shape = inp.shape
        outputs = np.zeros((batch, time, self.params[-1]["w_hh"].shape[1]))
        gate = np.zeros((batch, time))
        prob = np.zeros((batch, time))
        self.tape: list[dict[str, Any]] = []
        for t in range(time):
            states, y, u, u_tilde, record = self._step(states, inp[:, t], t)
            keep = self.valid[:, t, None]
            outputs[:, t] = np.where(keep, y, 0.0)
            gate[:, t] = np.where(keep[:, 0], u[:, 0], 0.0)
            prob[:, t] = np.where(keep[:, 0], u_tilde[:, 0], 0.0)
            self.tape.append(record)
            states = [{k: np.where(keep, v, record["prev"][j][k]) for k, v in s.items()} for j, s in enumerate(states)]
        if self.reverse:
            outputs, gate, prob = (reverse_valid(a, self.lengths) for a in (outputs, gate, prob))
        self.outputs, self.update_gate, self.update_prob, self.state = outputs, gate, prob, states

    def _initial_state(self, given: Sequence[Mapping[str, Any]] | None, batch: int) -> list[dict[str, Array]]:
        if given is not None:
            return [{k: _f64(v) for k, v in s.items()} for s in given]
        states = []
        for p in self.params:
            hidden = p["w_hh"].shape[1]
            # h0 / c0, when given, are the trainable initial state of the authors' model.
            s = {
                n: np.broadcast_to(p.get(f"{n}0", np.zeros(hidden)), (batch, hidden)).copy()
                for n in self.cell.state_names
            }
            states.append(s)
        states[-1]["update_prob"] = np.ones((batch, 1))  # u~_1 = 1: the first step always updates
        states[-1]["cum_update_prob"] = np.zeros((batch, 1))
        return states

    def _step(
        self, states: list[dict[str, Array]], x: Array, t: int
    ) -> tuple[list[dict[str, Array]], Array, Array, Array, dict[str, Any]]:
        top = self.params[-1]
        prob_prev, cum_prev = states[-1]["update_prob"], states[-1]["cum_update_prob"]
        u_tilde = cum_prev + np.minimum(prob_prev, 1.0 - cum_prev)
        u = binarize(u_tilde)
        cands, caches = [], []
        inp = x
        for cell, p, s, drop in zip(self.cells, self.params, states, self.drop, strict=True):
            if drop is not None:
                inp = inp * drop[:, t]
            cand, inp, cache = cell.step(p, {n: s[n] for n in cell.state_names}, inp)
            cands.append(cand)
            caches.append(cache)
        g = cands[-1]["c" if "c" in cands[-1] else "h"]
        du = sigmoid(g @ top["w_gate"].T + top["b_gate"])
        new = [
            {n: u * c[n] + (1.0 - u) * s[n] for n in self.cell.state_names} for c, s in zip(cands, states, strict=True)
        ]
        new[-1]["update_prob"] = u * du + (1.0 - u) * prob_prev
        new[-1]["cum_update_prob"] = (1.0 - u) * u_tilde
        record = {"prev": states, "cands": cands, "caches": caches, "u": u, "u_tilde": u_tilde, "du": du, "g": g}
        return new, new[-1]["h"], u, u_tilde, record

    def margin(self) -> float:
        """The smallest distance of any valid step's u~ from the threshold 0.5."""
        gaps = np.abs(self.update_prob - 0.5)[self.valid]  # a row's valid steps are its first L in either order
        return float(gaps.min()) if gaps.size else float("inf")

    def result(self) -> SkipResult:
        """The result, rounded to the input dtype."""
        cast = self.dtype
        state = round_to(tuple(self.state), cast)
        return SkipResult(
            round_to(self.outputs, cast), state, round_to(self.update_gate, cast), round_to(self.update_prob, cast)
        )

    def vjp(self, cotangents: Mapping[str, Any]) -> dict[str, Any]:
        """Cotangents of x, params and initial state from those of the result fields."""
        fields = ("outputs", "state", "update_gate", "update_prob")
        ct = read_sequence_cotangents(self.op, cotangents, fields, self.outputs, self.state)
        d_out, d_gate, d_prob = ct["outputs"], ct["update_gate"], ct["update_prob"]
        if self.reverse:
            d_out, d_gate, d_prob = (reverse_valid(a, self.lengths) for a in (d_out, d_gate, d_prob))
        d_state: list[dict[str, Array]] = [dict(s) for s in ct["state"]]
        d_params = [{k: np.zeros_like(v) for k, v in p.items()} for p in self.params]
        d_x = np.zeros(self.x_shape)
        names = self.cell.state_names
        top = self.params[-1]
        for t in reversed(range(self.x_shape[1])):
            r = self.tape[t]
            keep = self.valid[:, t, None]
            d_new = [{k: np.where(keep, v, 0.0) for k, v in s.items()} for s in d_state]
            frozen = [{k: np.where(keep, 0.0, v) for k, v in s.items()} for s in d_state]
            d_new[-1]["h"] = d_new[-1]["h"] + np.where(keep, d_out[:, t], 0.0)
            u, u_tilde, du = r["u"], r["u_tilde"], r["du"]
            prev, cands = r["prev"], r["cands"]
            d_prob_new, d_cum_new = d_new[-1]["update_prob"], d_new[-1]["cum_update_prob"]
            # d u: every mix s = u cand + (1 - u) s_prev, and the gate's own state updates.
            d_u = np.where(keep, d_gate[:, t, None], 0.0) + d_prob_new * (du - prev[-1]["update_prob"])
            d_u = d_u - d_cum_new * u_tilde
            for s_new, cand, s_prev in zip(d_new, cands, prev, strict=True):
                for n in names:
                    d_u = d_u + (s_new[n] * (cand[n] - s_prev[n])).sum(axis=1, keepdims=True)
            d_du = u * d_prob_new
            # straight-through: d u~ = d u, plus the direct paths of cum and of the update_prob field.
            d_u_tilde = d_u + d_cum_new * (1.0 - u) + np.where(keep, d_prob[:, t, None], 0.0)
            d_a = d_du * du * (1.0 - du)
            d_params[-1]["w_gate"] += d_a.T @ r["g"]
            d_params[-1]["b_gate"] += d_a.sum(axis=0)
            d_cands = [{n: u * s_new[n] for n in names} for s_new in d_new]
            g_name = "c" if "c" in names else "h"
            d_cands[-1][g_name] = d_cands[-1][g_name] + d_a @ top["w_gate"]
            d_prev = [{n: (1.0 - u) * s_new[n] for n in names} for s_new in d_new]
            d_inp = np.zeros_like(d_cands[-1]["h"])
            for k in reversed(range(len(self.params))):
                d_cell_prev, d_inp, grads = self.cells[k].step_vjp(self.params[k], r["caches"][k], d_cands[k], d_inp)
                drop = self.drop[k]
                if drop is not None:  # a constant: no gradient reaches it
                    d_inp = d_inp * drop[:, t]
                for n in names:
                    d_prev[k][n] = d_prev[k][n] + d_cell_prev[n]
                for name, g in grads.items():
                    d_params[k][name] += g
            d_x[:, t] = d_inp
            # u~ = cum + min(update_prob, 1 - cum); ties send the gradient to update_prob.
            to_prob = prev[-1]["update_prob"] <= 1.0 - prev[-1]["cum_update_prob"]
            d_prev[-1]["update_prob"] = (1.0 - u) * d_prob_new + np.where(to_prob, d_u_tilde, 0.0)
            d_prev[-1]["cum_update_prob"] = np.where(to_prob, d_u_tilde, 0.0)
            d_state = [{k: d_prev[j][k] + frozen[j][k] for k in d_state[j]} for j in range(len(d_state))]
        if self.reverse:
            d_x = reverse_valid(d_x, self.lengths)
        if self.learnt_initial:
            for p, d_p, d_s in zip(self.params, d_params, d_state, strict=True):
                for n in names:
                    if f"{n}0" in p:
                        d_p[f"{n}0"] = d_p[f"{n}0"] + d_s[n].sum(axis=0)
        cast = self.dtype
        return {
            "x": round_to(d_x, cast),
            "params": round_to(d_params, cast),
            "initial_state": round_to(tuple(d_state), cast),
        }
