"""One time step of each classic cell, forward and reverse mode.

A cell's ``step`` maps ``(params, state, x_t)`` to ``(new_state, y_t, cache)``
and its ``step_vjp`` maps ``(params, cache, d_new_state, d_y)`` to
``(d_state, d_x_t, d_params)``. Everything is float64; rows are the batch.
The reverse modes are written out from the forward equations, which are the
spec's (see ``rnnspec/ops/<op>.md``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np

from .activations import ACTIVATIONS, Array, sigmoid

__all__ = ["Cell", "GRUCell", "LSTMCell", "RNNCell", "make_cell", "masked", "with_recurrent_mask"]

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


def masked(h: Array, mask: Array | None) -> Array:
    """``h * mask``, the state a recurrent product reads under recurrent dropout (``h`` itself without one)."""
    return h if mask is None else h * mask


def with_recurrent_mask(cell: Any, mask: Array | None) -> Any:
    """``cell`` whose recurrent product reads ``h_{t-1} * mask`` (the cell itself for None)."""
    return cell if mask is None else replace(cell, recurrent_mask=mask)


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
    #: Recurrent dropout: the recurrent product reads ``h * recurrent_mask`` (batch, H); None: ``h``.
    recurrent_mask: Array | None = None

    def step(self, p: Params, state: State, x: Array) -> tuple[State, Array, Cache]:
        h = masked(state["h"], self.recurrent_mask)
        a = x @ p["w_ih"].T + p["b_ih"] + h @ p["w_hh"].T + p["b_hh"]
        fn, _ = ACTIVATIONS[self.activation]
        h_new = fn(a)
        return {"h": h_new}, h_new, {"x": x, "h": h, "a": a, "h_new": h_new}

    def step_vjp(self, p: Params, cache: Cache, d_state: State, d_y: Array) -> tuple[State, Array, dict[str, Array]]:
        _, grad = ACTIVATIONS[self.activation]
        d_a = (d_state["h"] + d_y) * grad(cache["a"], cache["h_new"])
        d_x, d_h, grads = _input_grads(d_a, cache["x"], cache["h"], p)
        return {"h": masked(d_h, self.recurrent_mask)}, d_x, grads


@dataclass(frozen=True)
class LSTMCell:
    """Gates i, f, g, o; ``c' = f c + i g``; ``h' = o tanh(c')``."""

    state_names: tuple[str, ...] = ("h", "c")
    #: Recurrent dropout: the recurrent product reads ``h * recurrent_mask`` (batch, H); None: ``h``.
    recurrent_mask: Array | None = None

    def step(self, p: Params, state: State, x: Array) -> tuple[State, Array, Cache]:
        h, c = masked(state["h"], self.recurrent_mask), state["c"]
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
        return {"h": masked(d_h_prev, self.recurrent_mask), "c": d_c * f}, d_x, grads


@dataclass(frozen=True)
class GRUCell:
    """Gates r, z, n; ``h' = (1 - z) n + z h``; reset after or before the matmul."""

    reset_after: bool = True
    state_names: tuple[str, ...] = ("h",)
    #: Recurrent dropout: the recurrent products read ``h * recurrent_mask`` (batch, H), the update
    #: ``z * h`` reads ``h``; None: ``h`` everywhere.
    recurrent_mask: Array | None = None

    def step(self, p: Params, state: State, x: Array) -> tuple[State, Array, Cache]:
        h = state["h"]
        hm = masked(h, self.recurrent_mask)
        hidden = h.shape[1]
        gi = x @ p["w_ih"].T + p["b_ih"]
        w_hh, b_hh = p["w_hh"], p["b_hh"]
        gh = hm @ w_hh[: 2 * hidden].T + b_hh[: 2 * hidden]
        r = sigmoid(gi[:, :hidden] + gh[:, :hidden])
        z = sigmoid(gi[:, hidden : 2 * hidden] + gh[:, hidden:])
        if self.reset_after:
            hn = hm @ w_hh[2 * hidden :].T + b_hh[2 * hidden :]
            n = np.tanh(gi[:, 2 * hidden :] + r * hn)
        else:
            hn = (r * hm) @ w_hh[2 * hidden :].T + b_hh[2 * hidden :]
            n = np.tanh(gi[:, 2 * hidden :] + hn)
        h_new = (1.0 - z) * n + z * h
        return {"h": h_new}, h_new, {"x": x, "h": h, "hm": hm, "r": r, "z": z, "n": n, "hn": hn}

    def step_vjp(self, p: Params, cache: Cache, d_state: State, d_y: Array) -> tuple[State, Array, dict[str, Array]]:
        x, h, hm, r, z, n, hn = (cache[k] for k in ("x", "h", "hm", "r", "z", "n", "hn"))
        hidden = h.shape[1]
        w_hn = p["w_hh"][2 * hidden :]
        d_hnew = d_state["h"] + d_y
        d_an = d_hnew * (1.0 - z) * (1.0 - n * n)
        d_az = d_hnew * (h - n) * z * (1.0 - z)
        if self.reset_after:
            d_hn = d_an * r  # cotangent of W_hn hm + b_hn
            d_r = d_an * hn
            d_hm = d_hn @ w_hn
            d_w_hn = d_hn.T @ hm
        else:
            d_hn = d_an  # cotangent of W_hn (r hm) + b_hn
            d_rh = d_an @ w_hn
            d_r = d_rh * hm
            d_hm = d_rh * r
            d_w_hn = d_hn.T @ (r * hm)
        d_ar = d_r * r * (1.0 - r)
        d_gi = np.concatenate([d_ar, d_az, d_an], axis=1)
        d_gh_rz = np.concatenate([d_ar, d_az], axis=1)
        d_hm = d_hm + d_gh_rz @ p["w_hh"][: 2 * hidden]
        d_h = d_hnew * z + masked(d_hm, self.recurrent_mask)
        grads = {
            "w_ih": d_gi.T @ x,
            "w_hh": np.concatenate([d_gh_rz.T @ hm, d_w_hn], axis=0),
            "b_ih": d_gi.sum(axis=0),
            "b_hh": np.concatenate([d_gh_rz.sum(axis=0), d_hn.sum(axis=0)]),
        }
        return {"h": d_h}, d_gi @ p["w_ih"], grads


def make_cell(op: str, options: Mapping[str, Any], recurrent_mask: Array | None = None) -> Cell:
    """The cell of a classic op with its options (and its recurrent dropout mask, if any)."""
    if op == "rnn":
        return RNNCell(activation=options["activation"], recurrent_mask=recurrent_mask)
    if op == "lstm":
        return LSTMCell(recurrent_mask=recurrent_mask)
    if op == "gru":
        return GRUCell(reset_after=options["reset_after"], recurrent_mask=recurrent_mask)
    raise KeyError(op)
