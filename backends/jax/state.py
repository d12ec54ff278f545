"""The start state of a sequence op when the caller passes none."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from rnnspec.ops import OPS
from rnnspec.shapes import evaluate

__all__ = ["layer_dims", "start_state"]


def layer_dims(op: str, p: Mapping[str, jax.Array], options: Mapping[str, Any]) -> dict[str, int]:
    """A layer's sizes read off its params: H, and I and K where the state needs them."""
    if op == "qrnn":
        blocks, inputs, window = p["w"].shape
        return {"H": int(blocks) // OPS["qrnn"].fixed_dims(options)["G"], "I": int(inputs), "K": int(window)}
    if "w_hh" in p:
        return {"H": int(p["w_hh"].shape[1])}
    if "u" in p:
        return {"H": int(p["u"].shape[0])}
    return {"H": int(p["w_halt"].shape[1])}


def start_state(
    op: str, x: jax.Array, params: Sequence[Mapping[str, jax.Array]], options: Mapping[str, Any]
) -> tuple[dict[str, jax.Array], ...]:
    """Zeros, except: the skip ops start from the learnt ``h0``/``c0`` when present, with
    ``update_prob = 1`` and ``cum_update_prob = 0`` (the first step always updates).

    Built from the params, so ``jax.vjp`` reaches ``h0``/``c0`` through it.
    """
    spec = OPS[op]
    batch = x.shape[0]
    states = []
    for k, p in enumerate(params):
        dims = layer_dims(op, p, options)
        layer = {}
        for s in spec.layer_state(top=k == len(params) - 1, options=options):
            shape = (batch, *(evaluate(e, dims) for e in s.shape))
            if s.name == "update_prob":
                layer[s.name] = jnp.ones(shape, x.dtype)
            elif f"{s.name}0" in p:
                layer[s.name] = jnp.broadcast_to(p[f"{s.name}0"], shape)
            else:
                layer[s.name] = jnp.zeros(shape, x.dtype)
        states.append(layer)
    return tuple(states)
