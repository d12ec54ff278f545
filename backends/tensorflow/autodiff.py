"""Reverse mode of every op through ``tf.GradientTape``, in the structure the spec defines."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tensorflow as tf

from rnnspec.backends.common.autodiff import paired
from rnnspec.backends.common.state import start_state
from rnnspec.ops import OPS
from rnnspec.tree import tree_leaves, tree_map

from .sequence import ARRAY_OPS

__all__ = ["vjp"]

_HALF = (tf.float16, tf.bfloat16)
_PRIMITIVE_INPUTS = {"linear_recurrence": ("a", "b", "initial"), "indrnn_recurrence": ("pre", "u", "initial")}


def _grads(
    tape: tf.GradientTape, outputs: list[tf.Tensor], cotangents: list[Any], inputs: list[tf.Tensor]
) -> list[tf.Tensor]:
    """``sum_i <cotangent_i, d output_i / d input>`` for each input; outputs without a cotangent count as zero."""
    pairs = [(o, c) for o, c in zip(outputs, cotangents, strict=True) if c is not None]
    if not pairs:
        return [tf.zeros_like(i) for i in inputs]
    found = tape.gradient(
        [o for o, _ in pairs],
        inputs,
        output_gradients=[tf.cast(c, o.dtype) for o, c in pairs],
        unconnected_gradients=tf.UnconnectedGradients.ZERO,
    )
    return [tf.convert_to_tensor(g) for g in found]  # IndexedSlices (from gathers) made dense


def _fresh(value: Any) -> tf.Tensor:
    """A tensor of ``value``'s values (a variable is read), for the tape to watch."""
    return tf.identity(value)


def vjp(op: str, arguments: dict[str, Any], cotangents: Mapping[str, Any]) -> dict[str, Any]:
    """Cotangents of the inputs of ``op`` at ``arguments`` (normalised), by ``tf.GradientTape``."""
    from .implementation import run_op

    args = dict(arguments)
    if OPS[op].kind == "primitive":
        names = _PRIMITIVE_INPUTS[op]
        if args["initial"] is None:
            first = tf.convert_to_tensor(args[names[0]])
            args["initial"] = tf.zeros((first.shape[0], first.shape[2]), first.dtype)
        leaves = {n: _fresh(args[n]) for n in names}
        args.update(leaves)
        with tf.GradientTape(persistent=False, watch_accessed_variables=False) as tape:
            tape.watch(list(leaves.values()))
            h = run_op(op, args)
        grads = _grads(tape, [h], [cotangents.get("h")], list(leaves.values()))
        return dict(zip(names, grads, strict=True))
    x = _fresh(args["x"])
    params = [{k: _fresh(v) for k, v in p.items()} for p in args["params"]]
    options = {k: v for k, v in args.items() if k not in ("x", "params", "lengths", "initial_state", "reverse")}
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch([x, *tree_leaves(params)])
        if args["initial_state"] is None:
            # The start state is built from the params (skip's h0/c0) under the tape: their gradients flow through it.
            # In the compute dtype: the gradient of h0 spread over the batch is a sum, taken in float32 for half
            # precision as run_op computes.
            wide = tf.float32 if x.dtype in _HALF else x.dtype
            start = start_state(
                op, tf.cast(x, wide), [{k: tf.cast(v, wide) for k, v in p.items()} for p in params], options, ARRAY_OPS
            )
            initial = tuple({k: _fresh(v) for k, v in s.items()} for s in start)
        else:
            initial = tuple({k: _fresh(v) for k, v in s.items()} for s in args["initial_state"])
        tape.watch(tree_leaves(initial))
        args.update(x=x, params=params, initial_state=initial)
        result = run_op(op, args)
    outs, cots = paired(result, cotangents)
    inputs = [x, *tree_leaves(params), *tree_leaves(initial)]
    found = iter(_grads(tape, outs, cots, inputs))
    d_x = next(found)
    d_params = tree_map(lambda _: next(found), params)
    d_initial = tree_map(lambda _: tf.cast(next(found), x.dtype), initial)
    return {"x": d_x, "params": d_params, "initial_state": tuple(d_initial)}
