"""qrnn: causal-convolution gates over ``[x_prev, x]``, then the pooling.

The gates are one contraction over the ``K`` shifted views of the padded input
(a loop over the window, not over time); only the pooling, a linear recurrence
(:func:`.recurrences.linear_scan`), runs over time. The state is
``{"c", "x_prev"}`` as the reference's: ``x_prev`` is each row's last ``K-1``
inputs before its length, in processing order.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
from jax import lax

from rnnspec.backends.common.ops import SequenceCall
from rnnspec.backends.common.state import LayerFn, run_layers
from rnnspec.ops import QRNN_GATES
from rnnspec.results import SequenceResult

from .recurrences import linear_scan
from .sequence import ARRAY_OPS, Lengths, State

__all__ = ["run"]


def _gates(padded: jax.Array, w: jax.Array, b: jax.Array, time: int) -> jax.Array:
    """``(batch, time, G*H)``: step t reads ``padded[:, t : t + K]`` (a cross-correlation, not flipped)."""
    window = w.shape[2]
    views = jnp.stack([padded[:, k : k + time] for k in range(window)], axis=-1)  # (batch, time, I, K)
    return jnp.einsum("btik,gik->btg", views, w, precision=lax.Precision.HIGHEST) + b


def _last_inputs(padded: jax.Array, lengths: jax.Array, window: int) -> jax.Array:
    """Each row's last K-1 inputs before its length: ``padded[b, L_b : L_b + K - 1]``."""
    index = lengths[:, None] + jnp.arange(window - 1, dtype=lengths.dtype)[None, :]
    return jnp.take_along_axis(padded, index[:, :, None], axis=1)


def _layer(p: Mapping[str, jax.Array], mode: str, mask: jax.Array | None) -> LayerFn:
    """A QRNN layer; ``mask`` is the zoneout mask aligned with the (possibly reversed) time axis it sees."""

    def run(inp: jax.Array, state: State, lengths: Lengths) -> tuple[jax.Array, State]:
        w, b = p["w"], p["b"]
        batch, time = inp.shape[:2]
        window = w.shape[2]
        names = QRNN_GATES[mode]
        padded = jnp.concatenate([state["x_prev"], inp], axis=1)
        pre = _gates(padded, w, b, time)
        gates = dict(zip(names, jnp.split(pre, len(names), axis=2), strict=True))
        z = jnp.tanh(gates["z"])
        f = jax.nn.sigmoid(gates["f"])
        # Zoneout, f + (1 - f) m: m = 0 leaves f exactly, m = 1 gives exactly 1.
        f_eff = f if mask is None else jnp.where(mask == 1, jnp.ones((), f.dtype), f + (1.0 - f) * mask)
        drive = jax.nn.sigmoid(gates["i"]) * z if "i" in gates else (1.0 - f_eff) * z
        valid = lengths.valid()
        c, final = linear_scan(f_eff, drive, state["c"], valid, op="qrnn")
        h = jax.nn.sigmoid(gates["o"]) * c if "o" in gates else c
        if "o" in gates and valid is not None:  # o is NaN where the padding is: never let o * 0 read it
            h = jnp.where(valid[:, :, None], h, jnp.zeros((), h.dtype))
        return h, {"c": final, "x_prev": _last_inputs(padded, lengths.or_full(batch), window)}

    return run


def run(call: SequenceCall) -> SequenceResult:
    """QRNN (f-, fo- or ifo-pooling, any window K) over a stack of layers."""
    mode = call.options["mode"]
    return run_layers(call, lambda p, arrays: _layer(p, mode, arrays["zoneout_mask"]), ARRAY_OPS)
