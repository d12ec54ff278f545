"""phased_lstm: the time gate of every step at once, then the gated LSTM cell in the masked time loop.

The gate ``k`` (batch, time, H) reads only the timestamps and the layer's
``tau``, ``s`` and ``r_on``: it is computed over the whole sequence before the
loop, which reads it beside the input projection. The floor modulo is written
``a - tau * floor(a / tau)`` (``tf.floor`` has no gradient) and the branches are
selected by ``tf.where`` on the spec's comparisons, so that ``tf.GradientTape``'s
derivative is the spec's convention (the floor a constant; at a kink, the
selected branch's). The timestamps are data (``tf.stop_gradient``): no gradient
reaches them. Dropout: :func:`~rnnspec.backends.common.state.run_layers` multiplies
layer k > 0's input by its ``dropout_mask``; each layer's recurrent product reads
``h * recurrent_mask``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import tensorflow as tf

from rnnspec.backends.common.ops import SequenceCall
from rnnspec.backends.common.state import LayerFn, run_layers
from rnnspec.results import SequenceResult

from .cells import linear
from .paths import record_path
from .sequence import ARRAY_OPS, Lengths, State, scan

__all__ = ["run", "time_gate"]


def time_gate(timestamps: tf.Tensor, tau: tf.Tensor, s: tf.Tensor, r_on: tf.Tensor, leak: float) -> tf.Tensor:
    """The openness ``k`` (batch, time, H) of each unit at each step, from ``timestamps`` (batch, time)."""
    shifted = tf.stop_gradient(timestamps)[:, :, None] - s
    phase = (shifted - tau * tf.floor(shifted / tau)) / tau
    rising = 2.0 * phase / r_on
    return tf.where(phase < r_on / 2, rising, tf.where(phase < r_on, 2.0 - rising, leak * phase))


def _layer(
    p: Mapping[str, tf.Tensor],
    leak: float,
    peepholes: bool,
    timestamps: tf.Tensor,
    recurrent_mask: tf.Tensor | None = None,
) -> LayerFn:
    """A Phased LSTM layer; ``timestamps`` aligned with the (possibly reversed) time axis it sees.

    Under recurrent dropout (``recurrent_mask``, ``(batch, H)``) the recurrent product reads ``h * mask``, the
    time gate's mix ``h``."""

    def run(inp: tf.Tensor, state: State, lengths: Lengths) -> tuple[tf.Tensor, State]:
        k = time_gate(timestamps, p["tau"], p["s"], p["r_on"], leak)
        gi = linear(inp, p["w_ih"], p["b_ih"])
        w_hh, b_hh = p["w_hh"], p["b_hh"]
        peep = tf.split(p["w_peephole"], 3) if peepholes else None
        hidden = int(w_hh.shape[1])

        def step(s: State, xs: Sequence[tf.Tensor], keep: tf.Tensor | None) -> tuple[State, list[tf.Tensor]]:
            gi_t, k_t = xs
            h, c = s["h"], s["c"]
            hm = h if recurrent_mask is None else h * recurrent_mask
            ai, af, ag, ao = tf.split(gi_t + linear(hm, w_hh, b_hh), 4, axis=1)
            if peep is not None:
                ai, af = ai + peep[0] * c, af + peep[1] * c
            c_cand = tf.sigmoid(af) * c + tf.sigmoid(ai) * tf.tanh(ag)
            if peep is not None:
                ao = ao + peep[2] * c_cand
            h_cand = tf.sigmoid(ao) * tf.tanh(c_cand)
            new = {"h": k_t * h_cand + (1.0 - k_t) * h, "c": k_t * c_cand + (1.0 - k_t) * c}
            return new, [new["h"]]

        (outputs,), final = scan(step, [gi, k], state, lengths.valid(), [(hidden,)])
        return outputs, final

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
