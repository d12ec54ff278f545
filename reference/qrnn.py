"""One QRNN layer: causal convolution gates, then pooling as a linear recurrence."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from rnnspec.ops import QRNN_GATES

from .activations import Array, sigmoid
from .cells import Params
from .independent import LinearCell
from .scan import scan, scan_vjp

__all__ = ["QRNNLayer", "causal_windows", "layer", "zoneout", "zoneout_vjp"]

_LINEAR = LinearCell()


def causal_windows(padded: Array, window: int) -> Array:
    """(batch, time, features, window) from ``padded`` = [x_prev, x]: entry k of step t is padded_{t+k}."""
    time = padded.shape[1] - (window - 1)
    return np.stack([padded[:, k : k + time] for k in range(window)], axis=-1)


def _last_inputs(padded: Array, lengths: np.ndarray, window: int) -> Array:
    """Each row's last K-1 inputs before its length: padded[b, L_b : L_b + K - 1]."""
    index = lengths[:, None] + np.arange(window - 1)[None, :]
    return np.take_along_axis(padded, index[:, :, None], axis=1)


def zoneout(f: Array, mask: Array) -> Array:
    """The forget gate under the zoneout mask ``m`` in [0, 1]: ``f + (1 - f) * m``, exactly 1 where ``m = 1``.

    ``m = 0`` leaves ``f`` as it is (``(1 - f) * 0`` adds a zero) and ``m = 1`` gives 1, where the sum could
    round; ``m = p`` is zoneout's expectation ``1 - (1 - f)(1 - p)``, the evaluation rule.
    """
    return np.where(mask == 1, 1.0, f + (1.0 - f) * mask)


def zoneout_vjp(d_f_eff: Array, mask: Array) -> Array:
    """The cotangent of ``f`` from that of :func:`zoneout`'s result: ``(1 - m)`` times it, zero where ``m = 1``."""
    return np.where(mask == 1, 0.0, d_f_eff * (1.0 - mask))


@dataclass(frozen=True)
class QRNNLayer:
    """A QRNN layer with params ``w (G*H, I, K)``, ``b (G*H,)``; ``mask`` is the zoneout mask
    already aligned with the (possibly reversed) time axis the layer sees."""

    p: Params
    mode: str
    mask: Array | None

    def forward(self, inp: Array, state: dict[str, Array], valid: np.ndarray) -> tuple[Array, dict[str, Array], Any]:
        w = self.p["w"]
        window = w.shape[2]
        padded = np.concatenate([state["x_prev"], inp], axis=1)
        windows = causal_windows(padded, window)
        lengths = valid.sum(axis=1)
        pre = np.einsum("btik,gik->btg", windows, w) + self.p["b"]
        gates = dict(zip(QRNN_GATES[self.mode], np.split(pre, len(QRNN_GATES[self.mode]), axis=2), strict=True))
        z = np.tanh(gates["z"])
        f = sigmoid(gates["f"])
        f_eff = f if self.mask is None else zoneout(f, self.mask)
        i = sigmoid(gates["i"]) if "i" in gates else None
        o = sigmoid(gates["o"]) if "o" in gates else None
        b = i * z if i is not None else (1.0 - f_eff) * z
        c, final, tape = scan(_LINEAR, {}, np.concatenate([f_eff, b], axis=2), {"h": state["c"]}, valid)
        # Padded steps output 0 even where o, which reads the padding, is not finite.
        h = c if o is None else np.where(valid[..., None], o * c, 0.0)
        saved = {"windows": windows, "z": z, "f": f, "f_eff": f_eff, "i": i, "o": o, "c": c}
        final_state = {"c": final["h"], "x_prev": _last_inputs(padded, lengths, window)}
        return h, final_state, (saved, tape, valid)

    def vjp(
        self, tape: Any, d_out: Array, d_final: dict[str, Array]
    ) -> tuple[Array, dict[str, Array], dict[str, Array]]:
        saved, scan_tape, valid = tape
        z, f, f_eff, i, o, c = (saved[k] for k in ("z", "f", "f_eff", "i", "o", "c"))
        d_c = d_out if o is None else np.where(valid[..., None], d_out * o, 0.0)
        d_ab, _, d_state = scan_vjp(
            _LINEAR, {}, scan_tape, valid, (*c.shape[:2], 2 * c.shape[2]), d_c, {"h": d_final["c"]}
        )
        d_a, d_b = np.split(d_ab, 2, axis=2)
        d_gates: dict[str, Array] = {}
        if i is None:
            d_f_eff = d_a - d_b * z
            d_z = d_b * (1.0 - f_eff)
        else:
            d_f_eff = d_a
            d_z = d_b * i
            d_gates["i"] = d_b * z * i * (1.0 - i)
        d_f = d_f_eff if self.mask is None else zoneout_vjp(d_f_eff, self.mask)
        d_gates["z"] = d_z * (1.0 - z * z)
        d_gates["f"] = d_f * f * (1.0 - f)
        if o is not None:
            d_gates["o"] = np.where(valid[..., None], d_out * c * o * (1.0 - o), 0.0)
        d_pre = np.concatenate([d_gates[g] for g in QRNN_GATES[self.mode]], axis=2)
        w = self.p["w"]
        grads = {"w": np.einsum("btg,btik->gik", d_pre, saved["windows"]), "b": d_pre.sum(axis=(0, 1))}
        d_windows = np.einsum("btg,gik->btik", d_pre, w)
        window, time = w.shape[2], d_out.shape[1]
        d_padded = np.zeros((d_out.shape[0], time + window - 1, w.shape[1]))
        for k in range(window):
            d_padded[:, k : k + time] += d_windows[..., k]
        index = valid.sum(axis=1)[:, None] + np.arange(window - 1)[None, :]
        np.add.at(d_padded, (np.arange(d_out.shape[0])[:, None], index), d_final["x_prev"])
        return d_padded[:, window - 1 :], grads, {"c": d_state["h"], "x_prev": d_padded[:, : window - 1]}


def layer(op: str, p: Params, options: Mapping[str, Any], arrays: Mapping[str, Array | None]) -> QRNNLayer:
    """One layer of qrnn with float64 params ``p``, the call's mode and the layer's zoneout mask."""
    return QRNNLayer(p, options["mode"], arrays["zoneout_mask"])
