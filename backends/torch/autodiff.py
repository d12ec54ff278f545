"""Reverse mode of every op through torch.autograd, in the structure the spec defines."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from rnnspec.backends.common.autodiff import paired
from rnnspec.backends.common.state import start_state
from rnnspec.ops import OPS
from rnnspec.tree import tree_leaves, tree_map

from .sequence import ARRAY_OPS

__all__ = ["vjp"]

_HALF = (torch.float16, torch.bfloat16)


def _leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().requires_grad_(True)


def _grads(outputs: list[torch.Tensor], cotangents: list[Any], inputs: list[torch.Tensor]) -> list[Any]:
    pairs = [(o, c) for o, c in zip(outputs, cotangents, strict=True) if c is not None and o.requires_grad]
    if not pairs:
        return [torch.zeros_like(i) for i in inputs]
    grad_outputs = [c.to(o.dtype) for o, c in pairs]
    found = torch.autograd.grad([o for o, _ in pairs], inputs, grad_outputs=grad_outputs, allow_unused=True)
    # Where an output is its input (a state over zero steps), autograd hands back the caller's cotangent
    # itself: a gradient must be an array of its own, which the caller may write into.
    given = {c.untyped_storage().data_ptr() for c in grad_outputs if c.numel()}
    return [
        torch.zeros_like(i) if g is None else g.clone() if g.numel() and g.untyped_storage().data_ptr() in given else g
        for g, i in zip(found, inputs, strict=True)
    ]


def vjp(op: str, arguments: dict[str, Any], cotangents: Mapping[str, Any]) -> dict[str, Any]:
    """Cotangents of the inputs of ``op`` at ``arguments`` (normalised), by autograd."""
    from .implementation import run_op

    with torch.enable_grad():
        if OPS[op].kind == "primitive":
            names = tuple(p.name for p in OPS[op].params)
            args = dict(arguments)
            if args["initial"] is None:
                first = args[names[0]]
                args["initial"] = first.new_zeros((first.shape[0], first.shape[2]))
            leaves = {n: _leaf(args[n]) for n in names}
            args.update(leaves)
            h = run_op(op, args)
            grads = _grads([h], [cotangents.get("h")], list(leaves.values()))
            return dict(zip(names, grads, strict=True))
        args = dict(arguments)
        x = _leaf(args["x"])
        params = [{k: _leaf(v) for k, v in p.items()} for p in args["params"]]
        options = {k: v for k, v in args.items() if k not in ("x", "params", "lengths", "initial_state", "reverse")}
        if args["initial_state"] is None:
            # The start state is built from the params (skip's h0/c0), so their gradients flow through it.
            # In the compute dtype: the gradient of h0 spread over the batch is a sum, taken in float32 for
            # half precision as run_op computes.
            compute = torch.float32 if x.dtype in _HALF else x.dtype
            wide = [{k: v.to(compute) for k, v in p.items()} for p in params]
            initial = tuple(
                {k: v if v.requires_grad else v.requires_grad_(True) for k, v in s.items()}
                for s in start_state(op, x.to(compute), wide, options, ARRAY_OPS)
            )
        else:
            initial = tuple({k: _leaf(v) for k, v in s.items()} for s in args["initial_state"])
        args.update(x=x, params=params, initial_state=initial)
        result = run_op(op, args)
        outs, cots = paired(result, cotangents)
        initial_leaves = tree_leaves(initial)
        inputs = [x, *tree_leaves(params), *initial_leaves]
        found = iter(_grads(outs, cots, inputs))
        d_x = next(found)
        d_params = tree_map(lambda _: next(found), params)
        d_initial = tree_map(lambda _: next(found).to(x.dtype), initial)
        return {"x": d_x, "params": d_params, "initial_state": tuple(d_initial)}
