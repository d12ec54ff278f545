"""One time step of each cell as pure jax functions: the plain path.

A cell splits its step in two. :meth:`Cell.project` is the input projection
``x @ w_ih.T + b_ih``, which reads no state: the ops compute it for every time
step at once, as one matmul, before the ``lax.scan`` over time (the classic ops
leave ``b_ih`` to each step: see :mod:`.classic`). :meth:`Cell.step`
takes that projection of one step and the layer's state and returns the new
state, whose ``"h"`` is the step's output. The equations are the spec's (see
``rnnspec/ops/<op>.md``) and the reference's (``rnnspec.reference.cells``).

:func:`prepare` adds ``w_hh`` transposed (``"w_hh_t"``, ``(H, gates * H)``) to
a layer's params, and the steps use it when it is there: a loop calls it once,
outside the ``lax.scan``, so each step's matmul is ``(B, H) x (H, gates * H)``.
Given ``w_hh`` itself, XLA's CPU backend leaves the transpose inside the dot
(``rhs_contracting_dims={1}``) and its matmul kernel pays for that at every
step: ``bench/jax_recurrences.py``'s lstm at B=1 T=1000 H=64 ran 2.4 times
slower that way. skip's loop prepares its params too (with ``inputs=True``, for
its upper layers' projections, which run inside the loop). Callers that pass raw
params (act) still work, with the transposed dot in their loops.

Every matmul runs at ``Precision.HIGHEST``: on GPUs JAX's default lets float32
matmuls use TF32, whose 10-bit mantissa puts results outside the spec's
float32 tolerance. On the CPU it changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from rnnspec.backends.common.cells import Cell as CommonCell
from rnnspec.backends.common.cells import bind_cell

__all__ = ["ACTIVATIONS", "Cell", "LstmGates", "Params", "linear", "lstm_gates", "make_cell", "prepare", "sigmoid"]

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
    # relu'(0) = 0, as the reference defines it (jnp.maximum would split the gradient at the tie); a NaN passes
    # through, as through the reference's np.maximum (NaN <= 0 is False).
    return jnp.where(a <= 0, jnp.zeros((), a.dtype), a)


#: The nonlinearities of the rnn and indrnn cells.
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {"tanh": jnp.tanh, "relu": _relu}


def linear(x: jax.Array, w: jax.Array, b: jax.Array | None = None) -> jax.Array:
    """``x @ w.T + b`` over any leading axes of ``x``, at full float32 precision."""
    y = jnp.matmul(x, w.T, precision=lax.Precision.HIGHEST)
    return y if b is None else y + b


def prepare(p: Params, *, inputs: bool = False) -> Params:
    """``p`` with ``"w_hh_t"``, ``w_hh`` transposed, for the steps of a loop to share; ``p`` when it has no ``w_hh``.

    ``inputs=True`` adds ``"w_ih_t"`` too, for a loop that projects its input
    at every step (the upper layers of skip's loop), which :meth:`Cell.project`
    then uses. Call it outside the loop (see the module's docstring for why).
    """
    added = {}
    if "w_hh" in p and "w_hh_t" not in p:
        added["w_hh_t"] = jnp.transpose(p["w_hh"])
    if inputs and "w_ih_t" not in p:
        added["w_ih_t"] = jnp.transpose(p["w_ih"])
    return {**p, **added} if added else p


def _recurrent(p: Params, h: jax.Array, start: int | None = None, stop: int | None = None) -> jax.Array:
    """``h @ w_hh[start:stop].T + b_hh[start:stop]``, from ``"w_hh_t"`` when :func:`prepare` added it."""
    if "w_hh_t" in p:
        y = jnp.matmul(h, p["w_hh_t"][:, start:stop], precision=lax.Precision.HIGHEST)
    else:
        y = linear(h, p["w_hh"][start:stop])
    return y + p["b_hh"][start:stop]


class LstmGates(NamedTuple):
    """An lstm step's gate activations ``i, f, g, o``, its new ``c``, ``tanh(c)`` and its new ``h``."""

    i: jax.Array
    f: jax.Array
    g: jax.Array
    o: jax.Array
    c: jax.Array
    tanh_c: jax.Array
    h: jax.Array


def _masked(h: jax.Array, mask: jax.Array | None) -> jax.Array:
    """The state a recurrent product reads: ``h * mask`` under recurrent dropout, else ``h``."""
    return h if mask is None else h * mask


def _rnn(p: Params, state: State, gi: jax.Array, activation: str, recurrent_mask: jax.Array | None = None) -> State:
    """``h' = act(W_ih x + b_ih + W_hh h + b_hh)``."""
    return {"h": ACTIVATIONS[activation](gi + _recurrent(p, _masked(state["h"], recurrent_mask)))}


def lstm_gates(p: Params, state: State, gi: jax.Array) -> LstmGates:
    """One lstm step with its gate activations: what :func:`_lstm` returns, and what its derivative reads."""
    a = gi + _recurrent(p, state["h"])
    hidden = state["c"].shape[-1]
    # One sigmoid over the whole (B, 4H) block, g's quarter unused, rather than three over slices: XLA's CPU
    # backend runs it as one contiguous loop, faster per step than three strided ones (see
    # bench/jax_recurrences.py's lstm step table); every value is the same.
    s = jax.nn.sigmoid(a)
    i, f, o = s[..., :hidden], s[..., hidden : 2 * hidden], s[..., 3 * hidden :]
    g = jnp.tanh(a[..., 2 * hidden : 3 * hidden])
    c = f * state["c"] + i * g
    tanh_c = jnp.tanh(c)
    return LstmGates(i, f, g, o, c, tanh_c, o * tanh_c)


def _lstm(p: Params, state: State, gi: jax.Array, recurrent_mask: jax.Array | None = None) -> State:
    """Gates i, f, g, o; ``c' = f c + i g``; ``h' = o tanh(c')``."""
    gates = lstm_gates(p, {**state, "h": _masked(state["h"], recurrent_mask)}, gi)
    return {"h": gates.h, "c": gates.c}


def _gru(p: Params, state: State, gi: jax.Array, reset_after: bool, recurrent_mask: jax.Array | None = None) -> State:
    """Gates r, z, n; ``h' = (1 - z) n + z h``; the reset gate after (cuDNN) or before (Cho) the matmul."""
    h = state["h"]
    hm = _masked(h, recurrent_mask)  # what the recurrent products read; the update reads h
    hidden = h.shape[-1]
    gi_r, gi_z, gi_n = gi[..., :hidden], gi[..., hidden : 2 * hidden], gi[..., 2 * hidden :]
    if reset_after:
        gh = _recurrent(p, hm)
        r = jax.nn.sigmoid(gi_r + gh[..., :hidden])
        z = jax.nn.sigmoid(gi_z + gh[..., hidden : 2 * hidden])
        n = jnp.tanh(gi_n + r * gh[..., 2 * hidden :])
    else:
        gh = _recurrent(p, hm, stop=2 * hidden)
        r = jax.nn.sigmoid(gi_r + gh[..., :hidden])
        z = jax.nn.sigmoid(gi_z + gh[..., hidden:])
        n = jnp.tanh(gi_n + _recurrent(p, r * hm, start=2 * hidden))
    return {"h": (1.0 - z) * n + z * h}


def _indrnn(p: Params, state: State, gi: jax.Array, activation: str, recurrent_mask: jax.Array | None = None) -> State:
    """``h' = act(W_ih x + b_ih + u * h)``."""
    return {"h": ACTIVATIONS[activation](gi + p["u"] * _masked(state["h"], recurrent_mask))}


@dataclass(frozen=True)
class Cell(CommonCell):
    """A cell of the spec with its options; its projection may leave the bias out, or read ``w_ih_t``."""

    def project(self, p: Params, x: jax.Array, *, bias: bool = True) -> jax.Array:
        """``x @ w_ih.T + b_ih``, over any leading axes (every time step at once).

        ``bias=False`` leaves ``b_ih`` out, for a loop that adds it to each step's slice. Reads
        ``"w_ih_t"`` when :func:`prepare` added it.
        """
        b = p["b_ih"] if bias else None
        if "w_ih_t" in p:
            y = jnp.matmul(x, p["w_ih_t"], precision=lax.Precision.HIGHEST)
            return y if b is None else y + b
        return linear(x, p["w_ih"], b)


#: Each cell's step, by the cell's op name (its options are bound by :func:`make_cell`).
STEPS: dict[str, Callable[..., State]] = {"rnn": _rnn, "lstm": _lstm, "gru": _gru, "indrnn": _indrnn}


def make_cell(name: str, options: Mapping[str, Any]) -> Cell:
    """The cell ``name`` (rnn, lstm, gru, indrnn) with its options (only its own are read)."""
    return Cell(*bind_cell(STEPS, name, options), linear=linear)
