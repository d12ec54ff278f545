"""skip_rnn, skip_lstm, skip_gru: Skip RNN's state-update gate over a stack of base cells.

As the reference (:mod:`rnnspec.reference.skip`) and the authors' code: time is
the outer loop and the layers the inner one, since every layer shares the one
gate driven by the top layer's candidate. ``u_t = bin(u~_t)``,
``bin(u~) = 1 if u~ >= 0.5 else 0``, whose gradient is the identity (the
straight-through estimator), written with ``tf.custom_gradient``.
``min(update_prob, 1 - cum)`` passes its gradient to ``update_prob`` on ties,
as the spec says (``tf.minimum`` would not choose the same side).

Two loops (:func:`.skipping.choose_path` picks one when the op is built):

- the training loop computes every candidate at every step (the
  straight-through gradient ``d u~ = <d, S - s>`` reads it at skipped steps too);
- the skipping loop (:func:`.skipping.scan`) runs the cells only at steps where
  some row's gate opens within its length, and only on those rows where
  gathering pays. A tape watching the op's inputs where it is built gets the
  training loop; eager calls with no tape get the skipping loop; a trace with
  no tape watching (an inference ``tf.function``, XLA, ``model.predict``) gets
  the skipping loop under a custom gradient that recomputes the training loop
  (:func:`_recomputing`), so that every gradient is the training loop's.

The two loops' values agree within float rounding, not bitwise: the skipping
loop projects a step's input for the rows it computes, where the training loop
projects every step at once (another matmul shape, other roundings), and
gathered rows run their matmuls on fewer rows. Gates are decided from values
within rounding of each other, so only a ``u~`` within rounding of 0.5 could
decide differently. :func:`.paths.plain_path` (or ``RNNSPEC_TF_PLAIN=1``)
forces the training loop.

Dropout (``dropout_mask``, ``recurrent_mask``; :func:`~rnnspec.backends.common.state.layer_arrays`
gives each layer its own): layer k's cell reads ``h * recurrent_mask[k]`` in its recurrent product,
and layer k > 0's input, the candidate ``h`` of layer k - 1 at step t, is multiplied by its
boundary's ``dropout_mask[:, t]``. Only the training loop takes masks: a call with one takes it
(path ``"training"``), as a training-time option needs no inference loop.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import tensorflow as tf

from rnnspec.backends.common.ops import SequenceCall
from rnnspec.backends.common.state import initial_states, layer_arrays
from rnnspec.results import SkipResult

from .cells import Cell, linear, make_cell
from .paths import record_path
from .sequence import ARRAY_OPS, Lengths, State, reverse_valid, scan
from .skipping import candidates as skipping_candidates
from .skipping import choose_path
from .skipping import scan as skipping_scan

__all__ = ["binarize", "gate_mix", "run"]


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


Loop = tuple[tf.Tensor, tuple[State, ...], tf.Tensor, tf.Tensor]


def _loop(
    cell: Cell,
    x: tf.Tensor,
    params: Sequence[Mapping[str, tf.Tensor]],
    states: Sequence[State],
    lengths: Lengths,
    reverse: bool,
    skipping: bool,
    masks: Sequence[Mapping[str, tf.Tensor | None]] | None = None,
) -> Loop:
    """The loop over time: the outputs, final states, update_gate and update_prob.

    ``skipping=False`` is the training loop (every candidate at every step, the
    straight-through gradient); ``skipping=True`` is :func:`.skipping.scan`,
    which computes candidates only at steps where some row's gate opens, and
    only for those rows (:func:`.skipping.candidates`), for the values alone:
    its gate mix has no straight-through gradient. ``masks``: each layer's dropout masks (its
    ``recurrent_mask``, and the ``dropout_mask`` of its input from the layer below, aligned with the
    time axis the loop sees), which only the training loop takes.
    """
    layers = masks or [{} for _ in params]
    cells = [cell.with_recurrent_mask(m.get("recurrent_mask")) for m in layers]
    drops = [m.get("dropout_mask") for m in layers]
    assert not (skipping and any(m is not None for layer in layers for m in layer.values())), "masks: training only"
    names = cell.state_names
    gate_input = "c" if "c" in names else "h"
    top = params[-1]
    hidden = int(top["w_hh"].shape[1])
    valid = lengths.valid()
    inp = reverse_valid(x, lengths) if reverse else x
    out_dims = [(hidden,), (), ()]

    def compute(
        olds: Sequence[State], gi0: tf.Tensor, drops_t: Sequence[tf.Tensor | None] = ()
    ) -> tuple[list[State], tf.Tensor]:
        cands: list[State] = []
        for k, (p, s) in enumerate(zip(params, olds, strict=True)):  # over layers, not time
            gi = gi0
            if k > 0:  # the layer below's candidate, times its boundary's dropout mask at this step where given
                drop = drops_t[k] if drops_t else None
                gi = cells[k].project(p, cands[-1]["h"] if drop is None else cands[-1]["h"] * drop)
            cands.append(cells[k].step(p, {n: s[n] for n in names}, gi))
        return cands, _sigmoid(linear(cands[-1][gate_input], top["w_gate"], top["b_gate"]))

    def gate(carried: Sequence[State]) -> tf.Tensor:
        prob_prev, cum_prev = carried[-1]["update_prob"], carried[-1]["cum_update_prob"]
        room = 1.0 - cum_prev
        return cum_prev + tf.where(room < prob_prev, room, prob_prev)  # u~; a NaN update_prob stays NaN

    def emit(new: list[State], u: tf.Tensor, u_tilde: tf.Tensor) -> tuple[tuple[State, ...], list[tf.Tensor]]:
        new[-1]["cum_update_prob"] = (1.0 - u) * u_tilde
        return tuple(new), [new[-1]["h"], u[:, 0], u_tilde[:, 0]]

    if not skipping:

        def step(
            carried: tuple[State, ...], xs: Sequence[tf.Tensor], keep: tf.Tensor | None
        ) -> tuple[tuple[State, ...], list[tf.Tensor]]:
            u_tilde = gate(carried)
            given = iter(xs[1:])  # the step's dropout masks, of the layers that have one
            cands, du = compute(carried, xs[0], [None if d is None else next(given) for d in drops])
            new = [{n: gate_mix(u_tilde, c[n], s[n]) for n in names} for c, s in zip(cands, carried, strict=True)]
            new[-1]["update_prob"] = gate_mix(u_tilde, du, carried[-1]["update_prob"])
            return emit(new, binarize(u_tilde), u_tilde)

        projected = cell.project(params[0], inp)  # layer 0's input projection, every step at once
        per_step = [projected, *(d for d in drops if d is not None)]
        (out, gate_out, prob), final = scan(step, per_step, tuple(states), valid, out_dims)
    else:

        def need(carried: Sequence[State], keep: tf.Tensor | None) -> tf.Tensor:
            on = gate(carried)[:, 0] >= 0.5
            return on if keep is None else on & keep

        def compute_rows(olds: Sequence[State], x_rows: tf.Tensor) -> tuple[list[State], tf.Tensor]:
            return compute(olds, cell.project(params[0], x_rows))

        def skipping_step(
            carried: tuple[State, ...], x_t: tf.Tensor | None, keep: tf.Tensor | None
        ) -> tuple[tuple[State, ...], list[tf.Tensor]]:
            # The training loop's values: tf.where(on, ...) is gate_mix's value, tf.cast(on) binarize's.
            u_tilde = gate(carried)
            on = u_tilde >= 0.5
            prob_prev = carried[-1]["update_prob"]
            if x_t is None:  # no row within its length updates: every candidate would be mixed away
                new = [{n: s[n] for n in names} for s in carried]
                new[-1]["update_prob"] = prob_prev
            else:
                olds = [{n: s[n] for n in names} for s in carried]
                # Layer 0's input projected at this step, for the rows computed (measured under XLA on one core,
                # projecting every step at once was 2.5 of skip_gru's 6.7 ms at batch 1, T=1000, H=128).
                cands, du = skipping_candidates(compute_rows, olds, x_t, prob_prev, need(carried, keep))
                new = [{n: tf.where(on, c[n], s[n]) for n in names} for c, s in zip(cands, carried, strict=True)]
                new[-1]["update_prob"] = tf.where(on, du, prob_prev)
            return emit(new, tf.cast(on, u_tilde.dtype), u_tilde)

        (out, gate_out, prob), final = skipping_scan(skipping_step, need, inp, tuple(states), valid)
    if reverse:
        out, gate_out, prob = (reverse_valid(a, lengths) for a in (out, gate_out, prob))
    return out, tuple(final), gate_out, prob


def _recomputing(run: Callable[[Any, bool], Loop], arguments: Any) -> Loop:
    """``run(arguments, skipping=True)``, whose gradient is that of ``run(arguments, skipping=False)``.

    The gradient runs the training loop again from the same arguments (the
    skipping loop kept none of its candidates) and differentiates it.
    """
    flat = tf.nest.flatten(arguments)
    structure: list[Any] = []

    @tf.custom_gradient  # type: ignore[untyped-decorator]
    def skipping(*values: tf.Tensor) -> Any:
        result = run(tf.nest.pack_sequence_as(arguments, list(values)), True)
        structure.append(result)

        def grad(*d_out: tf.Tensor | None, variables: Sequence[tf.Variable] = ()) -> Any:
            # ``variables``: any the loop reads itself (none of the op's own: its arguments are tensors).
            trainable = [v for v in variables if v.dtype.is_floating]
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch([*values, *trainable])
                again = tf.nest.flatten(run(tf.nest.pack_sequence_as(arguments, list(values)), False))
            cotangents = [tf.zeros_like(a) if d is None else d for a, d in zip(again, d_out, strict=True)]
            found = tape.gradient(
                again,
                [*values, *trainable],
                output_gradients=cotangents,
                unconnected_gradients=tf.UnconnectedGradients.ZERO,
            )
            d_values = [tf.convert_to_tensor(g) for g in found[: len(values)]]
            if not variables:
                return d_values
            by_variable = {id(v): g for v, g in zip(trainable, found[len(values) :], strict=True)}
            return d_values, [by_variable.get(id(v)) for v in variables]

        return tf.nest.flatten(result), grad

    out = skipping(*flat)
    return tf.nest.pack_sequence_as(structure[0], out)  # type: ignore[no-any-return]


def run(call: SequenceCall) -> SkipResult:
    """skip_rnn, skip_lstm or skip_gru: the base cell's stack under the state-update gate."""
    op, x, params, options, reverse = call.op, call.x, call.params, call.options, call.reverse
    cell = make_cell(op.removeprefix("skip_"), options)
    lengths = ARRAY_OPS.lengths(call.lengths, x)
    states = initial_states(op, x, params, options, call.initial_state, ARRAY_OPS)
    # Tensors throughout (a variable is read here): the recomputing path's custom gradient takes tensors only.
    arguments = (
        tf.convert_to_tensor(x),
        [{k: tf.convert_to_tensor(v) for k, v in p.items()} for p in params],
        [{k: tf.convert_to_tensor(v) for k, v in s.items()} for s in states],
    )
    if any(a is not None for a in call.arrays.values()):  # dropout masks: the training loop alone takes them
        record_path(op, "training")
        masks = layer_arrays(call, lengths, ARRAY_OPS)
        out, final, gate, prob = _loop(cell, *arguments, lengths, reverse, False, masks)
        return SkipResult(out, tuple(final), gate, prob)
    path = choose_path(op, tf.nest.flatten(arguments))

    def loop(args: Any, skipping: bool) -> Loop:
        return _loop(cell, args[0], args[1], args[2], lengths, reverse, skipping)

    if path == "skipping-recompute":
        out, final, gate, prob = _recomputing(loop, arguments)
    else:
        out, final, gate, prob = loop(arguments, path == "skipping")
    return SkipResult(out, tuple(final), gate, prob)
