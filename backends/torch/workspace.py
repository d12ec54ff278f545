"""Buffers the native training paths reuse from one call to the next, instead of fresh allocations.

The native loops (:mod:`.skip_autograd`, :mod:`.recurrence_autograd`) write their activations and
cotangents into large ``(T, B, H)`` buffers. Allocated afresh at every call, those buffers cost
more than their size: glibc hands a freed heap top back to the kernel once it passes a threshold
that moves with the sizes it has seen, so an update after such a trim touches its pages again,
one page fault per 4 KiB (``python -m rnnspec.bench.page_faults`` prints them: 25 to 70 MB of
faults on some updates, 10 to 60 ms each).

:func:`empty` hands out a buffer of the asked shape and dtype that nothing else holds any more, and
keeps it for the next call. "Nothing else holds it" is read off the storage's reference count: each
buffer handed out is a tensor of its own on the kept storage, so a buffer saved for the backward
pass, returned to the caller, or viewed by anything alive keeps it busy, and it is reused only once
every such tensor is gone. Where torch offers no such count, :func:`empty` is ``torch.empty``.

Memory: at most :data:`PER_SHAPE` buffers of each shape and dtype, and :data:`MAX_BYTES` in all,
the least recently used going first; :func:`clear` drops every kept buffer.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = ["MAX_BYTES", "MIN_BYTES", "PER_SHAPE", "clear", "empty", "kept_bytes", "linear"]

#: Smaller buffers come from ``torch.empty``: the allocator keeps them on its heap anyway.
MIN_BYTES = 1 << 17
#: Buffers kept per (shape, dtype): one call's in use while the graph of the one before is still alive.
PER_SHAPE = 3
#: The most bytes kept in all.
MAX_BYTES = 1 << 29

_use_count: Callable[[int], int] | None = getattr(torch._C, "_storage_Use_Count", None)
_lock = threading.Lock()
_kept: OrderedDict[tuple[tuple[int, ...], torch.dtype], list[torch.Tensor]] = OrderedDict()
_bytes = 0


def _holders(base: torch.Tensor) -> int:
    assert _use_count is not None
    return _use_count(base.untyped_storage()._cdata)


def _idle_count() -> int | None:
    """The count a kept storage reads when only the workspace holds it (None: no count in this torch)."""
    if _use_count is None:
        return None
    try:
        return _holders(torch.empty((1,)))
    except Exception:  # a torch whose private count works otherwise: fall back to plain allocations
        return None


_IDLE = _idle_count()


def _tensor_on(base: torch.Tensor) -> torch.Tensor:
    """A tensor of its own (not a view) on ``base``'s storage: it counts as one more holder."""
    return torch.empty((0,), dtype=base.dtype).set_(base.untyped_storage(), 0, base.shape, base.stride())


def empty(shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised CPU tensor of ``shape`` and ``dtype``, from a kept buffer no one holds where there is one."""
    shape = tuple(int(n) for n in shape)
    size = torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()
    if _IDLE is None or size < MIN_BYTES or size > MAX_BYTES:
        return torch.empty(shape, dtype=dtype)
    global _bytes
    key = (shape, dtype)
    with _lock:
        bucket = _kept.get(key)
        if bucket is not None:
            _kept.move_to_end(key)
            for base in bucket:
                if _holders(base) == _IDLE:
                    return _tensor_on(base)
        else:
            bucket = _kept[key] = []
        base = torch.empty(shape, dtype=dtype)
        if len(bucket) < PER_SHAPE:
            bucket.append(base)
            _bytes += size
            _evict(key)
        return _tensor_on(base)


def _evict(newest: tuple[tuple[int, ...], torch.dtype]) -> None:
    """Drop the least recently used shapes' buffers until at most MAX_BYTES are kept (the lock is held)."""
    global _bytes
    while _bytes > MAX_BYTES:
        key = next(iter(_kept))
        if key == newest:
            return
        for base in _kept.pop(key):
            _bytes -= base.numel() * base.element_size()


def clear() -> None:
    """Drop every kept buffer (the ones in use stay with their holders)."""
    global _bytes
    with _lock:
        _kept.clear()
        _bytes = 0


def kept_bytes() -> int:
    """Bytes of the buffers kept now, in use or not."""
    with _lock:
        return _bytes


class _Linear(torch.autograd.Function):
    """``x @ w.T + b`` over the leading axes of ``x``, into a kept buffer; the usual gradients."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        out = empty((flat.shape[0], w.shape[0]), x.dtype)
        if b is None:
            torch.mm(flat, w.t(), out=out)
        else:
            torch.addmm(b, flat, w.t(), out=out)
        ctx.save_for_backward(x, w)
        ctx.bias = b is not None
        return out.view(*x.shape[:-1], w.shape[0])

    @staticmethod
    def backward(ctx: Any, d: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, w = ctx.saved_tensors
        swap = x.dim() == 3 and not d.is_contiguous() and d.transpose(0, 1).is_contiguous()
        if swap:  # a time-major cotangent (the native loops'): its rows in time-major order, without a copy
            x, d = x.transpose(0, 1), d.transpose(0, 1)
        d2 = d.reshape(-1, d.shape[-1])
        need_x, need_w, need_b = ctx.needs_input_grad
        dx = (d2 @ w).view(x.shape) if need_x else None
        if swap and dx is not None:
            dx = dx.transpose(0, 1)
        # x.T @ d2, transposed: BLAS runs it much faster than d2.T @ x when x has few features.
        dw = (x.reshape(-1, x.shape[-1]).t() @ d2).t() if need_w else None
        db = d2.sum(0) if need_b and ctx.bias else None
        return dx, dw, db


def linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """``x @ w.T + b`` over any leading axes, differentiable, its result in a kept buffer (see :func:`empty`)."""
    apply: Callable[..., torch.Tensor] = _Linear.apply
    return apply(x, w, b)
