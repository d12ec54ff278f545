"""Gradient checkpointing of any op (the option ``checkpoint_every=K``) with ``jax.checkpoint``.

The time axis is cut into segments of K steps. The ``T // K`` full segments
are one ``lax.scan`` whose body, the op's own function on one segment, is
wrapped in ``jax.checkpoint``: reverse mode keeps the state carried between
segments only, and recomputes a segment's activations while its backward
runs, so the memory of forward plus backward falls from T steps of
activations to about T/K states and K steps, and the program does not grow
with T/K. When K does not divide T, the last ``T % K`` steps are one more
checkpointed segment, run after the scan (before it when ``reverse=True``,
where the scan runs last to first).

Each segment gets its part of every per-step array (``x`` and ``zoneout_mask``;
``a`` and ``b``, ``pre`` for the primitives) and of each row's length,
``clip(lengths - t0, 0, K)``: a row that ends before a segment passes its
state through it unchanged. Without an ``initial_state`` the carry starts
from :func:`.state.start_state` (built from the params, as the op itself
starts), so gradients reach skip's ``h0``/``c0`` the same way. The primitives
return h alone, so the state they pass on is read off h: the step processed
last in the segment (``lengths - 1``, or step 0 when reversed), or the carry
for a row with no step in it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from rnnspec.results import ACTResult, SequenceResult, SkipResult

from .state import start_state

__all__ = ["PER_STEP", "checkpointed", "with_checkpointing"]

#: The arguments of each op that hold one entry per step on axis 1 (sequence ops: x and zoneout_mask).
PER_STEP: dict[str, tuple[str, ...]] = {"linear_recurrence": ("a", "b"), "indrnn_recurrence": ("pre",)}
_SEQUENCE_PER_STEP = ("x", "zoneout_mask")
_NOT_OPTIONS = ("x", "params", "lengths", "initial_state", "reverse")


def _result_type(op: str) -> Any:
    if op == "act":
        return ACTResult
    return SkipResult if op.startswith("skip_") else SequenceResult


def _final(h: jax.Array, lengths: jax.Array | None, carry: jax.Array, reverse: bool) -> jax.Array:
    """A primitive's state after a segment, read off its h: the step each row processed last."""
    last = h[:, 0] if reverse else h[:, -1]
    if lengths is None:
        return last
    index = jnp.zeros_like(lengths) if reverse else jnp.maximum(lengths - 1, 0)
    picked = jnp.take_along_axis(h, index[:, None, None], axis=1)[:, 0]
    return jnp.where((lengths > 0)[:, None], picked, carry)


def _split(value: Any, segments: int, every: int) -> Any:
    """``(batch, segments * every, ...)`` arrays as ``(segments, batch, every, ...)``, for the scan."""
    return jax.tree_util.tree_map(
        lambda a: jnp.moveaxis(a.reshape(a.shape[0], segments, every, *a.shape[2:]), 1, 0), value
    )


def _merge(value: Any) -> Any:
    """The scan's ``(segments, batch, every, ...)`` outputs as ``(batch, segments * every, ...)``."""
    return jax.tree_util.tree_map(
        lambda a: jnp.moveaxis(a, 0, 1).reshape(a.shape[1], a.shape[0] * a.shape[2], *a.shape[3:]), value
    )


def checkpointed(op: str, fn: Callable[..., Any], every: int, arguments: dict[str, Any]) -> Any:
    """``fn(**arguments)`` (the function of ``op``) run in checkpointed segments of ``every`` steps."""
    primitive = op in PER_STEP
    names = [n for n in PER_STEP.get(op, _SEQUENCE_PER_STEP) if arguments.get(n) is not None]
    first = arguments[names[0]]
    batch, time = int(first.shape[0]), int(first.shape[1])
    if time <= every:
        return fn(**arguments)
    carry_name = "initial" if primitive else "initial_state"
    reverse = bool(arguments["reverse"])
    lengths = None if arguments["lengths"] is None else jnp.asarray(arguments["lengths"]).astype(jnp.int32)
    carry = arguments[carry_name]
    if carry is None and primitive:
        carry = jnp.zeros((batch, first.shape[2]), first.dtype)
    elif carry is None:
        options = {k: v for k, v in arguments.items() if k not in _NOT_OPTIONS}
        carry = start_state(op, arguments["x"], arguments["params"], options)
    else:
        carry = carry if primitive else tuple(dict(layer) for layer in carry)

    def segment(carry: Any, steps: dict[str, Any], start: Any) -> tuple[Any, Any]:
        width = steps[names[0]].shape[1]
        seg_lengths = None if lengths is None else jnp.clip(lengths - start, 0, width)
        result = fn(**{**arguments, **steps, "lengths": seg_lengths, carry_name: carry})
        if primitive:
            return _final(result, seg_lengths, carry, reverse), result
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
    tail: Any = None
    if reverse and rest is not None:
        carry, tail = remat(carry, rest, jnp.int32(cut))
    carry, stacked = jax.lax.scan(body, carry, (main, starts), reverse=reverse)
    if not reverse and rest is not None:
        carry, tail = remat(carry, rest, jnp.int32(cut))
    outputs = _merge(stacked)
    if tail is not None:
        outputs = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b], axis=1), outputs, tail)
    if primitive:
        return outputs
    return _result_type(op)(state=carry, **outputs)


def with_checkpointing(op: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` taking the option ``checkpoint_every`` too: None runs it as it is, K in segments."""

    def run(*, checkpoint_every: int | None = None, **arguments: Any) -> Any:
        if checkpoint_every is None:
            return fn(**arguments)
        return checkpointed(op, fn, int(checkpoint_every), arguments)

    run.__name__ = run.__qualname__ = getattr(fn, "__name__", op)
    run.__doc__ = fn.__doc__
    return run
