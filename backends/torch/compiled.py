"""The ops under ``torch.compile``: one compiled region per call signature, and no silent eager run.

dynamo keeps the code it compiles on the code object of each frame and allows
``recompile_limit`` (8) entries per code object, past which it runs the frame
eagerly without a word. The ops share their frames (:func:`.implementation.run_op`,
the checkpointing wrapper, and the bookkeeping of lengths and paths that graph
breaks turn into frames of their own), and they specialise on much of a call:
the sequence length (the loops over time unroll into the graph), the dtype,
the options, the layers, which arguments are given and the values of
``lengths`` (read on the host). A single ``torch.compile`` per op therefore ran
eagerly after a few calls.

:class:`CompiledOp` gives each *signature* of a call (:func:`signature`: all
of the above and every array's shape) a ``torch.compile`` region of its own,
with ``isolate_recompiles=True``: the entries a region adds, for every frame it
compiles, count against that region's :data:`RECOMPILE_LIMIT`, not against the
other signatures'. Shapes are static within a region (``dynamic=False``): a
region sees one set of shapes, so symbolic ones would only add tracing work.
A region recompiles only where something outside its signature changes (a
tensor's strides, a global flag). Each call runs with dynamo's
``fail_on_recompile_limit_hit``, so a hit limit raises
``torch._dynamo.exc.FailOnRecompileLimitHit`` instead of running the op
eagerly: the region's, or dynamo's ``accumulated_recompile_limit`` (256
entries of one code object over all regions; a process that compiles more
signatures, say one per batch of new lengths, raises it in
``torch._dynamo.config``). A caller who has set dynamo's ``suppress_errors``
asks for eager runs, and that flag excludes the other: then a hit limit runs
eagerly, as torch does.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Hashable, Mapping
from typing import Any

import numpy as np
import torch

from . import fused

__all__ = ["RECOMPILE_LIMIT", "CompiledOp", "signature"]

#: Compilations of one frame that one signature's region may make. A signature compiles each frame once; the
#: rest absorbs what the signature leaves out (a tensor's strides, the forced plain path toggled between calls).
RECOMPILE_LIMIT = 8


def _compile(function: Callable[..., Any], **options: Any) -> Callable[..., Any]:
    """``torch.compile``: torch 2.13's overloads of it omit ``recompile_limit`` and ``isolate_recompiles``."""
    compile_: Callable[..., Callable[..., Any]] = torch.compile
    return compile_(function, **options)


def _describe(value: Any) -> Hashable:
    """``value`` as dynamo specialises on it: a tensor by its metadata, anything else by its value."""
    if isinstance(value, torch.Tensor):
        return ("tensor", value.dtype, tuple(value.shape), value.device, value.requires_grad)
    if isinstance(value, np.ndarray):
        return ("ndarray", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, Mapping):
        return ("mapping", tuple((k, _describe(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_describe(v) for v in value))
    return (type(value).__name__, value)  # None, bool, int, float, str


def _describe_lengths(value: Any) -> Hashable:
    """``lengths`` by value: the ops read them on the host, and dynamo guards on what was read."""
    if isinstance(value, torch.Tensor):
        if value.device.type != "cpu":
            return _describe(value)  # its values are not read here: that would wait for the device
        value = value.detach().numpy()
    if value is None:
        return None
    return ("lengths", type(value).__name__, tuple(np.asarray(value).reshape(-1).tolist()))


def signature(arguments: Mapping[str, Any]) -> Hashable:
    """What a compiled op specialises on: every argument (tensors by dtype, shape, device and whether they
    require grad; ``lengths`` and the options by value), grad mode and whether the plain path is forced."""
    described = tuple(
        (name, _describe_lengths(value) if name == "lengths" else _describe(value)) for name, value in arguments.items()
    )
    return (described, torch.is_grad_enabled(), fused.plain_forced())


_FUNCTION_INSTANTIATED = r"<class 'torch\.autograd\.function\.Function'> should not be instantiated"
_NON_LEAF_GRAD = r"The \.grad attribute of a Tensor that is not a leaf Tensor"


class CompiledOp:
    """``run(op, arguments)`` under ``torch.compile`` with compiler ``backend``, one region per :func:`signature`.

    Called with the normalised arguments by keyword. :attr:`regions` maps each signature seen to its region.
    """

    def __init__(
        self, op: str, run: Callable[[str, Mapping[str, Any]], Any], backend: str | Callable[..., Any]
    ) -> None:
        self.op = op
        self.backend = backend
        self.regions: dict[Hashable, Callable[..., Any]] = {}

        def compiled_op(**arguments: Any) -> Any:
            return run(op, arguments)

        compiled_op.__name__ = compiled_op.__qualname__ = op
        self._function = compiled_op

    def region(self, arguments: Mapping[str, Any]) -> Callable[..., Any]:
        """The region of ``arguments``' signature, made on first use."""
        key = signature(arguments)
        if key not in self.regions:
            with warnings.catch_warnings():
                # torch 2.13's inductor imports torch.utils.mkldnn, whose ScriptModules warn at import that
                # torch.jit is deprecated: torch's own doing, not the caller's, and once per process.
                warnings.filterwarnings("ignore", r"`torch\.jit\.script_method` is deprecated", DeprecationWarning)
                self.regions[key] = _compile(
                    self._function,
                    backend=self.backend,
                    dynamic=False,
                    recompile_limit=RECOMPILE_LIMIT,
                    isolate_recompiles=True,
                )
        return self.regions[key]

    def __call__(self, **arguments: Any) -> Any:
        if torch.compiler.is_compiling():  # inside the caller's own torch.compile, which traces the op itself
            return self._function(**arguments)
        region = self.region(arguments)
        config = torch._dynamo.config
        with config.patch(fail_on_recompile_limit_hit=not config.suppress_errors), warnings.catch_warnings():
            # Warnings of dynamo's own doing while it traces the ops, not the caller's: it instantiates the
            # recurrences' autograd.Function classes, and reads .grad of the non-leaf tensors it hands from one
            # graph to the next at a graph break.
            warnings.filterwarnings("ignore", _FUNCTION_INSTANTIATED, DeprecationWarning)
            warnings.filterwarnings("ignore", _NON_LEAF_GRAD, UserWarning)
            return region(**arguments)
