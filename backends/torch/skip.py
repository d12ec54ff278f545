"""skip_rnn, skip_lstm, skip_gru: Skip RNN's state-update gate over a stack of base cells.

As the reference (:mod:`rnnspec.reference.skip`) and the authors' code: time is
the outer loop and the layers the inner one, since every layer shares the one
gate driven by the top layer's candidate. Two loops (:mod:`.skipping` picks one):

- the training loop computes every candidate at every step (the straight-through
  gradient needs it). The binarisation's gradient is the identity:
  ``u = bin(u~) + (u~ - u~.detach())``, exactly ``bin(u~)`` forward with
  ``d u / d u~ = 1``, ``bin(u~) = (u~ >= 0.5)``. ``min(update_prob, 1 - cum)``
  passes its gradient to ``update_prob`` on ties, as the spec says
  (``torch.minimum`` would split it), and is NaN where ``update_prob`` is, as
  the reference's ``np.minimum``;
- the skipping loop (inference) runs the gate's recursion on the host, in the
  input's precision and by the same operations, so ``u`` is the training loop's
  bit for bit; only the rows with ``u = 1`` run the stack and ``du~`` (gathered,
  then scattered back out of place). From :data:`PROJECT_PER_UPDATE_FROM` rows on,
  layer 0's input projection too runs on those rows only, at their steps (below,
  it is one matmul over every step, hoisted). A step where no row updates runs no
  torch operation at all: the outputs are gathered at the end from the top layer's
  ``h`` after each updating step.

The training loop takes one of two forms, with the same values and gradients: in
plain eager autograd, one ``torch.autograd.Function`` with a hand-written backward
(:mod:`.skip_autograd`: the per-step graph's backward was most of a training step's
time), whose steps run in native kernels on float32/float64 CPU tensors when the
kernel library builds (path ``"native-training"``) and in torch ops otherwise
(``"training"``); under ``torch.func`` transforms, ``torch.compile`` or a forced
plain path (:func:`.skip_autograd.usable`), :func:`_training`'s per-step autograd
graph, which those handle.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from rnnspec.backends.common.ops import SequenceCall
from rnnspec.backends.common.state import initial_states, layer_arrays
from rnnspec.results import SkipResult

from . import skip_autograd, workspace
from .cells import Cell, make_cell
from .sequence import ARRAY_OPS, Lengths, State, fresh, reverse_valid
from .skipping import choose_path, host_dtype, record_training, row_index, select_rows

__all__ = ["run"]


def _sigmoid(a: torch.Tensor) -> torch.Tensor:
    """``sigmoid(a)`` whose derivative stays accurate where it saturates.

    ``torch.sigmoid``'s backward is ``y * (1 - y)``, which for ``y`` near 1 loses
    all but a few bits of ``1 - y`` in float32. Through ``exp(logsigmoid(a))`` the
    derivative is ``y * sigmoid(-a)``, computed from ``a``. The gate's ``du~``
    needs it: the straight-through chain of ``update_prob`` grows its cotangent
    by up to ``1 + du~`` per skipped step, so an update's saturated ``du~`` can
    carry most of the gradient.
    """
    return torch.exp(F.logsigmoid(a))


Loop = tuple[torch.Tensor, list[State], torch.Tensor, torch.Tensor]


def _training(
    cell: Cell,
    params: Sequence[Mapping[str, torch.Tensor]],
    states: list[State],
    inp: torch.Tensor,
    valid: torch.Tensor | None,
    masks: Sequence[Mapping[str, torch.Tensor | None]] | None = None,
) -> Loop:
    """Every candidate at every step, in the graph: the outputs, final states, update_gate and update_prob.

    ``masks``: each layer's dropout masks (:func:`~rnnspec.backends.common.state.layer_arrays`): its recurrent
    mask, and the mask of its input from the layer below (aligned with ``inp``'s time axis)."""
    names = cell.state_names
    masks = masks or [{} for _ in params]
    cells = [cell.with_recurrent_mask(m.get("recurrent_mask")) for m in masks]
    drops = [m.get("dropout_mask") for m in masks]
    gate_input = "c" if "c" in names else "h"
    top = params[-1]
    projected = cell.project(params[0], inp)  # layer 0's input projection, every step at once
    outputs, gates, probs = [], [], []
    for t in range(inp.shape[1]):
        steps = skip_autograd.gate(states[-1]["update_prob"], states[-1]["cum_update_prob"], 1.0, 0.5)
        cands: list[State] = []
        for k, (p, s) in enumerate(zip(params, states, strict=True)):
            drop = drops[k]
            below = cands[-1]["h"] if k > 0 else inp  # layer 0 reads the projection instead
            gi = projected[:, t] if k == 0 else cells[k].project(p, below if drop is None else below * drop[:, t])
            cands.append(cells[k].step(p, {n: s[n] for n in names}, gi))
        du = _sigmoid(F.linear(cands[-1][gate_input], top["w_gate"], top["b_gate"]))
        keep = None if valid is None else valid[:, t, None]
        states, y, u, u_tilde = skip_autograd.advance(names, states, cands, du, steps, keep, 1.0, 0.0)
        outputs.append(y)
        gates.append(u)
        probs.append(u_tilde)
    return torch.stack(outputs, 1), states, torch.stack(gates, 1), torch.stack(probs, 1)


def _update(
    cell: Cell,
    params: Sequence[Mapping[str, torch.Tensor]],
    layers: list[State],
    gi: torch.Tensor,
    rows: torch.Tensor | None,
) -> torch.Tensor:
    """Run the stack on ``rows`` (None: all), whose layer-0 input projection is ``gi``; their ``du~``, ``(rows,)``."""
    top = params[-1]
    cands: list[State] = []
    for k, (p, s) in enumerate(zip(params, layers, strict=True)):
        cands.append(cell.step(p, select_rows(s, rows), gi if k == 0 else cell.project(p, cands[-1]["h"])))
    du = _sigmoid(F.linear(cands[-1]["c" if "c" in cell.state_names else "h"], top["w_gate"], top["b_gate"]))
    for s, c in zip(layers, cands, strict=True):
        for n, v in c.items():
            s[n] = v if rows is None else s[n].index_copy(0, rows, v)  # out of place: s[n] may be shared
    return du[:, 0]


#: From this batch size on, the skipping loop projects only the updating rows' inputs, at their steps; below
#: it, every step's at once before the loop. Measured on CPU (one thread, H = 128, T = 256 or 1000, rows
#: staggered): at batch 1 and 4 one matmul over all steps is 5-10% faster, even at a 25% update rate (a
#: small matmul per update re-reads ``w_ih``); at 16 the two are even; at 64 the per-update projection is
#: 7% faster at rate 1 and 15% at rates 0.5 and 0.25, since the hoisted one also projects the skipped
#: (row, step) pairs.
PROJECT_PER_UPDATE_FROM = 32


def _skipping(
    cell: Cell,
    params: Sequence[Mapping[str, torch.Tensor]],
    states: list[State],
    inp: torch.Tensor,
    lengths: Lengths,
) -> Loop:
    """Only the rows that update run the stack: the same values as :func:`_training`, without its graph."""
    batch, time = inp.shape[:2]
    device, f = inp.device, host_dtype(inp.dtype)
    zero = f.type(0)
    valid = np.arange(time)[None, :] < lengths.on_host()[:, None]
    # The gate's recursion on the host, by the training loop's operations in its precision: the same u~.
    prob = states[-1]["update_prob"].detach().cpu().numpy()[:, 0].astype(f)
    cum = states[-1]["cum_update_prob"].detach().cpu().numpy()[:, 0].astype(f)
    layers = [fresh({n: s[n] for n in cell.state_names}) for s in states]
    projected = None if batch >= PROJECT_PER_UPDATE_FROM else cell.project(params[0], inp)
    gate, tilde = np.zeros((batch, time), f), np.zeros((batch, time), f)
    history = [layers[-1]["h"]]  # the top layer's h at the start and after each step where some row updated
    latest = np.zeros(batch, np.int64)  # each row's entry of history
    which = np.zeros((batch, time), np.int64)
    for t in range(time):
        room = 1.0 - cum
        u_tilde = cum + np.where(room < prob, room, prob)
        live = valid[:, t]
        on = live & (u_tilde >= 0.5)
        gate[:, t] = on
        tilde[:, t] = np.where(live, u_tilde, zero)
        cum = np.where(on, zero, np.where(live, u_tilde, cum))
        if on.any():
            rows = row_index(on, device)
            step = inp[:, t] if projected is None else projected[:, t]
            gi = step if rows is None else step.index_select(0, rows)
            if projected is None:  # the updating rows' inputs only
                gi = cell.project(params[0], gi)
            du = _update(cell, params, layers, gi, rows)
            prob = prob.copy()
            prob[on] = du.cpu().numpy()
            history.append(layers[-1]["h"])
            latest[on] = len(history) - 1
        which[:, t] = latest
    entry = torch.from_numpy(which).to(device)
    out = torch.stack(history)[entry, torch.arange(batch, device=device)[:, None]]
    if not lengths.full:
        out = torch.where(torch.from_numpy(valid).to(device)[..., None], out, 0.0)
    layers[-1]["update_prob"] = torch.from_numpy(prob[:, None].copy()).to(device)
    layers[-1]["cum_update_prob"] = torch.from_numpy(cum[:, None].copy()).to(device)
    return out, layers, torch.from_numpy(gate).to(device), torch.from_numpy(tilde).to(device)


def run(call: SequenceCall) -> SkipResult:
    """skip_rnn, skip_lstm or skip_gru: the base cell's stack under the state-update gate."""
    op, x, params, options, reverse = call.op, call.x, call.params, call.options, call.reverse
    cell = make_cell(op.removeprefix("skip_"), options)
    batch, time = x.shape[:2]
    lengths = ARRAY_OPS.lengths(call.lengths, x)
    states = list(initial_states(op, x, params, options, call.initial_state, ARRAY_OPS))
    leaves = [x, *(v for p in params for v in p.values()), *(v for s in states for v in s.values())]
    path = choose_path(op, leaves)
    hidden = params[-1]["w_hh"].shape[1]
    if time == 0:
        empty = x.new_zeros((batch, 0))
        return SkipResult(x.new_zeros((batch, 0, hidden)), tuple(fresh(s) for s in states), empty, empty.clone())
    inp = reverse_valid(x, lengths) if reverse else x
    if any(a is not None for a in call.arrays.values()):  # dropout masks: only the training loop takes them
        record_training(op, False)
        masks = layer_arrays(call, lengths, ARRAY_OPS)
        out, states, gate, prob = _training(cell, params, states, inp, lengths.valid(), masks)
    elif path == "skipping":
        out, states, gate, prob = _skipping(cell, params, states, inp, lengths)
    elif skip_autograd.usable(leaves):
        layout = skip_autograd.SkipLayout(
            cell.name,
            str(options.get("activation", "tanh")),
            bool(options.get("reset_after", True)),
            len(params),
            cell.state_names,
        )
        projected = workspace.linear(inp, params[0]["w_ih"], params[0]["b_ih"])  # cell.project, into a kept buffer
        valid = lengths.valid()
        kernels = skip_autograd.native_kernels(layout, [projected, *leaves[1:]])
        record_training(op, kernels is not None)
        out, states, gate, prob = skip_autograd.run(layout, params, states, projected, valid, kernels)
    else:
        out, states, gate, prob = _training(cell, params, states, inp, lengths.valid())
    if reverse:
        out, gate, prob = (reverse_valid(a, lengths) for a in (out, gate, prob))
    return SkipResult(out, tuple(states), gate, prob)
