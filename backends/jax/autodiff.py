"""Reverse mode of every op through ``jax.vjp``, in the structure the spec defines.

Without an ``initial_state``, a sequence op starts from :func:`rnnspec.backends.common.state.start_state`,
which is built from the params (skip's learnt ``h0``/``c0``). The spec asks for
the cotangent of that start state as well as of the params through it, so the
differentiated function takes a zero offset added to the start state: its
cotangent is the start state's, and the params' cotangents include the path
through ``h0``/``c0``.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from rnnspec.backends.common.state import start_state
from rnnspec.ops import OPS

from .paths import plain_forced, plain_path
from .run import STATIC_OPTIONS, lengths_array, run_op
from .sequence import ARRAY_OPS

__all__ = ["vjp"]

_HALF = (jnp.dtype(jnp.float16), jnp.dtype(jnp.bfloat16))
_PRIMITIVE_INPUTS = {"linear_recurrence": ("a", "b", "initial"), "indrnn_recurrence": ("pre", "u", "initial")}
_SEQUENCE_ARGS = ("x", "params", "lengths", "initial_state", "reverse")


def _cotangent(given: Any, like: jax.Array) -> jax.Array:
    """The caller's cotangent in the result's dtype, or zeros where none was given."""
    return jnp.zeros_like(like) if given is None else jnp.asarray(given).astype(like.dtype)


def _result_cotangents(result: Any, cotangents: Mapping[str, Any]) -> Any:
    """Cotangents in the structure of ``result`` (a NamedTuple of arrays and the state), zeros where absent."""
    fields: dict[str, Any] = {}
    for name, value in result._asdict().items():
        given = cotangents.get(name)
        if name == "state":
            layers = []
            for k, layer in enumerate(value):
                layer_ct = (given[k] if given is not None else None) or {}
                layers.append({entry: _cotangent(layer_ct.get(entry), a) for entry, a in layer.items()})
            fields[name] = tuple(layers)
        else:
            fields[name] = _cotangent(given, value)
    return type(result)(**fields)


def _primitive_vjp(op: str, arguments: dict[str, Any], cotangents: Mapping[str, Any]) -> dict[str, Any]:
    names = _PRIMITIVE_INPUTS[op]
    args = dict(arguments)
    if args["initial"] is None:
        first = args[names[0]]
        args["initial"] = jnp.zeros((first.shape[0], first.shape[2]), first.dtype)

    def run(*arrays: jax.Array) -> jax.Array:
        result: jax.Array = run_op(op, {**args, **dict(zip(names, arrays, strict=True))})
        return result

    h, pullback = jax.vjp(run, *(args[n] for n in names))
    grads = pullback(_cotangent(cotangents.get("h"), h))
    return dict(zip(names, grads, strict=True))


def _sequence_vjp(op: str, arguments: dict[str, Any], cotangents: Mapping[str, Any]) -> dict[str, Any]:
    options = {k: v for k, v in arguments.items() if k not in _SEQUENCE_ARGS}
    given = arguments["initial_state"]
    x = arguments["x"]

    def run(x: jax.Array, params: list[dict[str, jax.Array]], initial: tuple[dict[str, jax.Array], ...]) -> Any:
        if given is None:  # ``initial`` is a zero offset on the start state built from the params
            # In the compute dtype: the gradient of h0 spread over the batch is a sum, taken in float32 for
            # half precision as run_op computes.
            wide = jnp.float32 if x.dtype in _HALF else x.dtype
            base = start_state(
                op, x.astype(wide), [{k: v.astype(wide) for k, v in p.items()} for p in params], options, ARRAY_OPS
            )
            initial = tuple(
                {k: base[j][k] + v.astype(wide) for k, v in layer.items()} for j, layer in enumerate(initial)
            )
        return run_op(op, {**arguments, "x": x, "params": params, "initial_state": initial})

    params = [dict(p) for p in arguments["params"]]
    if given is None:
        initial = tuple(
            {k: jnp.zeros_like(v) for k, v in s.items()} for s in start_state(op, x, params, options, ARRAY_OPS)
        )
    else:
        initial = tuple(dict(s) for s in given)
    result, pullback = jax.vjp(run, x, params, initial)
    d_x, d_params, d_initial = pullback(_result_cotangents(result, cotangents))
    return {"x": d_x, "params": list(d_params), "initial_state": tuple(d_initial)}


def _traced(op: str, plain: bool, cotangents: Mapping[str, Any], **arguments: Any) -> dict[str, Any]:
    with plain_path() if plain else contextlib.nullcontext():
        if OPS[op].kind == "primitive":
            return _primitive_vjp(op, arguments, cotangents)
        return _sequence_vjp(op, arguments, cotangents)


@functools.cache
def _jit(op: str) -> Callable[..., dict[str, Any]]:
    return jax.jit(functools.partial(_traced, op), static_argnames=(*STATIC_OPTIONS[op], "plain"))


def vjp(op: str, arguments: dict[str, Any], cotangents: Mapping[str, Any]) -> dict[str, Any]:
    """Cotangents of the inputs of ``op`` at ``arguments`` (normalised), by ``jax.vjp``, under ``jax.jit``.

    The forward and reverse passes are one compiled program per op, shapes and
    static options (and the structure of ``cotangents``).
    """
    args = dict(arguments, lengths=lengths_array(arguments.get("lengths")))
    grads: dict[str, Any] = _jit(op)(cotangents=dict(cotangents), plain=plain_forced(), **args)
    return grads
