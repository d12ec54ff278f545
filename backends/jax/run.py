"""Running an op: the dtype policy, and the op under ``jax.jit``.

Dtype policy: float32 and float64 compute in their own dtype; float16 and
bfloat16 inputs are computed in float32 and the results rounded back to the
input dtype (the accumulation a half-precision user expects).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rnnspec.backends.common.ops import op_table
from rnnspec.ops import OPS
from rnnspec.padding import without_padding
from rnnspec.tree import tree_leaves, tree_map

from .checkpointing import with_checkpointing
from .paths import plain_forced, plain_path
from .sequence import zero_past

__all__ = ["OP_FUNCTIONS", "STATIC_OPTIONS", "jitted", "lengths_array", "run_op"]

#: op name -> pure function of jax arrays and the normalised arguments (keywords, ``checkpoint_every``
#: included: a static option, it shapes the program), from the modules the op records name.
OP_FUNCTIONS: dict[str, Callable[..., Any]] = {
    op: with_checkpointing(op, fn) for op, fn in op_table("rnnspec.backends.jax").items()
}

#: op name -> the keyword arguments that are Python values (strings, booleans, numbers), static under
#: ``jax.jit``: the op's value options and ``reverse``. Arrays (``zoneout_mask``, ``lengths``) are traced.
STATIC_OPTIONS: dict[str, tuple[str, ...]] = {
    op: (*(o.name for o in OPS[op].options if o.kind == "value"), "reverse") for op in OP_FUNCTIONS
}

_HALF = (jnp.dtype(jnp.float16), jnp.dtype(jnp.bfloat16))


def _is_float(a: Any) -> bool:
    return isinstance(a, jax.Array) and bool(jnp.issubdtype(a.dtype, jnp.floating))


def _compute_dtype(arguments: Mapping[str, Any]) -> tuple[np.dtype[Any], np.dtype[Any]]:
    """(the input dtype, the dtype computed in)."""
    first = next(leaf for leaf in tree_leaves(dict(arguments)) if _is_float(leaf))
    dtype = jnp.dtype(first.dtype)
    return dtype, (jnp.dtype(jnp.float32) if dtype in _HALF else dtype)


def _cast(tree: Any, dtype: np.dtype[Any]) -> Any:
    return tree_map(lambda a: a.astype(dtype) if _is_float(a) else a, tree)


def run_op(op: str, arguments: Mapping[str, Any]) -> Any:
    """Run ``op`` on normalised arguments (jax arrays or tracers), upcasting half precision for the arithmetic."""
    dtype, compute = _compute_dtype(arguments)
    result = OP_FUNCTIONS[op](**_cast(without_padding(op, arguments, zero_past), compute))
    return result if compute == dtype else _cast(result, dtype)


def _traced(op: str, plain: bool, **arguments: Any) -> Any:
    with plain_path() if plain else contextlib.nullcontext():
        return run_op(op, arguments)


@functools.cache
def _jit(op: str) -> Callable[..., Any]:
    return jax.jit(functools.partial(_traced, op), static_argnames=(*STATIC_OPTIONS[op], "plain"))


def lengths_array(lengths: Any) -> Any:
    """``lengths`` as a jax int32 array, so ``jax.jit`` traces it as one array (a list would be traced
    element by element, and a NumPy array of another integer dtype would make another program)."""
    if lengths is None or isinstance(lengths, jax.Array):
        return lengths
    return jnp.asarray(np.asarray(lengths).astype(np.int32))


def jitted(op: str) -> Callable[..., Any]:
    """``op`` under ``jax.jit``: a callable of the normalised arguments by keyword.

    The static options and whether the plain path is forced (:func:`.paths.plain_forced`,
    read at each call) are part of the compilation key; arrays, ``lengths``
    included, are traced, so one program serves every ``lengths``.
    """
    compiled = _jit(op)

    def call(**arguments: Any) -> Any:
        arguments["lengths"] = lengths_array(arguments.get("lengths"))
        return compiled(**arguments, plain=plain_forced())

    call.__name__ = op
    return call
