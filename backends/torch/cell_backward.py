"""One step of a base cell without a graph, and its hand-written reverse mode, for the adaptive ops' Functions.

:mod:`.skip_autograd` and :mod:`.act_autograd` run their loops without autograd and
differentiate them by hand. They share the cells (rnn, lstm, gru in both variants,
indrnn) from here:

- :func:`cell_step`: the candidate state from the state and the step's input
  projection ``gi``, by :mod:`.cells`' operations (the same values), with the gate
  activations the backward needs (``aux``);
- :func:`factors`: from those saved values of every step at once (leading axis the
  steps), the per-step factors that turn the cotangent of a candidate into that of
  its pre-activations by one product: for gru (reset after the matmul)
  ``d a_n = dS (1-z)(1-n^2)``, ``d a_z = dS (h-n) z(1-z)``,
  ``d a_r = d a_n gh_n r(1-r)``, ``d gh_n = d a_n r``, ``d h_{t-1} = dS z + d gh @ W_hh``;
  for lstm ``dc = dc' + dh' o (1 - tanh^2 c')``, ``d a = [dc g i(1-i), dc c f(1-f),
  dc i (1-g^2), dh' tanh(c') o(1-o)]``, ``dc_{t-1} = dc f``; for rnn and indrnn
  ``d a = dS act'(S)``;
- :func:`layer_backward`: one step's sequential part (one matmul with ``W_hh``);
- :func:`weight_grads`: ``dW_hh = sum_t d_gh_t^T h_{t-1}`` and ``db_hh`` as one matmul.

On CPU float32/float64 tensors the Functions run the same steps in native kernels instead
(``backends/common/kernels/cells.c``, :func:`native_cells`): one call a layer and step for the
elementwise work after the step's matmul(s) forward, and one before them backward, with the
matmuls in torch into preallocated buffers; :func:`native_weight_grads` forms the weight
gradients from the buffers those kernels fill. Their ``sigmoid``/``tanh`` differ from torch's
by a few ulps, so their values equal this module's within rounding, not bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from rnnspec.backends.common import native

__all__ = [
    "CellLike",
    "Factors",
    "NativeCells",
    "aux_names",
    "cell_step",
    "const",
    "factors",
    "layer_backward",
    "native_cells",
    "native_weight_grads",
    "weight_grads",
]

State = dict[str, torch.Tensor]

_ACTIVATION_FN = {"tanh": torch.tanh, "relu": torch.relu}
_CONSTANTS: dict[tuple[float, torch.dtype, torch.device], torch.Tensor] = {}


def const(value: float, like: torch.Tensor) -> torch.Tensor:
    """``value`` as a 0-d tensor of ``like``'s dtype and device, made once (never written to).

    Measured on CPU at tiny sizes: an op with a Python number (``1.0 - z``, ``torch.where(c, a, 0.0)``)
    costs about twice the same op with a 0-d tensor, which wraps the number anew at every call.
    """
    key = (float(value), like.dtype, like.device)
    found = _CONSTANTS.get(key)
    if found is None:
        found = _CONSTANTS[key] = torch.tensor(float(value), dtype=like.dtype, device=like.device)
    return found


class CellLike(Protocol):
    """The cell and its options."""

    @property
    def cell(self) -> str: ...  # "rnn", "lstm", "gru" or "indrnn"

    @property
    def activation(self) -> str: ...  # rnn and indrnn

    @property
    def reset_after(self) -> bool: ...  # gru


def cell_step(
    layout: CellLike, w_hh: torch.Tensor, b_hh: torch.Tensor, s: State, gi: torch.Tensor
) -> tuple[State, dict[str, torch.Tensor]]:
    """The candidate state from state ``s`` and the input projection ``gi``, as :mod:`.cells` computes it.

    Also the step's gate activations the backward needs (kept, so that it need not recompute them).
    """
    h = s["h"]
    if layout.cell == "indrnn":  # w_hh is u, b_hh unused
        return {"h": _ACTIVATION_FN[layout.activation](gi + w_hh * h)}, {}
    if layout.cell == "rnn":
        return {"h": _ACTIVATION_FN[layout.activation](gi + F.linear(h, w_hh, b_hh))}, {}
    if layout.cell == "lstm":
        a = gi + F.linear(h, w_hh, b_hh)
        ai, af, ag, ao = a.chunk(4, dim=1)
        i, f, g, o = torch.sigmoid(ai), torch.sigmoid(af), torch.tanh(ag), torch.sigmoid(ao)
        c = f * s["c"] + i * g
        tc = torch.tanh(c)
        return {"h": o * tc, "c": c}, {"i": i, "f": f, "g": g, "o": o, "tc": tc}
    size = h.shape[1]
    gi_r, gi_z, gi_n = gi[:, :size], gi[:, size : 2 * size], gi[:, 2 * size :]
    if layout.reset_after:
        gh = F.linear(h, w_hh, b_hh)
        r = torch.sigmoid(gi_r + gh[:, :size])
        z = torch.sigmoid(gi_z + gh[:, size : 2 * size])
        gh_n = gh[:, 2 * size :]
        n = torch.tanh(gi_n + r * gh_n)
        return {"h": (const(1.0, z) - z) * n + z * h}, {"r": r, "z": z, "n": n, "gh_n": gh_n}
    gh = F.linear(h, w_hh[: 2 * size], b_hh[: 2 * size])
    r = torch.sigmoid(gi_r + gh[:, :size])
    z = torch.sigmoid(gi_z + gh[:, size:])
    rh = r * h
    n = torch.tanh(gi_n + F.linear(rh, w_hh[2 * size :], b_hh[2 * size :]))
    return {"h": (const(1.0, z) - z) * n + z * h}, {"r": r, "z": z, "n": n, "rh": rh}


#: The gate activations :func:`cell_step` keeps, by cell.
_AUX = {
    "rnn": (),
    "indrnn": (),
    "lstm": ("i", "f", "g", "o", "tc"),
    "gru": ("r", "z", "n", "gh_n"),
    "gru_before": ("r", "z", "n", "rh"),
}


def aux_names(layout: CellLike) -> tuple[str, ...]:
    return _AUX["gru_before" if layout.cell == "gru" and not layout.reset_after else layout.cell]


# -- the per-step factors of each cell's backward, for every step at once --------------------------


@dataclass
class Factors:
    """A layer's derivative factors over all steps (leading axis T), and how its step's backward uses them."""

    cell: str
    z: torch.Tensor | None = None  # gru: d h_{t-1} gets d h * z directly
    gh: torch.Tensor | None = None  # (T, B, G, H): d_gh = d S[:, None] * gh (gru reset_after, rnn, lstm's c part)
    gi: torch.Tensor | None = None  # (T, B, G, H): d_gi = d S[:, None] * gi (gru)
    extra: dict[str, torch.Tensor] | None = None
    #: Each factor above by name, split into its steps once: a list lookup per step, not a tensor index.
    at: dict[str, tuple[torch.Tensor, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        named = {"z": self.z, "gh": self.gh, "gi": self.gi, **(self.extra or {})}
        self.at = {k: v.unbind(0) for k, v in named.items() if v is not None}


def factors(layout: CellLike, prev: State, cand: State, aux: dict[str, torch.Tensor]) -> Factors:
    """The factors of every step of one layer from its saved values, each ``(T, B, H)``."""
    h = prev["h"]
    one = const(1.0, h)
    if layout.cell in ("rnn", "indrnn"):
        out = cand["h"]
        slope = torch.addcmul(one, out, out, value=-1.0) if layout.activation == "tanh" else (out > 0).to(out.dtype)
        return Factors(layout.cell, gh=slope[:, :, None])
    if layout.cell == "lstm":
        i, f, g, o, tc = (aux[k] for k in _AUX["lstm"])
        # dc = dc' + dh' o (1 - tc^2); da = [dc g i(1-i), dc c f(1-f), dc i (1-g^2), dh' tc o(1-o)].
        to_c = o * torch.addcmul(one, tc, tc, value=-1.0)
        by_c = _blocks(i, 3)  # written in place of a stack: one pass less over (T, B, 3, H)
        a_i, a_f, a_g = by_c.unbind(2)
        torch.mul(g * i, one - i, out=a_i)
        torch.mul(prev["c"] * f, one - f, out=a_f)
        torch.mul(i, torch.addcmul(one, g, g, value=-1.0), out=a_g)
        by_h = tc * o * (one - o)
        return Factors("lstm", gh=by_c, extra={"to_c": to_c, "by_h": by_h, "f": f})
    r, z, n = aux["r"], aux["z"], aux["n"]
    not_z = one - z
    if layout.reset_after:
        # d a_n = dS (1-z)(1-n^2); d a_z = dS (h-n) z(1-z); d a_r = d a_n gh_n r(1-r); d gh_n = d a_n r.
        gi = _blocks(z, 3)
        a_r, a_z, a_n = gi.unbind(2)
        torch.mul(not_z, torch.addcmul(one, n, n, value=-1.0), out=a_n)
        torch.mul((h - n).mul_(z), not_z, out=a_z)
        torch.mul((a_n * aux["gh_n"]).mul_(r), one - r, out=a_r)
        gh = gi.clone()
        gh[:, :, 2].mul_(r)
        return Factors("gru", z=z, gh=gh, gi=gi)
    a_n = not_z * torch.addcmul(one, n, n, value=-1.0)
    a_z = (h - n) * z * not_z
    # d(r h) = d a_n @ W_hn; d a_r = d(r h) h r(1-r); d h gets d(r h) r.
    return Factors("gru_before", z=z, extra={"a_n": a_n, "a_z": a_z, "h_r": h * r * (one - r), "r": r, "rh": aux["rh"]})


def _blocks(like: torch.Tensor, count: int) -> torch.Tensor:
    """An empty ``(T, B, count, H)`` tensor for ``count`` factors shaped as ``like`` ``(T, B, H)``."""
    steps, batch, size = like.shape
    return like.new_empty((steps, batch, count, size))


def layer_backward(
    layout: CellLike, fac: Factors, t: int, w_hh: torch.Tensor, d: State
) -> tuple[State, torch.Tensor, torch.Tensor | None]:
    """One step of one layer: (d of the previous state, d of the pre-activations ``gi`` (B, G H), d of ``gh``).

    ``d`` holds the cotangents of the step's candidate. The third value is the cotangent of
    ``h @ W_hh^T + b_hh`` when it differs from that of ``gi`` (gru), for the weight gradient.
    """
    dh = d["h"]
    at = fac.at
    if fac.cell == "rnn":
        da = dh * at["gh"][t][:, 0]
        return {"h": da @ w_hh}, da, None
    if fac.cell == "indrnn":  # w_hh is u
        da = dh * at["gh"][t][:, 0]
        return {"h": da * w_hh}, da, None
    if fac.cell == "lstm":
        dc = torch.addcmul(d["c"], dh, at["to_c"][t])
        da = torch.cat([dc[:, None] * at["gh"][t], (dh * at["by_h"][t])[:, None]], dim=1).flatten(1)
        return {"h": da @ w_hh, "c": dc * at["f"][t]}, da, None
    if fac.cell == "gru":
        d_gh = (dh[:, None] * at["gh"][t]).flatten(1)
        d_gi = (dh[:, None] * at["gi"][t]).flatten(1)
        return {"h": torch.addmm(dh * at["z"][t], d_gh, w_hh)}, d_gi, d_gh
    size = dh.shape[1]
    da_n = dh * at["a_n"][t]
    d_rh = da_n @ w_hh[2 * size :]
    da_rz = torch.cat([d_rh * at["h_r"][t], dh * at["a_z"][t]], dim=1)
    d_prev = torch.addmm(torch.addcmul(dh * at["z"][t], d_rh, at["r"][t]), da_rz, w_hh[: 2 * size])
    return {"h": d_prev}, torch.cat([da_rz, da_n], dim=1), None


def weight_grads(
    layout: CellLike, fac: Factors, prev_h: torch.Tensor, d_gi: torch.Tensor, d_gh: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``dW_hh``, ``db_hh`` of a layer over all steps: ``d_gi``/``d_gh`` ``(T, B, G H)``, ``prev_h`` ``(T, B, H)``."""
    flat_h = prev_h.reshape(-1, prev_h.shape[-1])
    if fac.cell == "indrnn":  # (du, nothing): h' = act(gi + u h)
        return (d_gi * prev_h).sum((0, 1)), d_gi.new_zeros(())
    if fac.cell == "gru_before":
        assert fac.extra is not None
        size = prev_h.shape[-1]
        flat = d_gi.reshape(-1, d_gi.shape[-1])
        rz, n = flat[:, : 2 * size], flat[:, 2 * size :]
        rh = fac.extra["rh"].reshape(-1, size)
        return torch.cat([rz.t() @ flat_h, n.t() @ rh]), flat.sum(0)
    flat = (d_gi if d_gh is None else d_gh).reshape(-1, d_gi.shape[-1])
    return flat.t() @ flat_h, flat.sum(0)


# -- the native kernels (backends/common/kernels/cells.c) ------------------------------------------

#: The kernel library's name (``kernels/cells.c``).
LIBRARY = "cells"

#: Each exported kernel's arguments: ``i`` int64, ``p`` an address, ``d`` a double (cells.c's prototypes,
#: which tests/test_torch_native_cells.py checks these against).
SIGNATURES = {
    "gru_before_gates": "iipippp",
    "gru_before_backward": "iippppp",
    "skip_forward": "iiiiii" + "pip" + "ppppppp" + "pp" + "pi" + "pp" + "pppppp" + "pippi",
    "skip_backward": "iiiiiii" + "ppppp" + "pi" + "ppp" + "ppp" + "pii" + "pippi" + "ppppp" + "pppp",
    "act_forward": "iiiiiid" + "pipp" + "pppp" + "ppppp" + "pp" + "pppp" + "pppppp" + "pi" + "pp" + "pi" + "ppi" + "p",
    "act_backward": "iiiiii" + "ppppp" + "pppp" + "pp" + "pi" + "pipi" + "pppppp" + "pp" + "pppp" + "p" + "ipp",
}

#: cells.c's cell codes, and per cell the gate blocks of the pre-activations and the saved activation blocks.
_NATIVE_KINDS = {"rnn": (0, 1, 0), "lstm": (1, 4, 5), "gru": (2, 3, 4), "gru_before": (3, 3, 4), "indrnn": (4, 1, 0)}
_NATIVE_DTYPES = {torch.float32: "_f32", torch.float64: "_f64"}
_PLAIN = (torch.Tensor, torch.nn.Parameter)


@dataclass(frozen=True)
class NativeCells:
    """A cell's native kernels for one dtype: its codes, block counts and the library's functions.

    ``kind`` is the cell as :data:`_AUX` names it (gru's variants apart); ``gates`` the blocks of
    ``H`` columns of its pre-activations, ``aux`` those of the activations a step saves.
    """

    kind: str
    code: int
    relu: int
    gates: int
    aux: int
    dtype: torch.dtype
    #: The kernels by their names in :data:`SIGNATURES` (ctypes functions, for this dtype).
    fn: dict[str, Any]


_NATIVE_CACHE: dict[tuple[int, str, bool, torch.dtype], NativeCells] = {}


def native_cells(layout: CellLike, tensors: Sequence[torch.Tensor]) -> NativeCells | None:
    """The native kernels for ``layout``'s cell on ``tensors``, or None where they cannot run.

    They run on plain float32 or float64 CPU tensors, all of one dtype, when the library builds
    (``RNNSPEC_NATIVE=0`` turns it off; see :mod:`rnnspec.backends.common.native`). The callers
    decide eager mode first (:func:`.skip_autograd.usable`).
    """
    if not tensors:
        return None
    dtype = tensors[0].dtype
    if dtype not in _NATIVE_DTYPES:
        return None
    if any(type(t) not in _PLAIN or t.device.type != "cpu" or t.dtype != dtype for t in tensors):
        return None
    library = native.library(LIBRARY)
    if library is None:
        return None
    kind = "gru_before" if layout.cell == "gru" and not layout.reset_after else layout.cell
    relu = layout.activation == "relu" and kind in ("rnn", "indrnn")
    key = (id(library), kind, relu, dtype)
    found = _NATIVE_CACHE.get(key)
    if found is None:
        suffix = _NATIVE_DTYPES[dtype]
        functions = {name: library.function(name + suffix, sig) for name, sig in SIGNATURES.items()}
        code, gates, aux = _NATIVE_KINDS[kind]
        found = _NATIVE_CACHE[key] = NativeCells(kind, code, int(relu), gates, aux, dtype, functions)
    return found


def native_weight_grads(
    cells: NativeCells, prev_h: torch.Tensor, d_gi: torch.Tensor, d_gh: torch.Tensor | None, aux: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``dW_hh``, ``db_hh`` (indrnn: ``du`` and a zero) from the native buffers of all steps, as :func:`weight_grads`.

    ``prev_h`` ``(S, B, H)`` the states before each step, ``d_gi`` ``(S, B, G H)`` the
    pre-activations' cotangents, ``d_gh`` gru's (reset after) recurrent ones, ``aux`` the saved
    activations ``(S, B, A H)`` (gru before reads ``r h`` from them).
    """
    size = prev_h.shape[-1]
    flat_h = prev_h.reshape(-1, size)
    if cells.kind == "indrnn":
        return (d_gi * prev_h).sum((0, 1)), d_gi.new_zeros(())
    flat = (d_gi if d_gh is None else d_gh).reshape(-1, d_gi.shape[-1])
    if cells.kind == "gru_before":
        assert aux is not None
        rh = aux[..., 3 * size :].reshape(-1, size)
        return torch.cat([flat[:, : 2 * size].t() @ flat_h, flat[:, 2 * size :].t() @ rh]), flat.sum(0)
    return flat.t() @ flat_h, flat.sum(0)
