"""Skip RNN's training loop as one ``torch.autograd.Function`` with a hand-written backward.

Autograd of the per-step loop (:func:`.skip._training`) records some 40 small ops a
step and replays them one node at a time; at B=16, H=256 its backward took most of
the time of a training step. Here the forward runs the same loop without a graph and
keeps only what the backward needs: each step's previous states, candidates, the
cell's gate activations (gru's r, z, n, ``gh_n``; lstm's i, f, g, o, ``tanh c``) and
the gate's scalars (u~, bin(u~), du~, its logit ``a``). The backward then

1. folds the saved activations of every step at once (elementwise ops on
   ``(T, B, G H)``; no matmul is recomputed) into per-step factors, so that the
   cotangent of a step's cell pre-activations is one product with the candidate's
   cotangent (:mod:`.cell_backward`);
2. walks time backwards with the sequential part only: the cotangents of the gate's
   recursion and ``d h_{t-1} = d h_t * z_t + d_gh_t @ W_hh`` (one matmul per layer and
   step; a second one per upper layer for its input);
3. forms the weight gradients after the loop, one matmul each over all steps:
   ``dW_hh = sum_t d_gh_t^T h_{t-1}``, ``dW_ih = sum_t d_gi_t^T x_t``,
   ``dw_gate = sum_t d_a_t^T g_t``.

The equations are the reference's (:mod:`rnnspec.reference.skip`): with
``u~ = cum + min(p, 1 - cum)``, ``u = bin(u~)`` and the straight-through
``d u / d u~ = 1``, each step maps ``s' = u S + (1 - u) s`` (``S`` the candidate),
``p' = u du~ + (1 - u) p``, ``cum' = (1 - u) u~``, so

.. math::

    \\bar u = \\bar g_t + \\bar p' (du~ - p) - \\bar{cum}' u~
              + \\sum_{k, n} \\langle \\bar s'_{k,n}, S_{k,n} - s_{k,n} \\rangle,
    \\qquad
    \\bar u~ = \\bar u + \\bar{cum}' (1 - u) + \\bar{u~}_t,

the difference ``S - s`` taken first; ``min(p, 1 - cum)`` sends ``\\bar u~`` to ``p``
on ties. The forward's values are :func:`.skip._training`'s bit for bit (the same
operations, NaN policies included); the backward follows autograd of that loop:
``\\bar u`` reaches ``u~`` only where ``u~`` is not NaN, and the masks are
``torch.where`` (a NaN cotangent stays where autograd would put it).

One step's gate recursion and state bookkeeping (:func:`gate`, :func:`mix`, :func:`advance`)
are written once, here, for both loops: the autograd loop calls them with Python numbers,
the Function with cached 0-d tensors (:func:`.cell_backward.const`).

On float32/float64 CPU tensors, when the kernel library builds (:func:`native_kernels`), the
Function runs the same loop with each layer's step in native kernels
(``backends/common/kernels/cells.c``): forward, one ``skip_forward`` call after the step's
recurrent matmul (``addmm`` into a preallocated buffer) writes the candidate, the saved
activations and the gate's bookkeeping straight into ``(T, B, ...)`` buffers; backward, one
``skip_backward`` call before the step's ``addmm_`` forms the gate's cotangents and the
pre-activations' (the factors of step 1 per step, in the kernel), and the weight gradients are
the same matmuls after the loop. The kernels' ``sigmoid``/``tanh`` differ from torch's by a few
ulps: the values are this loop's within rounding.

:func:`usable` says when this path may run: plain eager autograd only. Under
``torch.func`` transforms (which force the plain path), ``torch.compile`` tracing,
or a forced plain path, :mod:`.skip` keeps the autograd loop, whose graph those
handle. The backward is once differentiable (no double backward).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch.autograd.function import FunctionCtx, once_differentiable

from . import workspace
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
from .functorch import transformed_arguments
from .fused import plain_forced
from .sequence import State

__all__ = ["Scalar", "SkipLayout", "advance", "gate", "mix", "native_kernels", "run", "usable"]


def usable(tensors: Sequence[torch.Tensor]) -> bool:
    """Whether the hand-written backward may replace autograd: eager mode, no transform, no forced plain path."""
    if plain_forced() or torch.compiler.is_compiling():
        return False
    return not transformed_arguments({"tensors": list(tensors)})


@dataclass(frozen=True)
class SkipLayout:
    """What the Function needs besides tensors: the base cell, its options and the stack's shape."""

    cell: str  # "rnn", "lstm" or "gru"
    activation: str  # rnn only
    reset_after: bool  # gru only
    layers: int
    names: tuple[str, ...]  # the state entries of a layer: ("h",) or ("h", "c")

    @property
    def gate_input(self) -> str:
        """The candidate entry the gate reads: lstm's c, else h."""
        return "c" if "c" in self.names else "h"


# -- one step's gate and state bookkeeping, shared with the autograd loop (skip._training) ---------

#: ``Number`` or a 0-d tensor: the autograd loop passes Python numbers (a cached tensor made while
#: ``torch.compile`` traces would leak a fake one), the Function :func:`.cell_backward.const` tensors.
Scalar = float | torch.Tensor


def gate(
    prob_prev: torch.Tensor, cum_prev: torch.Tensor, one: Scalar, half: Scalar, *, traced: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(u~, bin(u~), through, u)`` of a step: ``u = bin(u~) + through``, ``through`` zero with ``d/du~ = 1``.

    ``through`` is also zero where ``u~`` is NaN (whose gate is 0); ``min(p, 1 - cum)`` keeps
    ``update_prob`` on ties and where it is NaN, as the reference's ``np.minimum``. ``traced``
    False (the Function's forward, which no derivative sees) leaves out the ``detach``, one
    dispatch a step that changes no value there.
    """
    room = one - cum_prev
    u_tilde = cum_prev + torch.where(room < prob_prev, room, prob_prev)
    on = u_tilde >= half
    through = torch.where(torch.isnan(u_tilde), 0.0, u_tilde - (u_tilde.detach() if traced else u_tilde))
    return u_tilde, on, through, on.to(u_tilde.dtype) + through


def mix(on: torch.Tensor, through: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """``u * new + (1 - u) * old`` for ``u = on + through`` (``on`` in {0, 1}, ``through`` zero with gradient).

    The value is exactly ``new`` or ``old``, and ``d u`` is ``<d, new - old>``
    with the difference taken first, as the reference does: autograd of the
    product form would sum ``d * new - d * old``, which cancels in float32 when
    ``new`` is close to ``old``, and the straight-through chain amplifies that.
    """
    return torch.where(on, new, old) + through * (new - old)


def advance(
    names: tuple[str, ...],
    states: list[State],
    cands: list[State],
    du: torch.Tensor,
    steps: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    keep: torch.Tensor | None,
    one: Scalar,
    zero: Scalar,
) -> tuple[list[State], torch.Tensor, torch.Tensor, torch.Tensor]:
    """The states after a step, and its output, update_gate and update_prob, each ``(B,)`` or ``(B, H)``.

    ``steps`` is :func:`gate`'s; ``keep`` the step's valid rows ``(B, 1)`` (None: all), whose
    states alone move on; the others keep theirs and output zeros.
    """
    u_tilde, on, through, u = steps
    top = states[-1]
    new = [{n: mix(on, through, c[n], s[n]) for n in names} for c, s in zip(cands, states, strict=True)]
    new[-1]["update_prob"] = mix(on, through, du, top["update_prob"])
    new[-1]["cum_update_prob"] = (one - u) * u_tilde
    y = new[-1]["h"]
    if keep is None:
        return new, y, u[:, 0], u_tilde[:, 0]
    kept = [{n: torch.where(keep, v, s[n]) for n, v in ns.items()} for ns, s in zip(new, states, strict=True)]
    return (
        kept,
        torch.where(keep, y, zero),
        torch.where(keep[:, 0], u[:, 0], zero),
        torch.where(keep[:, 0], u_tilde[:, 0], zero),
    )


# -- the Function ---------------------------------------------------------------------------------


def _unflatten(layout: SkipLayout, flat: Sequence[torch.Tensor]) -> tuple[list[list[torch.Tensor]], list[State]]:
    """(per layer [w_ih, b_ih, w_hh, b_hh], layer 0 without w_ih/b_ih plus w_gate, b_gate at the end; states)."""
    params: list[list[torch.Tensor]] = []
    i = 0
    for k in range(layout.layers):
        n = 2 if k == 0 else 4
        params.append(list(flat[i : i + n]))
        i += n
    params.append(list(flat[i : i + 2]))  # w_gate, b_gate
    i += 2
    states: list[State] = []
    for k in range(layout.layers):
        names = layout.names + (("update_prob", "cum_update_prob") if k == layout.layers - 1 else ())
        states.append({n: flat[i + j] for j, n in enumerate(names)})
        i += len(names)
    return params, states


def _hh(params: list[list[torch.Tensor]], k: int) -> tuple[torch.Tensor, torch.Tensor]:
    return params[k][-2], params[k][-1]


class _SkipFunction(torch.autograd.Function):
    """``(layout, kernels, valid, projected, *params, *states) -> (outputs, gate, prob, *final states)``.

    ``kernels`` None: the loop in torch ops; else the native kernels' (:func:`_native_forward`).
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        layout: SkipLayout,
        kernels: NativeCells | None,
        valid: torch.Tensor | None,
        projected: torch.Tensor,
        *flat: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        ctx.kernels = kernels  # type: ignore[attr-defined]
        if kernels is not None:
            return _native_forward(ctx, kernels, layout, valid, projected, flat)
        params, states = _unflatten(layout, flat)
        w_gate, b_gate = params[-1]
        zero, one, half = const(0.0, projected), const(1.0, projected), const(0.5, projected)
        names = layout.names
        time = projected.shape[1]
        top = layout.layers - 1
        record: dict[str, list[torch.Tensor]] = {k: [] for k in ("u_tilde", "on", "du", "a", "prob", "cum")}
        prevs: list[list[State]] = [[] for _ in range(layout.layers)]
        cands_all: list[list[State]] = [[] for _ in range(layout.layers)]
        auxes: list[list[dict[str, torch.Tensor]]] = [[] for _ in range(layout.layers)]
        outputs, gates, probs = [], [], []
        for t in range(time):
            prob_prev, cum_prev = states[top]["update_prob"], states[top]["cum_update_prob"]
            steps = gate(prob_prev, cum_prev, one, half, traced=False)
            cands: list[State] = []
            for k in range(layout.layers):
                gi = projected[:, t] if k == 0 else F.linear(cands[-1]["h"], params[k][0], params[k][1])
                cand, aux = cell_step(layout, *_hh(params, k), {n: states[k][n] for n in names}, gi)
                cands.append(cand)
                auxes[k].append(aux)
            a = F.linear(cands[-1][layout.gate_input], w_gate, b_gate)
            du = torch.exp(F.logsigmoid(a))
            for k in range(layout.layers):
                prevs[k].append({n: states[k][n] for n in names})
                cands_all[k].append(cands[k])
            for key, value in zip(record, (steps[0], steps[1], du, a, prob_prev, cum_prev), strict=True):
                record[key].append(value)
            keep = None if valid is None else valid[:, t, None]
            states, y, u, u_tilde = advance(names, states, cands, du, steps, keep, one, zero)
            outputs.append(y)
            gates.append(u)
            probs.append(u_tilde)
        stacked = [torch.stack(record[k]) for k in record]
        per_layer = [torch.stack([p[n] for p in prevs[k]]) for k in range(layout.layers) for n in names]
        per_layer += [torch.stack([c[n] for c in cands_all[k]]) for k in range(layout.layers) for n in names]
        per_layer += [torch.stack([x[n] for x in auxes[k]]) for k in range(layout.layers) for n in aux_names(layout)]
        extra = [] if valid is None else [valid]
        ctx.save_for_backward(projected, *flat, *stacked, *per_layer, *extra)
        ctx.layout = layout  # type: ignore[attr-defined]
        ctx.flat_count = len(flat)  # type: ignore[attr-defined]
        ctx.masked = valid is not None  # type: ignore[attr-defined]
        finals = [v for s in states for v in s.values()]
        return (torch.stack(outputs, 1), torch.stack(gates, 1), torch.stack(probs, 1), *finals)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        if ctx.kernels is not None:
            return (None, None, *_native_backward(ctx, grads))
        layout: SkipLayout = ctx.layout
        saved = ctx.saved_tensors
        projected = saved[0]
        zero, one = const(0.0, projected), const(1.0, projected)
        flat = saved[1 : 1 + ctx.flat_count]
        rest = saved[1 + ctx.flat_count :]
        u_tilde, on, du, a, prob_prev, cum_prev = rest[:6]
        names = layout.names
        layers, top = layout.layers, layout.layers - 1
        per = len(names) * layers
        prev = [{n: rest[6 + k * len(names) + j] for j, n in enumerate(names)} for k in range(layers)]
        cand = [{n: rest[6 + per + k * len(names) + j] for j, n in enumerate(names)} for k in range(layers)]
        at = 6 + 2 * per
        kept = aux_names(layout)
        aux = [{n: rest[at + k * len(kept) + j] for j, n in enumerate(kept)} for k in range(layers)]
        at += layers * len(kept)
        valid = rest[at] if ctx.masked else None
        params, _ = _unflatten(layout, flat)
        w_gate = params[-1][0]
        time = projected.shape[1]

        d_out, d_gate, d_prob_field = grads[0], grads[1], grads[2]
        d_final = list(grads[3:])
        # Per-step cotangents of the fields, time first; the masked fields pass nothing past a row's length.
        keep = None if valid is None else valid.t()[..., None]  # (T, B, 1)
        d_out_t = d_out.transpose(0, 1)
        d_gate_t = d_gate.t()[..., None]
        d_pf_t = d_prob_field.t()[..., None]
        if keep is not None:
            d_out_t = torch.where(keep, d_out_t, zero)
            d_gate_t = torch.where(keep, d_gate_t, zero)
            d_pf_t = torch.where(keep, d_pf_t, zero)
        # The gate's factors, every step at once.
        through = torch.where(torch.isnan(u_tilde), 0.0, u_tilde - u_tilde)
        u = on.to(u_tilde.dtype) + through
        not_u = one - u
        is_nan = torch.isnan(u_tilde)
        to_prob = ~((one - cum_prev) < prob_prev)  # min(p, 1 - cum) picks p on ties (and where p is NaN)
        gap = du - prob_prev
        slope = du * torch.sigmoid(-a)  # d du~ / d a, accurate where du~ saturates (see skip._sigmoid)
        diff = [{n: (cand[k][n] - prev[k][n]).unbind(0) for n in names} for k in range(layers)]
        facs = [factors(layout, prev[k], cand[k], aux[k]) for k in range(layers)]
        # Every per-step operand split into its steps once: a list lookup a step instead of a tensor index.
        keep_t = None if keep is None else keep.unbind(0)
        d_out_s, d_gate_s, d_pf_s = d_out_t.unbind(0), d_gate_t.unbind(0), d_pf_t.unbind(0)
        on_s, nan_s, not_u_s, to_prob_s = on.unbind(0), is_nan.unbind(0), not_u.unbind(0), to_prob.unbind(0)
        gap_s, u_tilde_s, slope_s = gap.unbind(0), u_tilde.unbind(0), slope.unbind(0)

        i = 0
        d_state: list[State] = []
        for k in range(layers):
            entries = names + (("update_prob", "cum_update_prob") if k == top else ())
            d_state.append({n: d_final[i + j] for j, n in enumerate(entries)})
            i += len(entries)
        d_gi_steps: list[list[torch.Tensor]] = [[] for _ in range(layers)]
        d_gh_steps: list[list[torch.Tensor]] = [[] for _ in range(layers)]
        d_a_steps: list[torch.Tensor] = []
        for t in reversed(range(time)):
            if keep_t is None:
                d_new = d_state
                frozen = None
            else:
                k_t = keep_t[t]
                d_new = [{n: torch.where(k_t, v, zero) for n, v in s.items()} for s in d_state]
                frozen = [{n: torch.where(k_t, zero, v) for n, v in s.items()} for s in d_state]
            d_new[top]["h"] = d_new[top]["h"] + d_out_s[t]
            d_p, d_c = d_new[top]["update_prob"], d_new[top]["cum_update_prob"]
            on_t = on_s[t]
            d_u = torch.addcmul(torch.addcmul(d_gate_s[t], d_p, gap_s[t]), d_c, u_tilde_s[t], value=-1.0)
            for k in range(layers):
                for n in names:
                    d_u = d_u + (d_new[k][n] * diff[k][n][t]).sum(1, keepdim=True)
            d_ut = torch.where(nan_s[t], zero, d_u) + torch.addcmul(d_pf_s[t], d_c, not_u_s[t])
            d_a = torch.where(on_t, d_p, zero) * slope_s[t]
            d_a_steps.append(d_a)
            d_cand = [{n: torch.where(on_t, d_new[k][n], zero) for n in names} for k in range(layers)]
            g = layout.gate_input
            d_cand[top][g] = torch.addcmul(d_cand[top][g], d_a, w_gate)
            d_prev: list[State] = [{} for _ in range(layers)]
            for k in reversed(range(layers)):
                d_cell, d_gi, d_gh = layer_backward(layout, facs[k], t, params[k][-2], d_cand[k])
                d_gi_steps[k].append(d_gi)
                if d_gh is not None:
                    d_gh_steps[k].append(d_gh)
                if k > 0:
                    d_cand[k - 1]["h"] = torch.addmm(d_cand[k - 1]["h"], d_gi, params[k][0])
                d_prev[k] = {n: torch.where(on_t, zero, d_new[k][n]) + d_cell[n] for n in names}
            to_p = torch.where(to_prob_s[t], d_ut, zero)
            d_prev[top]["update_prob"] = torch.where(on_t, zero, d_p) + to_p
            d_prev[top]["cum_update_prob"] = to_p
            if frozen is not None:
                d_prev = [{n: v + frozen[k][n] for n, v in s.items()} for k, s in enumerate(d_prev)]
            d_state = d_prev

        # Weight gradients over all steps at once.
        grads_params: list[torch.Tensor | None] = []
        d_projected: torch.Tensor | None = None
        for k in range(layers):
            d_gi_all = torch.stack(d_gi_steps[k][::-1])  # (T, B, G H)
            d_gh_all = torch.stack(d_gh_steps[k][::-1]) if d_gh_steps[k] else None
            dw_hh, db_hh = weight_grads(layout, facs[k], prev[k]["h"], d_gi_all, d_gh_all)
            if k == 0:
                d_projected = d_gi_all.transpose(0, 1)
                grads_params += [dw_hh, db_hh]
            else:
                x_k = cand[k - 1]["h"]
                flat_gi = d_gi_all.reshape(-1, d_gi_all.shape[-1])
                dw_ih = flat_gi.t() @ x_k.reshape(-1, x_k.shape[-1])
                grads_params += [dw_ih, flat_gi.sum(0), dw_hh, db_hh]
        d_a_all = torch.stack(d_a_steps[::-1]).reshape(-1, 1)
        g_all = cand[top][layout.gate_input]
        grads_params += [d_a_all.t() @ g_all.reshape(-1, g_all.shape[-1]), d_a_all.sum(0)]
        grads_states = [v for s in d_state for v in s.values()]
        return (None, None, None, d_projected, *grads_params, *grads_states)


# -- the native path: the steps' elementwise work in kernels/cells.c ---------------------------------


def native_kernels(layout: SkipLayout, tensors: Sequence[torch.Tensor]) -> NativeCells | None:
    """The native kernels for the Function's loop on ``tensors`` (every tensor argument), or None (torch ops)."""
    return native_cells(layout, tensors)


def _at(x: torch.Tensor | None) -> int:
    """A kernel argument's address: 0 (NULL) for None."""
    return 0 if x is None else int(x.data_ptr())


@dataclass(eq=False)
class _NativeLayer:
    """One layer of the native loop: its weights as the matmuls take them, and its buffers (time first).

    ``states`` holds the state before each step and the final one, ``(T + 1, B, H)``; ``cands`` the
    candidates, ``aux`` the activations a step saves (:data:`.cell_backward._NATIVE_KINDS`).
    """

    hidden: int
    wide: int  # G H
    recurrent: list[tuple[torch.Tensor, torch.Tensor]]  # (b, W^T) of each recurrent matmul: gru before has two
    states: dict[str, torch.Tensor]
    cands: dict[str, torch.Tensor]
    aux: torch.Tensor | None
    gh: list[torch.Tensor]  # the recurrent matmuls' outputs, (B, G H), or (B, 2H) and (B, H) for gru before
    gi: torch.Tensor | None  # layers above the first: the input projection's output (B, G H)
    projection: tuple[torch.Tensor, torch.Tensor] | None  # layers above the first: (b_ih, W_ih^T)


def _native_layers(
    cells: NativeCells, layout: SkipLayout, params: list[list[torch.Tensor]], batch: int, time: int
) -> list[_NativeLayer]:
    """Every layer's weights and (uninitialised) buffers for a forward over ``time`` steps of ``batch`` rows."""
    dtype = cells.dtype
    layers = []
    for k in range(layout.layers):
        w_hh, b_hh = _hh(params, k)
        hidden = w_hh.shape[1]
        wide = cells.gates * hidden
        if cells.kind == "gru_before":
            split = 2 * hidden
            recurrent = [(b_hh[:split], w_hh[:split].t()), (b_hh[split:], w_hh[split:].t())]
            gh = [workspace.empty((batch, split), dtype=dtype), workspace.empty((batch, hidden), dtype=dtype)]
        else:
            recurrent = [(b_hh, w_hh.t())]
            gh = [workspace.empty((batch, wide), dtype=dtype)]
        layers.append(
            _NativeLayer(
                hidden,
                wide,
                recurrent,
                {n: workspace.empty((time + 1, batch, hidden), dtype=dtype) for n in layout.names},
                {n: workspace.empty((time, batch, hidden), dtype=dtype) for n in layout.names},
                workspace.empty((time, batch, cells.aux * hidden), dtype=dtype) if cells.aux else None,
                gh,
                None if k == 0 else workspace.empty((batch, wide), dtype=dtype),
                None if k == 0 else (params[k][1], params[k][0].t()),
            )
        )
    return layers


def _native_forward(
    ctx: Any,
    cells: NativeCells,
    layout: SkipLayout,
    valid: torch.Tensor | None,
    projected: torch.Tensor,
    flat: Sequence[torch.Tensor],
) -> tuple[torch.Tensor, ...]:
    """The Function's forward with each layer's step after its matmul(s) in one ``skip_forward`` call.

    The matmuls run in torch into the layers' buffers; the kernel writes the candidate, the saved
    activations and the state after the step into the buffers, so that nothing is stacked afterwards.
    """
    params, states = _unflatten(layout, flat)
    forward, gates = cells.fn["skip_forward"], cells.fn["gru_before_gates"]
    code, relu, before = cells.code, cells.relu, cells.kind == "gru_before"
    lstm, gate_c = "c" in layout.names, int(layout.gate_input == "c")
    dtype = projected.dtype
    projected = projected.contiguous()
    batch, time, wide0 = projected.shape
    item = projected.element_size()
    row = batch * item  # a (B,) slot, in bytes
    layers = _native_layers(cells, layout, params, batch, time)
    top = len(layers) - 1
    for lay, s in zip(layers, states, strict=True):
        for n in layout.names:
            lay.states[n][0].copy_(s[n])
    scalars = {k: workspace.empty((time + 1, batch), dtype=dtype) for k in ("prob", "cum")}
    scalars["prob"][0].copy_(states[top]["update_prob"][:, 0])
    scalars["cum"][0].copy_(states[top]["cum_update_prob"][:, 0])
    scalars.update({k: workspace.empty((time, batch), dtype=dtype) for k in ("u_tilde", "du", "a")})
    on = workspace.empty((time, batch), dtype=torch.bool)
    hidden = layers[top].hidden
    out = workspace.empty((batch, time, hidden), dtype=dtype)
    gate_f = workspace.empty((batch, time), dtype=dtype)
    prob_f = workspace.empty((batch, time), dtype=dtype)
    w_gate, b_gate = params[-1][0].contiguous(), params[-1][1].contiguous()
    keep = None if valid is None else valid.contiguous()
    keep_at = _at(keep)
    proj_at, prob_at, cum_at = _at(projected), _at(scalars["prob"]), _at(scalars["cum"])
    tilde_at, on_at, du_at, a_at = _at(scalars["u_tilde"]), _at(on), _at(scalars["du"]), _at(scalars["a"])
    out_at, gate_at, field_at, wg_at, bg_at = _at(out), _at(gate_f), _at(prob_f), _at(w_gate), _at(b_gate)
    # Per layer: (its views a step's matmuls read, the kernel's constant arguments, byte sizes of its slots).
    views = []
    for k, lay in enumerate(layers):
        size = lay.hidden
        slot = batch * size * item
        aux_slot = batch * cells.aux * size * item
        h_views = lay.states["h"].unbind(0)
        below = layers[k - 1].cands["h"].unbind(0) if k > 0 else None
        rh = lay.aux[:, :, 3 * size :].unbind(0) if before and lay.aux is not None else None
        c_states = _at(lay.states["c"]) if lstm else 0
        c_cands = _at(lay.cands["c"]) if lstm else 0
        views.append((h_views, below, rh, slot, aux_slot, _at(lay.states["h"]), c_states, _at(lay.cands["h"]),
                      c_cands, _at(lay.aux), _at(lay.gh[-1]), _at(lay.gh[0]), _at(lay.gi)))  # fmt: skip
    for t in range(time):
        keep_t = keep_at + t if keep is not None else 0
        for k, lay in enumerate(layers):
            h_views, below, rh, slot, aux_slot, s_h, s_c, c_h, c_c, aux_at, gh_at, gh0_at, gi_at = views[k]
            if k == 0:
                gi, gi_stride = proj_at + t * wide0 * item, time * wide0
            else:
                assert lay.gi is not None
                assert lay.projection is not None
                assert below is not None
                b_ih, w_ih_t = lay.projection
                torch.addmm(b_ih, below[t], w_ih_t, out=lay.gi)
                gi, gi_stride = gi_at, lay.wide
            if before:
                assert rh is not None
                (b_rz, w_rz), (b_n, w_n) = lay.recurrent
                torch.addmm(b_rz, h_views[t], w_rz, out=lay.gh[0])
                gates(batch, lay.hidden, gi, gi_stride, gh0_at, s_h + t * slot, aux_at + t * aux_slot)
                torch.addmm(b_n, rh[t], w_n, out=lay.gh[1])
            else:
                b_hh, w_hh_t = lay.recurrent[0]
                torch.addmm(b_hh, h_views[t], w_hh_t, out=lay.gh[0])
            forward(code, relu, batch, lay.hidden, int(k == top), gate_c, gi, gi_stride, gh_at,
                    s_h + t * slot, s_c and s_c + t * slot, c_h + t * slot, c_c and c_c + t * slot,
                    aux_at and aux_at + t * aux_slot, s_h + (t + 1) * slot, s_c and s_c + (t + 1) * slot,
                    prob_at + t * row, cum_at + t * row, keep_t, time, wg_at, bg_at, tilde_at + t * row,
                    on_at + t * batch, du_at + t * row, a_at + t * row, prob_at + (t + 1) * row,
                    cum_at + (t + 1) * row, out_at + t * hidden * item, time * hidden, gate_at + t * item,
                    field_at + t * item, time)  # fmt: skip
    saved: dict[str, torch.Tensor] = {f"flat{i}": v for i, v in enumerate(flat)}
    for k, lay in enumerate(layers):
        saved.update({f"{k}.states.{n}": v for n, v in lay.states.items()})
        saved.update({f"{k}.cands.{n}": v for n, v in lay.cands.items()})
        if lay.aux is not None:
            saved[f"{k}.aux"] = lay.aux
    saved.update(scalars)
    saved["on"] = on
    if keep is not None:
        saved["valid"] = keep
    ctx.save_for_backward(*saved.values())
    ctx.keys = list(saved)
    ctx.layout = layout
    ctx.flat_count = len(flat)
    # The final states are copies: the buffers are saved, and a caller may write into what it gets.
    finals = [lay.states[n][time].clone() for lay in layers for n in layout.names]
    finals += [scalars["prob"][time, :, None].clone(), scalars["cum"][time, :, None].clone()]
    return (out, gate_f, prob_f, *finals)


class _BackLayer(NamedTuple):
    """One layer of the native backward: sizes, addresses (0: absent) and the views its matmuls take."""

    hidden: int
    slot: int  # bytes of a step's (B, H) slot
    aux_slot: int  # of a step's saved activations
    gi_slot: int  # of a step's (B, G H) pre-activation cotangents
    states_h: int
    states_c: int
    cands_h: int
    aux: int
    d_h: int  # the state cotangent buffers
    d_c: int
    d_gi: int
    d_gh: int  # gru (reset after): the recurrent matmul's own cotangent
    x: torch.Tensor | None  # layers below the top: the upper layer's d_gi W_ih
    d_rh: torch.Tensor | None  # gru before: (d a_n) W_hn
    gi_views: tuple[torch.Tensor, ...]  # d_gi's steps
    mm_views: tuple[torch.Tensor, ...]  # the steps' cotangents that multiply w_mm into d h_{t-1}
    n_views: tuple[torch.Tensor, ...] | None  # gru before: d a_n's steps
    w_mm: torch.Tensor
    w_n: torch.Tensor | None  # gru before: W_hn


def _native_backward(ctx: Any, grads: Sequence[torch.Tensor]) -> tuple[torch.Tensor | None, ...]:
    """The Function's backward with each layer's step before its matmul(s) in one ``skip_backward`` call.

    The cotangents of the states live in one buffer per layer and entry, updated in place step by
    step (the kernel writes the elementwise part, ``addmm_`` adds ``d_gh W_hh``); each step's
    pre-activation cotangents go to ``(T, B, G H)`` buffers for the weight gradients after the loop.
    """
    cells: NativeCells = ctx.kernels
    layout: SkipLayout = ctx.layout
    saved = dict(zip(ctx.keys, ctx.saved_tensors, strict=True))
    flat = [saved[f"flat{i}"] for i in range(ctx.flat_count)]
    params, _ = _unflatten(layout, flat)
    backward, before_backward = cells.fn["skip_backward"], cells.fn["gru_before_backward"]
    code, relu, before, kind = cells.code, cells.relu, cells.kind == "gru_before", cells.kind
    names, dtype = layout.names, cells.dtype
    lstm, gate_c = "c" in names, int(layout.gate_input == "c")
    layers, top = layout.layers, layout.layers - 1
    time, batch = saved["on"].shape
    item = saved["u_tilde"].element_size()
    row = batch * item
    d_out, d_gate, d_pf = (g.to(dtype).contiguous() for g in grads[:3])
    hidden_top = d_out.shape[2]
    keep = saved.get("valid")
    keep_at = _at(keep)
    # The state cotangents, own buffers (written in place), in the Function's order of the final states.
    d_final = iter(grads[3:])
    d_state = [{n: torch.empty_like(saved[f"{k}.states.{n}"][0]).copy_(next(d_final)) for n in names}
               for k in range(layers)]  # fmt: skip
    d_prob = workspace.empty((batch,), dtype=dtype).copy_(next(d_final)[:, 0])
    d_cum = workspace.empty((batch,), dtype=dtype).copy_(next(d_final)[:, 0])
    entries = [(d_state[k][n], saved[f"{k}.cands.{n}"], saved[f"{k}.states.{n}"]) for k in range(layers) for n in names]
    table = torch.tensor([[_at(d), _at(c), _at(s), d.shape[1]] for d, c, s in entries], dtype=torch.int64)
    top_h = top * len(names)
    widest = max(saved[f"{k}.states.h"].shape[2] for k in range(layers))
    dcand = workspace.empty((batch, 2 * widest), dtype=dtype)
    tilde_at, du_at, a_at = _at(saved["u_tilde"]), _at(saved["du"]), _at(saved["a"])
    prob_at, cum_at, on_at = _at(saved["prob"]), _at(saved["cum"]), _at(saved["on"])
    d_a = workspace.empty((time, batch), dtype=dtype)
    w_gate = params[-1][0].contiguous()
    d_gi: list[torch.Tensor] = []
    d_gh: list[torch.Tensor | None] = []
    per_layer: list[_BackLayer] = []
    for k in range(layers):
        size = saved[f"{k}.states.h"].shape[2]
        wide = cells.gates * size
        d_gi.append(workspace.empty((time, batch, wide), dtype=dtype))
        d_gh.append(workspace.empty((time, batch, wide), dtype=dtype) if kind == "gru" else None)
        w_hh = params[k][-2]
        aux = saved.get(f"{k}.aux")
        matmul = d_gi[k] if d_gh[k] is None else d_gh[k]
        assert matmul is not None
        per_layer.append(
            _BackLayer(
                size,
                batch * size * item,
                batch * cells.aux * size * item,
                batch * wide * item,
                _at(saved[f"{k}.states.h"]),
                _at(saved[f"{k}.states.c"]) if lstm else 0,
                _at(saved[f"{k}.cands.h"]),
                _at(aux),
                _at(d_state[k]["h"]),
                _at(d_state[k]["c"]) if lstm else 0,
                _at(d_gi[k]),
                _at(d_gh[k]),
                workspace.empty((batch, size), dtype=dtype) if k < top else None,  # d_cand from the layer above
                workspace.empty((batch, size), dtype=dtype) if before else None,  # gru before: d (r h)
                d_gi[k].unbind(0),
                matmul[:, :, : 2 * size].unbind(0) if before else matmul.unbind(0),
                d_gi[k][:, :, 2 * size :].unbind(0) if before else None,
                w_hh[: 2 * size] if before else w_hh,
                w_hh[2 * size :] if before else None,
            )
        )
    d_out_at, d_gate_at, d_pf_at, dcand_at = _at(d_out), _at(d_gate), _at(d_pf), _at(dcand)
    table_at, d_prob_at, d_cum_at, wg_at, d_a_at = _at(table), _at(d_prob), _at(d_cum), _at(w_gate), _at(d_a)
    for t in reversed(range(time)):
        keep_t = keep_at + t if keep is not None else 0
        for k in reversed(range(layers)):
            (size, slot, aux_slot, gi_slot, s_h, s_c, c_h, aux_at, ds_h, ds_c, gi_at, gh_at, x, d_rh, _,
             mm_views, n_views, w_mm, w_n) = per_layer[k]  # fmt: skip
            if x is not None:  # the upper layer's d_gi W_ih: its input is this layer's candidate h
                torch.mm(per_layer[k + 1].gi_views[t], params[k + 1][0], out=x)
            backward(code, relu, batch, size, int(k == top), gate_c, t, s_h + t * slot, s_c and s_c + t * slot,
                     c_h + t * slot, aux_at and aux_at + t * aux_slot, on_at + t * batch, keep_t, time, ds_h, ds_c,
                     _at(x), dcand_at, gi_at + t * gi_slot, gh_at and gh_at + t * gi_slot, table_at, len(entries),
                     top_h, d_out_at + t * hidden_top * item, time * hidden_top, d_gate_at + t * item,
                     d_pf_at + t * item, time, tilde_at + t * row, du_at + t * row, a_at + t * row,
                     prob_at + t * row, cum_at + t * row, d_prob_at, d_cum_at, wg_at, d_a_at + t * row)  # fmt: skip
            if before:
                assert d_rh is not None
                assert n_views is not None
                assert w_n is not None
                torch.mm(n_views[t], w_n, out=d_rh)
                before_backward(batch, size, _at(d_rh), s_h + t * slot, aux_at + t * aux_slot, gi_at + t * gi_slot,
                                ds_h)  # fmt: skip
            d_state[k]["h"].addmm_(mm_views[t], w_mm)

    # Weight gradients over all steps at once.
    grads_params: list[torch.Tensor | None] = []
    d_projected: torch.Tensor | None = None
    for k in range(layers):
        prev_h = saved[f"{k}.states.h"][:time]
        dw_hh, db_hh = native_weight_grads(cells, prev_h, d_gi[k], d_gh[k], saved.get(f"{k}.aux"))
        if k == 0:
            d_projected = d_gi[k].transpose(0, 1)
            grads_params += [dw_hh, db_hh]
        else:
            x_k = saved[f"{k - 1}.cands.h"]
            flat_gi = d_gi[k].reshape(-1, d_gi[k].shape[-1])
            grads_params += [flat_gi.t() @ x_k.reshape(-1, x_k.shape[-1]), flat_gi.sum(0), dw_hh, db_hh]
    g_all = saved[f"{top}.cands.{layout.gate_input}"]
    d_a_all = d_a.reshape(-1, 1)
    grads_params += [d_a_all.t() @ g_all.reshape(-1, g_all.shape[-1]), d_a_all.sum(0)]
    grads_states = [v for s in d_state for v in s.values()] + [d_prob[:, None], d_cum[:, None]]
    return (None, d_projected, *grads_params, *grads_states)


def _apply(*args: Any) -> Any:
    """``_SkipFunction.apply``, typed (torch leaves it untyped)."""
    apply: Callable[..., Any] = _SkipFunction.apply
    return apply(*args)


def run(
    layout: SkipLayout,
    params: Sequence[Mapping[str, torch.Tensor]],
    states: Sequence[State],
    projected: torch.Tensor,
    valid: torch.Tensor | None,
    kernels: NativeCells | None = None,
) -> tuple[torch.Tensor, list[State], torch.Tensor, torch.Tensor]:
    """The training loop's (outputs, final states, update_gate, update_prob) through :class:`_SkipFunction`.

    ``projected`` is layer 0's input projection of every step, ``(B, T, G H)``; ``states``
    the initial states (the top layer's with ``update_prob``, ``cum_update_prob``); ``kernels``
    the native kernels (:func:`native_kernels`) or None for the loop in torch ops.
    """
    flat: list[torch.Tensor] = []
    for k, p in enumerate(params):
        if k > 0:
            flat += [p["w_ih"], p["b_ih"]]
        flat += [p["w_hh"], p["b_hh"]]
    flat += [params[-1]["w_gate"], params[-1]["b_gate"]]
    entries: list[tuple[int, str]] = []
    for k, s in enumerate(states):
        names = layout.names + (("update_prob", "cum_update_prob") if k == layout.layers - 1 else ())
        for n in names:
            flat.append(s[n])
            entries.append((k, n))
    out, gate, prob, *finals = _apply(layout, kernels, valid, projected, *flat)
    final: list[State] = [{} for _ in states]
    for (k, n), v in zip(entries, finals, strict=True):
        final[k][n] = v
    return out, final, gate, prob
