"""skip_rnn, skip_lstm, skip_gru: Skip RNN's state-update gate over a stack of base cells.

As the reference (:mod:`rnnspec.reference.skip`) and the authors' code: one
``lax.scan`` over time whose step runs the layers bottom to top, since every
layer shares the one gate driven by the top layer's candidate::

    u~_t = cum + min(update_prob, 1 - cum)          (ties send the gradient to update_prob)
    u_t  = bin(u~_t) = [u~_t >= 0.5],  d u_t / d u~_t = 1  (straight-through)
    s_t  = u_t S(s_{t-1}, x_t) + (1 - u_t) s_{t-1}
    update_prob' = u_t sigmoid(w_gate . g + b_gate) + (1 - u_t) update_prob,  cum' = (1 - u_t) u~_t

The straight-through estimator is a ``stop_gradient`` construction:
``u = bin(u~) + (u~ - stop_gradient(u~))`` is exactly ``bin(u~)`` forward, with
derivative 1.

Two loops, one function. The training loop computes every candidate at every
step, since ``d u~_t = <d s_t, S(s_{t-1}, x_t) - s_{t-1}>`` reads the candidate
at skipped steps too. The skipping loop computes a candidate only where a gate
opens (:mod:`.skipping`: a step where no row updates does no cell work), which
is enough for the values. The op is a ``jax.custom_jvp`` whose value is the
skipping loop and whose derivative is the training loop's (``jax.jvp`` of it;
reverse mode transposes that): ``jax.jit`` of a call that nobody
differentiates runs the skipping loop, while ``jax.vjp``, ``jax.grad``,
``jax.jvp`` and ``jax.linearize`` run the training loop, so values under a
derivative and every derivative are the training loop's, bitwise. A
``custom_vjp`` would also do for reverse mode but not for forward mode, which
the act op and the backend's users rely on (``jax.jvp``); the ``custom_jvp``
serves both. The arrays (``lengths`` too: its tangent is float0) are the
function's arguments, so ``jax.vmap`` and ``jax.checkpoint`` (the option
``checkpoint_every``) see through it; the static options are closed over.

Without a derivative, the two loops' values agree within float rounding, not
bitwise: XLA fuses the cell's elementwise ops differently inside the
``lax.switch`` branch than inline (measured: up to a few float32 ulps after
some steps; float64 alike), and a gathered bucket of rows runs its matmul on
fewer rows (see :mod:`.skipping`). Gates are decided from the same values, so
only a ``u~`` within rounding of 0.5 could decide differently.
:func:`.paths.plain_path` (or ``RNNSPEC_JAX_PLAIN=1``) forces the training
loop everywhere.

Dropout (``dropout_mask``, ``recurrent_mask``; :func:`~rnnspec.backends.common.state.layer_arrays` gives each
layer its own): layer k's cell reads ``h * recurrent_mask[k]`` in its recurrent product, and layer k > 0's
input, the candidate ``h`` of layer k - 1 at step t, is multiplied by its boundary's ``dropout_mask[:, t]``.
With a mask the op is the training loop alone: the skipping loop's gathered rows would have to gather the
masks' rows too, for an inference path that dropout, a training-time option, does not need.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from rnnspec.backends.common.ops import SequenceCall
from rnnspec.backends.common.state import initial_states, layer_arrays
from rnnspec.results import SkipResult

from .cells import make_cell, prepare, sigmoid
from .paths import plain_forced
from .sequence import ARRAY_OPS, UNROLL, Lengths, State, reverse_valid, time_major
from .skipping import candidates as skipping_candidates

__all__ = ["run"]


def _mix(on: jax.Array, through: jax.Array, new: jax.Array, old: jax.Array) -> jax.Array:
    """``u * new + (1 - u) * old`` for ``u = on + through`` (``on`` in {0, 1}, ``through`` zero with gradient).

    The value is exactly ``new`` or ``old``, and ``d u`` is ``<d, new - old>``
    with the difference taken first, as the reference does: the product form
    would sum ``d * new - d * old``, which cancels in float32 when ``new`` is
    close to ``old``, and the straight-through chain amplifies that.
    """
    return jnp.where(on, new, old) + through * (new - old)


def _gate(prob_prev: jax.Array, cum_prev: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """``(u~, on, through, u)`` at a step, from the top layer's ``update_prob`` and ``cum_update_prob``."""
    room = 1.0 - cum_prev
    u_tilde = cum_prev + jnp.where(room < prob_prev, room, prob_prev)  # a NaN update_prob stays NaN
    on = u_tilde >= 0.5
    # Zero, with d/du~ = 1: the straight-through estimator (zero also where u~ is NaN, whose gate is 0).
    through = jnp.where(jnp.isnan(u_tilde), 0.0, u_tilde - lax.stop_gradient(u_tilde))
    return u_tilde, on, through, on.astype(u_tilde.dtype) + through


def _loop(
    op: str,
    x: jax.Array,
    params: Sequence[Mapping[str, jax.Array]],
    lengths_values: jax.Array | None,
    initial_state: Sequence[Mapping[str, jax.Array]] | None,
    reverse: bool,
    options: Mapping[str, Any],
    skipping: bool,
    masks: Sequence[Mapping[str, jax.Array | None]] | None = None,
) -> SkipResult:
    """The loop over time; ``skipping=True`` computes candidates only where a gate opens (values only).

    ``masks``: each layer's dropout masks (its ``recurrent_mask``, and the ``dropout_mask`` of its input from the
    layer below, aligned with the time axis the loop sees), for the training loop only."""
    cell = make_cell(op.removeprefix("skip_"), options)
    layers = masks or [{} for _ in params]
    cells = [cell.with_recurrent_mask(m.get("recurrent_mask")) for m in layers]
    drops = [m.get("dropout_mask") for m in layers]
    assert not (skipping and any(m is not None for layer in layers for m in layer.values())), "masks: training only"
    names = cell.state_names
    gate_input = "c" if "c" in names else "h"
    lengths = Lengths(lengths_values, x.shape[1])
    valid = lengths.valid()
    states = list(initial_states(op, x, params, options, initial_state, ARRAY_OPS))
    top = params[-1]
    inp = reverse_valid(x, lengths) if reverse else x
    projected = cell.project(params[0], inp)  # layer 0's input projection, every step at once
    # The weights the steps multiply by, transposed once outside the loop as the classic ops do (see
    # .cells.prepare): given w_hh itself, each step's matmul contracted the transposed weight, and skip_lstm's
    # inference at rate 1 took 7.6 times lstm's time at B=1 T=1000 H=128, 1.2 times so (python -m rnnspec.bench
    # --sections skip).
    prepared = [prepare(p, inputs=k > 0) for k, p in enumerate(params)]
    gate_w_t, gate_b = jnp.transpose(top["w_gate"]), top["b_gate"]

    def compute(
        carry: Sequence[State], gi0: jax.Array, drops_t: Sequence[jax.Array | None] = ()
    ) -> tuple[list[State], jax.Array]:
        cands: list[State] = []
        for k, (p, s) in enumerate(zip(prepared, carry, strict=True)):  # over layers, not time
            gi = gi0
            if k > 0:  # the layer below's candidate, times its boundary's dropout mask at this step where given
                drop = drops_t[k] if drops_t else None
                gi = cells[k].project(p, cands[-1]["h"] if drop is None else cands[-1]["h"] * drop)
            cands.append(cells[k].step(p, {n: s[n] for n in names}, gi))
        gate = jnp.matmul(cands[-1][gate_input], gate_w_t, precision=lax.Precision.HIGHEST) + gate_b
        return cands, sigmoid(gate)

    def step(carry: list[State], xs_t: list[jax.Array]) -> tuple[list[State], tuple[jax.Array, ...]]:
        prob_prev, cum_prev = carry[-1]["update_prob"], carry[-1]["cum_update_prob"]
        u_tilde, on, through, u = _gate(prob_prev, cum_prev)
        if skipping:
            need = on[:, 0] if valid is None else on[:, 0] & xs_t[1]
            olds = [{n: s[n] for n in names} for s in carry]
            cands, du = skipping_candidates(compute, olds, xs_t[0], prob_prev, need)
        else:
            given = iter(xs_t[1 if valid is None else 2 :])  # the step's dropout masks, of the layers with one
            cands, du = compute(carry, xs_t[0], [None if d is None else next(given) for d in drops])
        new = [{n: _mix(on, through, c[n], s[n]) for n in names} for c, s in zip(cands, carry, strict=True)]
        new[-1]["update_prob"] = _mix(on, through, du, prob_prev)
        new[-1]["cum_update_prob"] = (1.0 - u) * u_tilde
        y, gate, prob = new[-1]["h"], u[:, 0], u_tilde[:, 0]
        if valid is not None:
            keep = xs_t[1][:, None]
            zero = jnp.zeros((), y.dtype)
            new = [{n: jnp.where(keep, v, s[n]) for n, v in ns.items()} for ns, s in zip(new, carry, strict=True)]
            y = jnp.where(keep, y, zero)
            gate, prob = jnp.where(keep[:, 0], gate, zero), jnp.where(keep[:, 0], prob, zero)
        return new, (y, gate, prob)

    xs = [time_major(projected)] + ([] if valid is None else [valid.T])
    xs += [time_major(d) for d in drops if d is not None]  # each step's dropout masks, read beside the projection
    final, (ys, gates, probs) = lax.scan(step, [dict(s) for s in states], xs, unroll=UNROLL)
    out, gate, prob = time_major(ys), gates.T, probs.T
    if reverse:
        out, gate, prob = (reverse_valid(a, lengths) for a in (out, gate, prob))
    return SkipResult(out, tuple(final), gate, prob)


def run(call: SequenceCall) -> SkipResult:
    """skip_rnn, skip_lstm or skip_gru: the base cell's stack under the state-update gate."""
    op, x, params, initial_state, reverse, options = (
        call.op,
        call.x,
        call.params,
        call.initial_state,
        call.reverse,
        call.options,
    )
    norm = ARRAY_OPS.lengths(call.lengths, x)
    lengths = norm.values
    if any(a is not None for a in call.arrays.values()):  # dropout masks: the training loop alone takes them
        masks = layer_arrays(call, norm, ARRAY_OPS)
        return _loop(op, x, params, lengths, initial_state, reverse, options, skipping=False, masks=masks)

    # One loop, two ways (see the module's docstring). The static arguments are bound; the arrays (the integer
    # lengths too) are the functions' arguments, ``(x, params, lengths, initial_state)``, so that jit, vmap and
    # the derivatives see them.
    training = functools.partial(_loop, op, reverse=reverse, options=options, skipping=False)
    if plain_forced():
        return training(x, params, lengths, initial_state)
    run = jax.custom_jvp(functools.partial(_loop, op, reverse=reverse, options=options, skipping=True))

    @run.defjvp
    def _run_jvp(primals: tuple[Any, ...], tangents: tuple[Any, ...]) -> tuple[Any, Any]:
        return jax.jvp(training, primals, tangents)

    result: SkipResult = run(x, list(params), lengths, initial_state)
    return result
