"""Checks of the structure of what a caller passes, shared by the validation and the param files.

:func:`type_name` names a value's type in error messages; :func:`param_layers` checks that
``params`` is one layer's mapping or a non-empty sequence of them, as every op and
:func:`rnnspec.save_params` take it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .errors import ParameterError

__all__ = ["param_layers", "type_name"]


def type_name(value: Any) -> str:
    """The name of ``value``'s type for a message: ``list`` for builtins, ``numpy.ndarray`` for the rest."""
    kind = type(value)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def param_layers(op: str, params: Any) -> list[Mapping[Any, Any]]:
    """``params`` as a list of layers: a mapping is one layer, a non-empty sequence of mappings one per layer.

    Anything else raises a :class:`~rnnspec.errors.ParameterError` naming ``op`` and the argument.
    The mappings' keys and values are not checked here.
    """
    expected = "a mapping of named arrays, or a non-empty sequence of such mappings (one per layer)"
    if isinstance(params, Mapping):
        return [params]
    if isinstance(params, Sequence) and not isinstance(params, (str, bytes)):
        if len(params) == 0:
            raise ParameterError(op, "params", expected, "an empty sequence")
        for k, layer in enumerate(params):
            if not isinstance(layer, Mapping):
                raise ParameterError(op, f"params[{k}]", "a mapping of named arrays", type_name(layer))
        return list(params)
    raise ParameterError(op, "params", expected, type_name(params))
