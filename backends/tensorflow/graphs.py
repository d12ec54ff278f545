"""Eager calls over long sequences run as a graph: one cached ``tf.function`` per op.

Every op's time loop is a ``tf.while_loop`` (:func:`.sequence.scan`), which
TensorFlow runs as a Python loop when executing eagerly: a few dozen eager ops
per step, each dispatched from Python, so 10,000 steps of skip_gru took over a
minute forward and minutes more under a ``tf.GradientTape``. Inside a graph the
same loop is one ``While`` op run by TensorFlow's executor, and its gradient is
a graph too. So an eager call whose time axis has at least
:data:`GRAPH_MIN_STEPS` steps runs the op through a ``tf.function`` kept per op
(and per forced plain path): the values are those of the same operations, and a
tape around the call records the function, whose gradient TensorFlow derives.

Shorter sequences stay eager: tracing costs a fraction of a second, which a
short loop does not repay, and the eager loop is the one to step through in a
debugger. The functions trace with ``reduce_retracing=True``: after a second
shape, TensorFlow generalises the trace to unknown sizes, so calls of varying
batch or length reuse one trace. The ops read the model's sizes (H, the input
size, qrnn's window) off static shapes, so those must never be generalised: a
function is kept per op *and per model size* (:func:`_sizes`: every dimension
of every array but the batch and time axes), and only batch and time vary
within one. Options are Python values, part of the trace's signature. A call
that cuDNN computes (:mod:`.cudnn`: rnn, lstm and gru on a GPU) is a single op
already and stays eager.

A call with ``checkpoint_every=K`` that cuts time into segments is not run as
one graph: inside a graph, the backward of every ``tf.recompute_grad`` segment
waits only for the cotangent of its outputs, which the loss gives at once, so
TensorFlow's executor recomputed all segments at the start of the backward and
held their activations together (peak memory hardly fell). The segments run
eagerly instead (:mod:`.checkpointing`), each through a graph of its own
(:func:`as_graph` with ``segment=True``, one cache per op, traced per segment
size): the tape then takes their gradients one after the other, from the last.

``RNNSPEC_TF_EAGER=1`` keeps every call eager (to debug a step).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import tensorflow as tf

from rnnspec.ops import OPS

from . import cudnn
from .paths import plain_forced, record_path
from .sequence import host_array

__all__ = ["EAGER_ENV", "GRAPH_MIN_STEPS", "as_graph", "wants_graph"]

#: The fewest steps for which an eager call runs as a graph.
GRAPH_MIN_STEPS = 64
#: The environment variable that, set to anything but "" or "0", keeps every call eager.
EAGER_ENV = "RNNSPEC_TF_EAGER"

#: The ops whose path :func:`.paths.last_path` reports (those with a fast path).
_PATH_OPS = ("rnn", "lstm", "gru")

#: (op, plain path forced, :func:`_sizes`) -> the op's function.
_GraphKey = tuple[str, bool, tuple[tuple[str, tuple[tuple[int, ...], ...]], ...]]
_GRAPHS: dict[_GraphKey, Callable[..., Any]] = {}
#: The graphs of checkpointed segments: the op's own function, without the option ``checkpoint_every``.
_SEGMENT_GRAPHS: dict[_GraphKey, Callable[..., Any]] = {}
#: The batch and time axes of a sequence op's array arguments (params have neither: every axis is a model size).
_SEQUENCE_AXES = {"x": (0, 1), "lengths": (0,), "initial_state": (0,), "zoneout_mask": (0, 1)}
_GRAPHS_LOCK = threading.Lock()


def _time_steps(op: str, arguments: Mapping[str, Any]) -> int | None:
    """The static length of the time axis of ``op``'s first array (``x``, or a primitive's first input)."""
    first = arguments["x"] if "x" in arguments else arguments[next(iter(arguments))]
    shape = getattr(first, "shape", None)
    if shape is None or len(shape) < 2 or shape[1] is None:
        return None
    return int(shape[1])


def wants_graph(op: str, arguments: Mapping[str, Any]) -> bool:
    """Whether this call of ``op`` (arguments normalised, in the compute dtype) runs as a graph."""
    if not tf.executing_eagerly() or os.environ.get(EAGER_ENV, "") not in ("", "0"):
        return False
    steps = _time_steps(op, arguments)
    if steps is None or steps < GRAPH_MIN_STEPS:
        return False
    every = arguments.get("checkpoint_every")
    if every is not None and steps > int(every):
        return False  # cut into segments, each run as a graph
    # A call cuDNN computes is one op already.
    return cudnn.rnn_mode(op, arguments) is None or cudnn.why_plain(op, arguments["x"], arguments) is not None


def _free_axes(op: str, name: str) -> tuple[int, ...]:
    """The axes of argument ``name`` that may vary within one trace: batch and time."""
    spec = OPS[op]
    if spec.kind == "primitive":
        for p in spec.params:
            if p.name == name:
                return tuple(axis for axis, symbol in enumerate(p.shape) if symbol in ("B", "T"))
    return _SEQUENCE_AXES.get(name, ())


def _sizes(op: str, arguments: Mapping[str, Any]) -> tuple[tuple[str, tuple[tuple[int, ...], ...]], ...]:
    """The sizes a trace of ``op`` holds static: every array's shape without its batch and time axes.

    Two calls that differ here must not share a function: ``reduce_retracing``
    would generalise the differing dimension to None, and the op reads H or the
    input size with ``int(shape[k])``. An argument not known here keeps its
    whole shape (a new trace per shape, never a wrong one).
    """
    sizes = []
    for name in sorted(arguments):
        free = _free_axes(op, name)
        shapes = tuple(
            tuple(int(d) for axis, d in enumerate(leaf.shape) if axis not in free)
            for leaf in tf.nest.flatten(arguments[name])
            if getattr(leaf, "shape", None) is not None
        )
        if shapes:
            sizes.append((name, shapes))
    return tuple(sizes)


def _graph(op: str, fn: Callable[..., Any], arguments: Mapping[str, Any], segment: bool) -> Callable[..., Any]:
    key = (op, plain_forced(), _sizes(op, arguments))
    cache = _SEGMENT_GRAPHS if segment else _GRAPHS
    with _GRAPHS_LOCK:
        found = cache.get(key)
        if found is None:
            # Segments keep their sizes: a call has at most three (the first, without an initial
            # state; K steps; the last, shorter one), so a few traces per op.
            found = cache[key] = tf.function(fn, reduce_retracing=not segment)
        return found


def _lengths_argument(lengths: Any, time: int) -> Any:
    """``lengths`` as the graph takes it: None when every row is known to be full, else an int32 tensor.

    Host values (NumPy, a list) would be Python constants in the trace's
    signature and retrace for every new set of lengths; a tensor does not.
    """
    if lengths is None:
        return None
    host = host_array(lengths)
    if host is not None and bool(np.all(np.asarray(host).reshape(-1) == time)):
        return None
    return tf.cast(tf.convert_to_tensor(lengths), tf.int32) if host is not None else lengths


def as_graph(op: str, fn: Callable[..., Any], arguments: Mapping[str, Any], *, segment: bool = False) -> Any:
    """``fn(**arguments)`` through ``op``'s cached ``tf.function``.

    ``segment=True`` for one segment of a checkpointed call (``fn`` the op's
    function without ``checkpoint_every``), whatever its length: the call it
    belongs to is long enough (:func:`wants_graph` of the whole call).
    """
    args = dict(arguments)
    if "lengths" in args:
        steps = _time_steps(op, args)
        assert steps is not None  # wants_graph checked it; segments are cut on a known time axis
        args["lengths"] = _lengths_argument(args["lengths"], steps)
    result = _graph(op, fn, args, segment)(**args)
    if op in _PATH_OPS:
        record_path(op, "plain")  # a trace records its path once; every call of the graph takes it
    return result
