"""The TensorFlow backend's implementation: adapters, reverse mode, compiled mode, dispatch to the ops.

Dtype policy: float32 and float64 compute in their own dtype; float16 and
bfloat16 inputs are computed in float32 and the results rounded back to the
input dtype (the accumulation a half-precision user expects).

Each op lives in a module of its family and is a plain function of tf tensors
that runs the same eagerly and inside ``tf.function`` (its time loop is a
``tf.while_loop``); :data:`OP_FUNCTIONS` maps names to them.
An eager call over a long sequence runs the op as a cached ``tf.function``
(:mod:`.graphs`), since the eager loop dispatches every step's ops from Python.
Reverse mode is ``tf.GradientTape`` (:mod:`.autodiff`); compiled mode is the op
under ``tf.function(jit_compile=True)`` (XLA), traced once per shape, dtype and
option values (the options are Python values, static in the trace).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import numpy as np
import tensorflow as tf

from rnnspec.backends.common.ops import op_table
from rnnspec.implementation import Implementation
from rnnspec.methods import spec_method
from rnnspec.padding import without_padding
from rnnspec.tree import tree_leaves, tree_map

from .checkpointing import with_checkpointing
from .graphs import as_graph, wants_graph
from .sequence import host_array, zero_past

__all__ = ["TensorflowImplementation", "run_op"]

_HALF = (tf.float16, tf.bfloat16)

#: op name -> function of the normalised arguments (keywords, ``checkpoint_every`` included), from the
#: modules the op records name (:func:`rnnspec.backends.common.ops.op_table`).
OP_FUNCTIONS: dict[str, Callable[..., Any]] = {
    op: with_checkpointing(op, fn) for op, fn in op_table("rnnspec.backends.tensorflow").items()
}


def _is_tf(value: Any) -> bool:
    return isinstance(value, (tf.Tensor, tf.Variable))


def _compute_dtype(arguments: Mapping[str, Any]) -> tuple[tf.DType, tf.DType]:
    """(the input dtype, the dtype computed in)."""
    first = next(leaf for leaf in tree_leaves(dict(arguments)) if _is_tf(leaf) and leaf.dtype.is_floating)
    return first.dtype, (tf.float32 if first.dtype in _HALF else first.dtype)


def _cast(tree: Any, dtype: tf.DType) -> Any:
    return tree_map(lambda a: tf.cast(a, dtype) if _is_tf(a) and a.dtype.is_floating else a, tree)


def run_op(op: str, arguments: Mapping[str, Any]) -> Any:
    """Run ``op`` on normalised arguments, upcasting half precision for the arithmetic."""
    dtype, compute = _compute_dtype(arguments)
    args = _cast(without_padding(op, arguments, zero_past), compute)
    fn = OP_FUNCTIONS[op]
    result = as_graph(op, fn, args) if wants_graph(op, args) else fn(**args)
    return result if compute == dtype else _cast(result, dtype)


class TensorflowImplementation(Implementation):
    """Every op of the spec on tf tensors, eagerly and under ``tf.function(jit_compile=True)``."""

    ops: ClassVar[tuple[str, ...]] = tuple(OP_FUNCTIONS)
    dtypes: ClassVar[tuple[str, ...]] = ("float16", "bfloat16", "float32", "float64")
    framework: ClassVar[str] = "tensorflow"
    capabilities: ClassVar[frozenset[str]] = frozenset({"vjp", "compile"})
    #: As every TensorFlow function, the ops take NumPy arrays too (converted once, by the Backend, with asarray).
    accepts_numpy: ClassVar[bool] = True
    expected_failures: ClassVar[Mapping[str, str]] = {}

    def framework_version(self) -> str:
        return str(tf.__version__)

    def device(self) -> str:
        return "gpu" if tf.config.list_logical_devices("GPU") else "cpu"

    def fast_paths(self) -> dict[str, str]:
        from . import cudnn, paths

        off = f" [off now: {paths.PLAIN_ENV} is set]" if paths.plain_forced() else ""
        return {cudnn.FAST_PATH: cudnn.describe() + off}

    # -- adapters -----------------------------------------------------------------

    def is_array(self, value: Any) -> bool:
        return _is_tf(value)

    def asarray(self, value: np.ndarray) -> tf.Tensor:
        return tf.constant(np.array(value))  # a copy: never aliases the caller's array

    def asnumpy(self, value: Any) -> np.ndarray:
        # value.numpy(), not a tf op: an eager tensor captured inside a tf.function still has its values.
        a = np.array(value.numpy())
        return a.astype(np.float32) if value.dtype == tf.bfloat16 else a  # float32 holds bfloat16 exactly

    def dtype_name(self, value: Any) -> str:
        return str(value.dtype.name)

    def host_values(self, value: Any) -> np.ndarray | None:
        host = host_array(value)
        return None if host is None else self.asnumpy(value)

    # -- reverse and compiled modes ------------------------------------------------

    def vjp(self, op: str, arguments: dict[str, Any], cotangents: Mapping[str, Any]) -> dict[str, Any]:
        from .autodiff import vjp

        return vjp(op, arguments, cotangents)

    def compile(self, op: str) -> Callable[..., Any]:
        """``op`` under ``tf.function(jit_compile=True)``: the options (strings, booleans, numbers) are
        Python values, so each value gets its own trace, as static arguments."""
        compiled: Callable[..., Any] = tf.function(getattr(self, op), jit_compile=True)
        return compiled


#: The ops whose dropout masks (``dropout_mask``, ``recurrent_mask``) this backend runs; the others leave them
#: out of their signature, so the Backend refuses a mask for them, naming the backend.
MASKED_OPS: frozenset[str] = frozenset(
    {"rnn", "lstm", "gru", "indrnn", "qrnn", "skip_rnn", "skip_lstm", "skip_gru", "act", "phased_lstm"}
)

for _op in TensorflowImplementation.ops:
    _without = () if _op in MASKED_OPS else ("dropout_mask", "recurrent_mask")
    setattr(TensorflowImplementation, _op, spec_method(_op, run_op, without=_without))
