"""Gradient checkpointing of any op (the option ``checkpoint_every=K``) with ``tf.recompute_grad``.

The time axis is cut into segments of K steps as :mod:`rnnspec.backends.common.segments`
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

An eager call long enough to run as a graph (:func:`.graphs.wants_graph`)
runs its segments eagerly, each through the op's segment graph
(:func:`.graphs.as_graph`): the eager tape then takes the segments' gradients
one at a time, from the last, so one segment's activations are alive at once.
Inside a graph (a user's ``tf.function``) the order is the executor's:
``tf.recompute_grad`` makes a segment's recomputation wait for the cotangent of
its first output only, so the carried state is put first. Its cotangent comes
from the next segment's backward, which chains the recomputations as the tape
does (the outputs' cotangent, first otherwise, comes from the loss at once and
lets every segment be recomputed together at the start of the backward).

A time axis unknown when the op is traced (``tf.function`` over a ``None``
time dimension) cannot be cut in Python: the op then runs whole, with the
same values and gradients.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf

from rnnspec.backends.common import segments

from . import graphs
from .sequence import ARRAY_OPS

__all__ = ["checkpointed", "with_checkpointing"]

#: Arguments that are never differentiated: constants of a segment.
_CONSTANT = ("lengths", "zoneout_mask")


def _is_tensor(value: Any) -> bool:
    return isinstance(value, (tf.Tensor, tf.Variable))


def _chain_first(result: Any) -> tuple[list[Any], Callable[[list[Any]], Any]]:
    """The leaves of a segment's result, its carried state first, and how to rebuild the result from them.

    A primitive's h (its only leaf) carries its state already.
    """
    state = getattr(result, "state", None)
    if state is None:
        return tf.nest.flatten(result), lambda flat: tf.nest.pack_sequence_as(result, flat)
    head = tf.nest.flatten(state)
    rest = {name: value for name, value in result._asdict().items() if name != "state"}

    def rebuild(flat: list[Any]) -> Any:
        fields = tf.nest.pack_sequence_as(rest, flat[len(head) :])
        return type(result)(state=tf.nest.pack_sequence_as(state, flat[: len(head)]), **fields)

    return head + tf.nest.flatten(rest), rebuild


def _segment_runner(op: str, graph: bool) -> segments.RunSegment:
    """How each segment runs: ``fn(**arguments)`` under ``tf.recompute_grad``, as a graph or not."""

    def run_segment(fn: Callable[..., Any], arguments: dict[str, Any]) -> Any:
        differentiable = {k: v for k, v in arguments.items() if k not in _CONSTANT}
        leaves = tf.nest.flatten(differentiable)
        where = [i for i, leaf in enumerate(leaves) if ARRAY_OPS.is_array(leaf) and leaf.dtype.is_floating]
        found: dict[str, Any] = {}

        def run(*tensors: tf.Tensor) -> list[tf.Tensor]:
            filled = list(leaves)
            for i, tensor in zip(where, tensors, strict=True):
                filled[i] = tensor
            call = {**arguments, **tf.nest.pack_sequence_as(differentiable, filled)}
            result = graphs.as_graph(op, fn, call, segment=True) if graph else fn(**call)
            flat, found["rebuild"] = _chain_first(result)
            return flat

        # Variables are read here, on the caller's tape, so their gradients flow through the reads.
        inputs = [tf.convert_to_tensor(leaves[i]) for i in where]
        flat = tf.recompute_grad(run)(*inputs)
        return found["rebuild"](tf.nest.flatten(flat))

    return run_segment


def checkpointed(op: str, fn: Callable[..., Any], every: int, arguments: dict[str, Any]) -> Any:
    """``fn(**arguments)`` (the function of ``op``) run in checkpointed segments of ``every`` steps."""
    plan = segments.plan(op, every, arguments)
    if plan is None:
        return fn(**arguments)
    runner = _segment_runner(op, graphs.wants_graph(op, arguments))
    return segments.run_in_segments(plan, fn, arguments, ARRAY_OPS, runner)


def with_checkpointing(op: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` taking the option ``checkpoint_every`` too: None runs it as it is, K in segments."""
    return segments.with_checkpointing(op, fn, checkpointed)
