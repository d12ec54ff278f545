"""indrnn: stacked IndRNN layers, ``h' = act(W_ih x + b_ih + u * h)``.

Each layer's input projection is one matmul over every time step; only the
elementwise recurrence runs over time. The path is recorded under ``"indrnn"``:

- ``"native"`` (float32 and float64 CPU tensors when the native library builds, see
  :func:`.recurrences.native_usable`): :class:`NativeLayer`, the projection without its
  bias, then one kernel call that adds the bias and runs the recurrence; its backward is
  one kernel call for the recurrence's cotangents, the bias's and ``u``'s sums included,
  then the two matmuls of ``W_ih`` and ``x``;
- otherwise the core's :func:`~rnnspec.backends.common.state.indrnn_layer`: the projection
  by :func:`_linear` under autograd and :func:`.recurrences.indrnn_scan` (the
  cpu-kernel, Triton or plain path).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import torch

from rnnspec.backends.common.ops import SequenceCall
from rnnspec.backends.common.state import LayerFn, indrnn_layer, run_layers
from rnnspec.results import SequenceResult

from . import fused, workspace
from .cells import make_cell
from .classic import plain_layer
from .recurrence_autograd import native_indrnn_backward, native_indrnn_forward
from .recurrences import indrnn_scan, native_usable
from .sequence import ARRAY_OPS, Lengths, State

__all__ = ["NativeLayer", "NativeLayerBackward", "run"]


def _linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``x @ w.T + b`` over every step, as ``addmm`` of the ``(batch * time, I)`` view and a row-major ``w.T``.

    The values are ``F.linear``'s; the difference is the weight's gradient, which autograd then
    forms as ``x.T @ d`` rather than ``(d.T @ x).T``: the same product, but BLAS runs the latter
    4.7x slower when the inputs have few features (28.6 against 6.1 ms for 50000 steps of 2
    inputs into 128 units, one thread), and as fast otherwise.
    """
    flat = x.reshape(-1, x.shape[-1])
    return torch.addmm(b, flat, w.t().contiguous()).view(*x.shape[:-1], w.shape[0])


class NativeLayer(torch.autograd.Function):
    """One indrnn layer in the native kernels: ``(h, final h)`` from ``(x, w_ih, b_ih, u, h0)``.

    ``activation`` is ``"relu"`` or ``"tanh"``, ``lengths`` each row's valid steps (int64) or None
    for full rows. The kernel writes ``h`` over the projection (one buffer fewer); the forward
    keeps ``x``, the weights and ``h`` (the derivative of the activation is read off ``h``). The
    recurrence's backward is :class:`NativeLayerBackward`; the matmuls of ``dW_ih`` (as
    ``x.T @ dpre``, see :func:`_linear`) and ``dx`` are torch's, differentiable.
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        w: torch.Tensor,
        b: torch.Tensor,
        u: torch.Tensor,
        h0: torch.Tensor,
        activation: str,
        lengths: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch, time, size = x.shape
        flat = x.reshape(batch * time, size)
        pre = torch.mm(flat, w.t(), out=workspace.empty((batch * time, w.shape[0]), x.dtype))
        pre = pre.view(batch, time, w.shape[0])
        h, final = native_indrnn_forward(pre, b, u, h0, activation, lengths, in_place=True)  # pre is ours
        ctx.save_for_backward(flat, w, u, h0, h, lengths)
        ctx.activation = activation
        ctx.set_materialize_grads(False)
        return h, final

    @staticmethod
    def backward(ctx: Any, dh: torch.Tensor | None, dfinal: torch.Tensor | None) -> tuple[Any, ...]:
        flat, w, u, h0, h, lengths = ctx.saved_tensors
        apply: Callable[..., tuple[torch.Tensor, ...]] = NativeLayerBackward.apply
        dpre, du, db, dh0 = apply(u, h0, h, lengths, dh, dfinal, ctx.activation)
        d2 = dpre.reshape(flat.shape[0], -1)
        need_x, need_w = ctx.needs_input_grad[:2]
        dx = None
        if need_x:  # into a kept buffer unless this backward is itself differentiated (out= is not)
            into = None if torch.is_grad_enabled() else workspace.empty((d2.shape[0], w.shape[1]), d2.dtype)
            dx = torch.mm(d2, w, out=into).view(h.shape[0], h.shape[1], flat.shape[1])
        dw = (flat.t() @ d2).t() if need_w else None
        return dx, dw, db, du.sum(dim=0) if u.ndim == 1 else du, dh0, None, None


class NativeLayerBackward(torch.autograd.Function):
    """The cotangents ``(dpre, du per row, db, dh0)`` of :class:`NativeLayer`'s recurrence (one kernel call).

    A Function of its own so that differentiating it again raises, rather than treating the
    cotangents as constants: the native path has no second derivative.
    """

    @staticmethod
    def forward(
        ctx: Any,
        u: torch.Tensor,
        h0: torch.Tensor,
        h: torch.Tensor,
        lengths: torch.Tensor | None,
        dh: torch.Tensor | None,
        dfinal: torch.Tensor | None,
        activation: str,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return native_indrnn_backward(u, h0, h, activation, lengths, dh, dfinal)

    @staticmethod
    def backward(ctx: Any, *grads: Any) -> Any:
        raise NotImplementedError(
            "indrnn's native path has no second derivative; use rnnspec.backends.torch.fused.plain_path() "
            "(or RNNSPEC_TORCH_PLAIN=1) for higher-order gradients"
        )


def _layer(p: Mapping[str, torch.Tensor], activation: str) -> LayerFn:
    """An indrnn layer: :class:`NativeLayer` where the native kernels may run, else the core's layer."""
    scan = functools.partial(indrnn_scan, op="indrnn")
    fallback = indrnn_layer(p, activation, _linear, scan)

    def run(inp: torch.Tensor, state: State, lengths: Lengths) -> tuple[torch.Tensor, State]:
        w, b, u, h0 = p["w_ih"], p["b_ih"], p["u"], state["h"]
        if inp.shape[0] * inp.shape[1] * w.shape[0] == 0 or not native_usable([inp, w, b, u, h0]):
            return fallback(inp, state, lengths)
        fused.record_path("indrnn", "native")
        rows = None if lengths.full else lengths.values.contiguous()
        apply: Callable[..., tuple[torch.Tensor, torch.Tensor]] = NativeLayer.apply
        h, final = apply(inp, w, b, u, h0, activation, rows)
        return h, {"h": final}

    return run


def run(call: SequenceCall) -> SequenceResult:
    """IndRNN over a stack of layers."""
    activation = call.options["activation"]
    if call.arrays.get("recurrent_mask") is not None:  # recurrent dropout: the plain cell, which takes the mask
        fused.record_path("indrnn", "plain")
        cell = make_cell("indrnn", call.options)
        return run_layers(
            call, lambda p, arrays: plain_layer(cell.with_recurrent_mask(arrays["recurrent_mask"]), p), ARRAY_OPS
        )
    return run_layers(call, lambda p, _: _layer(p, activation), ARRAY_OPS)
