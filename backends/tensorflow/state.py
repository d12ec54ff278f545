"""The start state of a sequence op when the caller passes none."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf

from rnnspec.ops import OPS
from rnnspec.shapes import evaluate

__all__ = ["layer_dims", "start_state"]


def layer_dims(op: str, p: Mapping[str, tf.Tensor], options: Mapping[str, Any]) -> dict[str, int]:
    """A layer's sizes read off its params (static shapes): H, and I and K where the state needs them."""
    if op == "qrnn":
        blocks, inputs, window = (int(d) for d in p["w"].shape)
        return {"H": blocks // OPS["qrnn"].fixed_dims(options)["G"], "I": inputs, "K": window}
    if "w_hh" in p:
        return {"H": int(p["w_hh"].shape[1])}
    if "u" in p:
        return {"H": int(p["u"].shape[0])}
    return {"H": int(p["w_halt"].shape[1])}


def start_state(
    op: str, x: tf.Tensor, params: Sequence[Mapping[str, tf.Tensor]], options: Mapping[str, Any]
) -> tuple[dict[str, tf.Tensor], ...]:
    """Zeros, except: the skip ops start from the learnt ``h0``/``c0`` when present, with
    ``update_prob = 1`` and ``cum_update_prob = 0`` (the first step always updates).

    Built from the params, so a ``GradientTape`` reaches ``h0``/``c0`` through it.
    """
    spec = OPS[op]
    batch = x.shape[0] if x.shape[0] is not None else tf.shape(x)[0]
    states = []
    for k, p in enumerate(params):
        dims = layer_dims(op, p, options)
        layer = {}
        for s in spec.layer_state(top=k == len(params) - 1, options=options):
            shape = tf.stack([batch, *(evaluate(e, dims) for e in s.shape)])
            if s.name == "update_prob":
                layer[s.name] = tf.ones(shape, x.dtype)
            elif f"{s.name}0" in p:
                layer[s.name] = tf.broadcast_to(tf.convert_to_tensor(p[f"{s.name}0"]), shape)
            else:
                layer[s.name] = tf.zeros(shape, x.dtype)
        states.append(layer)
    return tuple(states)
