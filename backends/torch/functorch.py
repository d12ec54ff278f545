"""The torch backend under ``torch.func`` transforms and ``torch.compile``.

Under a ``torch.func`` transform (an argument is a functorch-wrapped tensor)
every op runs on the plain path (:func:`.fused.plain_path`): torch's fused RNN
kernels take no wrapped tensors with packed lengths and have no batching rule,
and the inference loop of the Skip RNN ops reads the gate on the host. The
per-step torch loop is what the transforms handle. :func:`transform_plan` says
what a call does:

- ``torch.func.grad``, ``vjp``, ``jacrev``: every op, as autograd;
- ``torch.func.vmap``: ``x``, params, the initial state (and a primitive's
  arrays) may be batched;
- ``act`` is refused: its halting decides on the host, from each row's values,
  how many inner steps run, which vmap cannot batch;
- batched ``lengths`` are refused: every op reads them on the host.

A refusal is an :class:`UnsupportedTransformError` naming the op, the
argument, the backend and what to do instead (fold the vmapped axis into the
batch axis, or loop over it).

Under ``torch.compile``, torch's fused RNN kernels cannot be traced with
autograd on the CPU (their training kernel saves a workspace that AOTAutograd
refuses); :func:`outside_graph` runs such a call eagerly, as dynamo runs
``torch.nn.LSTM``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch._C import _functorch

from rnnspec.errors import CallError
from rnnspec.tree import tree_leaves

from . import fused

__all__ = [
    "BACKEND",
    "UnsupportedTransformError",
    "batched_arguments",
    "is_vmapped",
    "outside_graph",
    "transform_plan",
    "transformed_arguments",
]

#: The name the torch backend registers (errors raised below the Backend name it themselves).
BACKEND = "torch"

#: Ops torch's fused RNN kernels may run: rnn, lstm, gru.
_FUSED_OPS = frozenset({"rnn", "lstm", "gru"})

_INSTEAD = "fold the vmapped axis into the batch axis (x.reshape(-1, *x.shape[2:]) and back), or loop over it in Python"


class UnsupportedTransformError(CallError, NotImplementedError):
    """A call under a ``torch.func`` transform that the op cannot run under."""


def is_vmapped(value: Any) -> bool:
    """Whether ``value`` is a tensor batched by ``torch.func.vmap`` at some level of its functorch wrappers.

    False while ``torch.compile`` traces: dynamo cannot trace the check, and handles transforms itself.
    """
    if not isinstance(value, torch.Tensor) or torch.compiler.is_compiling():
        return False
    while _functorch.is_functorch_wrapped_tensor(value):
        if _functorch.is_batchedtensor(value):
            return True
        value = _functorch.get_unwrapped(value)
    return False


def _is_wrapped(value: Any) -> bool:
    return (
        isinstance(value, torch.Tensor)
        and not torch.compiler.is_compiling()
        and _functorch.is_functorch_wrapped_tensor(value)
    )


def batched_arguments(arguments: Mapping[str, Any]) -> list[str]:
    """The names of the arguments holding a tensor batched by ``torch.func.vmap``."""
    return [name for name, value in arguments.items() if any(is_vmapped(leaf) for leaf in tree_leaves(value))]


def transformed_arguments(arguments: Mapping[str, Any]) -> list[str]:
    """The names of the arguments holding a tensor of a ``torch.func`` transform (grad, vjp, vmap...)."""
    return [name for name, value in arguments.items() if any(_is_wrapped(leaf) for leaf in tree_leaves(value))]


def transform_plan(op: str, arguments: Mapping[str, Any]) -> Literal["any", "plain"]:
    """The path ``op`` takes on ``arguments``: ``"any"`` outside ``torch.func``, ``"plain"`` under it.

    Raises
    ------
    UnsupportedTransformError
        The call is under ``vmap`` and the op cannot be batched (see the module docstring).
    """
    # No transform on the stack: no tensor of this call can be a functorch wrapper (the quick answer of
    # every plain call; the leaf-by-leaf check costs more than a short sequence's kernel).
    if torch.compiler.is_compiling() or _functorch.peek_interpreter_stack() is None:
        return "any"
    if not transformed_arguments(arguments):
        return "any"
    batched = batched_arguments(arguments)
    if not batched:
        return "plain"
    if "lengths" in batched:
        raise UnsupportedTransformError(
            op,
            "lengths",
            f"lengths that torch.func.vmap does not batch (in_dims None: they are read on the host); {_INSTEAD}",
            "lengths batched by torch.func.vmap",
            backend=BACKEND,
        )
    if op == "act":
        raise UnsupportedTransformError(
            op,
            batched[0],
            "a tensor not batched by torch.func.vmap (act's halting decides on the host, from each row's values, "
            f"how many inner steps run, which vmap cannot batch); {_INSTEAD}",
            "a tensor batched by torch.func.vmap",
            backend=BACKEND,
        )
    return "plain"


def _needs_grad(arguments: Mapping[str, Any]) -> bool:
    leaves = tree_leaves(dict(arguments))
    return torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad for t in leaves)


def outside_graph(op: str, arguments: Mapping[str, Any]) -> bool:
    """Whether ``torch.compile`` must leave this call out of its graph: a fused RNN kernel with autograd.

    False outside ``torch.compile``; the plain path (forced, or ``gru(reset_after=False)``) and
    calls without autograd are traced.
    """
    if op not in _FUSED_OPS or not torch.compiler.is_compiling() or not _needs_grad(arguments):
        return False
    return fused.why_plain(op, arguments["x"], arguments) is None
