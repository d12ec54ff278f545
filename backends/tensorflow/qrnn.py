"""qrnn: causal-convolution gates over ``[x_prev, x]``, then the pooling.

The convolution of window ``K`` is ``K`` matmuls of shifted slices (step t reads
``padded[:, t : t + K]``, a cross-correlation, not flipped), which also covers
``time = 0`` where a convolution op would reject an input shorter than its
kernel. Only the pooling, a linear recurrence (:func:`.recurrences.linear_scan`),
runs over time. The state is ``{"c", "x_prev"}`` as the reference's: ``x_prev``
is each row's last ``K-1`` inputs before its length, in processing order.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tensorflow as tf

from rnnspec.backends.common.ops import SequenceCall
from rnnspec.backends.common.state import LayerFn, run_layers
from rnnspec.ops import QRNN_GATES
from rnnspec.results import SequenceResult

from .cells import linear
from .recurrences import linear_scan
from .sequence import ARRAY_OPS, Lengths, State, dim

__all__ = ["run"]


def _gates(padded: tf.Tensor, w: tf.Tensor, b: tf.Tensor, time: Any) -> tf.Tensor:
    """``(batch, time, G*H)``: ``b + sum_k padded[:, t + k] @ w[:, :, k].T``."""
    window = int(w.shape[2])
    pre = b + linear(padded[:, :time], w[:, :, 0])
    for k in range(1, window):
        pre = pre + linear(padded[:, k : k + time], w[:, :, k])
    return pre


def _last_inputs(padded: tf.Tensor, lengths: tf.Tensor, window: int) -> tf.Tensor:
    """Each row's last K-1 inputs before its length: ``padded[b, L_b : L_b + K - 1]``."""
    index = lengths[:, None] + tf.range(window - 1)[None, :]
    return tf.gather(padded, index, axis=1, batch_dims=1)


def _layer(p: Mapping[str, tf.Tensor], mode: str, mask: tf.Tensor | None) -> LayerFn:
    """A QRNN layer; ``mask`` is the zoneout mask aligned with the (possibly reversed) time axis it sees."""

    def run(inp: tf.Tensor, state: State, lengths: Lengths) -> tuple[tf.Tensor, State]:
        w, b = p["w"], p["b"]
        window = int(w.shape[2])
        names = QRNN_GATES[mode]
        padded = tf.concat([state["x_prev"], inp], axis=1)
        pre = _gates(padded, w, b, dim(inp, 1))
        gates = dict(zip(names, tf.split(pre, len(names), axis=2), strict=True))
        z = tf.tanh(gates["z"])
        f = tf.sigmoid(gates["f"])
        # Zoneout, f + (1 - f) m: m = 0 leaves f exactly, m = 1 gives exactly 1.
        f_eff = f if mask is None else tf.where(mask == 1, tf.ones_like(f), f + (1.0 - f) * mask)
        drive = tf.sigmoid(gates["i"]) * z if "i" in gates else (1.0 - f_eff) * z
        valid = lengths.valid()
        c, final = linear_scan(f_eff, drive, state["c"], valid)
        h = tf.sigmoid(gates["o"]) * c if "o" in gates else c
        if "o" in gates and valid is not None:  # o is NaN where the padding is: never let o * 0 read it
            h = tf.where(valid[:, :, None], h, tf.zeros_like(h))
        return h, {"c": final, "x_prev": _last_inputs(padded, lengths.values, window)}

    return run


def run(call: SequenceCall) -> SequenceResult:
    """QRNN (f-, fo- or ifo-pooling, any window K) over a stack of layers."""
    mode = call.options["mode"]
    return run_layers(call, lambda p, arrays: _layer(p, mode, arrays["zoneout_mask"]), ARRAY_OPS)
