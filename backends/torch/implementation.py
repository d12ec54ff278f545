"""The PyTorch backend's implementation: adapters, reverse mode, dispatch to the ops.

Dtype policy: float32 and float64 compute in their own dtype; float16 and
bfloat16 inputs are computed in float32 and the results rounded back to the
input dtype (the accumulation a half-precision user expects).

Each op lives in a module of its family and is a plain function of torch
tensors (so autograd gives the reverse mode); :data:`OP_FUNCTIONS` maps names
to them.

With the rest of PyTorch (:mod:`.functorch` has the details):

- ``torch.compile``: the layers and ops compile (fullgraph=False), and the
  backend declares its compiled mode (capability ``"compile"``).
  :meth:`TorchImplementation.compile` gives each signature of a call (every
  array's shape, the dtype, the options, which arguments are given, the values
  of ``lengths``) its own ``torch.compile`` region (:mod:`.compiled`): dynamo's
  ``recompile_limit`` (8 per code object, and every op shares :func:`run_op`)
  then counts per signature, not per op, and a hit limit raises
  ``FailOnRecompileLimitHit`` instead of running the op eagerly. The loops
  over time are unrolled into the graph, so each new sequence length, batch
  size or set of lengths compiles again: seconds per new signature with
  inductor on a 2-core CPU, about a second with
  ``RNNSPEC_TORCH_COMPILE_BACKEND=aot_eager`` (the same graphs, no code
  generated; the conformance-torch session's choice). Inductor in torch 2.13
  miscompiles indrnn with rows of partial length: the final state of such a
  row comes out wrong (the CPU kernel writes its output buffer across a graph
  break). torch's fused RNN kernels run outside the graph when autograd is on
  (they cannot be traced then), as dynamo does for ``torch.nn.LSTM``. Graph
  breaks remain where an op reads values on the host (lengths, the path
  bookkeeping, ACT's halting).
- ``torch.func`` transforms run the ops on the plain path (the fused kernels
  take no functorch tensors): ``grad``, ``vjp``, ``jacrev`` every op, as
  autograd; ``vmap`` every op but ``act``. ``act`` and batched ``lengths``
  under ``vmap`` raise :class:`.functorch.UnsupportedTransformError`, which
  says what to do instead.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import numpy as np
import torch

from rnnspec.backends.common.ops import op_table
from rnnspec.implementation import Implementation
from rnnspec.memo import memoized
from rnnspec.methods import spec_method
from rnnspec.padding import without_padding
from rnnspec.tree import tree_leaves, tree_map

from . import fused
from .checkpointing import with_checkpointing
from .compiled import CompiledOp
from .functorch import is_vmapped, outside_graph, transform_plan
from .fused import fast_paths_available
from .sequence import zero_past

__all__ = ["COMPILE_BACKEND_ENV", "TorchImplementation"]

#: The environment variable naming the torch.compile backend of compiled mode (default "inductor").
COMPILE_BACKEND_ENV = "RNNSPEC_TORCH_COMPILE_BACKEND"

_HALF = (torch.float16, torch.bfloat16)

#: op name -> function of the normalised arguments (keywords, ``checkpoint_every`` included), from the
#: modules the op records name (:func:`rnnspec.backends.common.ops.op_table`).
OP_FUNCTIONS: dict[str, Callable[..., Any]] = {
    op: with_checkpointing(op, fn) for op, fn in op_table("rnnspec.backends.torch").items()
}


def _compute_dtype(arguments: Mapping[str, Any]) -> tuple[torch.dtype, torch.dtype]:
    """(the input dtype, the dtype computed in)."""
    first = next(
        leaf for leaf in tree_leaves(dict(arguments)) if isinstance(leaf, torch.Tensor) and leaf.is_floating_point()
    )
    return first.dtype, (torch.float32 if first.dtype in _HALF else first.dtype)


def _cast(tree: Any, dtype: torch.dtype) -> Any:
    return tree_map(lambda a: a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a, tree)


@memoized
def _outside_graph(op: str) -> Callable[..., Any]:
    """``op`` (rnn, lstm or gru) wrapped in ``torch.compiler.disable``: how torch.compile runs it when autograd is on.

    Made on first use, not at import: ``torch.compiler.disable`` imports dynamo, and dynamo imports Triton
    when it is installed, which aborts a process that has loaded TensorFlow before (an LLVM conflict).
    """
    disable: Callable[..., Callable[..., Any]] = torch.compiler.disable  # untyped in torch's annotations
    return disable(OP_FUNCTIONS[op], reason="torch's fused RNN kernels cannot be traced with autograd")


def run_op(op: str, arguments: Mapping[str, Any]) -> Any:
    """Run ``op`` on normalised arguments, upcasting half precision for the arithmetic.

    Under ``torch.func`` transforms the op takes the plain path, or is refused (see the module docstring).
    """
    plan = transform_plan(op, arguments)
    dtype, compute = _compute_dtype(arguments)
    fn = _outside_graph(op) if outside_graph(op, arguments) else OP_FUNCTIONS[op]
    # Every floating array of a call has x's dtype (validated), so only half precision needs casting.
    arguments = without_padding(op, arguments, zero_past)
    inputs = arguments if compute == dtype else _cast(arguments, compute)
    with fused.plain_path() if plan == "plain" else contextlib.nullcontext():
        result = fn(**inputs)
    return result if compute == dtype else _cast(result, dtype)


class TorchImplementation(Implementation):
    """Every op of the spec on torch tensors, CPU or CUDA."""

    ops: ClassVar[tuple[str, ...]] = tuple(OP_FUNCTIONS)
    dtypes: ClassVar[tuple[str, ...]] = ("float16", "bfloat16", "float32", "float64")
    framework: ClassVar[str] = "torch"
    capabilities: ClassVar[frozenset[str]] = frozenset({"vjp", "compile"})

    def framework_version(self) -> str:
        return str(torch.__version__)

    def device(self) -> str:
        return "cuda" if torch.cuda.is_available() else "cpu"

    def fast_paths(self) -> dict[str, str]:
        return fast_paths_available()

    # -- adapters -----------------------------------------------------------------

    def is_array(self, value: Any) -> bool:
        return isinstance(value, torch.Tensor)

    def asarray(self, value: np.ndarray) -> torch.Tensor:
        a = np.array(value)  # a copy: never aliases the caller's array
        if not a.dtype.isnative:  # torch.from_numpy refuses a big-endian array: the same values, in native order
            a = a.astype(a.dtype.newbyteorder("="))
        if a.dtype.name == "bfloat16":  # ml_dtypes' bfloat16, which torch.from_numpy refuses: same bits
            return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
        return torch.from_numpy(a)

    def asnumpy(self, value: Any) -> np.ndarray:
        t = value.detach().cpu()
        if t.dtype == torch.bfloat16:
            t = t.float()  # NumPy has no bfloat16; float32 holds it exactly
        return np.array(t.numpy())

    def dtype_name(self, value: Any) -> str:
        return str(value.dtype).removeprefix("torch.")

    def host_values(self, value: Any) -> np.ndarray | None:
        # A tensor batched by vmap has no values of its own; run_op refuses it, naming the argument.
        return None if value.is_cuda or is_vmapped(value) else self.asnumpy(value)

    # -- reverse mode -----------------------------------------------------------

    def vjp(self, op: str, arguments: dict[str, Any], cotangents: Mapping[str, Any]) -> dict[str, Any]:
        from .autodiff import vjp

        return vjp(op, arguments, cotangents)

    # -- compiled mode ----------------------------------------------------------

    def compile(self, op: str) -> Callable[..., Any]:
        """``op`` under ``torch.compile``, taking the normalised arguments by keyword (:mod:`.compiled`).

        The compiler backend is inductor, or the one named by ``RNNSPEC_TORCH_COMPILE_BACKEND``
        (``"aot_eager"`` traces as inductor does but generates no code, which compiles in seconds).
        """
        return CompiledOp(op, run_op, os.environ.get(COMPILE_BACKEND_ENV) or "inductor")


#: The ops whose dropout masks (``dropout_mask``, ``recurrent_mask``) this backend runs; the others leave them
#: out of their signature, so the Backend refuses a mask for them, naming the backend.
MASKED_OPS: frozenset[str] = frozenset(
    {"rnn", "lstm", "gru", "indrnn", "qrnn", "phased_lstm", "skip_rnn", "skip_lstm", "skip_gru", "act"}
)

for _op in TorchImplementation.ops:
    _without = () if _op in MASKED_OPS else ("dropout_mask", "recurrent_mask")
    setattr(TorchImplementation, _op, spec_method(_op, run_op, without=_without))
