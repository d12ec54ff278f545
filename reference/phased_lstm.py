"""One Phased LSTM layer: the time gate of every step at once, then the gated LSTM cell over time.

The gate ``k`` (batch, time, H) depends on each step's timestamp and the layer's
``tau``, ``s``, ``r_on`` only, so it is computed for every step before the loop
and read by the cell as part of its per-step input ``[x_t, k_t]``; its reverse
mode takes the cotangent of ``k`` that the loop's reverse mode gives back. The
conventions at the gate's non-smooth points are the spec's
(``rnnspec/ops/phased_lstm.md``): the floor of the modulo is a constant, and at
a kink the branch the forward's comparisons select gives the derivative.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .activations import Array, sigmoid
from .cells import Cache, Params, State, _input_grads, masked
from .scan import scan, scan_vjp

__all__ = ["GateTape", "PhasedLSTMCell", "PhasedLSTMLayer", "layer", "time_gate", "time_gate_vjp"]

#: The parameters of the time gate, which the cell does not read.
GATE_PARAMS = ("tau", "s", "r_on")


@dataclass(frozen=True)
class GateTape:
    """What the time gate's reverse mode needs: the shifted times ``a = t - s``, the phases and branches."""

    shifted: Array
    phase: Array
    rising: np.ndarray
    falling: np.ndarray
    tau: Array
    r_on: Array
    leak: float


def time_gate(timestamps: Array, tau: Array, s: Array, r_on: Array, leak: float) -> tuple[Array, GateTape]:
    """The openness ``k`` (batch, time, H) of each unit at each step, and its tape.

    ``phi = ((t - s) mod tau) / tau`` with the floor modulo; ``k = 2 phi / r_on`` where
    ``phi < r_on / 2``, else ``2 - 2 phi / r_on`` where ``phi < r_on``, else ``leak * phi``.
    """
    shifted = timestamps[:, :, None] - s
    modulo = shifted - tau * np.floor(shifted / tau)
    phase = modulo / tau
    rising = phase < r_on / 2
    falling = ~rising & (phase < r_on)
    k = np.where(rising, 2.0 * phase / r_on, np.where(falling, 2.0 - 2.0 * phase / r_on, leak * phase))
    return k, GateTape(shifted, phase, rising, falling, tau, r_on, leak)


def time_gate_vjp(tape: GateTape, d_k: Array) -> dict[str, Array]:
    """Cotangents of ``tau``, ``s`` and ``r_on`` from that of ``k`` (none of the timestamps: they are data).

    ``d phi / d s = -1 / tau`` and ``d phi / d tau = -(t - s) / tau^2`` (the floor is a constant); each
    branch's own derivative where the comparisons selected it.
    """
    phase, tau, r_on = tape.phase, tape.tau, tape.r_on
    closed = ~(tape.rising | tape.falling)
    d_phase = d_k * np.where(tape.rising, 2.0 / r_on, np.where(tape.falling, -2.0 / r_on, tape.leak))
    d_r_on = d_k * np.where(tape.rising, -2.0 * phase / r_on**2, np.where(closed, 0.0, 2.0 * phase / r_on**2))
    return {
        "tau": (d_phase * -tape.shifted / tau**2).sum(axis=(0, 1)),
        "s": (d_phase * (-1.0 / tau)).sum(axis=(0, 1)),
        "r_on": d_r_on.sum(axis=(0, 1)),
    }


@dataclass(frozen=True)
class PhasedLSTMCell:
    """The LSTM candidate (with the paper's peepholes when on) mixed with the previous state by the gate.

    Its per-step input is ``[x_t, k_t]``: the layer's input and the gate's openness, side by side.
    """

    peepholes: bool = False
    state_names: tuple[str, ...] = ("h", "c")
    #: Recurrent dropout: the recurrent product reads ``h * recurrent_mask`` (batch, H), the gate's mix ``h``.
    recurrent_mask: Array | None = None

    def step(self, p: Params, state: State, x: Array) -> tuple[State, Array, Cache]:
        h, c = state["h"], state["c"]
        hidden = h.shape[1]
        inp, k = x[:, :-hidden], x[:, -hidden:]
        hm = masked(h, self.recurrent_mask)
        a = inp @ p["w_ih"].T + p["b_ih"] + hm @ p["w_hh"].T + p["b_hh"]
        ai, af, ag, ao = np.split(a, 4, axis=1)
        if self.peepholes:
            p_i, p_f, p_o = np.split(p["w_peephole"], 3)
            ai, af = ai + p_i * c, af + p_f * c
        i, f, g = sigmoid(ai), sigmoid(af), np.tanh(ag)
        c_cand = f * c + i * g
        if self.peepholes:
            ao = ao + p_o * c_cand
        o = sigmoid(ao)
        tc = np.tanh(c_cand)
        h_cand = o * tc
        c_new = k * c_cand + (1.0 - k) * c
        h_new = k * h_cand + (1.0 - k) * h
        cache = {"x": inp, "h": h, "hm": hm, "c": c, "k": k, "i": i, "f": f, "g": g, "o": o, "tc": tc, "c_cand": c_cand}
        return {"h": h_new, "c": c_new}, h_new, cache

    def step_vjp(self, p: Params, cache: Cache, d_state: State, d_y: Array) -> tuple[State, Array, dict[str, Array]]:
        h, c, k = cache["h"], cache["c"], cache["k"]
        i, f, g, o, tc, c_cand = (cache[n] for n in ("i", "f", "g", "o", "tc", "c_cand"))
        d_h_new = d_state["h"] + d_y
        d_c_new = d_state["c"]
        d_k = d_h_new * (o * tc - h) + d_c_new * (c_cand - c)
        d_h_cand = d_h_new * k
        d_ao = d_h_cand * tc * o * (1.0 - o)
        d_c_cand = d_c_new * k + d_h_cand * o * (1.0 - tc * tc)
        grads: dict[str, Array] = {}
        if self.peepholes:
            p_i, p_f, p_o = np.split(p["w_peephole"], 3)
            d_c_cand = d_c_cand + d_ao * p_o
        d_ai = d_c_cand * g * i * (1.0 - i)
        d_af = d_c_cand * c * f * (1.0 - f)
        d_ag = d_c_cand * i * (1.0 - g * g)
        d_c = d_c_new * (1.0 - k) + d_c_cand * f
        if self.peepholes:
            d_c = d_c + d_ai * p_i + d_af * p_f
            grads["w_peephole"] = np.concatenate(
                [(d_ai * c).sum(axis=0), (d_af * c).sum(axis=0), (d_ao * c_cand).sum(axis=0)]
            )
        d_a = np.concatenate([d_ai, d_af, d_ag, d_ao], axis=1)
        d_x, d_h, input_grads = _input_grads(d_a, cache["x"], cache["hm"], p)
        grads.update(input_grads)
        d_h_prev = masked(d_h, self.recurrent_mask) + d_h_new * (1.0 - k)
        return {"h": d_h_prev, "c": d_c}, np.concatenate([d_x, d_k], axis=1), grads


@dataclass(frozen=True)
class PhasedLSTMLayer:
    """A Phased LSTM layer with float64 params ``p``; ``timestamps`` (batch, time) already aligned with the
    (possibly reversed) time axis the layer sees, so that each step's gate reads that step's own timestamp."""

    p: Params
    leak: float
    peepholes: bool
    timestamps: Array
    recurrent_mask: Array | None = None

    @property
    def _cell(self) -> PhasedLSTMCell:
        return PhasedLSTMCell(self.peepholes, recurrent_mask=self.recurrent_mask)

    @property
    def _cell_params(self) -> dict[str, Array]:
        return {k: v for k, v in self.p.items() if k not in GATE_PARAMS}

    def forward(self, inp: Array, state: dict[str, Array], valid: np.ndarray) -> tuple[Array, dict[str, Array], Any]:
        p = self.p
        k, gate = time_gate(self.timestamps, p["tau"], p["s"], p["r_on"], self.leak)
        steps = np.concatenate([inp, k], axis=2)
        cell = self._cell
        out, final, tape = scan(cell, self._cell_params, steps, state, valid)
        return out, final, (tape, valid, steps.shape, gate)

    def vjp(
        self, tape: Any, d_out: Array, d_final: dict[str, Array]
    ) -> tuple[Array, dict[str, Array], dict[str, Array]]:
        caches, valid, shape, gate = tape
        cell = self._cell
        d_steps, d_params, d_state = scan_vjp(cell, self._cell_params, caches, valid, shape, d_out, d_final)
        hidden = self.p["tau"].shape[0]
        d_params.update(time_gate_vjp(gate, d_steps[:, :, shape[2] - hidden :]))
        return d_steps[:, :, : shape[2] - hidden], d_params, d_state


def layer(op: str, p: Params, options: Mapping[str, Any], arrays: Mapping[str, Array | None]) -> PhasedLSTMLayer:
    """One layer of phased_lstm with float64 params ``p``, the call's options and the layer's timestamps."""
    timestamps = arrays["timestamps"]
    assert timestamps is not None  # required: validated
    return PhasedLSTMLayer(
        p, float(options["leak"]), bool(options["peepholes"]), timestamps, arrays.get("recurrent_mask")
    )
