"""The fast path of lstm on CUDA: ``jax.experimental.rnn.lstm``, cuDNN's LSTM.

What jax (0.4.30 to 0.10) offers: an LSTM only (no rnn, no gru), float32 only,
on CUDA (ROCm where jaxlib has MIOpen bindings), with one flat weight vector
in cuDNN's layout. Its equations are the spec's: gates i, f, g, o in
PyTorch's row order, two biases, ``c' = f c + i g``, ``h' = o tanh(c')``. The
spec's conventions map onto it:

- variable lengths: ``seq_lengths`` (int32) freezes each row's state after
  its length and zero-fills its outputs, the spec's semantics. A row of length
  0 is handed over with length 1 (cuDNN wants at least one step), then gets
  zero outputs and its initial state back;
- ``reverse=True``: each row's valid prefix is reversed before the call and
  the outputs reversed back (:func:`.sequence.reverse_valid`), as the reference does;
- stacked layers: consecutive layers of one hidden size run as one call, with
  the weights of all of them packed (:func:`pack_weights`);
- precision: the call asks for ``Precision.HIGHEST``, which turns TF32 off
  (jax's default lets cuDNN use TF32, outside the spec's float32 tolerance);
- half precision is computed in float32 by the backend's dtype policy, so it
  takes this path too; float64 takes the plain path.

The kernel is a parameter of :func:`run_cudnn_lstm`: on the CPU the unit tests
hand it ``jax.experimental.rnn.lstm_ref`` (the same layout, pure jax) to check
the packing, grouping, lengths and reverse handling without a GPU.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from .paths import on_gpu, plain_forced
from .sequence import Lengths, State, reverse_valid

__all__ = ["FAST_PATH", "available", "pack_weights", "run_cudnn_lstm", "why_plain"]

#: The fast path's name, as :meth:`.implementation.JaxImplementation.fast_paths` reports it.
FAST_PATH = "cudnn-lstm"

#: ``kernel(x, h0, c0, weights, seq_lengths, *, input_size, hidden_size, num_layers, dropout,
#: bidirectional, precision) -> (y, h_n, c_n)``: ``jax.experimental.rnn.lstm``'s signature.
Kernel = Callable[..., tuple[jax.Array, jax.Array, jax.Array]]

_NAMES = ("w_ih", "w_hh", "b_ih", "b_hh")


def available() -> str | None:
    """Why jax's cuDNN LSTM cannot run in this installation, or None when it can (on a CUDA device)."""
    try:
        from jax.experimental import rnn
    except ImportError as err:  # pragma: no cover - present in every supported jax
        return f"jax.experimental.rnn does not import: {err}"
    if getattr(rnn, "gpu_rnn", None) is None:
        return "this jaxlib has no cuDNN RNN bindings (a CPU build)"
    if jax.default_backend() not in ("gpu", "cuda", "rocm"):
        return f"no GPU: jax's default backend is {jax.default_backend()!r}"
    return None


def why_plain(op: str, x: jax.Array) -> str | None:
    """Why ``op`` on ``x`` (already in the compute dtype) takes the plain path, or None when cuDNN applies."""
    if plain_forced():
        return "the plain path is forced (plain_path() or RNNSPEC_JAX_PLAIN)"
    if op != "lstm":
        return f"jax.experimental.rnn has no cuDNN kernel for {op}"
    if x.dtype != jnp.float32:
        return f"jax.experimental.rnn's cuDNN LSTM takes float32 only, not {x.dtype}"
    if not on_gpu(x):
        return "the arrays do not live on a GPU"
    return available()


def groups(params: Sequence[Mapping[str, jax.Array]]) -> list[list[int]]:
    """Consecutive layers of one hidden size: each group is one call of the kernel."""
    out: list[list[int]] = []
    for k, p in enumerate(params):
        if out and params[out[-1][-1]]["w_hh"].shape[1] == p["w_hh"].shape[1]:
            out[-1].append(k)
        else:
            out.append([k])
    return out


def pack_weights(layers: Sequence[Mapping[str, jax.Array]]) -> jax.Array:
    """cuDNN's flat weight vector of a stack: every layer's ``w_ih, w_hh``, then every layer's ``b_ih, b_hh``.

    The spec's layout is PyTorch's, which is cuDNN's: no gate reordering.
    """
    matrices = [p[n].reshape(-1) for p in layers for n in _NAMES[:2]]
    biases = [p[n].reshape(-1) for p in layers for n in _NAMES[2:]]
    return jnp.concatenate(matrices + biases)


def _kernel() -> Kernel:
    from jax.experimental import rnn

    kernel: Kernel = rnn.lstm
    return kernel


def run_cudnn_lstm(
    x: jax.Array,
    params: Sequence[Mapping[str, jax.Array]],
    lengths: Lengths,
    initial: Sequence[State],
    reverse: bool,
    kernel: Kernel | None = None,
) -> tuple[jax.Array, tuple[State, ...]]:
    """lstm through cuDNN (see the module docstring); the outputs and final state.

    ``kernel`` defaults to ``jax.experimental.rnn.lstm``.
    """
    run = kernel if kernel is not None else _kernel()
    batch, time = x.shape[:2]
    if time == 0 or batch == 0:
        hidden_top = params[-1]["w_hh"].shape[1]
        return jnp.zeros((batch, time, hidden_top), x.dtype), tuple(dict(s) for s in initial)
    full = lengths.or_full(batch)
    empty = full == 0  # rows of length 0: run one step, then restore
    seq_lengths = jnp.maximum(full, 1).astype(jnp.int32)
    data = reverse_valid(x, lengths) if reverse else x
    finals: list[State] = [{} for _ in params]
    for group in groups(params):  # over layers, not time
        layers = [params[k] for k in group]
        hidden = layers[0]["w_hh"].shape[1]
        h0 = jnp.stack([initial[k]["h"] for k in group])
        c0 = jnp.stack([initial[k]["c"] for k in group])
        data, h_n, c_n = run(
            data,
            h0,
            c0,
            pack_weights(layers),
            seq_lengths,
            input_size=data.shape[2],
            hidden_size=hidden,
            num_layers=len(group),
            dropout=0.0,
            bidirectional=False,
            precision=lax.Precision.HIGHEST,
        )
        for j, k in enumerate(group):
            keep = ~empty[:, None]
            finals[k] = {"h": jnp.where(keep, h_n[j], initial[k]["h"]), "c": jnp.where(keep, c_n[j], initial[k]["c"])}
    valid = jnp.arange(time, dtype=jnp.int32)[None, :, None] < full[:, None, None]
    out = jnp.where(valid, data, jnp.zeros((), data.dtype))
    if reverse:
        out = reverse_valid(out, lengths)
    return out, tuple(finals)


def describe() -> str:
    """What the fast path does and when, for :meth:`.implementation.JaxImplementation.fast_paths`."""
    text = (
        "lstm through jax.experimental.rnn.lstm (cuDNN) on a CUDA device, float32 (and half precision, "
        "computed in float32), Precision.HIGHEST (no TF32); lengths as seq_lengths, reverse by flipping each "
        "row's valid prefix, consecutive layers of one size in one call"
    )
    reason = available()
    return text if reason is None else f"{text} [inactive here: {reason}]"
