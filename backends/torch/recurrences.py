"""The elementwise recurrences: ``linear_recurrence`` (QRNN's pooling) and ``indrnn_recurrence``.

Four paths, chosen by :func:`kernel_path` and reported by
:func:`.fused.last_path` (under the op name, ``"linear_recurrence"`` or
``"indrnn_recurrence"`` unless the caller names another):

- ``"native"``: the C kernels of ``backends/common/kernels/recurrences.c``
  (:class:`.recurrence_autograd.NativeEngine`), one call over the whole
  ``(batch, time, H)`` buffers forward and one backward, for float32 and
  float64 CPU tensors when the library builds (:func:`native_usable`);
- ``"triton"``: Triton kernels (:mod:`.triton_recurrences`) for CUDA tensors
  when ``triton`` imports; with ``RNNSPEC_TORCH_TRITON=interpret`` and
  ``TRITON_INTERPRET=1`` (set before ``triton`` is imported), also for CPU
  tensors, under Triton's interpreter (slow: for testing the kernels);
- ``"cpu-kernel"``: hand-written loops of in-place torch ops
  (:mod:`.recurrence_loops`) for the other CPU tensors (half precision,
  computed in float32), under ``torch.func`` transforms and ``torch.compile``,
  and wherever the native library is unavailable or off (``RNNSPEC_NATIVE=0``);
- ``"plain"``: the masked scan of :mod:`.sequence`, differentiated by autograd
  through the loop; on other devices, or when forced by
  :func:`.fused.plain_path` or ``RNNSPEC_TORCH_PLAIN=1``.

The three kernel paths are :mod:`.recurrence_autograd` Functions with their own
backward. ``RNNSPEC_TORCH_TRITON=0`` keeps CUDA tensors off Triton (they then
take the plain path). Past a row's length ``h`` is frozen, and returned as 0.
``reverse=True`` is the caller's on every path (the core's ``run_recurrence``
reverses each row's valid prefix around the scan). The public ops compute half
precision in float32, so their half inputs reach the native kernels as float32;
the scans called directly with half tensors take the cpu-kernel.
"""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Sequence
from typing import Literal

import torch
from torch._C import _functorch

from rnnspec.backends.common import native
from rnnspec.backends.common import state as common_state
from rnnspec.errors import BackendError

from . import fused
from .cells import ACTIVATIONS
from .recurrence_autograd import NATIVE_DTYPES, indrnn_scan_kernel, linear_scan_kernel
from .sequence import ARRAY_OPS, State, scan

__all__ = [
    "TRITON_ENV",
    "KernelPath",
    "indrnn_recurrence",
    "indrnn_scan",
    "kernel_path",
    "linear_recurrence",
    "linear_scan",
    "native_usable",
    "triton_importable",
]

#: The environment variable that routes the recurrences to Triton: "interpret" (CPU tensors too,
#: under TRITON_INTERPRET=1), "0" (never); unset or "" for Triton on CUDA tensors only.
TRITON_ENV = "RNNSPEC_TORCH_TRITON"

KernelPath = Literal["native", "triton", "cpu-kernel", "plain"]

_HALF = (torch.float16, torch.bfloat16)
#: The tensor types the native kernels take (a subclass may have no buffer, or its own dispatch).
_PLAIN_TENSORS = (torch.Tensor, torch.nn.Parameter)


@functools.cache
def triton_importable() -> bool:
    """Whether ``triton`` imports in this process (decided once)."""
    try:
        importlib.import_module("triton")
    except ImportError:
        return False
    return True


def native_usable(tensors: Sequence[torch.Tensor | None], library: str = "recurrences") -> bool:
    """Whether the native kernels of ``library`` may compute on ``tensors`` (None entries are absent arguments).

    They may for plain float32 or float64 CPU tensors in eager mode, outside ``torch.func``
    transforms (whose wrapped tensors have no buffer to hand a kernel; the cpu-kernel path has
    their rules), ``torch.compile`` and ``torch.jit.trace`` tracing (which cannot record a
    foreign call), when the plain path is not forced and the library (``recurrences``, or the
    one named) is available (it is built on the first call; ``RNNSPEC_NATIVE=0`` turns it off). Tensor
    subclasses keep the existing paths.
    """
    present = [t for t in tensors if t is not None]
    if fused.plain_forced() or torch.compiler.is_compiling() or torch._C._get_tracing_state() is not None:
        return False
    if _functorch.peek_interpreter_stack() is not None:
        return False
    dtype = present[0].dtype
    if any(type(t) not in _PLAIN_TENSORS or t.device.type != "cpu" or t.dtype != dtype for t in present):
        return False
    return dtype in NATIVE_DTYPES and native.library(library) is not None


def kernel_path(op: str, x: torch.Tensor, others: Sequence[torch.Tensor | None] = ()) -> KernelPath:
    """The path ``op`` takes for tensors like ``x`` and the call's ``others`` (see the module docstring).

    Raises
    ------
    BackendError
        When ``RNNSPEC_TORCH_TRITON=interpret`` asks for Triton on a CPU tensor
        but Triton's interpreter cannot run (``TRITON_INTERPRET`` is not 1, or
        ``triton`` does not import).
    """
    if fused.plain_forced():
        return "plain"
    mode = os.environ.get(TRITON_ENV, "")
    if x.device.type == "cpu" and mode == "interpret":
        interpret = os.environ.get("TRITON_INTERPRET", "")
        if interpret != "1" or not triton_importable():
            raise BackendError(
                f"{op} [backend 'torch']: environment {TRITON_ENV}=interpret: expected TRITON_INTERPRET=1 set "
                f"before triton is imported and triton importable, got TRITON_INTERPRET={interpret!r} "
                f"and triton importable={triton_importable()}"
            )
        return "triton"
    if x.device.type == "cuda" and mode != "0" and triton_importable():
        return "triton"
    if x.device.type != "cpu":
        return "plain"
    return "native" if native_usable([x, *others]) else "cpu-kernel"


def _plain_linear_scan(
    a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor, valid: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    def step(s: State, xs: Sequence[torch.Tensor]) -> State:
        return {"h": xs[0] * s["h"] + xs[1]}

    h, final = scan(step, [a, b], {"h": h0}, valid, h0.shape[1])
    return h, final["h"]


def _plain_indrnn_scan(
    pre: torch.Tensor, u: torch.Tensor, h0: torch.Tensor, activation: str, valid: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    fn = ACTIVATIONS[activation]

    def step(s: State, xs: Sequence[torch.Tensor]) -> State:
        return {"h": fn(xs[0] + u * s["h"])}

    h, final = scan(step, [pre], {"h": h0}, valid, h0.shape[1])
    return h, final["h"]


def _in_float32(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Half-precision tensors as float32: the CPU kernel accumulates in float32 at least."""
    return [t.float() if t.dtype in _HALF else t for t in tensors]


def linear_scan(
    a: torch.Tensor,
    b: torch.Tensor,
    h0: torch.Tensor,
    valid: torch.Tensor | None,
    *,
    op: str = "linear_recurrence",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``h_t = a_t * h_{t-1} + b_t`` from ``h0`` over ``(batch, time, H)``; all ``h`` and the final one.

    ``valid`` is the ``(batch, time)`` mask of the steps within each row's length
    (a prefix of each row), None when every step is: past a row's length the
    state is frozen and ``h`` is 0. The path taken is recorded under ``op``.
    """
    path = kernel_path(op, a, [b, h0])
    fused.record_path(op, path)
    if path == "plain":
        return _plain_linear_scan(a, b, h0, valid)
    if path == "cpu-kernel" and a.dtype in _HALF:
        a32, b32, h032 = _in_float32([a, b, h0])
        h, final = linear_scan_kernel(a32, b32, h032, valid, path)
        return h.to(a.dtype), final.to(a.dtype)
    h, final = linear_scan_kernel(a, b, h0, valid, path)
    return h, final


def indrnn_scan(
    pre: torch.Tensor,
    u: torch.Tensor,
    h0: torch.Tensor,
    activation: str,
    valid: torch.Tensor | None,
    *,
    op: str = "indrnn_recurrence",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``h_t = act(pre_t + u * h_{t-1})`` from ``h0`` over ``(batch, time, H)``; all ``h`` and the final one.

    ``valid`` as for :func:`linear_scan`; the path taken is recorded under ``op``.
    """
    path = kernel_path(op, pre, [u, h0])
    fused.record_path(op, path)
    if path == "plain":
        return _plain_indrnn_scan(pre, u, h0, activation, valid)
    if path == "cpu-kernel" and pre.dtype in _HALF:
        pre32, u32, h032 = _in_float32([pre, u, h0])
        h, final = indrnn_scan_kernel(pre32, u32, h032, activation, valid, path)
        return h.to(pre.dtype), final.to(pre.dtype)
    h, final = indrnn_scan_kernel(pre, u, h0, activation, valid, path)
    return h, final


#: The primitives' op functions: lengths, reverse and the zero start from the core, the scans from here.
linear_recurrence = common_state.linear_recurrence(linear_scan, ARRAY_OPS)
indrnn_recurrence = common_state.indrnn_recurrence(indrnn_scan, ARRAY_OPS)
