"""The elementwise recurrences' forward and backward as Triton kernels.

One program owns a block of ``BLOCK`` columns of the ``batch * H`` independent
recurrences and walks time, keeping its state in registers: every step reads
each input once and writes each output once, so a pass costs one sweep over
memory. Arithmetic runs in float32 for float16, bfloat16 and float32 inputs and
in float64 for float64; results are rounded to the input dtype when stored.

Lengths are per row (``lengths[b]``): past a row's length the loads return the
identity step (multiplier 1, addend 0, or the state kept), the outputs are
stored as 0, and nothing is sent back to those steps.

The kernels are compiled for CUDA tensors. Under Triton's interpreter
(``TRITON_INTERPRET=1``, set before ``triton`` is imported) they run on CPU
tensors too, which is how they are tested without a GPU (see
:mod:`.recurrences` for the switch that routes CPU tensors here).

Backward, with ``g-bar`` the final state's cotangent (frozen past a row's length):

.. math::

    \\text{linear:}\\; g_t = dh_t + a_{t+1} g_{t+1},\\; da_t = g_t h_{t-1},\\; db_t = g_t,\\; dh_0 = a_1 g_1

    \\text{indrnn:}\\; g_t = (dh_t + c_t)\\,\\mathrm{act}'(z_t),\\; c_{t-1} = g_t u,\\;
    dpre_t = g_t,\\; du = \\textstyle\\sum_t g_t h_{t-1},\\; dh_0 = c_0
"""

# Kernel parameters stay unannotated: Triton types them at launch, and reads annotations as its own.
# mypy: disable-error-code="no-untyped-def,untyped-decorator"

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl

__all__ = ["indrnn_backward", "indrnn_forward", "linear_backward", "linear_forward"]

#: Columns per program: enough to fill a warp group with coalesced loads, small enough for many programs.
BLOCK = 128
_ACTIVATION = {"relu": 0, "tanh": 1}


@triton.jit
def _tanh(z: Any) -> Any:
    # exp-based and sign-symmetric, so it also runs under the interpreter (which lacks libdevice);
    # its error is a few ulps absolute, within every dtype's tolerance.
    e = tl.exp(-2.0 * tl.abs(z))
    r = (1.0 - e) / (1.0 + e)
    return tl.where(z < 0, -r, r)


@triton.jit
def _columns(n_cols: Any, hidden: Any, steps: Any, BLOCK: tl.constexpr) -> Any:
    """This program's columns: the mask, their row, their unit and their offset at step 0 in ``(B, T, H)``."""
    cols = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = cols < n_cols
    row = (cols // hidden).to(tl.int64)  # 64-bit offsets: batch * time * H may pass 2**31
    unit = cols % hidden
    return live, row, unit, row * steps * hidden + unit


@triton.jit
def _linear_fwd_kernel(
    a_ptr, b_ptr, h0_ptr, len_ptr, h_ptr, final_ptr, n_cols, hidden, steps,
    ACC: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    live, row, unit, base = _columns(n_cols, hidden, steps, BLOCK)
    length = tl.load(len_ptr + row, mask=live, other=0)
    state = tl.load(h0_ptr + row * hidden + unit, mask=live, other=0.0).to(ACC)
    for t in range(steps):
        valid = live & (t < length)
        off = base + t * hidden
        a = tl.load(a_ptr + off, mask=valid, other=1.0).to(ACC)
        b = tl.load(b_ptr + off, mask=valid, other=0.0).to(ACC)
        state = a * state + b  # exactly the state itself past the row's length
        out = tl.where(valid, state, 0.0)
        tl.store(h_ptr + off, out.to(h_ptr.dtype.element_ty), mask=live)
    tl.store(final_ptr + row * hidden + unit, state.to(final_ptr.dtype.element_ty), mask=live)


@triton.jit
def _linear_bwd_kernel(
    a_ptr, h0_ptr, h_ptr, len_ptr, dh_ptr, dfinal_ptr, da_ptr, db_ptr, dh0_ptr, n_cols, hidden, steps,
    HAS_DH: tl.constexpr, HAS_DFINAL: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    live, row, unit, base = _columns(n_cols, hidden, steps, BLOCK)
    length = tl.load(len_ptr + row, mask=live, other=0)
    h0 = tl.load(h0_ptr + row * hidden + unit, mask=live, other=0.0).to(ACC)
    g = tl.zeros([BLOCK], dtype=ACC)
    if HAS_DFINAL:
        g = tl.load(dfinal_ptr + row * hidden + unit, mask=live, other=0.0).to(ACC)
    for i in range(steps):
        t = steps - 1 - i
        valid = live & (t < length)
        off = base + t * hidden
        if HAS_DH:
            g = g + tl.load(dh_ptr + off, mask=valid, other=0.0).to(ACC)
        later = tl.full([BLOCK], t, tl.int32) > 0  # a tensor: the interpreter's t is a Python int
        prev = tl.load(h_ptr + off - hidden, mask=valid & later, other=0.0).to(ACC)
        prev = tl.where(later, prev, h0)
        tl.store(da_ptr + off, tl.where(valid, g * prev, 0.0).to(da_ptr.dtype.element_ty), mask=live)
        tl.store(db_ptr + off, tl.where(valid, g, 0.0).to(db_ptr.dtype.element_ty), mask=live)
        g = g * tl.load(a_ptr + off, mask=valid, other=1.0).to(ACC)  # what reaches step t-1
    tl.store(dh0_ptr + row * hidden + unit, g.to(dh0_ptr.dtype.element_ty), mask=live)


@triton.jit
def _indrnn_fwd_kernel(
    pre_ptr, u_ptr, u_row_stride, h0_ptr, len_ptr, h_ptr, final_ptr, n_cols, hidden, steps,
    ACTIVATION: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    live, row, unit, base = _columns(n_cols, hidden, steps, BLOCK)
    length = tl.load(len_ptr + row, mask=live, other=0)
    u = tl.load(u_ptr + row * u_row_stride + unit, mask=live, other=0.0).to(ACC)
    state = tl.load(h0_ptr + row * hidden + unit, mask=live, other=0.0).to(ACC)
    for t in range(steps):
        valid = live & (t < length)
        off = base + t * hidden
        z = tl.load(pre_ptr + off, mask=valid, other=0.0).to(ACC) + u * state
        new = tl.maximum(z, 0.0) if ACTIVATION == 0 else _tanh(z)
        state = tl.where(valid, new, state)
        tl.store(h_ptr + off, tl.where(valid, state, 0.0).to(h_ptr.dtype.element_ty), mask=live)
    tl.store(final_ptr + row * hidden + unit, state.to(final_ptr.dtype.element_ty), mask=live)


@triton.jit
def _indrnn_bwd_kernel(
    u_ptr, u_row_stride, h0_ptr, h_ptr, len_ptr, dh_ptr, dfinal_ptr, dpre_ptr, du_ptr, dh0_ptr, n_cols, hidden, steps,
    HAS_DH: tl.constexpr, HAS_DFINAL: tl.constexpr, ACTIVATION: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    live, row, unit, base = _columns(n_cols, hidden, steps, BLOCK)
    length = tl.load(len_ptr + row, mask=live, other=0)
    u = tl.load(u_ptr + row * u_row_stride + unit, mask=live, other=0.0).to(ACC)
    h0 = tl.load(h0_ptr + row * hidden + unit, mask=live, other=0.0).to(ACC)
    carry = tl.zeros([BLOCK], dtype=ACC)
    if HAS_DFINAL:
        carry = tl.load(dfinal_ptr + row * hidden + unit, mask=live, other=0.0).to(ACC)
    du = tl.zeros([BLOCK], dtype=ACC)
    for i in range(steps):
        t = steps - 1 - i
        valid = live & (t < length)
        off = base + t * hidden
        s = carry
        if HAS_DH:
            s = s + tl.load(dh_ptr + off, mask=valid, other=0.0).to(ACC)
        h = tl.load(h_ptr + off, mask=valid, other=0.0).to(ACC)
        g = tl.where(h > 0.0, s, 0.0) if ACTIVATION == 0 else s * (1.0 - h * h)  # relu'(0) = 0
        g = tl.where(valid, g, 0.0)
        later = tl.full([BLOCK], t, tl.int32) > 0  # a tensor: the interpreter's t is a Python int
        prev = tl.load(h_ptr + off - hidden, mask=valid & later, other=0.0).to(ACC)
        prev = tl.where(later, prev, h0)
        tl.store(dpre_ptr + off, g.to(dpre_ptr.dtype.element_ty), mask=live)
        du += g * prev
        carry = tl.where(valid, g * u, carry)  # the frozen state passes its cotangent unchanged
    tl.store(du_ptr + row * hidden + unit, du.to(du_ptr.dtype.element_ty), mask=live)
    tl.store(dh0_ptr + row * hidden + unit, carry.to(dh0_ptr.dtype.element_ty), mask=live)


def _acc(dtype: torch.dtype) -> Any:
    return tl.float64 if dtype == torch.float64 else tl.float32


def _lengths(valid: torch.Tensor | None, batch: int, steps: int, device: torch.device) -> torch.Tensor:
    """Each row's length from its prefix mask (every step when None), int32."""
    if valid is None:
        return torch.full((batch,), steps, dtype=torch.int32, device=device)
    return valid.sum(dim=1, dtype=torch.int32)


def _grid(n_cols: int) -> tuple[int]:
    return (triton.cdiv(n_cols, BLOCK),)


def _per_row(u: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``u`` (``(H,)`` or ``(batch, H)``) contiguous, and its row stride (0 when shared by every row)."""
    u = u.contiguous()
    return u, (u.shape[1] if u.ndim == 2 else 0)


def linear_forward(
    a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor, valid: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """As :func:`.recurrence_loops.linear_forward`, by :func:`_linear_fwd_kernel`."""
    batch, steps, hidden = a.shape
    a, b, h0 = a.contiguous(), b.contiguous(), h0.contiguous()
    h = torch.empty_like(a)
    final = torch.empty_like(h0)
    n_cols = batch * hidden
    lengths = _lengths(valid, batch, steps, a.device)
    _linear_fwd_kernel[_grid(n_cols)](
        a, b, h0, lengths, h, final, n_cols, hidden, steps, ACC=_acc(a.dtype), BLOCK=BLOCK
    )
    return h, final


def linear_backward(
    a: torch.Tensor,
    h0: torch.Tensor,
    h: torch.Tensor,
    valid: torch.Tensor | None,
    dh: torch.Tensor | None,
    dfinal: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """As :func:`.recurrence_loops.linear_backward`, by :func:`_linear_bwd_kernel`."""
    batch, steps, hidden = a.shape
    a, h0, h = a.contiguous(), h0.contiguous(), h.contiguous()
    da, db, dh0 = torch.empty_like(a), torch.empty_like(a), torch.empty_like(h0)
    n_cols = batch * hidden
    _linear_bwd_kernel[_grid(n_cols)](
        a, h0, h, _lengths(valid, batch, steps, a.device),
        a if dh is None else dh.contiguous(), h0 if dfinal is None else dfinal.contiguous(),
        da, db, dh0, n_cols, hidden, steps,
        HAS_DH=dh is not None, HAS_DFINAL=dfinal is not None, ACC=_acc(a.dtype), BLOCK=BLOCK,
    )  # fmt: skip
    return da, db, dh0


def indrnn_forward(
    pre: torch.Tensor, u: torch.Tensor, h0: torch.Tensor, activation: str, valid: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """As :func:`.recurrence_loops.indrnn_forward`, by :func:`_indrnn_fwd_kernel`."""
    batch, steps, hidden = pre.shape
    pre, h0 = pre.contiguous(), h0.contiguous()
    u, u_stride = _per_row(u)
    h = torch.empty_like(pre)
    final = torch.empty_like(h0)
    n_cols = batch * hidden
    _indrnn_fwd_kernel[_grid(n_cols)](
        pre, u, u_stride, h0, _lengths(valid, batch, steps, pre.device), h, final, n_cols, hidden, steps,
        ACTIVATION=_ACTIVATION[activation], ACC=_acc(pre.dtype), BLOCK=BLOCK,
    )  # fmt: skip
    return h, final


def indrnn_backward(
    u: torch.Tensor,
    h0: torch.Tensor,
    h: torch.Tensor,
    activation: str,
    valid: torch.Tensor | None,
    dh: torch.Tensor | None,
    dfinal: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """As :func:`.recurrence_loops.indrnn_backward` (``du`` per row), by :func:`_indrnn_bwd_kernel`."""
    batch, steps, hidden = h.shape
    h0, h = h0.contiguous(), h.contiguous()
    u, u_stride = _per_row(u)
    dpre, dh0 = torch.empty_like(h), torch.empty_like(h0)
    # Per-row sums of g_t h_{t-1}, accumulated in float32 at least; the caller sums the rows.
    du = torch.empty(
        (batch, hidden), dtype=torch.float64 if h.dtype == torch.float64 else torch.float32, device=h.device
    )
    n_cols = batch * hidden
    _indrnn_bwd_kernel[_grid(n_cols)](
        u, u_stride, h0, h, _lengths(valid, batch, steps, h.device),
        h if dh is None else dh.contiguous(), h0 if dfinal is None else dfinal.contiguous(),
        dpre, du, dh0, n_cols, hidden, steps,
        HAS_DH=dh is not None, HAS_DFINAL=dfinal is not None, ACTIVATION=_ACTIVATION[activation],
        ACC=_acc(h.dtype), BLOCK=BLOCK,
    )  # fmt: skip
    return dpre, du.to(h.dtype), dh0
