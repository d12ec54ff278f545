"""The PyTorch backend's implementation: adapters, reverse mode, dispatch to the ops.

Dtype policy: float32 and float64 compute in their own dtype; float16 and
bfloat16 inputs are computed in float32 and the results rounded back to the
input dtype (the accumulation a half-precision user expects).

Each op lives in a module of its family and is a plain function of torch
tensors (so autograd gives the reverse mode); :data:`OP_FUNCTIONS` maps names
to them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch

from rnnspec.implementation import Implementation
from rnnspec.methods import spec_method
from rnnspec.tree import tree_leaves, tree_map

from .dispatch import OP_FUNCTIONS, fast_paths_available

__all__ = ["TorchImplementation"]

_HALF = (torch.float16, torch.bfloat16)


def _compute_dtype(arguments: Mapping[str, Any]) -> tuple[torch.dtype, torch.dtype]:
    """(the input dtype, the dtype computed in)."""
    first = next(
        leaf for leaf in tree_leaves(dict(arguments)) if isinstance(leaf, torch.Tensor) and leaf.is_floating_point()
    )
    return first.dtype, (torch.float32 if first.dtype in _HALF else first.dtype)


def _cast(tree: Any, dtype: torch.dtype) -> Any:
    return tree_map(lambda a: a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a, tree)


def run_op(op: str, arguments: Mapping[str, Any]) -> Any:
    """Run ``op`` on normalised arguments, upcasting half precision for the arithmetic."""
    dtype, compute = _compute_dtype(arguments)
    result = OP_FUNCTIONS[op](**_cast(dict(arguments), compute))
    return result if compute == dtype else _cast(result, dtype)


class TorchImplementation(Implementation):
    """Every op of the spec on torch tensors, CPU or CUDA."""

    ops: ClassVar[tuple[str, ...]] = tuple(OP_FUNCTIONS)
    dtypes: ClassVar[tuple[str, ...]] = ("float16", "bfloat16", "float32", "float64")
    framework: ClassVar[str] = "torch"
    capabilities: ClassVar[frozenset[str]] = frozenset({"vjp"})

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
        return torch.from_numpy(np.array(value))  # a copy: never aliases the caller's array

    def asnumpy(self, value: Any) -> np.ndarray:
        t = value.detach().cpu()
        if t.dtype == torch.bfloat16:
            t = t.float()  # NumPy has no bfloat16; float32 holds it exactly
        return np.array(t.numpy())

    def dtype_name(self, value: Any) -> str:
        return str(value.dtype).removeprefix("torch.")

    def host_values(self, value: Any) -> np.ndarray | None:
        return None if value.is_cuda else self.asnumpy(value)

    # -- reverse mode -----------------------------------------------------------

    def vjp(self, op: str, arguments: dict[str, Any], cotangents: Mapping[str, Any]) -> dict[str, Any]:
        from .autodiff import vjp

        return vjp(op, arguments, cotangents)


for _op in TorchImplementation.ops:
    setattr(TorchImplementation, _op, spec_method(_op, run_op))
