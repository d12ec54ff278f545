"""lstm's time loop with a derivative whose reverse loop runs only the recurrent matmul.

JAX's own reverse mode of the masked ``lax.scan`` of :func:`.classic.plain_layer`
transposes the linearised lstm step as it stands. In the optimized HLO of
``jax.jit(jax.grad(...))`` on the CPU that is a reverse loop which, at every
step, adds its share of ``d w_hh`` (``h_{t-1}^T d a_t``, an outer product at
B=1) and of ``d b_ih`` and ``d b_hh`` into accumulators, pads each gate's
``(B, H)`` cotangent into its own ``(B, 4H)`` buffer and adds the four, reads
about ten saved ``(T, B, H)`` arrays, and multiplies by ``w_hh`` transposed:
1.64 and 1.59 times torch.nn.LSTM's forward and backward at B=16 T=256 H=256 and
at B=1 T=1000 H=64 (``python -m rnnspec.bench --backends jax --sections classic
--clock cpu --threads 1``), against 1.06 for gru; with this module, 1.29 and 1.08.

:func:`lstm_layer` is a ``jax.custom_jvp`` whose value is that same scan and
whose derivative is written so that its transpose is the loop torch's
hand-written backward runs (``backends/torch/cell_backward.py``). The forward
loop saves, per step, ``h_t`` and the factors::

    n_t = [g i (1 - i), c_{t-1} f (1 - f), i (1 - g^2), tanh(c_t) o (1 - o)]   (one (B, 4H) block)
    k_t = o (1 - tanh^2 c_t),  f_t

and the tangent is, with ``e_t`` for every step at once (one matmul)::

    e_t  = d gi_t + d b_ih + d b_hh + h_{t-1} d w_hh^T
    m_t  = (e_t + d h_{t-1} w_hh^T) n_t
    d c_t = m_i + m_f + m_g + f_t d c_{t-1},   d h_t = m_o + k_t d c_t

Transposed (reverse mode), the loop's one matmul is ``(B, 4H) x (4H, H)``
against ``w_hh`` as stored, each step writes its ``e_t`` cotangent into one
stacked array, and ``d w_hh = sum_t e_t^T h_{t-1}``, ``d b_ih`` and ``d b_hh``
are one matmul and one sum after the loop. A ``custom_jvp`` rather than a
``custom_vjp`` keeps forward mode (``jax.jvp``, ``jax.linearize``) and
derivatives of derivatives working; ``jax.vmap`` sees through either.

Past a row's length the state is frozen and the output zero, as in
:func:`.sequence.scan`, and so are their tangents.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from .cells import lstm_gates
from .sequence import UNROLL, State, scan, time_major

__all__ = ["lstm_layer"]

_HIGHEST = lax.Precision.HIGHEST


def _step_params(w_hh: jax.Array, b_hh: jax.Array) -> dict[str, jax.Array]:
    # w_hh transposed once, outside the loop (see .cells.prepare).
    return {"w_hh_t": jnp.transpose(w_hh), "b_hh": b_hh}


@jax.custom_jvp
def lstm_layer(
    gi: jax.Array,
    b_ih: jax.Array,
    w_hh: jax.Array,
    b_hh: jax.Array,
    h0: jax.Array,
    c0: jax.Array,
    valid: jax.Array | None,
) -> tuple[jax.Array, State]:
    """One lstm layer over time from its input projection.

    Parameters
    ----------
    gi
        ``(T, B, 4H)``: ``x_t @ w_ih.T`` of every step, time-major, without ``b_ih``.
    b_ih, w_hh, b_hh
        The layer's params; ``b_ih`` is added to each step's slice, as :func:`.classic.plain_layer` does.
    h0, c0
        ``(B, H)``: the initial state.
    valid
        ``(B, T)`` bool, True where a step lies within its row's length; None when every step does.

    Returns
    -------
    The outputs ``(B, T, H)`` and the final state ``{"h", "c"}``.
    """
    p = _step_params(w_hh, b_hh)

    def step(s: State, xs: Sequence[jax.Array]) -> State:
        gates = lstm_gates(p, s, xs[0] + b_ih)
        return {"h": gates.h, "c": gates.c}

    return scan(step, [gi], {"h": h0, "c": c0}, valid, time_major_inputs=True)


def _forward_saving(
    gi: jax.Array,
    b_ih: jax.Array,
    w_hh: jax.Array,
    b_hh: jax.Array,
    h0: jax.Array,
    c0: jax.Array,
    valid: jax.Array | None,
) -> tuple[State, tuple[jax.Array, ...]]:
    """The loop of :func:`lstm_layer` (the same operations), also stacking ``h_t`` and the factors ``n, k, f``."""
    p = _step_params(w_hh, b_hh)

    def step(s: State, xs: list[jax.Array]) -> tuple[State, tuple[jax.Array, ...]]:
        gates = lstm_gates(p, s, xs[0] + b_ih)
        i, f, g, o = gates.i, gates.f, gates.g, gates.o
        # The factors of the tangent, computed here where the step's values are at hand: one fused pass.
        n = jnp.concatenate([g * i * (1 - i), s["c"] * f * (1 - f), i * (1 - g * g), gates.tanh_c * o * (1 - o)], -1)
        k = o * (1 - gates.tanh_c * gates.tanh_c)
        new = {"h": gates.h, "c": gates.c}
        if valid is not None:
            keep = xs[1][:, None]
            new = {name: jnp.where(keep, v, s[name]) for name, v in new.items()}
        return new, (new["h"], n, k, f)

    xs = [gi] + ([] if valid is None else [valid.T])
    final, stacked = lax.scan(step, {"h": h0, "c": c0}, xs, unroll=UNROLL)
    return final, stacked


@lstm_layer.defjvp
def _lstm_layer_jvp(primals: tuple[Any, ...], tangents: tuple[Any, ...]) -> tuple[Any, Any]:
    gi, b_ih, w_hh, b_hh, h0, c0, valid = primals
    d_gi, d_b_ih, d_w_hh, d_b_hh, d_h0, d_c0, _ = tangents
    hidden = h0.shape[-1]
    final, (hs, n, k, f) = _forward_saving(gi, b_ih, w_hh, b_hh, h0, c0, valid)
    # (T, B, H), broadcast here: a broadcast inside the tangent loop reads primal values only, and JAX's
    # linearisation would run it in a loop of its own, stacking three such masks.
    keep = None if valid is None else jnp.broadcast_to(valid.T[:, :, None], hs.shape)
    zero = jnp.zeros((), hs.dtype)
    outputs = hs if keep is None else jnp.where(keep, hs, zero)

    # Everything of the pre-activations' tangent that reads no tangent state: one matmul over every step, whose
    # transpose is d w_hh's one matmul after the reverse loop.
    h_prev = jnp.concatenate([h0[None], hs], axis=0)[: hs.shape[0]]  # [:T], so that T = 0 works too
    e = d_gi + (d_b_ih + d_b_hh) + jnp.matmul(h_prev, jnp.transpose(d_w_hh), precision=_HIGHEST)
    # d h @ w_hh^T as a dot contracting w_hh's second axis: its transpose contracts the first, w_hh as stored.
    contract = (((1,), (1,)), ((), ()))
    # The gates' sums as selects over a (B, 4, H) view rather than slices of m: transposed, slices become pads
    # into (B, 4H) buffers, which XLA ran as four kernels per step at B=1; selects of a broadcast fuse into one.
    to_c = jnp.arange(4)[:, None] < 3

    def tangent_step(carry: tuple[jax.Array, jax.Array], xs: list[jax.Array]) -> tuple[Any, jax.Array]:
        dh, dc = carry
        e_t, n_t, k_t, f_t = xs[:4]
        m = ((e_t + lax.dot_general(dh, w_hh, contract, precision=_HIGHEST)) * n_t).reshape(-1, 4, hidden)
        dc_new = jnp.sum(jnp.where(to_c, m, zero), axis=1) + f_t * dc
        dh_new = jnp.sum(jnp.where(to_c, zero, m), axis=1) + k_t * dc_new
        if keep is None:
            return (dh_new, dc_new), dh_new
        keep_t = xs[4]
        dh_new, dc_new = jnp.where(keep_t, dh_new, dh), jnp.where(keep_t, dc_new, dc)
        return (dh_new, dc_new), jnp.where(keep_t, dh_new, zero)

    xs = [e, n, k, f] + ([] if keep is None else [keep])
    (dh_final, dc_final), d_outputs = lax.scan(tangent_step, (d_h0, d_c0), xs, unroll=UNROLL)
    primal_out = (time_major(outputs), final)
    tangent_out = (time_major(d_outputs), {"h": dh_final, "c": dc_final})
    return primal_out, tangent_out
