"""skip_rnn, skip_lstm, skip_gru: Skip RNN's state-update gate over a stack of base cells (training semantics).

As the reference (:mod:`rnnspec.reference.skip`) and the authors' code: time is
the outer loop and the layers the inner one, since every layer shares the one
gate driven by the top layer's candidate; every candidate is computed at every
step (the straight-through gradient needs it). ``u_t = bin(u~_t)``,
``bin(u~) = 1 if u~ >= 0.5 else 0``, whose gradient is the identity (the
straight-through estimator), written with ``tf.custom_gradient``.
``min(update_prob, 1 - cum)`` passes its gradient to ``update_prob`` on ties,
as the spec says (``tf.minimum`` would not choose the same side).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import tensorflow as tf

from rnnspec.results import SkipResult

from .cells import linear, make_cell
from .sequence import State, dim, initial_states, normalise_lengths, reverse_valid, scan

__all__ = ["binarize", "gate_mix", "skip_gru", "skip_lstm", "skip_rnn"]


def _binarize(u_tilde: tf.Tensor) -> Any:
    """``u = 1 if u~ >= 0.5 else 0`` (ties go up, unlike ``tf.round``), with ``d u / d u~ = 1``."""

    def grad(d_u: tf.Tensor) -> tf.Tensor:
        return d_u

    return tf.cast(u_tilde >= 0.5, u_tilde.dtype), grad


def _gate_mix(u_tilde: tf.Tensor, new: tf.Tensor, old: tf.Tensor) -> Any:
    """``u * new + (1 - u) * old`` for ``u = bin(u~)`` ``(batch, 1)``, straight through to ``u~``.

    The value is exactly ``new`` or ``old``. The cotangent of ``u~`` is
    ``<d, new - old>`` with the difference taken first, as the reference does:
    differentiating the product form would sum ``d * new - d * old``, which
    cancels in float32 when ``new`` is close to ``old``, and the
    straight-through chain of the gate's probabilities amplifies that.
    """
    on = u_tilde >= 0.5

    def grad(d: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        u = tf.cast(on, d.dtype)
        return tf.reduce_sum(d * (new - old), axis=-1, keepdims=True), u * d, (1.0 - u) * d

    return tf.where(on, new, old), grad


binarize: Callable[[tf.Tensor], tf.Tensor] = tf.custom_gradient(_binarize)
gate_mix: Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tf.Tensor] = tf.custom_gradient(_gate_mix)


def _sigmoid(a: tf.Tensor) -> tf.Tensor:
    """``sigmoid(a)`` whose derivative stays accurate where it saturates.

    ``tf.sigmoid``'s gradient is ``y * (1 - y)``, which for ``y`` near 1 loses
    all but a few bits of ``1 - y`` in float32. Through ``exp(log_sigmoid(a))``
    the derivative is ``y * sigmoid(-a)``, computed from ``a``. The gate's
    ``du~`` needs it: the straight-through chain of ``update_prob`` grows its
    cotangent by up to ``1 + du~`` per skipped step.
    """
    return tf.exp(tf.math.log_sigmoid(a))


def _skip(
    op: str,
    x: tf.Tensor,
    params: Sequence[Mapping[str, tf.Tensor]],
    lengths_arg: Any,
    initial_state: Sequence[Mapping[str, tf.Tensor]] | None,
    reverse: bool,
    options: Mapping[str, Any],
) -> SkipResult:
    cell = make_cell(op.removeprefix("skip_"), options)
    names = cell.state_names
    gate_input = "c" if "c" in names else "h"
    lengths = normalise_lengths(lengths_arg, dim(x, 0), dim(x, 1))
    states = initial_states(op, x, params, options, initial_state)
    top = params[-1]
    hidden = int(top["w_hh"].shape[1])
    inp = reverse_valid(x, lengths) if reverse else x
    projected = cell.project(params[0], inp)  # layer 0's input projection, every step at once

    def step(
        carried: tuple[State, ...], xs: Sequence[tf.Tensor], keep: tf.Tensor | None
    ) -> tuple[tuple[State, ...], list[tf.Tensor]]:
        prob_prev, cum_prev = carried[-1]["update_prob"], carried[-1]["cum_update_prob"]
        room = 1.0 - cum_prev
        u_tilde = cum_prev + tf.where(room < prob_prev, room, prob_prev)  # a NaN update_prob stays NaN
        u = binarize(u_tilde)
        cands: list[State] = []
        for k, (p, s) in enumerate(zip(params, carried, strict=True)):
            gi = xs[0] if k == 0 else cell.project(p, cands[-1]["h"])
            cands.append(cell.step(p, {n: s[n] for n in names}, gi))
        du = _sigmoid(linear(cands[-1][gate_input], top["w_gate"], top["b_gate"]))
        new = [{n: gate_mix(u_tilde, c[n], s[n]) for n in names} for c, s in zip(cands, carried, strict=True)]
        new[-1]["update_prob"] = gate_mix(u_tilde, du, prob_prev)
        new[-1]["cum_update_prob"] = (1.0 - u) * u_tilde
        return tuple(new), [new[-1]["h"], u[:, 0], u_tilde[:, 0]]

    (out, gate, prob), final = scan(step, [projected], states, lengths.valid(), [(hidden,), (), ()])
    if reverse:
        out, gate, prob = (reverse_valid(a, lengths) for a in (out, gate, prob))
    return SkipResult(out, tuple(final), gate, prob)


def skip_rnn(
    *,
    x: tf.Tensor,
    params: Sequence[Mapping[str, tf.Tensor]],
    activation: str,
    lengths: Any,
    initial_state: Sequence[Mapping[str, tf.Tensor]] | None,
    reverse: bool,
) -> SkipResult:
    """Skip RNN over rnn cells."""
    return _skip("skip_rnn", x, params, lengths, initial_state, reverse, {"activation": activation})


def skip_lstm(
    *,
    x: tf.Tensor,
    params: Sequence[Mapping[str, tf.Tensor]],
    lengths: Any,
    initial_state: Sequence[Mapping[str, tf.Tensor]] | None,
    reverse: bool,
) -> SkipResult:
    """Skip RNN over lstm cells (the gate reads the top layer's candidate c)."""
    return _skip("skip_lstm", x, params, lengths, initial_state, reverse, {})


def skip_gru(
    *,
    x: tf.Tensor,
    params: Sequence[Mapping[str, tf.Tensor]],
    reset_after: bool,
    lengths: Any,
    initial_state: Sequence[Mapping[str, tf.Tensor]] | None,
    reverse: bool,
) -> SkipResult:
    """Skip RNN over gru cells."""
    return _skip("skip_gru", x, params, lengths, initial_state, reverse, {"reset_after": reset_after})
