"""Skip RNN at inference: which loop a call takes, and the candidates of only the rows whose gate opens.

At a step of Skip RNN's training loop every row computes its candidate
``S(s_{t-1}, x_t)`` (the straight-through gradient ``d u~ = <d, S - s>`` reads it
at skipped steps too). For the values alone a skipped row's candidate is never
used, since ``s_t = u_t S + (1 - u_t) s_{t-1}`` with ``u_t = 0`` is ``s_{t-1}``.

TensorFlow cannot tell, inside a ``tf.function`` being traced, whether the
caller will differentiate it (a tape outside the function records the call,
not the trace), so :func:`choose_path` picks one of three loops when the op is
built:

- ``"training"``: every candidate at every step, differentiated by TensorFlow:
  when the plain path is forced, or a ``tf.GradientTape`` active where the op is
  built watches one of its inputs (eager training, or a tape inside the traced
  function, as Keras' ``fit`` and ``tf.function`` training steps do);
- ``"skipping"``: the skipping loop alone, when executing eagerly with no tape
  active (nothing can differentiate the call);
- ``"skipping-recompute"``: otherwise (a trace with no tape watching the
  inputs: ``model.predict``, an inference ``tf.function``, an eager call over a
  long sequence run as a graph by :mod:`.graphs`), the skipping loop under a
  ``tf.custom_gradient`` whose gradient runs the training loop again and
  differentiates it. Inference costs nothing more; a gradient taken from
  outside the trace pays one skipping forward on top of the training loop's
  forward and backward, and is the training loop's gradient exactly (measured
  on one core, a tape around a ``tf.function`` of skip_gru at batch 1, T=1000,
  H=128: within 3% of the training loop's time, the backward dominating). A tape
  around an XLA function now gets a gradient at all: the training loop's own
  could not leave XLA (its while loop's TensorLists), the recomputation stays
  inside the backward function.

:func:`scan` is the skipping loop over time: runs of steps where no row
within its length updates do only the gate's bookkeeping. At a step where
some row updates, :func:`candidates` computes the candidates of the rows that
need one, switching on how many rows ``n`` that is:

- ``n <= ceil(B / 2)`` from batch :data:`MIN_GATHER_BATCH`: the cells run on
  gathered rows, whose results are scattered back over the old state. Outside
  XLA on exactly the ``n`` rows; under XLA (static shapes) on the smallest bucket
  of :func:`buckets` holding them, the other rows of the bucket keeping their
  old values;
- otherwise: the cells run on the whole batch.

Measured on one CPU core under XLA (``python -m rnnspec.bench --backends
tensorflow --sections skip --clock cpu --threads 1``): skip_gru at batch 1,
T=1000, H=128 took 0.41x its time at update rate 1 at rate 0.25; at batch 64,
rows staggered, 0.72x at rate 0.5 and 0.45x at rate 0.25.

:func:`.paths.last_path` tells which loop the last call (or trace) of a skip op took.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import tensorflow as tf
from tensorflow.python.eager import record  # TensorFlow's own test of whether a tape records an op

from .paths import in_xla, plain_forced, record_path
from .sequence import State, _rows, _time_major, dim, fresh

__all__ = [
    "MIN_GATHER_BATCH",
    "Candidates",
    "LoopPath",
    "Need",
    "SkipStep",
    "buckets",
    "candidates",
    "choose_path",
    "scan",
]

LoopPath = Literal["training", "skipping", "skipping-recompute"]

#: The smallest batch whose steps gather the updating rows: below it a gather and scatter cost about what they save.
MIN_GATHER_BATCH = 8

#: The cells of every layer on some rows: (each layer's state, layer 0's input projection) ->
#: (each layer's candidate state, the top layer's new update probability ``du~``).
Candidates = Callable[[Sequence[State], tf.Tensor], tuple[list[State], tf.Tensor]]


def choose_path(op: str, tensors: Sequence[tf.Tensor]) -> LoopPath:
    """The loop ``op`` takes on ``tensors`` (every float tensor argument), recorded for :func:`.paths.last_path`."""
    path: LoopPath
    if plain_forced() or record.should_record_backprop(list(tensors)):
        path = "training"
    elif tf.executing_eagerly() and not record.could_possibly_record():
        path = "skipping"
    else:
        path = "skipping-recompute"
    record_path(op, path)
    return path


def buckets(batch: int) -> tuple[int, ...]:
    """The row counts the gathered branches compute under XLA, ascending, each at most ``ceil(batch / 2)``;
    none below :data:`MIN_GATHER_BATCH`."""
    if batch < MIN_GATHER_BATCH:
        return ()
    return tuple(sorted({math.ceil(batch / d) for d in (8, 4, 2)}))


def _scatter(old: tf.Tensor, rows: tf.Tensor, new: tf.Tensor) -> tf.Tensor:
    """``old`` with its ``rows`` (distinct) replaced by ``new``, out of place."""
    return tf.tensor_scatter_nd_update(old, rows[:, None], new)


def candidates(
    compute: Candidates,
    states: Sequence[State],
    x: tf.Tensor,
    prob: tf.Tensor,
    need: tf.Tensor,
) -> tuple[list[State], tf.Tensor]:
    """Each layer's candidate state and the top layer's ``du~``, computed where ``need`` holds (some row).

    Parameters
    ----------
    compute
        The cells of every layer on the rows given, from their input at the step.
    states
        Each layer's state entries at ``t - 1``, ``(B, H)`` tensors.
    x
        The input at step t, ``(B, F)``.
    prob
        The top layer's ``update_prob`` at ``t - 1``, ``(B, 1)``: a row's ``du~`` where it is not computed.
    need
        ``(B,)`` bool: the rows whose gate opens at t within their length.

    Returns
    -------
    The candidates and ``du~``: where ``need`` holds those of ``compute``;
    elsewhere those of ``compute`` too (the whole batch) or the old state and
    ``prob`` (gathered rows), which the caller's mix leaves as they were.
    """
    batch = dim(need, 0)
    count = tf.reduce_sum(tf.cast(need, tf.int32))

    def every() -> tuple[list[State], tf.Tensor]:
        return compute(states, x)

    def gather(rows: tf.Tensor, used: tf.Tensor | None) -> tuple[list[State], tf.Tensor]:
        sub, du = compute([{n: tf.gather(v, rows) for n, v in s.items()} for s in states], tf.gather(x, rows))

        def put(old: tf.Tensor, new: tf.Tensor) -> tf.Tensor:
            # A bucket's filler rows keep their old values.
            return _scatter(old, rows, new if used is None else tf.where(used, new, tf.gather(old, rows)))

        merged = [{n: put(s[n], c[n]) for n in s} for s, c in zip(states, sub, strict=True)]
        return merged, put(prob, du)

    if isinstance(batch, int) and batch < MIN_GATHER_BATCH:
        return every()
    if not in_xla():

        def exact() -> tuple[list[State], tf.Tensor]:
            return gather(tf.where(need)[:, 0], None)  # the n needed rows, a dynamic shape

        return tf.cond(2 * count <= batch, exact, every)  # type: ignore[no-any-return]
    assert isinstance(batch, int)  # XLA knows every shape
    sizes = buckets(batch)

    def bucket(size: int) -> Callable[[], tuple[list[State], tf.Tensor]]:
        def branch() -> tuple[list[State], tf.Tensor]:
            # The needed rows first (a stable sort keeps their order), then other rows to fill the bucket:
            # distinct rows, so the scatter writes each once.
            rows = tf.argsort(tf.cast(tf.logical_not(need), tf.int32), stable=True)[:size]
            return gather(rows, tf.gather(need, rows)[:, None])

        return branch

    # 0..len(sizes) - 1: the smallest bucket holding every needed row; last: the whole batch.
    index = tf.add_n([tf.cast(count > m, tf.int32) for m in sizes])
    return tf.switch_case(index, [*(bucket(m) for m in sizes), every])  # type: ignore[no-any-return]


#: A step of the skipping loop: (the carried state, the step's input ``(B, F)`` or None where no row within its
#: length updates, the step's validity ``(B,)`` or None) -> (the new state, ``[h, update_gate, update_prob]``).
SkipStep = Callable[[Any, tf.Tensor | None, tf.Tensor | None], tuple[Any, Sequence[tf.Tensor]]]
#: The rows whose gate opens at a step within their length: (the carried state, the step's validity) -> ``(B,)``.
Need = Callable[[Any, tf.Tensor | None], tf.Tensor]


def scan(
    step: SkipStep,
    need: Need,
    x: tf.Tensor,
    state: tuple[State, ...],
    valid: tf.Tensor | None,
) -> tuple[list[tf.Tensor], tuple[State, ...]]:
    """:func:`.sequence.scan` for Skip RNN's skipping loop: a run of steps where no row updates does no cell work.

    ``state`` is each layer's (the top one's ``h`` is the output); ``valid``
    ``(B, T)`` as :func:`.sequence.scan`'s. Returns the outputs ``h``
    ``(B, T, H)``, ``update_gate`` and ``update_prob`` ``(B, T)``, and the final state.

    An inner ``tf.while_loop`` takes the steps until some row within its length
    updates, with the gate's bookkeeping only (``step`` without an input); the
    outer loop then runs that step's cells and the next inner run. No step
    branches: measured under XLA on one CPU core, a ``tf.cond`` per step cost
    about 1.6 us, more than a skipped step's bookkeeping. The top layer's ``h``,
    which changes only at updates, is kept once per update, and each step's
    output gathered from the update before it at the end: the inner loop
    carries no ``(T, B, H)`` array (XLA would copy it at each entry).
    """
    batch, time = dim(x, 0), dim(x, 1)
    dtype = x.dtype
    hidden = int(state[-1]["h"].shape[-1])
    if isinstance(time, int) and time == 0:
        empty = tf.zeros(tf.stack([batch, 0]), dtype)
        return [tf.zeros(tf.stack([batch, 0, hidden]), dtype), empty, tf.identity(empty)], fresh(state)
    steps = _time_major(x)
    masks = None if valid is None else tf.transpose(valid)
    static_batch = batch if isinstance(batch, int) else None
    per_step = tf.TensorShape([static_batch])
    gates = tf.TensorArray(dtype, size=time, element_shape=per_step)
    probs = tf.TensorArray(dtype, size=time, element_shape=per_step)
    which = tf.TensorArray(tf.int32, size=time, element_shape=[])  # the update (0: none yet) each step follows
    kept = tf.TensorArray(dtype, size=time + 1, element_shape=tf.TensorShape([static_batch, hidden]))
    kept = kept.write(0, state[-1]["h"])
    Run = tuple[tf.Tensor, tf.Tensor, Any, tf.TensorArray, tf.TensorArray, tf.TensorArray]

    def advance(run: Run, update: bool) -> Run:
        t, k, carried, gates, probs, which = run
        keep = None if masks is None else masks[t]
        new, (_, gate, prob) = step(carried, steps[t] if update else None, keep)
        if keep is not None:
            new = tf.nest.map_structure(lambda n, o: tf.where(_rows(keep, n), n, o), new, carried)
            gate, prob = (tf.where(keep, e, tf.zeros_like(e)) for e in (gate, prob))
        k = k + 1 if update else k
        return t + 1, k, new, gates.write(t, gate), probs.write(t, prob), which.write(t, k)

    def waiting(*run: Any) -> tf.Tensor:
        t, carried = run[0], run[2]
        keep = None if masks is None else masks[tf.minimum(t, time - 1)]  # in range: past the end it is False anyway
        return tf.logical_and(t < time, tf.logical_not(tf.reduce_any(need(carried, keep))))

    def skip_run(run: Run) -> Run:
        found: Run = tf.while_loop(waiting, lambda *r: advance(r, False), run, maximum_iterations=time)
        return found

    def body(*loop: Any) -> tuple[Any, ...]:
        # Entered at a step where some row updates (the last run stopped there, before the end).
        run = advance(loop[:-1], True)
        kept = loop[-1].write(run[1], run[2][-1]["h"])
        return (*skip_run(run), kept)

    first = skip_run((tf.constant(0), tf.constant(0), state, gates, probs, which))
    *run, kept = tf.while_loop(lambda t, *_: t < time, body, (*first, kept), maximum_iterations=time)
    _, _, final, gates, probs, which = run
    out = kept.gather(which.stack())  # (T, B, H): each step's top h, from the last update at or before it
    if masks is not None:
        out = tf.where(masks[:, :, None], out, tf.zeros_like(out))
    return [_time_major(out), _time_major(gates.stack()), _time_major(probs.stack())], fresh(final)
