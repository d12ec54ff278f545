"""Which path an op of the JAX backend takes: the fast paths, forcing the plain one, and reporting.

The JAX backend has three fast paths, each chosen on explicit conditions
(never by catching a kernel's error):

- ``cudnn-lstm``: lstm through ``jax.experimental.rnn.lstm`` (cuDNN) when the
  arrays live on a CUDA device and compute in float32 (:mod:`.cudnn`);
- ``pallas-recurrences``: ``linear_recurrence``, ``indrnn_recurrence`` and the
  recurrences inside ``indrnn`` and ``qrnn`` through the Pallas kernels of
  :mod:`.pallas_recurrences` when the arrays live on a GPU;
- ``associative-scan``: ``linear_recurrence`` (and qrnn's pooling) as
  ``lax.associative_scan`` where :mod:`.recurrences` measured it faster than
  the sequential ``lax.scan`` (on GPUs; never on the CPU).

:func:`plain_path` (a context manager) or ``RNNSPEC_JAX_PLAIN=1`` force the
plain path (``lax.scan`` over time) for every op. Under ``jax.jit`` the path is
chosen when the function is traced: :meth:`.implementation.JaxImplementation.compile`
makes the forcing part of the compilation key, so a compiled op follows it;
a caller's own ``jax.jit`` keeps the path of its first trace.
:func:`last_path` tells which path the last call (or trace) of an op took.
They are the methods of this backend's :class:`rnnspec.backends.path_switch.PathSwitch`.
"""

from __future__ import annotations

import jax

from rnnspec.backends.path_switch import PathSwitch

__all__ = [
    "PLAIN_ENV",
    "last_path",
    "on_gpu",
    "plain_forced",
    "plain_path",
    "record_path",
]

#: The environment variable that, set to anything but "" or "0", forces the plain path.
PLAIN_ENV = "RNNSPEC_JAX_PLAIN"

_GPU_PLATFORMS = ("gpu", "cuda", "rocm")

#: Paths: ``"plain"``, ``"cudnn-lstm"``, ``"pallas-recurrences"``, ``"associative-scan"``.
_SWITCH: PathSwitch[str] = PathSwitch(PLAIN_ENV, "rnnspec_jax_plain")
#: A context manager forcing the plain path (``lax.scan`` over time) for every op within the block.
plain_path = _SWITCH.plain_path
#: Whether the plain path is forced, by :func:`plain_path` or ``RNNSPEC_JAX_PLAIN``.
plain_forced = _SWITCH.plain_forced
record_path = _SWITCH.record_path
#: The path the last call or trace of an op took: ``"plain"`` or a fast path's name, None before any.
last_path = _SWITCH.last_path


def on_gpu(value: jax.Array) -> bool:
    """Whether ``value`` lives on a GPU.

    A concrete array knows its devices; a tracer (inside ``jax.jit`` or
    ``jax.vmap``) does not, and is taken to live on the default backend, where
    jit places its computation.
    """
    if isinstance(value, jax.core.Tracer):
        return jax.default_backend() in _GPU_PLATFORMS
    return all(d.platform in _GPU_PLATFORMS for d in value.devices())
