"""Gradient checkpointing of any op (the option ``checkpoint_every=K``) with ``tf.recompute_grad``.

The time axis is cut into segments of K steps as :mod:`rnnspec.backends.segments`
says (lengths, reverse, the state carried from segment to segment). Each
segment runs the op's own function under ``tf.recompute_grad``. The tape then
records each segment as one operation on its inputs, and recomputes the
segment's activations under a tape of its own while its gradient is taken, so
the memory of forward plus backward falls from T steps of activations to about
T/K states and K steps.

``tf.recompute_grad`` differentiates with respect to its positional tensors
only, so every floating tensor of a segment's call (its steps of ``x``, the
params, the carried state) is passed positionally and the call rebuilt
inside; ``lengths``, the options and the zoneout mask are constants of the
segment.

A time axis unknown when the op is traced (``tf.function`` over a ``None``
time dimension) cannot be cut in Python: the op then runs whole, with the
same values and gradients.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf

from rnnspec.backends import segments
from rnnspec.backends.segments import PER_STEP

__all__ = ["PER_STEP", "checkpointed", "with_checkpointing"]

#: Arguments that are never differentiated: constants of a segment.
_CONSTANT = ("lengths", "zoneout_mask")


def _is_tensor(value: Any) -> bool:
    return isinstance(value, (tf.Tensor, tf.Variable))


def _clip_lengths(lengths: tf.Tensor, start: int, width: int) -> tf.Tensor:
    return tf.clip_by_value(tf.cast(lengths, tf.int32) - start, 0, width)


def _concat(pieces: list[tf.Tensor]) -> tf.Tensor:
    return tf.concat(pieces, axis=1)


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


_OPS = segments.ArrayOps(is_array=_is_tensor, clip_lengths=_clip_lengths, concat=_concat, final_state=_final)


def _run_segment(fn: Callable[..., Any], arguments: dict[str, Any]) -> Any:
    """``fn(**arguments)`` under ``tf.recompute_grad``, differentiable in every floating tensor."""
    differentiable = {k: v for k, v in arguments.items() if k not in _CONSTANT}
    leaves = tf.nest.flatten(differentiable)
    where = [i for i, leaf in enumerate(leaves) if _is_tensor(leaf) and leaf.dtype.is_floating]
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
    plan = segments.plan(op, every, arguments)
    if plan is None:
        return fn(**arguments)
    return segments.run_in_segments(plan, fn, arguments, _OPS, _run_segment)


def with_checkpointing(op: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` taking the option ``checkpoint_every`` too: None runs it as it is, K in segments."""
    return segments.with_checkpointing(op, fn, checkpointed)
