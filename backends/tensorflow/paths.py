"""Which path an op of the TensorFlow backend takes: forcing the plain one, placement, XLA, reporting.

The TensorFlow backend has one fast path, ``cudnn-rnn`` (:mod:`.cudnn`): rnn,
lstm and gru (reset after the matmul) through ``tf.raw_ops.CudnnRNNV3`` on a
GPU, outside XLA. It is chosen on explicit conditions, never by catching a
kernel's error.

:func:`plain_path` (a context manager) or ``RNNSPEC_TF_PLAIN=1`` force the
plain path (the masked ``tf.while_loop`` over time) for every op, as
``rnnspec.backends.jax.paths.plain_path`` does for JAX. Inside a
``tf.function`` the path is chosen when the function is traced, and a trace
keeps it: force the plain path while tracing. :func:`last_path` tells which
path the last call (or trace) of an op took. They are the methods of this
backend's :class:`rnnspec.backends.path_switch.PathSwitch`.
"""

from __future__ import annotations

import tensorflow as tf

from rnnspec.backends.path_switch import PathSwitch

__all__ = [
    "PLAIN_ENV",
    "in_xla",
    "last_path",
    "on_gpu",
    "plain_forced",
    "plain_path",
    "record_path",
]

#: The environment variable that, set to anything but "" or "0", forces the plain path.
PLAIN_ENV = "RNNSPEC_TF_PLAIN"

#: Paths: ``"plain"`` and ``"cudnn-rnn"``; the skip ops record ``"training"``, ``"skipping"`` or
#: ``"skipping-recompute"`` (:func:`.skipping.choose_path`).
_SWITCH: PathSwitch[str] = PathSwitch(PLAIN_ENV, "rnnspec_tf_plain")
#: A context manager forcing the plain path (the masked time loop) for every op within the block.
plain_path = _SWITCH.plain_path
#: Whether the plain path is forced, by :func:`plain_path` or ``RNNSPEC_TF_PLAIN``.
plain_forced = _SWITCH.plain_forced
record_path = _SWITCH.record_path
#: The path the last call or trace of an op took (one of those above), None before any.
last_path = _SWITCH.last_path


def in_xla() -> bool:
    """Whether ops built now go to XLA: inside ``tf.function(jit_compile=True)``, or a function it calls.

    ``tf.function(jit_compile=True)`` traces inside an ``XLAControlFlowContext``
    of its graph; a function traced from within it has that graph as an outer
    graph. TensorFlow offers no public test, so this reads its control-flow
    utilities, and takes any failure to read them as "inside XLA" (the safe answer).
    """
    if tf.executing_eagerly():
        return False
    try:
        from tensorflow.python.ops import control_flow_util

        return bool(control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()))
    except (ImportError, AttributeError):  # pragma: no cover - present in every supported tensorflow
        return True


def on_gpu(value: tf.Tensor) -> bool:
    """Whether ``value`` lives on a GPU.

    An eager tensor knows its device. A tensor of a graph being traced has a
    device only when placed explicitly (``tf.device``); otherwise the placer
    chooses at run time, and puts an op that has GPU kernels only (as cuDNN's)
    on a GPU when one is visible, so it counts as on the GPU when one is.
    """
    device = value.device
    if not device:
        return not tf.executing_eagerly() and bool(tf.config.list_logical_devices("GPU"))
    return bool(tf.DeviceSpec.from_string(device).device_type == "GPU")
