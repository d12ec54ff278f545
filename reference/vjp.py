"""Reverse mode of every op: ``rnnspec.reference.vjp``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rnnspec.backend import Backend
from rnnspec.errors import ShapeError, UnknownArgumentError

from .implementation import Forward, Reference
from .stack import run_stack_vjp

__all__ = ["vjp"]

_BACKEND = Backend("numpy", Reference(), version="reference")


def _zeros_like_state(state: Sequence[Mapping[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    return [{k: np.zeros_like(v) for k, v in s.items()} for s in state]


def _cotangent(op: str, argument: str, value: Any, want: tuple[int, ...]) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != want:
        raise ShapeError(op, argument, f"shape {want}", f"shape {arr.shape}", backend="numpy")
    return arr


def _read_cotangents(
    op: str, cotangents: Mapping[str, Any], fwd: Forward
) -> tuple[np.ndarray, list[dict[str, np.ndarray]]]:
    if not isinstance(cotangents, Mapping):
        raise ShapeError(op, "cotangents", "a mapping with keys among ['outputs', 'state']", type(cotangents).__name__)
    for key in cotangents:
        if key not in ("outputs", "state"):
            raise UnknownArgumentError(
                op, "cotangents", "keys among ['outputs', 'state'] (result fields)", f"a key {key!r}", backend="numpy"
            )
    d_outputs = np.zeros_like(fwd.outputs)
    if cotangents.get("outputs") is not None:
        d_outputs = _cotangent(op, "cotangents['outputs']", cotangents["outputs"], fwd.outputs.shape)
    d_state = _zeros_like_state(fwd.state)
    given = cotangents.get("state")
    if given is not None:
        if isinstance(given, Mapping) and len(d_state) == 1:
            given = (given,)
        if not isinstance(given, Sequence) or len(given) != len(d_state):
            raise ShapeError(
                op,
                "cotangents['state']",
                f"a sequence of {len(d_state)} mapping(s), one per layer",
                repr(type(given)),
                backend="numpy",
            )
        for k, entry in enumerate(given):
            for name, value in entry.items():
                if name not in d_state[k]:
                    raise UnknownArgumentError(
                        op,
                        f"cotangents['state'][{k}]",
                        f"keys among {sorted(d_state[k])}",
                        f"a key {name!r}",
                        backend="numpy",
                    )
                arg = f"cotangents['state'][{k}][{name!r}]"
                d_state[k][name] = _cotangent(op, arg, value, d_state[k][name].shape)
    return d_outputs, d_state


def vjp(op: str, cotangents: Mapping[str, Any], x: np.ndarray, params: Any, **options: Any) -> dict[str, Any]:
    """Reverse mode of ``op`` at ``(x, params, **options)``.

    Parameters
    ----------
    op
        The op's name, such as ``"lstm"``.
    cotangents
        Cotangents of the result fields: ``"outputs"`` an array shaped like the
        outputs, ``"state"`` a sequence with one mapping per layer holding any
        of that layer's state entries. Missing fields or entries count as zero.
    x, params, **options
        The op's call, exactly as it would be passed to ``get_backend("numpy").<op>``.

    Returns
    -------
    dict
        ``"x"``: the cotangent of x; ``"params"``: of every parameter, in the
        structure of ``params`` (a mapping for a mapping); ``"initial_state"``:
        of the initial state (of the zeros used when none was given), one
        mapping per layer. Arrays have x's dtype; the arithmetic is float64.
    """
    args = _BACKEND.check_call(op, x, params, **options)
    spec_options = {k: v for k, v in args.items() if k not in ("x", "params", "lengths", "initial_state", "reverse")}
    fwd = Forward(op, args["x"], args["params"], spec_options, args["lengths"], args["initial_state"], args["reverse"])
    d_outputs, d_state = _read_cotangents(op, cotangents, fwd)
    d_x, d_params, d_initial = run_stack_vjp(lambda k: fwd.cell, fwd.params, fwd.tape, fwd.reverse, d_outputs, d_state)
    dtype = fwd.dtype
    grads_params: Any = [{k: v.astype(dtype) for k, v in p.items()} for p in d_params]
    if isinstance(params, Mapping):
        grads_params = grads_params[0]
    return {
        "x": d_x.astype(dtype),
        "params": grads_params,
        "initial_state": tuple({k: v.astype(dtype) for k, v in s.items()} for s in d_initial),
    }
