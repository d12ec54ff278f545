"""qrnn: the gates' projection of the causal window ``[x_prev, x]`` over every step at once, then the pooling.

Two paths, recorded under ``"qrnn"`` (:func:`.fused.last_path`):

- ``"native"`` (float32 and float64 CPU tensors in eager mode when the native library
  builds, see :func:`.recurrences.native_usable`): the projection without its bias by
  :class:`WindowProjection` (``K`` matmuls accumulated in one buffer, no unfolded copy of
  the windows), then :class:`NativePooling`: the bias, the gates' activations, the zoneout
  mask, the f/fo/ifo pooling, the output gate and the lengths in one C kernel call
  (``rs_qrnn_forward`` of ``backends/common/kernels/recurrences.c``), which keeps every
  step's ``c``. Its backward is one call too (``rs_qrnn_backward``: the activations again
  from the saved projection, the bias's cotangent summed in the kernel). One pass over
  memory each way for the elementwise work, instead of a dozen torch ops and passes.
- otherwise (half precision, other devices, ``torch.func`` transforms, ``torch.compile``,
  a forced plain path, ``RNNSPEC_NATIVE=0``, an empty time axis): the projection by
  ``torch.nn.functional.conv1d`` over ``[x_prev, x]``, the activations in torch ops and the
  pooling by :func:`.recurrences.linear_scan` (its cpu-kernel, Triton or plain path).

Both paths take every option of the op: modes f, fo and ifo, any window, the zoneout
mask, lengths, ``reverse`` (by the stack, which reverses each row's valid prefix around
the layers, the masks included) and initial states. The state is ``{"c", "x_prev"}`` as
the reference's: ``x_prev`` is each row's last ``K-1`` inputs before its length, in
processing order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F

from rnnspec.backends.common.ops import SequenceCall
from rnnspec.backends.common.state import LayerFn, run_layers
from rnnspec.ops import QRNN_GATES
from rnnspec.results import SequenceResult

from . import fused
from .recurrence_autograd import address, cotangent_rows, native_function
from .recurrences import linear_scan, native_usable
from .sequence import ARRAY_OPS, Lengths, State

__all__ = ["NativePooling", "NativePoolingBackward", "WindowProjection", "run"]

#: The pooling modes as the kernels number them.
_MODES = {"f": 0, "fo": 1, "ifo": 2}


def _gates(padded: torch.Tensor, w: torch.Tensor, b: torch.Tensor, time: int) -> torch.Tensor:
    """``(batch, time, G*H)``: step t reads ``padded[:, t : t + K]`` (a cross-correlation, not flipped)."""
    if time == 0:  # conv1d rejects an input shorter than its kernel
        return padded.new_zeros((padded.shape[0], 0, w.shape[0]))
    return F.conv1d(padded.transpose(1, 2), w, b).transpose(1, 2)


def _last_inputs(x_prev: torch.Tensor, inp: torch.Tensor, lengths: torch.Tensor, window: int) -> torch.Tensor:
    """Each row's last K-1 inputs before its length, ``[x_prev, inp][b, L_b : L_b + K - 1]``, read from the two
    without concatenating them (a copy of the whole sequence)."""
    keep = window - 1
    position = lengths[:, None] + torch.arange(keep, device=inp.device)[None, :]  # in [x_prev, inp]
    size = inp.shape[2]
    # Gathers, not views or clones: the state's cotangent then reaches x and x_prev as new tensors.
    from_prev = torch.gather(x_prev, 1, position.clamp(max=keep - 1)[:, :, None].expand(-1, -1, size))
    if keep == 0 or inp.shape[1] == 0:  # nothing to read, or every entry from x_prev (no step runs)
        return from_prev
    from_inp = torch.gather(inp, 1, (position - keep).clamp(min=0)[:, :, None].expand(-1, -1, size))
    return torch.where((position < keep)[:, :, None], from_prev, from_inp)


def _shifted(inp: torch.Tensor, x_prev: torch.Tensor, shift: int) -> torch.Tensor:
    """``(batch * time, I)``: row ``(b, t)`` is ``x_{t - shift}`` of row b, from ``x_prev`` before the first step."""
    batch, time, size = inp.shape
    first = x_prev.shape[1] - shift  # x_{-shift} is x_prev[:, first]
    if time <= shift:
        rows = x_prev[:, first : first + time]
    else:
        rows = torch.cat([x_prev[:, first:], inp[:, : time - shift]], dim=1)
    return rows.reshape(batch * time, size)


class WindowProjection(torch.autograd.Function):
    """The gates' projections ``sum_k w[:, :, k] x_{t-K+1+k}`` (``x_s`` from ``x_prev`` for ``s < 0``; the bias is
    the pooling kernel's to add) of every step, ``(batch, time, G*H)``, from ``(inp, x_prev, w)``.

    ``K`` matmuls over the whole sequence, accumulated in one buffer: the current inputs read in
    place, each earlier window position from one shifted copy of the inputs (where the unfolded
    windows would copy ``K`` inputs a step). The backward sends each position's cotangent back to
    the inputs it read, with ``K - 1`` shifted adds (autograd's unfold backward costs several
    times that), and forms ``dw`` as ``x.T @ dpre`` (see :func:`.independent._linear`). For the
    native path only (no vmap rule).
    """

    @staticmethod
    def forward(ctx: Any, inp: torch.Tensor, x_prev: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        batch, time, size = inp.shape
        window = w.shape[2]
        weights = [w[:, :, k].contiguous() for k in range(window)]
        current = inp.reshape(batch * time, size)
        earlier = [_shifted(inp, x_prev, window - 1 - k) for k in range(window - 1)]
        pre = torch.mm(current, weights[-1].t())
        for x, weight in zip(earlier, weights, strict=False):
            pre.addmm_(x, weight.t())
        ctx.save_for_backward(*earlier, current, *weights)
        ctx.dims = (batch, time, size, window)
        return pre.view(batch, time, -1)

    @staticmethod
    def backward(ctx: Any, dpre: torch.Tensor) -> tuple[Any, ...]:
        # Differentiable torch ops: a second derivative through the projection is autograd's.
        batch, time, size, window = ctx.dims
        saved = ctx.saved_tensors
        inputs, weights = saved[:window], saved[window:]  # positions 0 .. K-1 (the last: the current step)
        d2 = dpre.reshape(batch * time, -1)
        need_inp, need_prev, need_w = ctx.needs_input_grad
        dw = torch.stack([(x.t() @ d2).t() for x in inputs], dim=2) if need_w else None
        dinp = dprev = None
        if need_inp or need_prev:
            dinp = (d2 @ weights[-1]).view(batch, time, size)
            dprev = dinp.new_zeros((batch, window - 1, size))
            for k in range(window - 1):
                shift = window - 1 - k
                dx = (d2 @ weights[k]).view(batch, time, size)  # the cotangent of x_{t - shift}
                if time > shift:
                    dinp[:, : time - shift] += dx[:, shift:]
                reach = min(shift, time)  # the steps that read x_prev
                dprev[:, k : k + reach] += dx[:, :reach]
        return dinp, dprev, dw


class NativePooling(torch.autograd.Function):
    """QRNN's activations, pooling and output gate from the projection ``pre`` ``(batch, time, G*H)`` and its bias
    ``(G*H,)``: ``(h, c_T)``.

    ``c0`` is ``(batch, H)``, ``mask`` the zoneout mask ``(batch, time, H)`` or None, ``lengths``
    each row's valid steps (int64) or None for full rows. The forward keeps ``pre`` and every
    step's ``c`` (in mode f, ``h`` is ``c``); the backward is :class:`NativePoolingBackward`.
    """

    @staticmethod
    def forward(
        ctx: Any,
        pre: torch.Tensor,
        bias: torch.Tensor,
        c0: torch.Tensor,
        mask: torch.Tensor | None,
        lengths: torch.Tensor | None,
        mode: str,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = pre.dtype
        pre, bias, c0 = pre.contiguous(), bias.to(dtype).contiguous(), c0.to(dtype).contiguous()
        mask = None if mask is None else mask.to(dtype).contiguous()
        h = pre.new_empty((pre.shape[0], pre.shape[1], c0.shape[1]))
        c = h if mode == "f" else torch.empty_like(h)
        final = torch.empty_like(c0)
        run = native_function("qrnn_forward", dtype, "pppppipppiii")
        cells = 0 if mode == "f" else address(c)
        run(
            *(address(x) for x in (pre, bias, mask, c0, lengths)),
            _MODES[mode],
            address(h),
            cells,
            address(final),
            *h.shape,
        )
        ctx.save_for_backward(pre, bias, c0, c, mask, lengths)
        ctx.mode = mode
        ctx.set_materialize_grads(False)
        return h, final

    @staticmethod
    def backward(ctx: Any, dh: torch.Tensor | None, dfinal: torch.Tensor | None) -> tuple[Any, ...]:
        pre, bias, c0, c, mask, lengths = ctx.saved_tensors
        apply: Callable[..., tuple[torch.Tensor, ...]] = NativePoolingBackward.apply
        dpre, dbias, dc0 = apply(pre, bias, c0, c, mask, lengths, dh, dfinal, ctx.mode)
        return dpre, dbias, dc0, None, None, None


class NativePoolingBackward(torch.autograd.Function):
    """The cotangents ``(dpre, dbias, dc0)`` of :class:`NativePooling` from those of ``h`` and ``c_T`` (None: zero).

    A Function of its own so that differentiating it again raises, rather than treating the
    cotangents as constants: the native path has no second derivative.
    """

    @staticmethod
    def forward(
        ctx: Any,
        pre: torch.Tensor,
        bias: torch.Tensor,
        c0: torch.Tensor,
        c: torch.Tensor,
        mask: torch.Tensor | None,
        lengths: torch.Tensor | None,
        dh: torch.Tensor | None,
        dfinal: torch.Tensor | None,
        mode: str,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        dtype = pre.dtype
        d, sb, st = cotangent_rows(dh, c)
        dfinal = None if dfinal is None else dfinal.to(dtype).contiguous()
        dpre, dbias, dc0 = torch.empty_like(pre), torch.empty_like(bias), torch.empty_like(c0)
        acc = torch.empty(bias.shape, dtype=torch.float64)
        run = native_function("qrnn_backward", dtype, "ppppppipiipppppiii")
        run(
            *(address(x) for x in (pre, bias, mask, c0, c, lengths)),
            _MODES[mode],
            address(d),
            sb,
            st,
            *(address(x) for x in (dfinal, dpre, dbias, dc0, acc)),
            *c.shape,
        )
        return dpre, dbias, dc0

    @staticmethod
    def backward(ctx: Any, *grads: Any) -> Any:
        raise NotImplementedError(
            "qrnn's native path has no second derivative; use rnnspec.backends.torch.fused.plain_path() "
            "(or RNNSPEC_TORCH_PLAIN=1) for higher-order gradients"
        )


def _native_layer(
    inp: torch.Tensor,
    x_prev: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor,
    c0: torch.Tensor,
    mask: torch.Tensor | None,
    lengths: torch.Tensor | None,
    mode: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A layer on the native path, :class:`WindowProjection` then :class:`NativePooling`: ``(h, final c)``."""
    project: Callable[..., torch.Tensor] = WindowProjection.apply
    pool: Callable[..., tuple[torch.Tensor, torch.Tensor]] = NativePooling.apply
    return pool(project(inp, x_prev, w), b, c0, mask, lengths, mode)


def _pool(
    pre: torch.Tensor, gates: Mapping[str, torch.Tensor], c0: torch.Tensor, mask: torch.Tensor | None, lengths: Lengths
) -> tuple[torch.Tensor, torch.Tensor]:
    """The pooling and output gate over torch ops and :func:`.recurrences.linear_scan` (the non-native paths)."""
    z = torch.tanh(gates["z"])
    f = torch.sigmoid(gates["f"])
    # Zoneout, f + (1 - f) m: m = 0 leaves f exactly, m = 1 gives exactly 1 (see rnnspec.reference.qrnn.zoneout).
    f_eff = f if mask is None else torch.where(mask == 1, 1.0, f + (1.0 - f) * mask)
    drive = torch.sigmoid(gates["i"]) * z if "i" in gates else (1.0 - f_eff) * z
    valid = lengths.valid()
    c, final = linear_scan(f_eff, drive, c0, valid, op="qrnn")
    h = torch.sigmoid(gates["o"]) * c if "o" in gates else c
    if "o" in gates and valid is not None:  # o is NaN where the padding is: never let o * 0 read it
        h = torch.where(valid[:, :, None], h, 0.0)
    return h, final


def _layer(p: Mapping[str, torch.Tensor], mode: str, mask: torch.Tensor | None) -> LayerFn:
    """A QRNN layer; ``mask`` is the zoneout mask aligned with the (possibly reversed) time axis it sees."""

    def run(inp: torch.Tensor, state: State, lengths: Lengths) -> tuple[torch.Tensor, State]:
        w, b = p["w"], p["b"]
        window = w.shape[2]
        names = QRNN_GATES[mode]
        hidden = w.shape[0] // len(names)
        x_prev, c0 = state["x_prev"], state["c"]
        if inp.shape[1] > 0 and inp.shape[0] * hidden > 0 and native_usable([inp, x_prev, w, b, c0, mask]):
            fused.record_path("qrnn", "native")
            rows = None if lengths.full else lengths.values.contiguous()
            h, final = _native_layer(inp, x_prev, w, b, c0, mask, rows, mode)
        else:
            pre = _gates(torch.cat([x_prev, inp], dim=1), w, b, inp.shape[1])
            gates = dict(zip(names, torch.split(pre, hidden, dim=2), strict=True))
            h, final = _pool(pre, gates, c0, mask, lengths)
        return h, {"c": final, "x_prev": _last_inputs(x_prev, inp, lengths.values, window)}

    return run


def run(call: SequenceCall) -> SequenceResult:
    """QRNN (f-, fo- or ifo-pooling, any window K) over a stack of layers."""
    mode = call.options["mode"]
    return run_layers(call, lambda p, arrays: _layer(p, mode, arrays["zoneout_mask"]), ARRAY_OPS)
