"""One time step of each classic cell, forward and reverse mode.

A cell's ``step`` maps ``(params, state, x_t)`` to ``(new_state, y_t, cache)``
and its ``step_vjp`` maps ``(params, cache, d_new_state, d_y)`` to
``(d_state, d_x_t, d_params)``. Everything is float64; rows are the batch.
The reverse modes are written out from the forward equations, which are the
spec's (see ``rnnspec/ops/<op>.md``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .activations import ACTIVATIONS, Array, sigmoid

__all__ = ["Cell", "GRUCell", "LSTMCell", "RNNCell", "make_cell"]

Params = Mapping[str, Array]
State = dict[str, Array]
Cache = dict[str, Any]


class Cell(Protocol):
    """The interface the sequence driver runs."""

    @property
    def state_names(self) -> tuple[str, ...]:
        """Names of the state entries, such as ``("h", "c")``."""

    def step(self, p: Params, state: State, x: Array) -> tuple[State, Array, Cache]: ...

    def step_vjp(
        self, p: Params, cache: Cache, d_state: State, d_y: Array
    ) -> tuple[State, Array, dict[str, Array]]: ...


def _input_grads(d_a: Array, x: Array, h: Array, p: Params) -> tuple[Array, Array, dict[str, Array]]:
    """Reverse mode of ``a = x W_ih^T + b_ih + h W_hh^T + b_hh``."""
    d_sum = d_a.sum(axis=0)
    grads = {"w_ih": d_a.T @ x, "w_hh": d_a.T @ h, "b_ih": d_sum, "b_hh": d_sum.copy()}
    return d_a @ p["w_ih"], d_a @ p["w_hh"], grads


@dataclass(frozen=True)
class RNNCell:
    """``h' = act(W_ih x + b_ih + W_hh h + b_hh)``."""

    activation: str = "tanh"
    state_names: tuple[str, ...] = ("h",)

    def step(self, p: Params, state: State, x: Array) -> tuple[State, Array, Cache]:
        h = state["h"]
        a = x @ p["w_ih"].T + p["b_ih"] + h @ p["w_hh"].T + p["b_hh"]
        fn, _ = ACTIVATIONS[self.activation]
        h_new = fn(a)
        return {"h": h_new}, h_new, {"x": x, "h": h, "a": a, "h_new": h_new}

    def step_vjp(self, p: Params, cache: Cache, d_state: State, d_y: Array) -> tuple[State, Array, dict[str, Array]]:
        _, grad = ACTIVATIONS[self.activation]
        d_a = (d_state["h"] + d_y) * grad(cache["a"], cache["h_new"])
        d_x, d_h, grads = _input_grads(d_a, cache["x"], cache["h"], p)
        return {"h": d_h}, d_x, grads


@dataclass(frozen=True)
class LSTMCell:
    """Gates i, f, g, o; ``c' = f c + i g``; ``h' = o tanh(c')``."""

    state_names: tuple[str, ...] = ("h", "c")

    def step(self, p: Params, state: State, x: Array) -> tuple[State, Array, Cache]:
        h, c = state["h"], state["c"]
        a = x @ p["w_ih"].T + p["b_ih"] + h @ p["w_hh"].T + p["b_hh"]
        ai, af, ag, ao = np.split(a, 4, axis=1)
        i, f, g, o = sigmoid(ai), sigmoid(af), np.tanh(ag), sigmoid(ao)
        c_new = f * c + i * g
        tc = np.tanh(c_new)
        h_new = o * tc
        cache = {"x": x, "h": h, "c": c, "i": i, "f": f, "g": g, "o": o, "tc": tc}
        return {"h": h_new, "c": c_new}, h_new, cache

    def step_vjp(self, p: Params, cache: Cache, d_state: State, d_y: Array) -> tuple[State, Array, dict[str, Array]]:
        i, f, g, o, tc = cache["i"], cache["f"], cache["g"], cache["o"], cache["tc"]
        d_h = d_state["h"] + d_y
        d_c = d_state["c"] + d_h * o * (1.0 - tc * tc)
        d_a = np.concatenate(
            [
                d_c * g * i * (1.0 - i),
                d_c * cache["c"] * f * (1.0 - f),
                d_c * i * (1.0 - g * g),
                d_h * tc * o * (1.0 - o),
            ],
            axis=1,
        )
        d_x, d_h_prev, grads = _input_grads(d_a, cache["x"], cache["h"], p)
        return {"h": d_h_prev, "c": d_c * f}, d_x, grads


@dataclass(frozen=True)
class GRUCell:
    """Gates r, z, n; ``h' = (1 - z) n + z h``; reset after or before the matmul."""

    reset_after: bool = True
    state_names: tuple[str, ...] = ("h",)

    def step(self, p: Params, state: State, x: Array) -> tuple[State, Array, Cache]:
        h = state["h"]
        hidden = h.shape[1]
        gi = x @ p["w_ih"].T + p["b_ih"]
        w_hh, b_hh = p["w_hh"], p["b_hh"]
        gh = h @ w_hh[: 2 * hidden].T + b_hh[: 2 * hidden]
        r = sigmoid(gi[:, :hidden] + gh[:, :hidden])
        z = sigmoid(gi[:, hidden : 2 * hidden] + gh[:, hidden:])
        if self.reset_after:
            hn = h @ w_hh[2 * hidden :].T + b_hh[2 * hidden :]
            n = np.tanh(gi[:, 2 * hidden :] + r * hn)
        else:
            hn = (r * h) @ w_hh[2 * hidden :].T + b_hh[2 * hidden :]
            n = np.tanh(gi[:, 2 * hidden :] + hn)
        h_new = (1.0 - z) * n + z * h
        return {"h": h_new}, h_new, {"x": x, "h": h, "r": r, "z": z, "n": n, "hn": hn}

    def step_vjp(self, p: Params, cache: Cache, d_state: State, d_y: Array) -> tuple[State, Array, dict[str, Array]]:
        x, h, r, z, n, hn = (cache[k] for k in ("x", "h", "r", "z", "n", "hn"))
        hidden = h.shape[1]
        w_hn = p["w_hh"][2 * hidden :]
        d_hnew = d_state["h"] + d_y
        d_an = d_hnew * (1.0 - z) * (1.0 - n * n)
        d_az = d_hnew * (h - n) * z * (1.0 - z)
        d_h = d_hnew * z
        if self.reset_after:
            d_hn = d_an * r  # cotangent of W_hn h + b_hn
            d_r = d_an * hn
            d_h = d_h + d_hn @ w_hn
            d_w_hn = d_hn.T @ h
        else:
            d_hn = d_an  # cotangent of W_hn (r h) + b_hn
            d_rh = d_an @ w_hn
            d_r = d_rh * h
            d_h = d_h + d_rh * r
            d_w_hn = d_hn.T @ (r * h)
        d_ar = d_r * r * (1.0 - r)
        d_gi = np.concatenate([d_ar, d_az, d_an], axis=1)
        d_gh_rz = np.concatenate([d_ar, d_az], axis=1)
        d_h = d_h + d_gh_rz @ p["w_hh"][: 2 * hidden]
        grads = {
            "w_ih": d_gi.T @ x,
            "w_hh": np.concatenate([d_gh_rz.T @ h, d_w_hn], axis=0),
            "b_ih": d_gi.sum(axis=0),
            "b_hh": np.concatenate([d_gh_rz.sum(axis=0), d_hn.sum(axis=0)]),
        }
        return {"h": d_h}, d_gi @ p["w_ih"], grads


def make_cell(op: str, options: Mapping[str, Any]) -> Cell:
    """The cell of a classic op with its options."""
    if op == "rnn":
        return RNNCell(activation=options["activation"])
    if op == "lstm":
        return LSTMCell()
    if op == "gru":
        return GRUCell(reset_after=options["reset_after"])
    raise KeyError(op)
