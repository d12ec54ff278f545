"""One time step of each cell as pure jax functions: the plain path.

A cell splits its step in two. :meth:`Cell.project` is the input projection
``x @ w_ih.T + b_ih``, which reads no state: the ops compute it for every time
step at once, as one matmul, before the ``lax.scan`` over time. :meth:`Cell.step`
takes that projection of one step and the layer's state and returns the new
state, whose ``"h"`` is the step's output. The equations are the spec's (see
``rnnspec/ops/<op>.md``) and the reference's (``rnnspec.reference.cells``).

Every matmul runs at ``Precision.HIGHEST``: on GPUs JAX's default lets float32
matmuls use TF32, whose 10-bit mantissa puts results outside the spec's
float32 tolerance. On the CPU it changes nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["ACTIVATIONS", "Cell", "Params", "linear", "make_cell", "sigmoid"]

Params = Mapping[str, jax.Array]
State = dict[str, jax.Array]


@jax.custom_jvp
def sigmoid(a: jax.Array) -> jax.Array:
    """``1 / (1 + exp(-a))`` whose derivative stays accurate where it saturates.

    ``jax.nn.sigmoid``'s derivative is ``y * (1 - y)``, which for ``y`` near 1
    loses all but a few bits of ``1 - y`` in float32; here it is
    ``y * sigmoid(-a)``, computed from ``a``. Skip RNN's gate needs it: its
    straight-through chain can carry most of the gradient through a saturated
    ``du~``.
    """
    return jax.nn.sigmoid(a)


@sigmoid.defjvp
def _sigmoid_jvp(primals: tuple[jax.Array], tangents: tuple[jax.Array]) -> tuple[jax.Array, jax.Array]:
    (a,), (da,) = primals, tangents
    y = jax.nn.sigmoid(a)
    return y, da * y * jax.nn.sigmoid(-a)


def _relu(a: jax.Array) -> jax.Array:
    # relu'(0) = 0, as the reference defines it (jnp.maximum would split the gradient at the tie).
    return jnp.where(a > 0, a, jnp.zeros((), a.dtype))


#: The nonlinearities of the rnn and indrnn cells.
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {"tanh": jnp.tanh, "relu": _relu}


def linear(x: jax.Array, w: jax.Array, b: jax.Array | None = None) -> jax.Array:
    """``x @ w.T + b`` over any leading axes of ``x``, at full float32 precision."""
    y = jnp.matmul(x, w.T, precision=lax.Precision.HIGHEST)
    return y if b is None else y + b


def _rnn(p: Params, state: State, gi: jax.Array, activation: str) -> State:
    """``h' = act(W_ih x + b_ih + W_hh h + b_hh)``."""
    return {"h": ACTIVATIONS[activation](gi + linear(state["h"], p["w_hh"], p["b_hh"]))}


def _lstm(p: Params, state: State, gi: jax.Array) -> State:
    """Gates i, f, g, o; ``c' = f c + i g``; ``h' = o tanh(c')``."""
    a = gi + linear(state["h"], p["w_hh"], p["b_hh"])
    ai, af, ag, ao = jnp.split(a, 4, axis=-1)
    i, f, g, o = jax.nn.sigmoid(ai), jax.nn.sigmoid(af), jnp.tanh(ag), jax.nn.sigmoid(ao)
    c = f * state["c"] + i * g
    return {"h": o * jnp.tanh(c), "c": c}


def _gru(p: Params, state: State, gi: jax.Array, reset_after: bool) -> State:
    """Gates r, z, n; ``h' = (1 - z) n + z h``; the reset gate after (cuDNN) or before (Cho) the matmul."""
    h = state["h"]
    hidden = h.shape[-1]
    w_hh, b_hh = p["w_hh"], p["b_hh"]
    gi_r, gi_z, gi_n = gi[..., :hidden], gi[..., hidden : 2 * hidden], gi[..., 2 * hidden :]
    if reset_after:
        gh = linear(h, w_hh, b_hh)
        r = jax.nn.sigmoid(gi_r + gh[..., :hidden])
        z = jax.nn.sigmoid(gi_z + gh[..., hidden : 2 * hidden])
        n = jnp.tanh(gi_n + r * gh[..., 2 * hidden :])
    else:
        gh = linear(h, w_hh[: 2 * hidden], b_hh[: 2 * hidden])
        r = jax.nn.sigmoid(gi_r + gh[..., :hidden])
        z = jax.nn.sigmoid(gi_z + gh[..., hidden:])
        n = jnp.tanh(gi_n + linear(r * h, w_hh[2 * hidden :], b_hh[2 * hidden :]))
    return {"h": (1.0 - z) * n + z * h}


def _indrnn(p: Params, state: State, gi: jax.Array, activation: str) -> State:
    """``h' = act(W_ih x + b_ih + u * h)``."""
    return {"h": ACTIVATIONS[activation](gi + p["u"] * state["h"])}


@dataclass(frozen=True)
class Cell:
    """A cell of the spec with its options: its state entries, input projection and step."""

    name: str
    state_names: tuple[str, ...]
    fn: Callable[[Params, State, jax.Array], State]

    def project(self, p: Params, x: jax.Array) -> jax.Array:
        """``x @ w_ih.T + b_ih``, over any leading axes (every time step at once)."""
        return linear(x, p["w_ih"], p["b_ih"])

    def step(self, p: Params, state: State, gi: jax.Array) -> State:
        """The new state from ``state`` and the step's input projection ``gi``; its ``"h"`` is the output."""
        return self.fn(p, state, gi)


def make_cell(name: str, options: Mapping[str, Any]) -> Cell:
    """The cell ``name`` (rnn, lstm, gru, indrnn) with its options (only its own are read)."""
    if name == "rnn":
        return Cell(name, ("h",), functools.partial(_rnn, activation=options["activation"]))
    if name == "lstm":
        return Cell(name, ("h", "c"), _lstm)
    if name == "gru":
        return Cell(name, ("h",), functools.partial(_gru, reset_after=options["reset_after"]))
    if name == "indrnn":
        return Cell(name, ("h",), functools.partial(_indrnn, activation=options["activation"]))
    raise KeyError(name)
