"""Elementwise recurrences: IndRNN's and the first-order linear one (QRNN pooling).

Cells in the sense of :mod:`.cells`. The primitives read their per-step input
``x_t`` as the precomputed arrays: ``pre_t`` for IndRNN's recurrence and
``[a_t, b_t]`` concatenated on the feature axis for the linear recurrence.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .activations import ACTIVATIONS, Array
from .cells import Cache, Params, State, masked
from .stack import Layer, ScanLayer

__all__ = ["IndRNNCell", "IndRNNRecurrenceCell", "LinearCell", "layer"]


@dataclass(frozen=True)
class IndRNNRecurrenceCell:
    """``h' = act(pre + u * h)``, params ``{"u": (H,)}``."""

    activation: str = "relu"
    state_names: tuple[str, ...] = ("h",)
    #: Recurrent dropout: ``u * (h * recurrent_mask)`` (batch, H); None: ``u * h``.
    recurrent_mask: Array | None = None

    def _pre(self, p: Params, x: Array) -> Array:
        return x

    def step(self, p: Params, state: State, x: Array) -> tuple[State, Array, Cache]:
        h = masked(state["h"], self.recurrent_mask)
        a = self._pre(p, x) + p["u"] * h
        fn, _ = ACTIVATIONS[self.activation]
        h_new = fn(a)
        return {"h": h_new}, h_new, {"x": x, "h": h, "a": a, "h_new": h_new}

    def _d_a(self, cache: Cache, d_state: State, d_y: Array) -> Array:
        _, grad = ACTIVATIONS[self.activation]
        return (d_state["h"] + d_y) * grad(cache["a"], cache["h_new"])

    def step_vjp(self, p: Params, cache: Cache, d_state: State, d_y: Array) -> tuple[State, Array, dict[str, Array]]:
        d_a = self._d_a(cache, d_state, d_y)
        return {"h": masked(d_a * p["u"], self.recurrent_mask)}, d_a, {"u": (d_a * cache["h"]).sum(axis=0)}


@dataclass(frozen=True)
class IndRNNCell(IndRNNRecurrenceCell):
    """``h' = act(W_ih x + b_ih + u * h)``, params ``w_ih (H, I)``, ``b_ih (H,)``, ``u (H,)``."""

    def _pre(self, p: Params, x: Array) -> Array:
        return x @ p["w_ih"].T + p["b_ih"]

    def step_vjp(self, p: Params, cache: Cache, d_state: State, d_y: Array) -> tuple[State, Array, dict[str, Array]]:
        d_a = self._d_a(cache, d_state, d_y)
        grads = {"w_ih": d_a.T @ cache["x"], "b_ih": d_a.sum(axis=0), "u": (d_a * cache["h"]).sum(axis=0)}
        return {"h": masked(d_a * p["u"], self.recurrent_mask)}, d_a @ p["w_ih"], grads


@dataclass(frozen=True)
class LinearCell:
    """``h' = a * h + b`` with ``x = [a, b]``; no params."""

    state_names: tuple[str, ...] = ("h",)

    def step(self, p: Params, state: State, x: Array) -> tuple[State, Array, Cache]:
        h = state["h"]
        a, b = np.split(x, 2, axis=1)
        h_new = a * h + b
        return {"h": h_new}, h_new, {"a": a, "h": h}

    def step_vjp(self, p: Params, cache: Cache, d_state: State, d_y: Array) -> tuple[State, Array, dict[str, Array]]:
        d_new = d_state["h"] + d_y
        return {"h": d_new * cache["a"]}, np.concatenate([d_new * cache["h"], d_new], axis=1), {}


def layer(op: str, p: Params, options: Mapping[str, Any], arrays: Mapping[str, Array | None]) -> Layer:
    """One layer of indrnn with float64 params ``p``, the call's value options and the layer's recurrent
    dropout mask."""
    return ScanLayer(IndRNNCell(activation=options["activation"], recurrent_mask=arrays.get("recurrent_mask")), p)
