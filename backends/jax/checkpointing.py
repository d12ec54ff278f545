"""Gradient checkpointing of any op (the option ``checkpoint_every=K``) with ``jax.checkpoint``.

The time axis is cut into segments of K steps as :mod:`rnnspec.backends.common.segments`
says (lengths, reverse, the state carried from segment to segment). The
``T // K`` full segments are one ``lax.scan`` whose body, the op's own function
on one segment, is wrapped in ``jax.checkpoint``: reverse mode keeps the state
carried between segments only, and recomputes a segment's activations while
its backward runs, so the memory of forward plus backward falls from T steps
of activations to about T/K states and K steps, and the program does not grow
with T/K. When K does not divide T, the last ``T % K`` steps are one more
checkpointed segment, run after the scan (before it when ``reverse=True``,
where the scan runs last to first).

Without an ``initial_state`` the carry starts from :func:`rnnspec.backends.common.state.start_state`
(built from the params, as the op itself starts), so gradients reach skip's
``h0``/``c0`` the same way; a primitive's starts from zeros.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from rnnspec.backends.common import segments
from rnnspec.backends.common.state import start_state
from rnnspec.ops import OPS

from .sequence import ARRAY_OPS

__all__ = ["checkpointed", "with_checkpointing"]

_NOT_OPTIONS = ("x", "params", "lengths", "initial_state", "reverse")


def _split(value: Any, count: int, every: int) -> Any:
    """``(batch, count * every, ...)`` arrays as ``(count, batch, every, ...)``, for the scan."""
    return jax.tree_util.tree_map(
        lambda a: jnp.moveaxis(a.reshape(a.shape[0], count, every, *a.shape[2:]), 1, 0), value
    )


def _merge(value: Any) -> Any:
    """The scan's ``(segments, batch, every, ...)`` outputs as ``(batch, segments * every, ...)``."""
    return jax.tree_util.tree_map(
        lambda a: jnp.moveaxis(a, 0, 1).reshape(a.shape[1], a.shape[0] * a.shape[2], *a.shape[3:]), value
    )


def _start(plan: segments.Plan, arguments: dict[str, Any]) -> Any:
    """The state the first segment starts from, as the scan carries it (plain dicts, one per layer)."""
    carry = arguments[plan.carry_name]
    first = arguments[plan.names[0]]
    if carry is None and plan.primitive:
        return jnp.zeros((first.shape[0], first.shape[2]), first.dtype)
    if carry is None:
        options = {k: v for k, v in arguments.items() if k not in _NOT_OPTIONS}
        return start_state(plan.op, arguments["x"], arguments["params"], options, ARRAY_OPS)
    return carry if plan.primitive else tuple(dict(layer) for layer in carry)


def checkpointed(op: str, fn: Callable[..., Any], every: int, arguments: dict[str, Any]) -> Any:
    """``fn(**arguments)`` (the function of ``op``) run in checkpointed segments of ``every`` steps."""
    plan = segments.plan(op, every, arguments)
    if plan is None:
        return fn(**arguments)
    names, time, reverse = plan.names, plan.time, plan.reverse
    lengths = None if arguments["lengths"] is None else jnp.asarray(arguments["lengths"]).astype(jnp.int32)

    def segment(carry: Any, steps: dict[str, Any], start: Any) -> tuple[Any, Any]:
        width = steps[names[0]].shape[1]
        seg_lengths = None if lengths is None else jnp.clip(lengths - start, 0, width)
        result = fn(**{**arguments, **steps, "lengths": seg_lengths, plan.carry_name: carry})
        if plan.primitive:
            return ARRAY_OPS.final_state(result, seg_lengths, carry, reverse), result
        fields = result._asdict()
        state = tuple(dict(layer) for layer in fields.pop("state"))
        return state, fields

    remat = jax.checkpoint(segment)

    def body(carry: Any, inputs: tuple[dict[str, Any], jax.Array]) -> tuple[Any, Any]:
        steps, start = inputs
        new, outputs = remat(carry, steps, start)
        return new, outputs

    full = time // every
    cut = full * every
    main = {n: _split(jax.tree_util.tree_map(lambda a: a[:, :cut], arguments[n]), full, every) for n in names}
    starts = jnp.arange(full, dtype=jnp.int32) * every
    rest = {n: jax.tree_util.tree_map(lambda a: a[:, cut:], arguments[n]) for n in names} if cut < time else None
    carry = _start(plan, arguments)
    tail: Any = None
    if reverse and rest is not None:
        carry, tail = remat(carry, rest, jnp.int32(cut))
    carry, stacked = jax.lax.scan(body, carry, (main, starts), reverse=reverse)
    if not reverse and rest is not None:
        carry, tail = remat(carry, rest, jnp.int32(cut))
    outputs = _merge(stacked)
    if tail is not None:
        outputs = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b], axis=1), outputs, tail)
    if plan.primitive:
        return outputs
    result_type = OPS[op].result
    assert result_type is not None  # a sequence op: the primitives returned above
    return result_type(state=carry, **outputs)


def with_checkpointing(op: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` taking the option ``checkpoint_every`` too: None runs it as it is, K in segments."""
    return segments.with_checkpointing(op, fn, checkpointed)
