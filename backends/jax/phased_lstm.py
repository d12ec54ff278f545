"""phased_lstm: the time gate of every step at once, then the gated LSTM cell in the masked ``lax.scan``.

The gate ``k`` (batch, time, H) reads only the timestamps and the layer's
``tau``, ``s`` and ``r_on``: it is computed over the whole sequence before the
scan, which reads it time-major beside the input projection. The floor modulo
is written ``a - tau * floor(a / tau)`` and the branches are selected by
``jnp.where`` on the spec's comparisons, so that ``jax.vjp``'s derivative is the
spec's convention (the floor a constant; at a kink, the selected branch's).
The timestamps are data (``lax.stop_gradient``): no gradient reaches them.
Dropout: :func:`~rnnspec.backends.common.state.run_layers` multiplies layer k > 0's
input by its ``dropout_mask``; each layer's recurrent product reads ``h * recurrent_mask``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from rnnspec.backends.common.ops import SequenceCall
from rnnspec.backends.common.state import LayerFn, run_layers
from rnnspec.results import SequenceResult

from .paths import record_path
from .sequence import ARRAY_OPS, Lengths, State, scan, time_major

__all__ = ["run", "time_gate"]


def time_gate(timestamps: jax.Array, tau: jax.Array, s: jax.Array, r_on: jax.Array, leak: float) -> jax.Array:
    """The openness ``k`` (batch, time, H) of each unit at each step, from ``timestamps`` (batch, time)."""
    shifted = lax.stop_gradient(timestamps)[:, :, None] - s
    phase = (shifted - tau * jnp.floor(shifted / tau)) / tau
    rising = 2.0 * phase / r_on
    return jnp.where(phase < r_on / 2, rising, jnp.where(phase < r_on, 2.0 - rising, leak * phase))


def _layer(
    p: Mapping[str, jax.Array],
    leak: float,
    peepholes: bool,
    timestamps: jax.Array,
    recurrent_mask: jax.Array | None = None,
) -> LayerFn:
    """A Phased LSTM layer; ``timestamps`` aligned with the (possibly reversed) time axis it sees.

    Under recurrent dropout (``recurrent_mask``, ``(batch, H)``) the recurrent product reads ``h * mask``, the
    time gate's mix ``h``."""

    def run(inp: jax.Array, state: State, lengths: Lengths) -> tuple[jax.Array, State]:
        k = time_major(time_gate(timestamps, p["tau"], p["s"], p["r_on"], leak))
        gi = jnp.einsum("tbi,gi->tbg", time_major(inp), p["w_ih"], precision=lax.Precision.HIGHEST) + p["b_ih"]
        w_hh_t, b_hh = p["w_hh"].T, p["b_hh"]
        peep = jnp.split(p["w_peephole"], 3) if peepholes else None

        def step(s: State, xs: Sequence[jax.Array]) -> State:
            gi_t, k_t = xs
            h, c = s["h"], s["c"]
            hm = h if recurrent_mask is None else h * recurrent_mask
            a = gi_t + jnp.dot(hm, w_hh_t, precision=lax.Precision.HIGHEST) + b_hh
            ai, af, ag, ao = jnp.split(a, 4, axis=1)
            if peep is not None:
                ai, af = ai + peep[0] * c, af + peep[1] * c
            c_cand = jax.nn.sigmoid(af) * c + jax.nn.sigmoid(ai) * jnp.tanh(ag)
            if peep is not None:
                ao = ao + peep[2] * c_cand
            h_cand = jax.nn.sigmoid(ao) * jnp.tanh(c_cand)
            return {"h": k_t * h_cand + (1.0 - k_t) * h, "c": k_t * c_cand + (1.0 - k_t) * c}

        return scan(step, [gi, k], state, lengths.valid(), time_major_inputs=True)

    return run


def run(call: SequenceCall) -> SequenceResult:
    """Phased LSTM over a stack of layers (with or without peepholes)."""
    record_path(call.op, "plain")
    leak, peepholes = float(call.options["leak"]), bool(call.options["peepholes"])
    # run_layers multiplies layer k > 0's input by its dropout_mask; the layer takes its recurrent_mask.
    return run_layers(
        call,
        lambda p, arrays: _layer(p, leak, peepholes, arrays["timestamps"], arrays.get("recurrent_mask")),
        ARRAY_OPS,
    )
