"""The elementwise recurrences as autograd Functions with hand-written forward and backward passes.

Each recurrence is a pair of ``torch.autograd.Function``: the forward one
(``(h, final)`` from the inputs) and its backward, itself a Function, so that
both have a vmap rule and the backward can run under ``torch.func`` transforms
(``vmap``, ``grad``, ``vjp``, ``jacrev``). A second derivative is not provided:
asking for one raises.

The arithmetic comes from an engine: ``"cpu-kernel"``
(:mod:`.recurrence_loops`) or ``"triton"`` (:mod:`.triton_recurrences`,
imported only when used). The vmap rule folds the vmapped axis into the batch
axis, since every ``(batch, unit)`` column is an independent recurrence.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch

from . import recurrence_loops

__all__ = ["Engine", "IndrnnScan", "LinearScan", "indrnn_scan_kernel", "linear_scan_kernel"]

#: Where the arithmetic runs.
Engine = Literal["cpu-kernel", "triton"]


def _engine(name: Engine) -> Any:
    if name == "triton":
        return importlib.import_module(f"{__package__}.triton_recurrences")
    return recurrence_loops


def _fold(x: torch.Tensor | None, dim: int | None, size: int, batch_leading: bool = True) -> torch.Tensor | None:
    """``x`` with the vmapped axis ``dim`` (None: absent) of ``size`` merged into its leading batch axis."""
    if x is None or (dim is None and not batch_leading):
        return x  # absent, or a (H,) u shared by every row of every vmapped slice
    x = x.unsqueeze(0).expand(size, *x.shape) if dim is None else x.movedim(dim, 0)
    return x.reshape(size * x.shape[1], *x.shape[2:])


def _unfold(x: torch.Tensor | None, size: int) -> torch.Tensor | None:
    return None if x is None else x.reshape(size, x.shape[0] // size, *x.shape[1:])


def _empty_steps(h0: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """No step to run (no time step, or no column): zero outputs and a copy of the initial state."""
    return torch.zeros_like(like, memory_format=torch.contiguous_format), h0.clone(
        memory_format=torch.contiguous_format
    )


def _runs(x: torch.Tensor) -> bool:
    return x.shape[1] > 0 and x.numel() > 0


_NO_SECOND_DERIVATIVE = (
    "the torch backend's elementwise recurrences have no second derivative on their kernel paths; "
    "use rnnspec.backends.torch.fused.plain_path() (or RNNSPEC_TORCH_PLAIN=1) for higher-order gradients"
)


def _applied(fn: type[torch.autograd.Function]) -> Callable[..., Any]:
    """``fn.apply``, typed (torch leaves it untyped)."""
    apply: Callable[..., Any] = fn.apply
    return apply


def _vmap_outputs(outputs: Sequence[torch.Tensor | None], size: int) -> tuple[Any, tuple[int | None, ...]]:
    unfolded = tuple(_unfold(o, size) for o in outputs)
    return unfolded, tuple(None if o is None else 0 for o in unfolded)


class LinearScan(torch.autograd.Function):
    """``h_t = a_t h_{t-1} + b_t`` over ``(batch, time, H)`` from ``h0``: ``(h, final)``.

    ``valid`` is the ``(batch, time)`` prefix mask of each row's length, or None.
    """

    @staticmethod
    def forward(
        a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor, valid: torch.Tensor | None, engine: Engine
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not _runs(a):
            return _empty_steps(h0, a)
        h, final = _engine(engine).linear_forward(a, b, h0, valid)
        return h, final

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        a, _, h0, valid, engine = inputs
        ctx.save_for_backward(a, h0, output[0], valid)
        ctx.engine = engine
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx: Any, dh: torch.Tensor | None, dfinal: torch.Tensor | None) -> tuple[Any, ...]:
        a, h0, h, valid = ctx.saved_tensors
        da, db, dh0 = _applied(LinearScanBackward)(a, h0, h, valid, dh, dfinal, ctx.engine)
        return da, db, dh0, None, None

    @staticmethod
    def vmap(info: Any, in_dims: tuple[Any, ...], a: Any, b: Any, h0: Any, valid: Any, engine: Engine) -> Any:
        n = info.batch_size
        args = [_fold(x, d, n) for x, d in zip((a, b, h0, valid), in_dims[:4], strict=True)]
        return _vmap_outputs(_applied(LinearScan)(*args, engine), n)


class LinearScanBackward(torch.autograd.Function):
    """The cotangents ``(da, db, dh0)`` of :class:`LinearScan` from those of ``h`` and ``final`` (None: zero)."""

    @staticmethod
    def forward(
        a: torch.Tensor,
        h0: torch.Tensor,
        h: torch.Tensor,
        valid: torch.Tensor | None,
        dh: torch.Tensor | None,
        dfinal: torch.Tensor | None,
        engine: Engine,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not _runs(a) or (dh is None and dfinal is None):
            return (
                torch.zeros_like(a),
                torch.zeros_like(a),
                h0.new_zeros(h0.shape) if dfinal is None else dfinal.clone(),
            )
        da, db, dh0 = _engine(engine).linear_backward(a, h0, h, valid, dh, dfinal)
        return da, db, dh0

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        pass

    @staticmethod
    def backward(ctx: Any, *grads: Any) -> Any:
        raise NotImplementedError(_NO_SECOND_DERIVATIVE)

    @staticmethod
    def vmap(info: Any, in_dims: tuple[Any, ...], *args: Any) -> Any:
        n = info.batch_size
        folded = [_fold(x, d, n) for x, d in zip(args[:6], in_dims[:6], strict=True)]
        return _vmap_outputs(_applied(LinearScanBackward)(*folded, args[6]), n)


class IndrnnScan(torch.autograd.Function):
    """``h_t = act(pre_t + u h_{t-1})`` over ``(batch, time, H)`` from ``h0``: ``(h, final)``.

    ``u`` is ``(H,)``, or ``(batch, H)`` for a ``u`` per row (as the vmap rule makes it).
    """

    @staticmethod
    def forward(
        pre: torch.Tensor,
        u: torch.Tensor,
        h0: torch.Tensor,
        activation: str,
        valid: torch.Tensor | None,
        engine: Engine,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not _runs(pre):
            return _empty_steps(h0, pre)
        h, final = _engine(engine).indrnn_forward(pre, u, h0, activation, valid)
        return h, final

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        _, u, h0, activation, valid, engine = inputs
        ctx.save_for_backward(u, h0, output[0], valid)
        ctx.activation, ctx.engine = activation, engine
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx: Any, dh: torch.Tensor | None, dfinal: torch.Tensor | None) -> tuple[Any, ...]:
        u, h0, h, valid = ctx.saved_tensors
        dpre, du_rows, dh0 = _applied(IndrnnScanBackward)(u, h0, h, ctx.activation, valid, dh, dfinal, ctx.engine)
        du = du_rows.sum(dim=0) if u.ndim == 1 else du_rows
        return dpre, du, dh0, None, None, None

    @staticmethod
    def vmap(
        info: Any, in_dims: tuple[Any, ...], pre: Any, u: Any, h0: Any, activation: str, valid: Any, engine: Engine
    ) -> Any:
        n = info.batch_size
        u_folded = _fold_u(u, in_dims[1], n, _batch_size(pre, in_dims[0]))
        args = (_fold(pre, in_dims[0], n), u_folded, _fold(h0, in_dims[2], n), activation)
        return _vmap_outputs(_applied(IndrnnScan)(*args, _fold(valid, in_dims[4], n), engine), n)


class IndrnnScanBackward(torch.autograd.Function):
    """The cotangents ``(dpre, du per row, dh0)`` of :class:`IndrnnScan` from those of ``h`` and ``final``."""

    @staticmethod
    def forward(
        u: torch.Tensor,
        h0: torch.Tensor,
        h: torch.Tensor,
        activation: str,
        valid: torch.Tensor | None,
        dh: torch.Tensor | None,
        dfinal: torch.Tensor | None,
        engine: Engine,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not _runs(h) or (dh is None and dfinal is None):
            dh0 = h0.new_zeros(h0.shape) if dfinal is None else dfinal.clone()
            return torch.zeros_like(h), h.new_zeros((h.shape[0], h.shape[2])), dh0
        dpre, du, dh0 = _engine(engine).indrnn_backward(u, h0, h, activation, valid, dh, dfinal)
        return dpre, du, dh0

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        pass

    @staticmethod
    def backward(ctx: Any, *grads: Any) -> Any:
        raise NotImplementedError(_NO_SECOND_DERIVATIVE)

    @staticmethod
    def vmap(info: Any, in_dims: tuple[Any, ...], *args: Any) -> Any:
        n = info.batch_size
        u, h0, h, activation, valid, dh, dfinal, engine = args
        batch = _batch_size(h, in_dims[2])
        folded = (
            _fold_u(u, in_dims[0], n, batch),
            _fold(h0, in_dims[1], n),
            _fold(h, in_dims[2], n),
            activation,
            _fold(valid, in_dims[4], n),
            _fold(dh, in_dims[5], n),
            _fold(dfinal, in_dims[6], n),
            engine,
        )
        return _vmap_outputs(_applied(IndrnnScanBackward)(*folded), n)


def _batch_size(x: torch.Tensor, dim: int | None) -> int:
    """The batch size of a ``(batch, ...)`` argument that may carry a vmapped axis at ``dim``."""
    return x.shape[1 if dim == 0 else 0] if dim is not None else x.shape[0]


def _fold_u(u: torch.Tensor, dim: int | None, size: int, batch: int) -> torch.Tensor:
    """``u`` for the folded batch: unchanged when shared by every row, else one row of ``u`` per folded row."""
    if dim is None:
        return u if u.ndim == 1 else _fold(u, None, size)  # type: ignore[return-value]
    u = u.movedim(dim, 0)
    if u.ndim == 2:  # (vmapped, H): every row of a vmapped slice shares its u
        u = u[:, None, :].expand(size, batch, u.shape[1])
    return u.reshape(size * batch, u.shape[2])


def linear_scan_kernel(
    a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor, valid: torch.Tensor | None, engine: Engine
) -> tuple[torch.Tensor, torch.Tensor]:
    """:class:`LinearScan` applied: ``(h, final)``."""
    h, final = _applied(LinearScan)(a, b, h0, valid, engine)
    return h, final


def indrnn_scan_kernel(
    pre: torch.Tensor, u: torch.Tensor, h0: torch.Tensor, activation: str, valid: torch.Tensor | None, engine: Engine
) -> tuple[torch.Tensor, torch.Tensor]:
    """:class:`IndrnnScan` applied: ``(h, final)``."""
    h, final = _applied(IndrnnScan)(pre, u, h0, activation, valid, engine)
    return h, final
