"""The fast path of rnn, lstm and gru: torch's own fused RNN kernels.

``torch._VF.rnn_tanh``, ``rnn_relu``, ``lstm`` and ``gru`` (what ``torch.nn.RNN``
and friends call: cuDNN on CUDA, torch's CPU kernels, oneDNN among them, on the
CPU) compute exactly the spec's equations when

- gru has ``reset_after=True`` (cuDNN's GRU; the Cho variant has no fused kernel);
- the tensors live on the CPU or a CUDA device.

The spec's conventions map onto them:

- variable lengths: ``pack_padded_sequence(enforce_sorted=False)``, whose
  semantics (state frozen, outputs zero past a row's length) are the spec's.
  Rows of length 0 cannot be packed: they are left out of the call, and get
  zero outputs and their initial state back;
- ``reverse=True``: each row's valid prefix is reversed before the call and
  the outputs reversed back (:func:`.sequence.reverse_valid`), as the reference does;
- stacked layers: consecutive layers of one hidden size run as one call with
  ``num_layers``, the packed data flowing from one call to the next;
- half precision: :func:`.implementation.run_op` computes it in float32, so the
  kernels see float32.

Precision on CUDA: cuDNN follows torch's own flags, and torch lets cuDNN's RNNs
compute float32 in TF32 by default (``torch.backends.cudnn.rnn.fp32_precision``
is ``"tf32"``), which puts float32 results outside the spec's float32
tolerance (errors of 1e-3 over 40 steps on an H100). With
``torch.backends.cudnn.rnn.fp32_precision = "ieee"``, or on the plain path,
float32 on CUDA conforms. float64 is unaffected, and half precision is within
its own tolerance either way.

:func:`plain_path` (a context manager) or the environment variable
``RNNSPEC_TORCH_PLAIN=1`` force the plain path; :func:`last_path` tells which
path the last call of an op took (the methods of this backend's
:class:`rnnspec.backends.path_switch.PathSwitch`). The choice is made by
:func:`why_plain` on explicit conditions, never by catching a kernel's error.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from rnnspec.backends.common import native
from rnnspec.backends.path_switch import PathSwitch

from .sequence import Lengths, State, fresh, reverse_valid

__all__ = [
    "FAST_PATH",
    "PLAIN_ENV",
    "fast_paths_available",
    "last_path",
    "plain_forced",
    "plain_path",
    "record_path",
    "run_fused",
    "why_plain",
]

#: The environment variable that, set to anything but "" or "0", forces the plain path.
PLAIN_ENV = "RNNSPEC_TORCH_PLAIN"
#: The fast path's name, as :func:`fast_paths_available` reports it.
FAST_PATH = "fused-rnn"

#: "fused" (torch's RNN kernels), "native", "cpu-kernel" and "triton" (the recurrences' kernels: C, torch ops,
#: Triton), "plain" (a torch loop), "skipping" and "training" (the adaptive ops' loops without and with
#: autograd: :mod:`.skipping`), "native-training" (the training loop with its steps in native kernels),
#: "open-units" (phased_lstm's inference kernel over the open units: :mod:`.phased_lstm`).
Path = Literal[
    "fused", "plain", "native", "cpu-kernel", "triton", "skipping", "training", "native-training", "open-units"
]

_SWITCH: PathSwitch[Path] = PathSwitch(PLAIN_ENV, "rnnspec_torch_plain")
#: A context manager forcing the plain path for every op within the block (the per-step torch loop of
#: :mod:`.cells` for rnn, lstm and gru; see :func:`fast_paths_available` for the others).
plain_path = _SWITCH.plain_path
#: Whether the plain path is forced, by :func:`plain_path` or ``RNNSPEC_TORCH_PLAIN``.
plain_forced = _SWITCH.plain_forced
record_path = _SWITCH.record_path
#: The path the last call of an op took in this process (a :data:`Path`), None before any call.
last_path = _SWITCH.last_path

#: op (and rnn's activation) -> the fused kernel.
_KERNELS = {"tanh": "rnn_tanh", "relu": "rnn_relu", "lstm": "lstm", "gru": "gru"}


def why_plain(op: str, x: torch.Tensor, options: Mapping[str, Any]) -> str | None:
    """Why ``op`` with ``options`` on ``x`` takes the plain path, or None when the fused kernels apply."""
    if plain_forced():
        return f"the plain path is forced (plain_path() or {PLAIN_ENV})"
    if op == "gru" and not options["reset_after"]:
        return "gru with reset_after=False has no fused kernel"
    if x.device.type not in ("cpu", "cuda"):
        return f"no fused kernel is used on device type {x.device.type!r}"
    return None


def fast_paths_available() -> dict[str, str]:
    """The fast paths of this installation, by name, with what each does and when it applies."""
    backends: Any = torch.backends  # their is_available() are untyped in torch's own annotations
    kernels = "cuDNN on CUDA" if backends.cudnn.is_available() else "torch's CUDA kernels on CUDA"
    cpu = "oneDNN and torch's CPU kernels on CPU" if backends.mkldnn.is_available() else "torch's CPU kernels"
    text = (
        f"rnn/lstm/gru through torch's fused RNN kernels ({cpu}, {kernels}); gru needs reset_after=True; "
        f"lengths packed, reverse by flipping each row's valid prefix, stacked layers in one call; "
        f"off under rnnspec.backends.torch.fused.plain_path() or {PLAIN_ENV}=1; on CUDA, float32 follows torch's "
        f"cuDNN precision flags (TF32 by default: set torch.backends.cudnn.rnn.fp32_precision='ieee' for the spec's)"
    )
    off = f" [off now: {PLAIN_ENV} is set]" if plain_forced() else ""
    recurrences = "linear_recurrence (and qrnn's pooling) and indrnn_recurrence (and indrnn's recurrence)"
    paths = {
        FAST_PATH: text + off,
        "native": (
            f"{recurrences}, qrnn's gates and pooling, and the Skip RNN and ACT training steps on float32/float64 CPU "
            f"tensors: C kernels ({native.KERNELS}) compiled on first use by the system C compiler and cached, "
            f"one call a sequence or a step, the matmuls left to torch; {native.ENV}=0 turns them off, "
            f"{native.ENV}=require makes a failed build an error; else without a compiler the torch-op paths run" + off
        ),
        "cpu-kernel": (
            f"{recurrences} on CPU tensors where the native kernels are unavailable: hand-written forward and "
            f"backward as loops of in-place fused torch ops (one op a step), an autograd Function with a vmap rule; "
            f"off under plain_path() or {PLAIN_ENV}=1" + off
        ),
    }
    from .recurrences import TRITON_ENV  # here: recurrences imports this module

    if importlib.util.find_spec("triton") is not None:  # installed; not imported here, for its cost
        paths["triton"] = (
            f"{recurrences} on CUDA tensors: Triton kernels, forward and backward, one program per block of "
            f"(batch, unit) columns looping over time, float32 arithmetic for half inputs; off under plain_path(), "
            f"{PLAIN_ENV}=1 or {TRITON_ENV}=0; {TRITON_ENV}=interpret with TRITON_INTERPRET=1 runs them on CPU "
            f"tensors under Triton's interpreter" + off
        )
    return paths


def _kernel(op: str, options: Mapping[str, Any]) -> Any:
    return getattr(torch._VF, _KERNELS[options["activation"] if op == "rnn" else op])


def _groups(params: Sequence[Mapping[str, torch.Tensor]]) -> list[list[int]]:
    """Consecutive layers of one hidden size: each group is one call of the kernel."""
    groups: list[list[int]] = []
    for k, p in enumerate(params):
        if groups and params[groups[-1][-1]]["w_hh"].shape[1] == p["w_hh"].shape[1]:
            groups[-1].append(k)
        else:
            groups.append([k])
    return groups


def _weights(
    params: Sequence[Mapping[str, torch.Tensor]], layers: list[int], as_parameters: bool
) -> list[torch.Tensor]:
    """The kernel's flat weight list, ``w_ih, w_hh, b_ih, b_hh`` per layer.

    On CUDA they become views of one contiguous buffer laid out as
    ``nn.RNNBase.flatten_parameters()`` lays it out for cuDNN (every layer's
    matrices, then every layer's biases): separate tensors would make cuDNN warn
    and compact them at every call. The buffer is a ``torch.cat``, so gradients
    reach the caller's tensors, which are never modified.
    """
    names = ("w_ih", "w_hh", "b_ih", "b_hh")
    if params[layers[0]]["w_ih"].device.type != "cuda":
        listed = [params[k][name] for k in layers for name in names]
        if not as_parameters:
            return listed
        # New views marked as requiring grad (the caller's tensors are untouched; autograd is off): torch's CPU
        # rnn/gru kernels then project every step's input in one matmul, as torch.nn's layers get (their weights
        # are parameters), where plain tensors get a batched matmul (gru B=16 T=256 H=256 forward: 59 -> 56 ms).
        return [w.detach().requires_grad_(True) for w in listed]
    order = [(k, n) for k in layers for n in names[:2]] + [(k, n) for k in layers for n in names[2:]]
    flat = torch.cat([params[k][n].reshape(-1) for k, n in order])
    views: dict[tuple[int, str], torch.Tensor] = {}
    offset = 0
    for k, n in order:
        size = params[k][n].numel()
        views[k, n] = flat[offset : offset + size].view(params[k][n].shape)
        offset += size
    return [views[k, n] for k in layers for n in names]


def _hx(op: str, entries: list[torch.Tensor]) -> Any:
    """The kernel's initial state from the stacked ``(num_layers, batch, H)`` entries: ``(h, c)`` for lstm, else h."""
    return tuple(entries) if op == "lstm" else entries[0]


def run_fused(
    op: str,
    x: torch.Tensor,
    params: Sequence[Mapping[str, torch.Tensor]],
    lengths: Lengths,
    initial: Sequence[State],
    reverse: bool,
    options: Mapping[str, Any],
) -> tuple[torch.Tensor, tuple[State, ...]]:
    """rnn, lstm or gru through the fused kernels (see the module docstring); the outputs and final state."""
    names = ("h", "c") if op == "lstm" else ("h",)
    batch, time = x.shape[:2]
    hidden_top = params[-1]["w_hh"].shape[1]
    kernel = _kernel(op, options)
    leaves = [x, *(v for p in params for v in p.values()), *(v for s in initial for v in s.values())]
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in leaves)
    # lstm runs oneDNN's kernel on the CPU either way; see _weights.
    as_parameters = not torch.is_grad_enabled() and op != "lstm" and not torch.compiler.is_compiling()
    host = None if lengths.full else lengths.on_host()
    if host is not None and np.all(host == time):
        host = None  # full rows after all (lengths given on the device)
    if time == 0 or batch == 0 or (host is not None and not np.any(host > 0)):
        return x.new_zeros((batch, time, hidden_top)), tuple(fresh(s) for s in initial)

    inp = reverse_valid(x, lengths) if reverse else x
    rows: torch.Tensor | None = None  # the rows that run, when some have length 0
    if host is not None and not np.all(host > 0):
        rows = torch.from_numpy(np.flatnonzero(host > 0)).to(x.device)
        inp = inp.index_select(0, rows)
        host = host[host > 0]

    def start(k: int, name: str) -> torch.Tensor:
        s = initial[k][name]
        return s if rows is None else s.index_select(0, rows)

    finals: list[State] = [{} for _ in params]
    if host is None:  # every row at full length: the padded call
        data = inp
        for group in _groups(params):
            hx = _hx(op, [torch.stack([start(k, n) for k in group]) for n in names])
            # (input, hx, weights, has_biases, num_layers, dropout, train, bidirectional, batch_first)
            weights = _weights(params, group, as_parameters)
            data, *last = kernel(data, hx, weights, True, len(group), 0.0, needs_grad, False, True)
            for n, value in zip(names, last, strict=True):
                for j, k in enumerate(group):
                    finals[k][n] = value[j]
        out = data
    else:
        packed = pack_padded_sequence(inp, torch.from_numpy(host), batch_first=True, enforce_sorted=False)
        data, batch_sizes = packed.data, packed.batch_sizes
        order, unorder = packed.sorted_indices, packed.unsorted_indices
        assert order is not None, "enforce_sorted=False always sorts"
        assert unorder is not None
        for group in _groups(params):
            hx = _hx(op, [torch.stack([start(k, n) for k in group]).index_select(1, order) for n in names])
            # (data, batch_sizes, hx, weights, has_biases, num_layers, dropout, train, bidirectional)
            weights = _weights(params, group, as_parameters)
            data, *last = kernel(data, batch_sizes, hx, weights, True, len(group), 0.0, needs_grad, False)
            for n, value in zip(names, last, strict=True):
                value = value.index_select(1, unorder)
                for j, k in enumerate(group):
                    finals[k][n] = value[j]
        out, _ = pad_packed_sequence(
            PackedSequence(data, batch_sizes, order, unorder), batch_first=True, total_length=time
        )
    if rows is not None:
        out = x.new_zeros((batch, time, hidden_top)).index_copy(0, rows, out)
        finals = [{n: initial[k][n].index_copy(0, rows, v) for n, v in f.items()} for k, f in enumerate(finals)]
    if reverse:
        out = reverse_valid(out, lengths)
    return out, tuple(finals)
