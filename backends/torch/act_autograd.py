"""ACT's training loop as one ``torch.autograd.Function`` with a hand-written backward.

The forward is :func:`.act._training`'s loop without a graph (the same operations, so
the same values), keeping each inner step's input state, new state, gate activations,
halting unit ``h^n``, weight ``p^n`` and the active and stop masks. The backward is
the reference's (:mod:`rnnspec.reference.act`), in the form autograd of that loop
takes: with ``s_t = sum_n p^n s^n``, ``p^n = h^n`` before the stop and
``R = 1 - sum_{n<N} h^n`` at it,

.. math::

    \\bar p^n = \\langle \\bar s_t, s^n \\rangle, \\qquad
    \\bar h^n = [n < N] (\\bar p^n - \\bar R), \\qquad
    \\bar R = \\bar p^N + \\bar R_t,

walked backwards through the inner steps with a running cotangent of the halting sum;
``\\bar s^n = p^n \\bar s_t + \\bar s^n_{\\text{next}} + \\bar a^n w_{halt}`` feeds the
cell's reverse step (:mod:`.cell_backward`). ``N`` carries no gradient. The cells'
factors are formed for every inner step at once; the weight gradients are one matmul
each over all inner steps after the loop; the flag column's gradient is the sum of the
pre-activation cotangents of the inner steps after the first.

An input step's halting bookkeeping (:func:`begin`, :func:`halt`, :func:`settle`) is written
once, here, for both loops: :func:`.act._ponder` calls it with Python numbers, the Function
with cached 0-d tensors. The backward sums the pre-activation cotangents of each input step's
inner steps into its projection's in one ``index_add_`` after the loop.

On float32/float64 CPU tensors, when the kernel library builds (:func:`native_kernels`), each
inner step is one ``act_forward`` call after its recurrent matmul (the cell, the halting unit
and bookkeeping, and the input step's settling once every row has halted, which the kernel
reports so that the inner loop ends), and one ``act_backward`` call before its ``addmm_`` in
the backward, which also sums the pre-activation cotangents into ``d_projected`` and the flag's.

:func:`.skip_autograd.usable` decides when this path runs (plain eager autograd);
``torch.func`` refuses ``act`` under vmap and runs the autograd loop otherwise.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch.autograd.function import FunctionCtx, once_differentiable

from .cell_backward import (
    NativeCells,
    aux_names,
    cell_step,
    const,
    factors,
    layer_backward,
    native_cells,
    native_weight_grads,
    weight_grads,
)
from .sequence import State

__all__ = ["ACTLayout", "Pondering", "Scalar", "begin", "halt", "native_kernels", "run", "settle"]


@dataclass(frozen=True)
class ACTLayout:
    """The pondered cell with its options, the state entries and the halting options."""

    cell: str  # "rnn", "lstm", "gru" or "indrnn"
    activation: str
    reset_after: bool
    names: tuple[str, ...]
    epsilon: float
    max_steps: int

    @property
    def recurrent(self) -> tuple[str, ...]:
        """The recurrent params: ``u`` for indrnn, else ``w_hh``, ``b_hh``."""
        return ("u",) if self.cell == "indrnn" else ("w_hh", "b_hh")


# -- one input step's halting bookkeeping, shared with the autograd loop (act._ponder) -------------

#: A Python number or a 0-d tensor: the autograd loop passes numbers (a cached tensor made while
#: ``torch.compile`` traces would leak a fake one), the Function :func:`.cell_backward.const` tensors.
Scalar = float | torch.Tensor


class Pondering(NamedTuple):
    """The running values of one input step's inner loop, per row."""

    total: torch.Tensor  # (B, 1): the halting units of the inner steps taken so far
    halted: torch.Tensor  # (B, 1) bool
    steps: torch.Tensor  # (B,): N where a row has stopped, else 0
    remainder: torch.Tensor  # (B,): R where a row has stopped, else 0
    mean: State  # the mean-field state so far


def begin(state: State, keep: torch.Tensor | None) -> Pondering:
    """Before the first inner step; rows outside their length (``keep`` False) count as halted."""
    like = state["h"]
    batch = like.shape[0]
    halted = torch.zeros((batch, 1), dtype=torch.bool, device=like.device) if keep is None else ~keep[:, None]
    zeros = like.new_zeros((batch,))
    return Pondering(
        like.new_zeros((batch, 1)), halted, zeros, zeros, {k: torch.zeros_like(v) for k, v in state.items()}
    )


def halt(
    run: Pondering,
    n: int,
    cap: int,
    s: State,
    h: torch.Tensor,
    threshold: Scalar,
    one: Scalar,
    zero: Scalar,
    count: Scalar,
) -> tuple[Pondering, torch.Tensor, torch.Tensor, torch.Tensor]:
    """After inner step ``n`` (state ``s``, halting unit ``h``; ``count`` is ``n``): (run, active, stop, weight).

    ``N`` is decided by a comparison, which passes no gradient (as on detached values); the
    weight of the stopping step is ``R = 1 - total``. A row whose halting unit is NaN stops
    there, with ``R`` NaN (the spec's rule; ``summed >= threshold`` would never stop it).
    ``total + h`` and ``1 - total`` are formed once each: fewer operations a step, and fewer
    nodes in the autograd loop's graph.
    """
    total = run.total
    active = ~run.halted
    summed = total + h
    stop = active if n == cap else active & ~(summed < threshold)
    rest = torch.where(torch.isnan(h), h, one - total)
    weight = torch.where(stop, rest, torch.where(active, h, zero))
    ends = stop[:, 0]
    after = Pondering(
        torch.where(active, summed, total),
        run.halted | stop,
        torch.where(ends, count, run.steps),
        torch.where(ends, rest[:, 0], run.remainder),
        {k: torch.addcmul(v, weight, s[k]) for k, v in run.mean.items()},
    )
    return after, active, stop, weight


def settle(
    run: Pondering, state: State, keep: torch.Tensor | None, zero: Scalar
) -> tuple[State, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The state after an input step, and its output, N and R: rows outside their length keep their state."""
    if keep is None:
        return run.mean, run.mean["h"], run.steps, run.remainder
    row = keep[:, None]
    new = {k: torch.where(row, v, state[k]) for k, v in run.mean.items()}
    steps, remainder = torch.where(keep, run.steps, zero), torch.where(keep, run.remainder, zero)
    return new, torch.where(row, run.mean["h"], zero), steps, remainder


_RECORDS = ("h", "weight", "active", "stop")


class _ACTFunction(torch.autograd.Function):
    """``(layout, kernels, valid, projected, flag, *recurrent, w_halt, b_halt, *state)`` to ``(outputs, N, R, *state)``.

    ``kernels`` None: the loop in torch ops; else the native kernels' (:func:`_native_forward`).
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        layout: ACTLayout,
        kernels: NativeCells | None,
        valid: torch.Tensor | None,
        projected: torch.Tensor,
        flag: torch.Tensor,
        *flat: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        ctx.kernels = kernels  # type: ignore[attr-defined]
        if kernels is not None:
            return _native_forward(ctx, kernels, layout, valid, projected, flag, flat)
        nrec = len(layout.recurrent)
        rec = flat[:nrec]
        hh = (rec[0], rec[0]) if nrec == 1 else (rec[0], rec[1])
        w_halt, b_halt = flat[nrec], flat[nrec + 1]
        state: State = dict(zip(layout.names, flat[nrec + 2 :], strict=True))
        time = projected.shape[1]
        zero, one = const(0.0, projected), const(1.0, projected)
        threshold = const(1.0 - layout.epsilon, projected)
        cap = layout.max_steps
        prevs: list[State] = []
        cands: list[State] = []
        auxes: list[dict[str, torch.Tensor]] = []
        records: dict[str, list[torch.Tensor]] = {k: [] for k in _RECORDS}
        counts: list[int] = []
        later: list[int] = []  # the inner steps n > 1 (their input carries the flag)
        outputs, n_steps, remainders = [], [], []
        for t in range(time):
            keep = None if valid is None else valid[:, t]
            gi = projected[:, t]
            run = begin(state, keep)
            s = state
            count = 0
            for n in range(1, cap + 1):
                if bool(run.halted.all()):
                    break
                prevs.append(s)
                if n > 1:
                    later.append(len(cands))
                s, aux = cell_step(layout, *hh, s, gi if n == 1 else gi + flag)
                h = torch.sigmoid(F.linear(s["h"], w_halt, b_halt))
                run, active, stop, weight = halt(run, n, cap, s, h, threshold, one, zero, const(n, projected))
                cands.append(s)
                auxes.append(aux)
                for key, value in zip(_RECORDS, (h, weight, active, stop), strict=True):
                    records[key].append(value)
                count += 1
            counts.append(count)
            state, y, steps, remainder = settle(run, state, keep, zero)
            outputs.append(y)
            n_steps.append(steps)
            remainders.append(remainder)
        saved: list[torch.Tensor] = [*rec, w_halt]
        if cands:
            saved += [torch.stack([p[n] for p in prevs]) for n in layout.names]
            saved += [torch.stack([c[n] for c in cands]) for n in layout.names]
            saved += [torch.stack([a[n] for a in auxes]) for n in aux_names(layout)]
            saved += [torch.stack(records[k]) for k in _RECORDS]
        if valid is not None:
            saved.append(valid)
        ctx.save_for_backward(*saved)
        ctx.layout = layout  # type: ignore[attr-defined]
        ctx.counts = counts  # type: ignore[attr-defined]
        ctx.later = later  # type: ignore[attr-defined]
        ctx.masked = valid is not None  # type: ignore[attr-defined]
        ctx.shapes = (projected.shape, flag.shape)  # type: ignore[attr-defined]
        steps_out = torch.stack(n_steps, 1)
        ctx.mark_non_differentiable(steps_out)
        return (torch.stack(outputs, 1), steps_out, torch.stack(remainders, 1), *state.values())

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        if ctx.kernels is not None:
            return (None, None, None, *_native_backward(ctx, grads))
        layout: ACTLayout = ctx.layout
        counts: list[int] = ctx.counts
        names = layout.names
        saved = list(ctx.saved_tensors)
        nrec = len(layout.recurrent)
        rec, w_halt = saved[:nrec], saved[nrec]
        at = nrec + 1
        proj_shape, flag_shape = ctx.shapes
        batch, time, wide = proj_shape
        d_out, _, d_rem = grads[0], grads[1], grads[2]
        d_state: State = dict(zip(names, grads[3:], strict=True))
        zero, one = const(0.0, d_out), const(1.0, d_out)
        total_inner = sum(counts)
        valid = saved[-1] if ctx.masked else None
        if valid is not None:
            d_out = torch.where(valid[..., None], d_out, zero)
            d_rem = torch.where(valid, d_rem, zero)
        d_rem = d_rem[..., None]
        if total_inner == 0:  # no row took a step: the state passes through
            zeros = d_out.new_zeros(proj_shape)
            none_rec = [torch.zeros_like(r) for r in rec]
            return (None, None, None, zeros, d_out.new_zeros(flag_shape), *none_rec, torch.zeros_like(w_halt),
                    w_halt.new_zeros((1,)), *d_state.values())  # fmt: skip
        k = len(names)
        prev = dict(zip(names, saved[at : at + k], strict=True))
        cand = dict(zip(names, saved[at + k : at + 2 * k], strict=True))
        at += 2 * k
        kept = aux_names(layout)
        aux = dict(zip(kept, saved[at : at + len(kept)], strict=True))
        at += len(kept)
        h_all, weight, active, stop = saved[at : at + 4]
        fac = factors(layout, prev, cand, aux)
        slope = h_all * (one - h_all)  # sigmoid's derivative, as autograd's
        before = active & ~stop
        w_hh = rec[0]
        # Every per-step operand split into its steps once: a list lookup a step instead of a tensor index.
        cand_s = {n: v.unbind(0) for n, v in cand.items()}
        before_s, stop_s, active_s = before.unbind(0), stop.unbind(0), active.unbind(0)
        slope_s, weight_s = slope.unbind(0), weight.unbind(0)
        d_out_s, d_rem_s = d_out.unbind(1), d_rem.unbind(1)
        d_gi_steps: list[torch.Tensor] = []
        d_gh_steps: list[torch.Tensor] = []
        d_a_steps: list[torch.Tensor] = []
        end = total_inner
        for t in reversed(range(time)):
            start = end - counts[t]
            if valid is None:
                d_mean = dict(d_state)
                frozen = None
            else:
                keep = valid[:, t, None]
                d_mean = {n: torch.where(keep, v, zero) for n, v in d_state.items()}
                frozen = {n: torch.where(keep, zero, v) for n, v in d_state.items()}
            d_mean["h"] = d_mean["h"] + d_out_s[t]
            d_next: State | None = None
            d_total = None
            for m in reversed(range(start, end)):
                dw = (d_mean["h"] * cand_s["h"][m]).sum(1, keepdim=True)
                for n in names[1:]:
                    dw = dw + (d_mean[n] * cand_s[n][m]).sum(1, keepdim=True)
                d_h = torch.where(before_s[m], dw, zero)
                ends = torch.where(stop_s[m], dw + d_rem_s[t], zero)
                if d_total is not None:
                    d_h = d_h + torch.where(active_s[m], d_total, zero)
                    d_total = d_total - ends
                else:
                    d_total = -ends
                d_a = d_h * slope_s[m]
                d_a_steps.append(d_a)
                w_m = weight_s[m]
                d_s = {
                    n: w_m * d_mean[n] if d_next is None else torch.addcmul(d_next[n], w_m, d_mean[n]) for n in names
                }
                d_s["h"] = torch.addcmul(d_s["h"], d_a, w_halt)
                d_next, d_gi, d_gh = layer_backward(layout, fac, m, w_hh, d_s)
                d_gi_steps.append(d_gi)
                if d_gh is not None:
                    d_gh_steps.append(d_gh)
            if d_next is None:
                d_next = {n: torch.zeros_like(v) for n, v in d_state.items()}
            d_state = d_next if frozen is None else {n: v + frozen[n] for n, v in d_next.items()}
            end = start
        d_gi_all = torch.stack(d_gi_steps[::-1])  # (M, B, G H), inner steps in order
        d_gh_all = torch.stack(d_gh_steps[::-1]) if d_gh_steps else None
        d_rec = weight_grads(layout, fac, prev["h"], d_gi_all, d_gh_all)
        later = torch.tensor(ctx.later, dtype=torch.int64, device=d_gi_all.device)
        d_flag = d_gi_all.index_select(0, later).sum((0, 1))
        d_a_all = torch.stack(d_a_steps[::-1]).reshape(-1, 1)
        h_states = cand["h"].reshape(-1, cand["h"].shape[-1])
        d_w_halt, d_b_halt = d_a_all.t() @ h_states, d_a_all.sum(0)
        # Each input step's projection gets the sum over its inner steps, all at once.
        owner = torch.repeat_interleave(torch.arange(time), torch.tensor(counts)).to(d_gi_all.device)
        d_projected = d_gi_all.new_zeros((batch, time, wide)).index_add_(1, owner, d_gi_all.transpose(0, 1))
        return (None, None, None, d_projected, d_flag, *d_rec[:nrec], d_w_halt, d_b_halt, *d_state.values())


# -- the native path: the inner steps' elementwise work in kernels/cells.c ----------------------------


def native_kernels(layout: ACTLayout, tensors: Sequence[torch.Tensor]) -> NativeCells | None:
    """The native kernels for the Function's loop on ``tensors`` (every tensor argument), or None (torch ops).

    ACT ponders a cell with its options at their defaults: gru's reset gate comes after the matmul.
    """
    kernels = native_cells(layout, tensors)
    return None if kernels is None or kernels.kind == "gru_before" else kernels


def _at(x: torch.Tensor | None) -> int:
    """A kernel argument's address: 0 (NULL) for None."""
    return 0 if x is None else int(x.data_ptr())


class _Steps:
    """The inner steps' saved buffers, inner step first, grown by doubling: the count is known only at the end."""

    def __init__(self, shapes: dict[str, tuple[tuple[int, ...], torch.dtype]], capacity: int) -> None:
        self.shapes = shapes
        self.capacity = max(capacity, 1)
        self.tensors = {k: torch.empty((self.capacity, *shape), dtype=dtype) for k, (shape, dtype) in shapes.items()}

    def grow(self, filled: int) -> None:
        """Twice the capacity, keeping the first ``filled`` steps."""
        self.capacity *= 2
        for k, old in self.tensors.items():
            shape, dtype = self.shapes[k]
            new = torch.empty((self.capacity, *shape), dtype=dtype)
            new[:filled].copy_(old[:filled])
            self.tensors[k] = new

    def at(self, key: str) -> tuple[int, int]:
        """The buffer's address and the bytes of one step (0, 0 when absent)."""
        found = self.tensors.get(key)
        if found is None:
            return 0, 0
        return _at(found), found[0].numel() * found.element_size()


def _native_forward(
    ctx: Any,
    cells: NativeCells,
    layout: ACTLayout,
    valid: torch.Tensor | None,
    projected: torch.Tensor,
    flag: torch.Tensor,
    flat: Sequence[torch.Tensor],
) -> tuple[torch.Tensor, ...]:
    """The Function's forward with each inner step's work after its matmul(s) in one ``act_forward`` call.

    The kernel also keeps the halting bookkeeping and, once every row has halted, settles the input
    step (state, output, N, R); it reports that through a flag, which ends the inner loop.
    """
    forward = cells.fn["act_forward"]
    code, relu, lstm = cells.code, cells.relu, "c" in layout.names
    nrec = len(layout.recurrent)
    rec = flat[:nrec]
    w_halt, b_halt = flat[nrec].contiguous(), flat[nrec + 1].contiguous()
    dtype = projected.dtype
    projected = projected.contiguous()
    batch, time, wide = projected.shape
    hidden = flat[nrec + 2].shape[1]
    item = projected.element_size()
    cap = layout.max_steps
    flag = flag.contiguous()
    gi_flag = torch.empty((batch, wide), dtype=dtype)  # the kernel's scratch for x_t's projection plus the flag
    initial = zip(layout.names, flat[nrec + 2 :], strict=True)
    state = {n: torch.empty((batch, hidden), dtype=dtype).copy_(v) for n, v in initial}
    shapes: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
    for n in layout.names:
        shapes[f"prev.{n}"] = shapes[f"cands.{n}"] = ((batch, hidden), dtype)
    if cells.aux:
        shapes["aux"] = ((batch, cells.aux * hidden), dtype)
    for k in ("halt", "weight"):
        shapes[k] = ((batch,), dtype)
    for k in ("active", "stop"):
        shapes[k] = ((batch,), torch.bool)
    steps = _Steps(shapes, time * min(cap, 2))
    total, remainder, n_steps = (torch.empty((batch,), dtype=dtype) for _ in range(3))
    halted = torch.empty((batch,), dtype=torch.bool)
    mean = {n: torch.empty((batch, hidden), dtype=dtype) for n in layout.names}
    indrnn = cells.kind == "indrnn"
    w_hh_t, b_hh = (None, None) if indrnn else (rec[0].t(), rec[1])
    gh = None if indrnn else torch.empty((batch, wide), dtype=dtype)
    u = rec[0].contiguous() if indrnn else None
    out = projected.new_zeros((batch, time, hidden))
    n_out, r_out = projected.new_zeros((batch, time)), projected.new_zeros((batch, time))
    keep = None if valid is None else valid.contiguous()
    # A step where no row is valid takes no inner step (every row counts as halted): outputs stay zero.
    live = [True] * time if keep is None else keep.any(0).tolist()
    done = ctypes.c_int64(0)  # the kernel's flag: every row has halted
    done_at = ctypes.addressof(done)
    threshold = 1.0 - layout.epsilon
    proj_at, flag_at, gi_flag_at, keep_at = _at(projected), _at(flag), _at(gi_flag), _at(keep)
    st_h, st_c = _at(state["h"]), _at(state.get("c"))
    scratch = (_at(total), _at(halted), _at(n_steps), _at(remainder), _at(mean["h"]), _at(mean.get("c")))
    fields = (_at(out), time * hidden, _at(n_out), _at(r_out), time)
    gh_at, u_at = _at(gh), _at(u)
    halt_args = (_at(w_halt), _at(b_halt))
    keys = ("prev.h", "prev.c", "cands.h", "cands.c", "aux", "halt", "weight", "active", "stop")
    addresses = [steps.at(k) for k in keys]
    counts: list[int] = []
    m = 0
    for t in range(time):
        if not live[t]:
            counts.append(0)
            continue
        keep_t = keep_at + t if keep is not None else 0
        count = 0
        for step in range(1, cap + 1):
            if m == steps.capacity:
                steps.grow(m)
                addresses = [steps.at(k) for k in keys]
            buf = steps.tensors
            ((p_h, slot), (p_c, _), (c_h, _), (c_c, _), (aux_at, aux_slot), (halt_at, row), (weight_at, _),
             (active_at, flags), (stop_at, _)) = addresses  # fmt: skip
            prev = state["h"] if step == 1 else buf["cands.h"][m - 1]
            prev_h = st_h if step == 1 else c_h + (m - 1) * slot
            prev_c = (st_c if step == 1 else c_c + (m - 1) * slot) if lstm else 0
            if gh is not None:
                assert b_hh is not None
                assert w_hh_t is not None
                torch.addmm(b_hh, prev, w_hh_t, out=gh)
            forward(code, relu, batch, hidden, step, cap, threshold, proj_at + t * wide * item, time * wide,
                    0 if step == 1 else flag_at, gi_flag_at, gh_at, u_at, prev_h, prev_c,
                    p_h + m * slot, p_c and p_c + m * slot, c_h + m * slot, c_c and c_c + m * slot,
                    aux_at and aux_at + m * aux_slot, *halt_args, halt_at + m * row, weight_at + m * row,
                    active_at + m * flags, stop_at + m * flags, *scratch, keep_t, time, st_h, st_c,
                    fields[0] + t * hidden * item, fields[1], fields[2] + t * item, fields[3] + t * item, fields[4],
                    done_at)  # fmt: skip
            m += 1
            count = step
            if done.value:
                break
        counts.append(count)
    saved = {f"rec{i}": v for i, v in enumerate(rec)}
    saved["w_halt"] = w_halt
    saved.update({k: v[:m] for k, v in steps.tensors.items()})
    if keep is not None:
        saved["valid"] = keep
    ctx.save_for_backward(*saved.values())
    ctx.keys = list(saved)
    ctx.layout = layout
    ctx.counts = counts
    ctx.shapes = (projected.shape, flag.shape)
    ctx.mark_non_differentiable(n_out)
    return (out, n_out, r_out, *state.values())


def _native_backward(ctx: Any, grads: Sequence[torch.Tensor]) -> tuple[torch.Tensor | None, ...]:
    """The Function's backward with each inner step's work before its matmul(s) in one ``act_backward`` call.

    The state's cotangent lives in one buffer per entry (the next inner step's in another), updated
    in place; the pre-activation cotangents are summed per input step into ``d_projected`` (and the
    flag's share into ``later``) by the kernel, and kept per inner step for ``dW_hh``.
    """
    cells: NativeCells = ctx.kernels
    layout: ACTLayout = ctx.layout
    counts: list[int] = ctx.counts
    saved = dict(zip(ctx.keys, ctx.saved_tensors, strict=True))
    names = layout.names
    nrec = len(layout.recurrent)
    rec = [saved[f"rec{i}"] for i in range(nrec)]
    w_halt = saved["w_halt"]
    (batch, time, wide), flag_shape = ctx.shapes
    dtype = cells.dtype
    d_out, d_rem = grads[0].to(dtype).contiguous(), grads[2].to(dtype).contiguous()
    d_state = {n: torch.empty(g.shape, dtype=dtype).copy_(g) for n, g in zip(names, grads[3:], strict=True)}
    inner = sum(counts)
    if inner == 0:  # no row took a step: the state passes through
        zeros = d_out.new_zeros((batch, time, wide))
        none_rec = [torch.zeros_like(r) for r in rec]
        return (zeros, d_out.new_zeros(flag_shape), *none_rec, torch.zeros_like(w_halt), w_halt.new_zeros((1,)),
                *d_state.values())  # fmt: skip
    backward = cells.fn["act_backward"]
    code, relu = cells.code, cells.relu
    hidden = d_state["h"].shape[1]
    item = d_out.element_size()
    mean = {n: torch.empty((batch, hidden), dtype=dtype) for n in names}
    following = {n: torch.empty((batch, hidden), dtype=dtype) for n in names}  # the next inner step's
    d_total, d_rem_row = torch.empty((batch,), dtype=dtype), torch.empty((batch,), dtype=dtype)
    dcand = torch.empty((batch, 2 * hidden), dtype=dtype)
    gi_scratch = torch.empty((batch, wide), dtype=dtype) if cells.kind == "gru" else None
    d_gh = torch.empty((inner, batch, wide), dtype=dtype)
    d_a = torch.empty((inner, batch), dtype=dtype)
    # Input steps without an inner step keep zeros; the kernel writes every row of the others.
    d_projected = (torch.empty if all(counts) else torch.zeros)((batch, time, wide), dtype=dtype)
    later = torch.empty((batch, wide), dtype=dtype)  # an input step's sum over its inner steps after the first
    d_flag_rows = torch.zeros((batch, wide), dtype=dtype)
    indrnn = cells.kind == "indrnn"
    u = rec[0].contiguous() if indrnn else None
    w_hh = rec[0]
    gh_views = d_gh.unbind(0)
    keep = saved.get("valid")
    keep_at = _at(keep)

    def at(key: str) -> tuple[int, int]:
        found = saved.get(key)
        return (0, 0) if found is None else (_at(found), found[0].numel() * found.element_size())

    (p_h, slot), (p_c, _), (c_h, _), (c_c, _), (aux_at, aux_slot) = (
        at(k) for k in ("prev.h", "prev.c", "cands.h", "cands.c", "aux")
    )
    (halt_at, row), (weight_at, _), (active_at, flags), (stop_at, _) = (
        at(k) for k in ("halt", "weight", "active", "stop")
    )
    gh_slot = batch * wide * item
    buffers = (_at(d_state["h"]), _at(d_state.get("c")), _at(mean["h"]), _at(mean.get("c")), _at(following["h"]),
               _at(following.get("c")), _at(d_total), _at(d_rem_row), _at(dcand), _at(gi_scratch))  # fmt: skip
    d_gh_at, d_a_at, d_proj_at = _at(d_gh), _at(d_a), _at(d_projected)
    later_at, d_flag_at = _at(later), _at(d_flag_rows)
    d_out_at, d_rem_at, u_at, w_halt_at = _at(d_out), _at(d_rem), _at(u), _at(w_halt)
    end = inner
    for t in reversed(range(time)):
        start = end - counts[t]
        keep_t = keep_at + t if keep is not None else 0
        for m in reversed(range(start, end)):
            last = m == start
            backward(code, relu, batch, hidden, int(m == end - 1), int(last), p_h + m * slot, p_c and p_c + m * slot,
                     c_h + m * slot, c_c and c_c + m * slot, aux_at and aux_at + m * aux_slot, halt_at + m * row,
                     weight_at + m * row, active_at + m * flags, stop_at + m * flags, u_at, w_halt_at, keep_t, time,
                     d_out_at + t * hidden * item, time * hidden, d_rem_at + t * item, time, *buffers,
                     d_gh_at + m * gh_slot, d_a_at + m * row, d_proj_at + t * wide * item, time * wide, later_at,
                     d_flag_at)  # fmt: skip
            if not indrnn:
                (d_state["h"] if last else following["h"]).addmm_(gh_views[m], w_hh)
        end = start
    d_rec = native_weight_grads(cells, saved["prev.h"], d_gh, None, saved.get("aux"))
    d_flag = d_flag_rows.sum(0)
    d_a_all = d_a.reshape(-1, 1)
    h_states = saved["cands.h"].reshape(-1, hidden)
    d_w_halt, d_b_halt = d_a_all.t() @ h_states, d_a_all.sum(0)
    return (d_projected, d_flag, *d_rec[:nrec], d_w_halt, d_b_halt, *d_state.values())


def _apply(*args: Any) -> Any:
    """``_ACTFunction.apply``, typed (torch leaves it untyped)."""
    apply: Callable[..., Any] = _ACTFunction.apply
    return apply(*args)


def run(
    layout: ACTLayout,
    p: Mapping[str, torch.Tensor],
    state: State,
    projected: torch.Tensor,
    flag: torch.Tensor,
    valid: torch.Tensor | None,
    kernels: NativeCells | None = None,
) -> tuple[torch.Tensor, State, torch.Tensor, torch.Tensor]:
    """:func:`.act._training`'s (outputs, final state, N, R) through :class:`_ACTFunction`.

    ``projected`` is ``x_t``'s part of the input projection, ``(B, T, G H)``; ``flag`` the
    column of ``w_ih`` that the inner steps after the first add; ``kernels`` the native kernels
    (:func:`native_kernels`) or None for the loop in torch ops.
    """
    flat = [p[k] for k in layout.recurrent] + [p["w_halt"], p["b_halt"]] + [state[n] for n in layout.names]
    out, steps, remainder, *final = _apply(layout, kernels, valid, projected, flag, *flat)
    return out, dict(zip(layout.names, final, strict=True)), steps, remainder
