"""Reverse mode of every op: ``rnnspec.reference.vjp``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rnnspec.backend import Backend
from rnnspec.ops import OPS

from .implementation import Reference
from .runs import start

__all__ = ["vjp"]

_BACKEND = Backend("numpy", Reference(), version="reference")


def vjp(op: str, cotangents: Mapping[str, Any], *args: Any, **options: Any) -> dict[str, Any]:
    """Reverse mode of ``op`` at the call ``op(*args, **options)``.

    Parameters
    ----------
    op
        The op's name, such as ``"lstm"``.
    cotangents
        Cotangents of the result fields; missing fields or entries count as zero.
        For a sequence op: ``"outputs"`` an array shaped like the outputs and
        ``"state"`` a sequence with one mapping per layer holding any of that
        layer's state entries. For a primitive: ``"h"``, shaped like its result.
    *args, **options
        The op's call, exactly as it would be passed to ``get_backend("numpy").<op>``.

    Returns
    -------
    dict
        For a sequence op: ``"x"``; ``"params"`` in the structure of ``params``
        (a mapping for a mapping); ``"initial_state"`` (of the zeros used when
        none was given), one mapping per layer. For a primitive: one entry per
        array argument (``"a"``, ``"b"``, ``"initial"``; ``"pre"``, ``"u"``,
        ``"initial"``). Arrays have the input's dtype; the arithmetic is float64.
    """
    grads = start(op, _BACKEND.check_call(op, *args, **options)).vjp(cotangents)
    params = options.get("params", args[1] if len(args) > 1 else None)
    if OPS[op].kind == "sequence" and isinstance(params, Mapping):
        grads["params"] = grads["params"][0]  # the structure the caller used
    return grads
