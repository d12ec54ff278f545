"""Gradient checkpointing of any op (the option ``checkpoint_every=K``) with ``tf.recompute_grad``.

The time axis is cut into segments of K steps (the last one shorter when K
does not divide T). Each segment runs the op's own function under
``tf.recompute_grad``, from the final state of the segment before it in
processing order: first to last, or last to first when ``reverse=True``. The
tape then records each segment as one operation on its inputs, and recomputes
the segment's activations under a tape of its own while its gradient is
taken, so the memory of forward plus backward falls from T steps of
activations to about T/K states and K steps.

``tf.recompute_grad`` differentiates with respect to its positional tensors
only, so every floating tensor of a segment's call (its steps of ``x``, the
params, the carried state) is passed positionally and the call rebuilt
inside; ``lengths``, the options and the zoneout mask are constants of the
segment. Each segment gets its part of every per-step array (``x`` and
``zoneout_mask``; ``a`` and ``b``, ``pre`` for the primitives) and of each
row's length, ``clip(lengths - t0, 0, K)``: a row that ends before a segment
passes its state through it unchanged. The per-step fields of the results are
concatenated along time; the final state is the last segment's. The
primitives return h alone, so the state they pass on is read off h.

A time axis unknown when the op is traced (``tf.function`` over a ``None``
time dimension) cannot be cut in Python: the op then runs whole, with the
same values and gradients.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

__all__ = ["PER_STEP", "checkpointed", "with_checkpointing"]

#: The arguments of each op that hold one entry per step on axis 1 (sequence ops: x and zoneout_mask).
PER_STEP: dict[str, tuple[str, ...]] = {"linear_recurrence": ("a", "b"), "indrnn_recurrence": ("pre",)}
_SEQUENCE_PER_STEP = ("x", "zoneout_mask")
#: Arguments that are never differentiated: constants of a segment.
_CONSTANT = ("lengths", "zoneout_mask")


def _slice(value: Any, start: int, stop: int) -> Any:
    if value is None:
        return None
    if isinstance(value, (tf.Tensor, tf.Variable)):
        return value[:, start:stop]
    return tuple(v[:, start:stop] for v in value)


def _segment_lengths(lengths: Any, start: int, stop: int) -> Any:
    """Each row's steps inside ``start:stop``: a tensor stays a tensor, the rest NumPy."""
    if lengths is None:
        return None
    if isinstance(lengths, (tf.Tensor, tf.Variable)):
        return tf.clip_by_value(tf.cast(lengths, tf.int32) - start, 0, stop - start)
    return np.clip(np.asarray(lengths).astype(np.int64) - start, 0, stop - start)


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


def _is_float_tensor(value: Any) -> bool:
    return isinstance(value, (tf.Tensor, tf.Variable)) and value.dtype.is_floating


def _run_segment(fn: Callable[..., Any], arguments: dict[str, Any]) -> Any:
    """``fn(**arguments)`` under ``tf.recompute_grad``, differentiable in every floating tensor."""
    differentiable = {k: v for k, v in arguments.items() if k not in _CONSTANT}
    leaves = tf.nest.flatten(differentiable)
    where = [i for i, leaf in enumerate(leaves) if _is_float_tensor(leaf)]
    shape: dict[str, Any] = {}

    def run(*tensors: tf.Tensor) -> list[tf.Tensor]:
        filled = list(leaves)
        for i, tensor in zip(where, tensors, strict=True):
            filled[i] = tensor
        rebuilt = tf.nest.pack_sequence_as(differentiable, filled)
        result = fn(**{**arguments, **rebuilt})
        shape["result"] = result
        flat: list[tf.Tensor] = tf.nest.flatten(result)
        return flat

    # Variables are read here, on the caller's tape, so their gradients flow through the reads.
    inputs = [tf.convert_to_tensor(leaves[i]) for i in where]
    flat = tf.recompute_grad(run)(*inputs)
    return tf.nest.pack_sequence_as(shape["result"], tf.nest.flatten(flat))


def checkpointed(op: str, fn: Callable[..., Any], every: int, arguments: dict[str, Any]) -> Any:
    """``fn(**arguments)`` (the function of ``op``) run in checkpointed segments of ``every`` steps."""
    primitive = op in PER_STEP
    names = PER_STEP.get(op, _SEQUENCE_PER_STEP)
    time = arguments[names[0]].shape[1]
    if time is None or time <= every:
        return fn(**arguments)
    carry_name = "initial" if primitive else "initial_state"
    reverse = bool(arguments["reverse"])
    bounds = [(start, min(start + every, time)) for start in range(0, time, every)]
    carry = arguments[carry_name]
    pieces: list[Any] = []
    for start, stop in reversed(bounds) if reverse else bounds:
        segment = dict(arguments)
        for name in names:
            if name in segment:
                segment[name] = _slice(arguments[name], start, stop)
        segment["lengths"] = _segment_lengths(arguments["lengths"], start, stop)
        segment[carry_name] = carry
        result = _run_segment(fn, segment)
        carry = _final(result, segment["lengths"], carry, reverse) if primitive else result.state
        pieces.append(result)
    if reverse:
        pieces.reverse()
    if primitive:
        return tf.concat(pieces, axis=1)
    fields = {
        name: carry if name == "state" else tf.concat([getattr(p, name) for p in pieces], axis=1)
        for name in pieces[0]._fields
    }
    return type(pieces[0])(**fields)


def with_checkpointing(op: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` taking the option ``checkpoint_every`` too: None runs it as it is, K in segments."""

    def run(*, checkpoint_every: int | None = None, **arguments: Any) -> Any:
        if checkpoint_every is None:
            return fn(**arguments)
        return checkpointed(op, fn, int(checkpoint_every), arguments)

    run.__name__ = run.__qualname__ = getattr(fn, "__name__", op)
    run.__doc__ = fn.__doc__
    return run
