"""The machinery every sequence op of the TensorFlow backend shares, as the reference's :mod:`.stack` and :mod:`.scan`.

- :func:`normalise_lengths`: ``lengths`` (None, NumPy, a list, an int tensor,
  symbolic inside a ``tf.function``) as an int32 tensor, with what is known on the host;
- :func:`reverse_valid`: each row's valid prefix reversed (``tf.reverse_sequence``),
  which is how ``reverse=True`` is realised, as in the reference;
- :func:`scan`: the masked time loop, a ``tf.while_loop`` over ``tf.TensorArray``\\ s,
  so a traced graph does not grow with the number of steps (past a row's length
  the state is frozen and the per-step outputs are zero); a caller may have it
  run several steps per iteration (:func:`unroll_steps`);
- :data:`ARRAY_OPS`: TensorFlow's array operations for the framework-free core
  (:mod:`rnnspec.backends.common`: start states, the stack of layers, segments).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import tensorflow as tf

from rnnspec.backends.common.arrays import ArrayOps

from .paths import in_xla

__all__ = [
    "ARRAY_OPS",
    "Dim",
    "Lengths",
    "State",
    "balanced_chunk_steps",
    "chunk_steps",
    "dim",
    "fresh",
    "host_array",
    "normalise_lengths",
    "reverse_valid",
    "scan",
    "unroll_steps",
    "zero_past",
]

#: The state of one layer: named entries such as ``{"h": ..., "c": ...}``.
State = dict[str, tf.Tensor]
#: A size: a Python int when the shape is static, else a scalar int32 tensor.
Dim: TypeAlias = int | tf.Tensor


def dim(a: tf.Tensor, axis: int) -> Dim:
    """The size of ``a`` along ``axis``: static when known (always inside XLA), else read at run time."""
    static = a.shape[axis]
    return int(static) if static is not None else tf.shape(a)[axis]


@dataclass(frozen=True)
class Lengths:
    """Each row's length, normalised.

    Attributes
    ----------
    values
        ``(batch,)`` int32.
    time
        The length of the time axis.
    full
        True when every row is known on the host to have full length
        (``lengths=None``, or host values all equal to ``time``); False when
        some row is shorter or the values are only known at run time (a tensor
        inside a ``tf.function``).
    """

    values: tf.Tensor
    time: Dim
    full: bool

    def valid(self) -> tf.Tensor | None:
        """``(batch, time)`` bool, True where a step lies within its row's length; None when every row is full."""
        if self.full:
            return None
        return tf.sequence_mask(self.values, self.time)


def host_array(value: Any) -> np.ndarray | None:
    """``value``'s values when the host has them: NumPy, a list, an eager tensor (also one captured
    inside a ``tf.function``), a variable read eagerly; None for a symbolic tensor or a variable in a graph."""
    if isinstance(value, tf.Variable):
        return np.asarray(value.numpy()) if tf.executing_eagerly() else None
    if isinstance(value, tf.Tensor):
        return None if tf.is_symbolic_tensor(value) else np.asarray(value.numpy())
    return np.asarray(value)


def normalise_lengths(lengths: Any, batch: Dim, time: Dim) -> Lengths:
    """``lengths`` as :class:`Lengths`: None is every row at full length."""
    if lengths is None:
        return Lengths(tf.fill(tf.stack([batch]), tf.cast(time, tf.int32)), time, True)
    found = host_array(lengths)
    if found is None:
        return Lengths(tf.reshape(tf.cast(lengths, tf.int32), [-1]), time, False)  # symbolic: known at run time
    host = found.astype(np.int32).reshape(-1)
    full = isinstance(time, int) and bool(np.all(host == time))
    return Lengths(tf.constant(host), time, full)


def zero_past(value: tf.Tensor, lengths: Any) -> tf.Tensor:
    """``value`` (batch, time, ...) with the steps past each row's length zeroed (:mod:`rnnspec.padding`)."""
    n = normalise_lengths(lengths, dim(value, 0), dim(value, 1))
    if n.full:
        return value
    valid = tf.sequence_mask(n.values, dim(value, 1))
    valid = tf.reshape(valid, tf.concat([tf.shape(valid), tf.ones([len(value.shape) - 2], tf.int32)], 0))
    return tf.where(valid, value, tf.zeros_like(value))


def reverse_valid(a: tf.Tensor, lengths: Lengths) -> tf.Tensor:
    """Reverse each row's valid prefix along axis 1; the padding stays in place.

    Its own inverse, and (``tf.reverse_sequence``'s gradient) its own reverse mode.
    """
    if a.shape[1] == 0:
        return tf.identity(a)  # nothing to reverse, and XLA's ReverseSequence rejects an empty time axis
    if lengths.full:
        return tf.reverse(a, axis=[1])
    return tf.reverse_sequence(a, lengths.values, seq_axis=1, batch_axis=0)


def fresh(tree: Any) -> Any:
    """New tensors for every leaf of ``tree``, so that a result never is one of the caller's objects."""
    return tf.nest.map_structure(tf.identity, tree)


#: One step: (the carried state, the step's inputs, the step's validity ``(batch,)`` or None)
#: -> (the new state, the step's outputs, each ``(batch, ...)``).
StepFn = Callable[[Any, Sequence[tf.Tensor], tf.Tensor | None], tuple[Any, Sequence[tf.Tensor]]]


def _rows(keep: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
    """``keep`` ``(batch,)`` shaped to broadcast against ``like`` ``(batch, ...)``."""
    return tf.reshape(keep, tf.concat([[-1], tf.ones([tf.rank(like) - 1], tf.int32)], 0))


def _time_major(a: tf.Tensor) -> tf.Tensor:
    rank = a.shape.rank
    return tf.transpose(a, [1, 0, *range(2, rank)])


#: Steps per chunk of a scan's inputs (see :class:`_StepReader`).
CHUNK_STEPS = 32
#: Steps per chunk when one step of the input holds at least :data:`LARGE_STEP` elements.
LARGE_STEP_CHUNK_STEPS = 8
#: Elements of one step (batch times features) from which chunks are :data:`LARGE_STEP_CHUNK_STEPS` long.
LARGE_STEP = 4096


def chunk_steps(a: tf.Tensor) -> int:
    """Steps per chunk for reading ``a`` ``(batch, time, ...)``: shorter when a step is large and its size static.

    The gradient of each step's read is a dense chunk, so its cost grows with
    the chunk's length times the step's size, while the TensorList the backward
    loop copies at every step grows with the number of chunks. Measured under a
    GradientTape in a graph (indrnn_recurrence, 1 thread): at batch 16, size
    512, 1024 steps, chunks of 8 took 0.71x the time of 32 (4: 0.75x, 16:
    0.81x, 64: 1.96x); at batch 16, size 64, 4096 steps, 8 to 64 were within
    10% of 32; at batch 2, size 2, 10,000 steps, 8 took 1.19x, 64 and 128 0.95x.
    """
    return _chunk_steps([a.shape[0], *a.shape[2:]])


def _chunk_steps(step: Sequence[int | None]) -> int:
    """:func:`chunk_steps` of a step's shape ``(batch, ...)``."""
    sizes = [s for s in step if s is not None]
    if len(sizes) < len(step):
        return CHUNK_STEPS
    return LARGE_STEP_CHUNK_STEPS if int(np.prod(sizes)) >= LARGE_STEP else CHUNK_STEPS


#: The cost of one element handle of the read's gradient list copied at a backward step over that of one
#: element of a chunk's dense gradient (see :func:`balanced_chunk_steps`).
HANDLE_COST = 57.0


def balanced_chunk_steps(steps: tf.Tensor) -> int | None:
    """Steps per chunk for reading ``steps`` ``(time, batch, ...)`` that balance the backward's two costs, or None
    (:func:`chunk_steps`) when the length or a step's size is not static.

    At each backward step, the gradient of a read copies the handles of its
    list, ``time / chunk`` of them, and writes a dense chunk, ``chunk * step``
    elements (``step`` = batch times features); the total is least at ``chunk =
    sqrt(HANDLE_COST * time / step)``, taken to a power of two from 1 to
    :data:`CHUNK_STEPS`. :data:`HANDLE_COST` is fitted to the lstm layer under a
    GradientTape in a graph, one thread: at batch 16, 256 steps, H = 256 (step
    16 * 1024) chunks of 1 took 0.95x the time of 8 (:func:`chunk_steps`), and
    forward alone 0.99x (one step of 64 KiB less copied out of its chunk); at
    batch 4, 512 steps, H = 64, chunks of 4 took 0.90x the time of 32; at batch 1,
    1000 steps, H = 64, 32 took 0.79x the time of 1, and 8 or 32 were within 5%.
    """
    time, step = steps.shape[0], steps.shape[1:]
    if time is None or any(s is None for s in step) or int(np.prod(step)) == 0:
        return None
    best = np.sqrt(HANDLE_COST * int(time) / int(np.prod(step)))
    return int(min(CHUNK_STEPS, 2 ** max(0, round(np.log2(max(best, 1.0))))))


#: Steps per iteration of an unrolled time loop (see :func:`unroll_steps`).
UNROLL_STEPS = 4
#: The fewest steps (static) from which a time loop is unrolled; a loop of unknown length always is.
UNROLL_MIN_STEPS = 48


def unroll_steps(time: Dim) -> int:
    """Steps per iteration of the time loop over ``time`` steps: :data:`UNROLL_STEPS`, or 1 below
    :data:`UNROLL_MIN_STEPS` or inside XLA (see :func:`scan`'s ``unroll``).

    Every iteration of a ``tf.while_loop`` runs a few dozen control nodes
    (``Merge``, ``Switch``, ``NextIteration``, ... per loop variable) on top of
    the step's own, and TensorFlow's executor hands ops between its inter-op
    threads; four steps per iteration share those costs. Against
    ``keras.layers.LSTM`` in a ``tf.function`` (``python -m rnnspec.bench
    --sections classic --backends tensorflow --threads 1 --clock cpu``, four
    runs of each, ratios of medians) the lstm forward went from 0.89-1.09x
    Keras' time to 0.86-0.99x at batch 16, 256 steps, H = 256 and from
    0.57-0.73x to 0.32-0.41x at batch 1, 1000 steps, H = 64; forward and
    backward from 0.57-0.66x to 0.56-0.62x and from 0.43-0.60x to 0.36-0.44x.
    Eight steps per iteration gained little more at these sizes, for twice
    the graph.

    A short loop, whose overhead is a millisecond, keeps one step per
    iteration: the graph holds a copy of the step per step of an iteration,
    and an lstm with its gradient took seconds longer to trace unrolled. XLA
    compiles the loop's control away, and unrolled there the lstm's forward
    and backward at the first size went from 0.73-0.78x Keras' (under XLA too)
    to 1.01-1.04x.
    """
    if in_xla() or (isinstance(time, int) and time < UNROLL_MIN_STEPS):
        return 1
    return UNROLL_STEPS


class _StepReader:
    """Reads step ``t`` of a ``(time, batch, ...)`` input inside the time loop, by chunks of steps.

    The loop reads a ``tf.TensorArray`` holding the input in chunks of
    :func:`chunk_steps` steps (time-major), then its step within the chunk. One
    array element per step would be simpler, but the gradient of each read
    writes into a TensorList as long as the array, and TensorFlow copies that
    list's element handles at every step of the backward loop: quadratic in the
    number of steps (5 of the 6 s of a 10,000-step backward at batch 2, size 2).
    By chunks, the list is that many times shorter. Chunks of one step (a
    caller's ``per_chunk``) are the array's elements, read without a gather.
    A loop that runs a whole chunk per iteration reads it at once (:meth:`steps`).
    """

    def __init__(self, steps: tf.Tensor, time: Dim, per_chunk: int | None = None) -> None:
        self.per_chunk = per_chunk = per_chunk or _chunk_steps(steps.shape[1:])
        if per_chunk == 1:
            self.array = tf.TensorArray(steps.dtype, size=time, infer_shape=True, clear_after_read=False).unstack(steps)
            return
        chunks = (time + per_chunk - 1) // per_chunk
        padded = tf.pad(steps, [[0, chunks * per_chunk - time]] + [[0, 0]] * (steps.shape.rank - 1))
        shape = tf.concat([tf.stack([chunks, per_chunk]), tf.shape(steps)[1:]], 0)
        # Each chunk is read once per step (an eager TensorArray clears an element after one read).
        array = tf.TensorArray(steps.dtype, size=chunks, infer_shape=True, clear_after_read=False)
        self.array = array.unstack(tf.reshape(padded, shape))

    def read(self, t: tf.Tensor) -> tf.Tensor:
        if self.per_chunk == 1:
            return self.array.read(t)
        return tf.gather(self.array.read(t // self.per_chunk), t % self.per_chunk)

    def steps(self, t: tf.Tensor) -> list[tf.Tensor]:
        """Steps ``t`` to ``t + per_chunk - 1``, ``t`` a multiple of ``per_chunk``: one read, split along time."""
        return list(tf.unstack(self.array.read(t // self.per_chunk), num=self.per_chunk))


def scan(
    step: StepFn,
    inputs: Sequence[tf.Tensor],
    state: Any,
    valid: tf.Tensor | None,
    out_dims: Sequence[tuple[int, ...]],
    *,
    time_major: bool = False,
    chunk: int | None = None,
    unroll: int = 1,
) -> tuple[list[tf.Tensor], Any]:
    """Run ``step`` over time from ``state``; ``inputs`` are ``(batch, time, ...)`` tensors read at each step.

    ``time_major=True``: ``inputs`` are ``(time, batch, ...)`` instead (the
    loop reads them so; a caller that makes them can make them so, rather
    than have them transposed here). ``chunk``: the steps per chunk in which
    they are read (see :class:`_StepReader`; None: :func:`chunk_steps`).
    ``unroll`` > 1: each iteration of the loop runs that many steps, reading
    one chunk of as many steps (``chunk`` is then ``unroll``); the steps left
    over, fewer than ``unroll``, run in a second loop, one per iteration (see
    :func:`_unrolled`).

    ``valid`` ``(batch, time)`` is True where a step lies within its row's length
    (None: every step): past it every leaf of the state is frozen and every
    output is zero. ``out_dims`` are the trailing dimensions of the step's
    outputs (``(H,)`` for ``(batch, H)``, ``()`` for ``(batch,)``).

    Returns the outputs, each ``(batch, time, *dims)``, and the final state.
    The loop is a ``tf.while_loop`` (a Python loop when executing eagerly), so
    a traced graph holds one copy of the step whatever the number of steps.
    """
    batch, time = (dim(inputs[0], 1), dim(inputs[0], 0)) if time_major else (dim(inputs[0], 0), dim(inputs[0], 1))
    dtype = inputs[0].dtype
    if isinstance(time, int) and time == 0:
        shapes = [tf.stack([batch, 0, *d]) for d in out_dims]
        return [tf.zeros(s, dtype) for s in shapes], fresh(state)
    streams = [_StepReader(a if time_major else _time_major(a), time, unroll if unroll > 1 else chunk) for a in inputs]
    masks = None if valid is None else tf.TensorArray(tf.bool, size=time).unstack(tf.transpose(valid))
    static_batch = batch if isinstance(batch, int) else None
    outs = [tf.TensorArray(dtype, size=time, element_shape=tf.TensorShape([static_batch, *d])) for d in out_dims]

    def advance(
        t: tf.Tensor, carried: Any, arrays: list[tf.TensorArray], xs: Sequence[tf.Tensor]
    ) -> tuple[Any, list[tf.TensorArray]]:
        """Step ``t`` from ``carried``, its outputs written."""
        keep = None if masks is None else masks.read(t)
        new, emitted = step(carried, xs, keep)
        if keep is not None:
            new = tf.nest.map_structure(lambda n, o: tf.where(_rows(keep, n), n, o), new, carried)
            emitted = [tf.where(_rows(keep, e), e, tf.zeros_like(e)) for e in emitted]
        return new, [a.write(t, e) for a, e in zip(arrays, emitted, strict=True)]

    def body(t: tf.Tensor, carried: Any, arrays: list[tf.TensorArray]) -> tuple[tf.Tensor, Any, list[tf.TensorArray]]:
        carried, arrays = advance(t, carried, arrays, [s.read(t) for s in streams])
        return t + 1, carried, arrays

    if unroll > 1:
        return _unrolled(body, advance, streams, state, outs, time, unroll)
    _, final, arrays = tf.while_loop(
        lambda t, *_: t < time, body, (tf.constant(0), state, outs), maximum_iterations=time
    )
    return [_time_major(a.stack()) for a in arrays], fresh(final)


#: One step of :func:`scan`'s loop: (t, the carried state, the output arrays) -> (t + 1, the new state, the arrays).
_Body = Callable[[tf.Tensor, Any, list[tf.TensorArray]], tuple[tf.Tensor, Any, list[tf.TensorArray]]]
#: Step t of :func:`scan` given its inputs: (t, the carried state, the output arrays, the step's inputs)
#: -> (the new state, the arrays with the step's outputs written).
_Advance = Callable[[tf.Tensor, Any, list[tf.TensorArray], Sequence[tf.Tensor]], tuple[Any, list[tf.TensorArray]]]


def _unrolled(
    body: _Body,
    advance: _Advance,
    streams: Sequence[_StepReader],
    state: Any,
    outs: list[tf.TensorArray],
    time: Dim,
    unroll: int,
) -> tuple[list[tf.Tensor], Any]:
    """:func:`scan`'s loop with ``unroll`` steps per iteration, over the whole chunks of the inputs, then one step
    per iteration over the steps left (none or one loop where ``time`` is static)."""
    whole = time // unroll
    t, carried, arrays = tf.constant(0), state, outs

    def chunk(t: tf.Tensor, carried: Any, arrays: list[tf.TensorArray]) -> tuple[tf.Tensor, Any, list[tf.TensorArray]]:
        inputs = [s.steps(t) for s in streams]
        for k in range(unroll):
            carried, arrays = advance(t + k, carried, arrays, [x[k] for x in inputs])
        return t + unroll, carried, arrays

    if not isinstance(whole, int) or whole > 0:
        t, carried, arrays = tf.while_loop(
            lambda t, *_: t < whole * unroll, chunk, (t, carried, arrays), maximum_iterations=whole
        )
    left = time - whole * unroll
    if not isinstance(left, int) or left > 0:
        t, carried, arrays = tf.while_loop(lambda t, *_: t < time, body, (t, carried, arrays), maximum_iterations=left)
    return [_time_major(a.stack()) for a in arrays], fresh(carried)


def _batch_shape(x: tf.Tensor, tail: tuple[int, ...]) -> tf.Tensor:
    """The shape ``(batch, *tail)``, with x's batch known at run time inside a trace."""
    return tf.stack([dim(x, 0), *tail])


def _is_tensor(value: Any) -> bool:
    return isinstance(value, (tf.Tensor, tf.Variable))


def _final(h: tf.Tensor, lengths: Any, initial: tf.Tensor | None, reverse: bool) -> tf.Tensor:
    """A primitive's state after a segment, read off its h: the step each row processed last."""
    last = h[:, 0] if reverse else h[:, -1]
    if lengths is None:
        return last
    steps = tf.cast(tf.convert_to_tensor(lengths), tf.int32)
    index = tf.zeros_like(steps) if reverse else tf.maximum(steps - 1, 0)
    picked = tf.gather(h, index, axis=1, batch_dims=1)
    before = tf.zeros_like(last) if initial is None else initial
    return tf.where((steps > 0)[:, None], picked, before)


#: TensorFlow's array operations for the framework-free core.
ARRAY_OPS = ArrayOps(
    is_array=_is_tensor,
    lengths=lambda lengths, x: normalise_lengths(lengths, dim(x, 0), dim(x, 1)),
    filled=lambda x, tail, value: tf.fill(_batch_shape(x, tail), tf.constant(value, x.dtype)),
    broadcast=lambda x, p, tail: tf.broadcast_to(tf.convert_to_tensor(p), _batch_shape(x, tail)),
    reverse_valid=reverse_valid,
    clip_lengths=lambda lengths, start, width: tf.clip_by_value(tf.cast(lengths, tf.int32) - start, 0, width),
    concat=lambda pieces: tf.concat(pieces, axis=1),
    final_state=_final,
    carried=tf.convert_to_tensor,
)
