"""The fast path of rnn, lstm and gru on a GPU: ``tf.raw_ops.CudnnRNNV3``, cuDNN's RNN.

cuDNN computes, with its linear layers ``W_k`` (input) and ``R_k`` (recurrent)
numbered by ``k`` and a bias on each (``b_Wk``, ``b_Rk``):

- ``rnn_tanh``, ``rnn_relu``: ``h' = act(W x + b_W + R h + b_R)``;
- ``lstm``, ``k`` = i, f, c, o: ``i = sigma(W_i x + b_Wi + R_i h + b_Ri)``,
  f and o likewise, ``c~ = tanh(W_c x + b_Wc + R_c h + b_Rc)``,
  ``c' = f c + i c~``, ``h' = o tanh(c')``;
- ``gru``, ``k`` = r, z, h: ``r``, ``z`` as the lstm's sigmoid gates,
  ``h~ = tanh(W_h x + b_Wh + r (R_h h + b_Rh))`` (the reset gate after the
  matmul: "linear before reset"), ``h' = (1 - z) h~ + z h``.

These are the spec's equations with the spec's parameter layout: PyTorch's
row blocks i, f, g, o and r, z, n are cuDNN's linear layers in order, and
``b_ih``, ``b_hh`` are ``b_W``, ``b_R``. So the spec's rnn (tanh, relu), lstm
and gru with ``reset_after=True`` map onto cuDNN; gru with ``reset_after=False``
(Cho's, the reset gate before the matmul) does not, and takes the plain path.

The parameter buffer of one layer (``linear_input``, unidirectional, no
projection) is its linear layers' matrices in order, each ``(H, in)``
row-major, then their biases in order (the layout Keras's cuDNN layers build
with ``tf.concat``); in the spec's names ``[w_ih, w_hh, b_ih, b_hh]`` flattened
(:func:`pack_params`). A concatenation, so gradients reach the params through
it, whereas ``CudnnRNNCanonicalToParams`` has no gradient. Each layer is one
call, so layers of any sizes stack, and the layout of a multi-layer buffer
never matters.

The spec's conventions around the kernel:

- layout: batch-major (``time_major=False``, the states ``(batch, 1, H)``),
  as Keras 3's cuDNN layers call it, so no transposes around the kernel;
- variable lengths: ``sequence_lengths`` (right padding). cuDNN
  freezes a row's state after its length and zero-fills its outputs there, the
  spec's semantics; the outputs are masked again all the same. A row of length
  0, which cuDNN rejects, is handed over with length 1, then gets zero outputs
  and its initial state back;
- ``reverse=True``: each row's valid prefix is reversed before the first layer
  and the outputs reversed back (:func:`.sequence.reverse_valid`, ``tf.reverse_sequence``),
  as the plain path and the reference do;
- gradients: ``CudnnRNNV3`` has a registered gradient (``CudnnRNNBackpropV3``),
  which needs ``is_training=True``, always set here;
- dtypes: float32 (half precision is computed in float32 by the backend's
  dtype policy, so it takes this path too). float64 takes the plain path:
  ``CudnnRNNV3`` declares it, but cuDNN's double-precision RNN is not
  verified here. With TensorFlow's default, TF32 is allowed for float32 on
  Ampere and later GPUs, for the plain path's matmuls and (by the same
  switch) for cuDNN; ``tf.config.experimental.enable_tensor_float_32_execution(False)``
  turns it off.

When it applies: :func:`why_plain` (an op and options cuDNN computes, float32,
a batch and a time axis known when traced and nonzero, not inside XLA, which
has no kernel for ``CudnnRNNV3``, a CUDA build of TensorFlow with a GPU
visible, the input on a GPU; not forced off by :func:`.paths.plain_path`). Inside a
``tf.function`` the choice is made at trace time; a trace made outside XLA and
reused inside a ``jit_compile`` function would carry the cuDNN op into XLA,
so a function traced for both should be traced under :func:`.paths.plain_path`.

The kernel is a parameter of :func:`run_cudnn`: on the CPU the unit tests hand
it a stand-in computing cuDNN's equations from the packed buffer, to check the
packing, lengths, reverse and stacking without a GPU.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import tensorflow as tf

from rnnspec.backends.common.state import LayerFn, run_stack

from .paths import in_xla, on_gpu, plain_forced
from .sequence import ARRAY_OPS, Dim, Lengths, State, dim

__all__ = [
    "FAST_PATH",
    "GATES",
    "Kernel",
    "available",
    "canonical",
    "cudnn_layer",
    "describe",
    "pack_params",
    "rnn_mode",
    "run_cudnn",
    "why_plain",
]

#: The fast path's name, as the backend reports it.
FAST_PATH = "cudnn-rnn"

#: cuDNN's ``rnn_mode`` -> its number of linear layers per input (gates).
GATES: dict[str, int] = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}

#: ``kernel(*, input, input_h, input_c, params, sequence_lengths, rnn_mode, input_mode, direction,
#: dropout, seed, seed2, num_proj, is_training, time_major) -> (output, output_h, output_c, reserve_space,
#: host_reserved)``: ``tf.raw_ops.CudnnRNNV3``'s signature.
Kernel = Callable[..., Sequence[tf.Tensor]]


def rnn_mode(op: str, options: Mapping[str, Any]) -> str | None:
    """cuDNN's ``rnn_mode`` computing ``op`` with ``options``, or None when cuDNN cannot compute it."""
    if op == "lstm":
        return "lstm"
    if op == "gru":
        return "gru" if options.get("reset_after") else None
    if op == "rnn" and options.get("activation") in ("tanh", "relu"):
        return f"rnn_{options['activation']}"
    return None


def available() -> str | None:
    """Why cuDNN's RNN cannot run in this installation, or None when it can."""
    if not tf.sysconfig.get_build_info().get("is_cuda_build", False):
        return "this tensorflow is not a CUDA build (ROCm's MIOpen also orders the lstm gates differently)"
    if not tf.config.list_logical_devices("GPU"):
        return "no GPU is visible to tensorflow"
    return None


def _nonempty(size: Dim) -> bool:
    """Whether ``size`` is known when traced and nonzero."""
    return isinstance(size, int) and size > 0


def why_plain(op: str, x: tf.Tensor, options: Mapping[str, Any]) -> str | None:
    """Why ``op`` on ``x`` (already in the compute dtype) takes the plain path, or None when cuDNN applies."""
    if plain_forced():
        return "the plain path is forced (plain_path() or RNNSPEC_TF_PLAIN)"
    if rnn_mode(op, options) is None:
        if op == "gru":
            return "cuDNN's gru resets after the matmul; reset_after=False (reset before it) is not expressible"
        return f"cuDNN has no kernel for {op} with {dict(options)}"
    if x.dtype != tf.float32:
        return f"cuDNN's RNN is used for float32 here (half precision computes in it), not {x.dtype.name}"
    if not (_nonempty(dim(x, 0)) and _nonempty(dim(x, 1))):
        return "the batch or the time axis is empty, or unknown when traced (cuDNN rejects an empty one)"
    if in_xla():
        return "inside XLA (tf.function(jit_compile=True)), which has no kernel for CudnnRNNV3"
    reason = available()
    if reason is not None:
        return reason
    if not on_gpu(x):
        return "the input does not live on a GPU"
    return None


def pack_params(p: Mapping[str, tf.Tensor]) -> tf.Tensor:
    """cuDNN's parameter buffer of one layer: ``w_ih, w_hh`` (row-major) then ``b_ih, b_hh``.

    The spec's row blocks are cuDNN's linear layers in order (i, f, c, o;
    r, z, h), each block ``(H, in)``: no reordering, no transposition.
    """
    return tf.concat([tf.reshape(p[n], [-1]) for n in ("w_ih", "w_hh", "b_ih", "b_hh")], axis=0)


def canonical(buffer: tf.Tensor, mode: str, input_size: int, hidden: int) -> tuple[list[tf.Tensor], list[tf.Tensor]]:
    """One layer's buffer read back as cuDNN's canonical weights and biases, by linear layer.

    The weights are ``W_0 .. W_{G-1}`` ``(H, input_size)`` then
    ``R_0 .. R_{G-1}`` ``(H, H)``; the biases ``b_W0 .. b_W{G-1}``, then
    ``b_R0 .. b_R{G-1}``, each ``(H,)``, with ``G`` = :data:`GATES` ``[mode]``
    (``CudnnRNNParamsToCanonical``'s order).
    """
    gates = GATES[mode]
    sizes = [hidden * input_size] * gates + [hidden * hidden] * gates + [hidden] * (2 * gates)
    pieces = tf.split(buffer, sizes)
    weights = [tf.reshape(w, [hidden, -1]) for w in pieces[: 2 * gates]]
    return weights, list(pieces[2 * gates :])


def _kernel() -> Kernel:
    kernel: Kernel = tf.raw_ops.CudnnRNNV3
    return kernel


def cudnn_layer(p: Mapping[str, tf.Tensor], mode: str, kernel: Kernel) -> LayerFn:
    """A layer of the stack as one call of ``kernel``, in the plain layers' interface (:data:`.sequence.LayerFn`)."""

    def run(inp: tf.Tensor, state: State, lengths: Lengths) -> tuple[tf.Tensor, State]:
        lstm = mode == "lstm"
        seq = tf.maximum(lengths.values, 1)  # cuDNN rejects a row of length 0: one step, undone below
        result = kernel(
            input=inp,
            input_h=state["h"][:, None],
            input_c=state["c"][:, None] if lstm else tf.zeros([], inp.dtype),
            params=pack_params(p),
            sequence_lengths=seq,
            rnn_mode=mode,
            input_mode="linear_input",
            direction="unidirectional",
            dropout=0.0,
            seed=0,
            seed2=0,
            num_proj=0,
            is_training=True,  # the registered gradient needs the reserve space
            time_major=False,
        )
        outputs = result[0]
        final = {"h": result[1][:, 0], **({"c": result[2][:, 0]} if lstm else {})}
        valid = lengths.valid()
        if valid is None:
            return outputs, final
        outputs = tf.where(valid[:, :, None], outputs, tf.zeros([], outputs.dtype))
        started = (lengths.values > 0)[:, None]
        return outputs, {k: tf.where(started, v, state[k]) for k, v in final.items()}

    return run


def run_cudnn(
    x: tf.Tensor,
    params: Sequence[Mapping[str, tf.Tensor]],
    lengths: Lengths,
    initial: Sequence[State],
    reverse: bool,
    mode: str,
    kernel: Kernel | None = None,
) -> tuple[tf.Tensor, tuple[State, ...]]:
    """The stack through cuDNN, one call per layer (see the module docstring); the outputs and final states.

    ``kernel`` defaults to ``tf.raw_ops.CudnnRNNV3``. The batch and time axes
    are static and nonzero (:func:`why_plain`): cuDNN rejects an empty one.
    """
    run = kernel if kernel is not None else _kernel()
    return run_stack([cudnn_layer(p, mode, run) for p in params], x, lengths, initial, reverse, ARRAY_OPS)


def describe() -> str:
    """What the fast path does and when, for the backend's ``fast_paths``."""
    text = (
        "rnn (tanh, relu), lstm and gru with reset_after=True through tf.raw_ops.CudnnRNNV3 (cuDNN) on a GPU, "
        "outside XLA, float32 (and half precision, computed in float32); one call per layer, batch-major, lengths "
        "as sequence_lengths, reverse by flipping each row's valid prefix"
    )
    reason = available()
    return text if reason is None else f"{text} [inactive here: {reason}]"
