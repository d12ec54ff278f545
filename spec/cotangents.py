"""Validation of the cotangents of ``vjp``, done once here for every backend.

A caller gives :meth:`rnnspec.Backend.vjp` the cotangents of the result's
fields, in the result's structure. :func:`check_cotangents` checks them
against the op's record and the sizes of the validated call
(:class:`~rnnspec.validate.CallSizes`) before the backend's reverse mode runs:
every key is a field of the result (or an entry of a layer's state), the state
has one mapping per layer, and every cotangent is a floating array of the
backend of exactly its field's shape. A framework's autodiff would otherwise
read a misspelt field as no cotangent at all (all-zero gradients), ignore an
unknown state entry or an extra layer, and broadcast a ``(batch, time, 1)``
array. Like every check of a call, it reads shapes and dtypes through the
implementation's adapters, never a framework.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .errors import DtypeError, ShapeError, UnknownArgumentError
from .implementation import Implementation
from .ops.record import FLOAT_DTYPES, OpSpec
from .shapes import evaluate
from .structure import type_name
from .validate import CallSizes, _check_array

__all__ = ["check_cotangents", "cotangent_shapes"]

#: How the shape of each result field reads, for messages: sequence ops' and primitives'.
_SYMBOLS = {"outputs": "(batch, time, H)", "h": "(B, T, H)"}
_STEPS = "(batch, time)"


def cotangent_shapes(spec: OpSpec, sizes: CallSizes) -> dict[str, Any]:
    """The shape of each field of the result of a call of ``spec`` with ``sizes``.

    Returns
    -------
    dict
        For a sequence op: ``"outputs"`` ``(batch, time, H)`` of the top layer, ``"state"`` a
        tuple with one mapping of entry shapes per layer, and every other field ``(batch, time)``
        (skip's gate, act's ponder fields). For a primitive: ``"h"``, ``(B, T, H)``.
    """
    batch, time = sizes.batch, sizes.time
    if spec.kind == "primitive":
        return {"h": (batch, time, sizes.layers[0]["H"])}
    n = len(sizes.layers)
    shapes: dict[str, Any] = {}
    for field in spec.result_fields:
        if field == "outputs":
            shapes[field] = (batch, time, sizes.layers[-1]["H"])
        elif field == "state":
            shapes[field] = tuple(
                {
                    s.name: (batch, *(evaluate(e, dims) for e in s.shape))
                    for s in spec.layer_state(top=k == n - 1, options=sizes.options)
                }
                for k, dims in enumerate(sizes.layers)
            )
        else:
            shapes[field] = (batch, time)
    return shapes


def check_cotangents(spec: OpSpec, cotangents: Any, sizes: CallSizes, impl: Implementation) -> dict[str, Any]:
    """Check the cotangents of a call of ``spec``; return them normalised for ``impl.vjp``.

    Parameters
    ----------
    spec
        The op's record.
    cotangents
        What the caller passed: a mapping from result fields to arrays, missing
        fields, entries and ``None`` counting as zero. A sequence op's ``"state"``
        is one mapping per layer (one mapping alone for a single layer, as
        ``initial_state`` may be).
    sizes
        The sizes of the validated call.
    impl
        The backend implementation, for its array adapters.

    Returns
    -------
    dict
        The given fields only, with the caller's arrays; ``"state"`` (when given) a tuple
        with one dict per layer holding the given entries only.

    Raises
    ------
    UnknownArgumentError
        A key that is no field of the result, or no entry of a layer's state.
    ShapeError
        Cotangents that are not a mapping, a state for another number of layers,
        or an array of another shape than its field's (broadcastable or not).
    DtypeError
        A cotangent that is not an array of the backend, or not of a floating dtype.
    """
    op = spec.name
    shapes = cotangent_shapes(spec, sizes)
    fields = list(shapes)
    if not isinstance(cotangents, Mapping):
        expected = f"a mapping from the result's fields {fields} to arrays"
        raise ShapeError(op, "cotangents", expected, type_name(cotangents))
    read: dict[str, Any] = {}
    for field, value in cotangents.items():
        if field not in shapes:
            raise UnknownArgumentError(op, "cotangents", f"keys among the result's fields {fields}", f"a key {field!r}")
        if value is None:
            continue
        argument = f"cotangents[{field!r}]"
        if field == "state":
            read[field] = _check_state(spec, value, shapes[field], sizes.options, impl)
        else:
            what = f"{_SYMBOLS.get(field, _STEPS)}, the shape of the result's {field}"
            read[field] = _check_one(spec, argument, value, shapes[field], what, impl)
    return read


def _check_state(
    spec: OpSpec,
    value: Any,
    shapes: tuple[Mapping[str, tuple[int, ...]], ...],
    options: Mapping[str, Any],
    impl: Implementation,
) -> tuple[dict[str, Any], ...]:
    """A state's cotangents: one mapping per layer, each of the layer's entries at most."""
    op, n = spec.name, len(shapes)
    if isinstance(value, Mapping) and n == 1:
        value = (value,)
    expected = f"a sequence of {n} mapping(s), one per layer (as the result's state)"
    if not isinstance(value, Sequence) or isinstance(value, (str, bytes)):
        raise ShapeError(op, "cotangents['state']", expected, type_name(value))
    if len(value) != n:
        raise ShapeError(op, "cotangents['state']", expected, f"a sequence of length {len(value)}")
    layers: list[dict[str, Any]] = []
    for k, (entries, want) in enumerate(zip(value, shapes, strict=True)):
        where = f"cotangents['state'][{k}]"
        if entries is None:
            layers.append({})
            continue
        if not isinstance(entries, Mapping):
            raise ShapeError(op, where, f"a mapping of the layer's state entries {list(want)}", type_name(entries))
        symbols = {s.name: ", ".join(("batch", *s.shape)) for s in spec.layer_state(top=k == n - 1, options=options)}
        layer: dict[str, Any] = {}
        for name, array in entries.items():
            if name not in want:
                expected = f"keys among the layer's state entries {list(want)}"
                raise UnknownArgumentError(op, where, expected, f"a key {name!r}")
            if array is not None:
                what = f"({symbols[name]}), the shape of the result's state[{k}][{name!r}]"
                layer[name] = _check_one(spec, f"{where}[{name!r}]", array, want[name], what, impl)
        layers.append(layer)
    return tuple(layers)


def _check_one(spec: OpSpec, argument: str, value: Any, want: tuple[int, ...], what: str, impl: Implementation) -> Any:
    """One cotangent: an array of the backend, floating, of exactly the shape ``want``.

    Any floating dtype: the backend casts it to its field's dtype, as it would a
    float64 cotangent of a float32 result.
    """
    shape, dtype = _check_array(spec.name, argument, value, impl)
    if dtype not in FLOAT_DTYPES:
        raise DtypeError(spec.name, argument, f"a floating dtype ({', '.join(FLOAT_DTYPES)})", f"dtype {dtype}")
    if shape != want:
        raise ShapeError(spec.name, argument, f"shape {want} {what}", f"shape {shape}")
    return value
