"""Validation of op calls, done once here for every backend.

:func:`check_sequence_call` checks a call of a sequence op against its record
and returns the normalised arguments an :class:`~rnnspec.implementation.Implementation`
receives. Every failure raises an error from :mod:`rnnspec.errors` that names
the op, the argument, the expected and the actual value. Nothing the user
passed is modified: normalising builds new containers around the same arrays.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .errors import DtypeError, LengthsError, OptionError, ParameterError, ShapeError
from .implementation import Implementation
from .ops.record import OpSpec
from .shapes import evaluate, format_shape, solve

__all__ = ["check_sequence_call"]

_INT_KINDS = ("int", "uint")


def _type_name(value: Any) -> str:
    cls = type(value)
    return cls.__name__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def _array_kind(impl: Implementation) -> str:
    return f"a {impl.framework} array"


def _check_array(op: str, argument: str, value: Any, impl: Implementation) -> tuple[tuple[int, ...], str]:
    if not impl.is_array(value):
        raise DtypeError(op, argument, _array_kind(impl), f"an object of type {_type_name(value)}")
    return impl.shape(value), impl.dtype_name(value)


def _check_x(spec: OpSpec, x: Any, impl: Implementation) -> tuple[tuple[int, int, int], str]:
    shape, dtype = _check_array(spec.name, "x", x, impl)
    if len(shape) != 3:
        raise ShapeError(spec.name, "x", "rank 3 (batch, time, input_size)", f"shape {shape} of rank {len(shape)}")
    if dtype not in spec.dtypes:
        raise DtypeError(spec.name, "x", f"a floating dtype ({', '.join(spec.dtypes)})", f"dtype {dtype}")
    if dtype not in impl.dtypes:
        raise DtypeError(spec.name, "x", f"a dtype this backend supports ({', '.join(impl.dtypes)})", f"dtype {dtype}")
    return (shape[0], shape[1], shape[2]), dtype


def _check_options(spec: OpSpec, options: Mapping[str, Any]) -> None:
    for opt in spec.options:
        value = options[opt.name]
        if not opt.accepts(value):
            allowed = " or ".join(repr(a) for a in opt.allowed)
            raise OptionError(spec.name, opt.name, allowed, repr(value))


def _layers(spec: OpSpec, params: Any) -> list[Mapping[str, Any]]:
    expected = "a mapping of named arrays, or a non-empty sequence of such mappings (one per layer)"
    if isinstance(params, Mapping):
        return [params]
    if isinstance(params, Sequence) and not isinstance(params, (str, bytes)):
        if len(params) == 0:
            raise ParameterError(spec.name, "params", expected, "an empty sequence")
        for k, layer in enumerate(params):
            if not isinstance(layer, Mapping):
                raise ParameterError(spec.name, f"params[{k}]", "a mapping of named arrays", _type_name(layer))
        return list(params)
    raise ParameterError(spec.name, "params", expected, _type_name(params))


def _check_layer(
    spec: OpSpec,
    k: int,
    layer: Mapping[str, Any],
    *,
    top: bool,
    input_size: int,
    dtype: str,
    options: Mapping[str, Any],
    impl: Implementation,
) -> dict[str, int]:
    """Check one layer's params; return its sizes (``I``, ``H``, ...)."""
    allowed = spec.layer_params(top=top)
    names = {p.name for p in allowed}
    where = f"params[{k}]"
    for key in layer:
        if key not in names:
            raise ParameterError(spec.name, where, f"keys among {sorted(names)}", f"unknown key {key!r}")
    shapes: dict[str, tuple[int, ...]] = {}
    for p in allowed:
        if p.name not in layer:
            if p.required:
                raise ParameterError(
                    spec.name, where, f"a key {p.name!r} of shape {format_shape(p.shape)}", f"keys {sorted(layer)}"
                )
            continue
        arg = f"{where}[{p.name!r}]"
        shape, pdtype = _check_array(spec.name, arg, layer[p.name], impl)
        if pdtype != dtype:
            raise DtypeError(spec.name, arg, f"dtype {dtype} (the dtype of x)", f"dtype {pdtype}")
        if len(shape) != len(p.shape):
            raise ParameterError(
                spec.name, arg, f"shape {format_shape(p.shape)} of rank {len(p.shape)}", f"shape {shape}"
            )
        shapes[p.name] = shape
    known = {**spec.fixed_dims(options), "I": input_size}
    pairs = [(e, n) for p in allowed if p.name in shapes for e, n in zip(p.shape, shapes[p.name], strict=True)]
    dims = solve(pairs, known)
    for p in allowed:
        if p.name not in shapes:
            continue
        try:
            want = tuple(evaluate(e, dims) for e in p.shape)
        except KeyError:
            want = None
        if want != shapes[p.name]:
            sizes = ", ".join(f"{n}={v}" for n, v in sorted(dims.items()))
            expected = f"shape {format_shape(p.shape)}" + (f" = {want} with {sizes}" if want else f" with {sizes}")
            raise ParameterError(spec.name, f"{where}[{p.name!r}]", expected, f"shape {shapes[p.name]}")
    return dims


def _check_lengths(spec: OpSpec, lengths: Any, batch: int, time: int, impl: Implementation) -> Any:
    if lengths is None:
        return None
    if impl.is_array(lengths):
        shape, dtype = impl.shape(lengths), impl.dtype_name(lengths)
        values = impl.host_values(lengths)
    elif isinstance(lengths, (np.ndarray, Sequence)) and not isinstance(lengths, (str, bytes)):
        host = np.asarray(lengths)
        shape, dtype, values = host.shape, host.dtype.name, host
    else:
        raise LengthsError(spec.name, "lengths", "None or an integer array of shape (batch,)", _type_name(lengths))
    if not dtype.startswith(_INT_KINDS):
        raise LengthsError(spec.name, "lengths", "an integer dtype", f"dtype {dtype}")
    if tuple(shape) != (batch,):
        raise LengthsError(spec.name, "lengths", f"shape ({batch},) (batch,)", f"shape {tuple(shape)}")
    if values is not None and values.size:
        low, high = int(values.min()), int(values.max())
        if low < 0 or high > time:
            bad = low if low < 0 else high
            raise LengthsError(spec.name, "lengths", f"values in [0, {time}] (0 <= length <= time)", f"a value {bad}")
    return lengths


def _check_initial_state(
    spec: OpSpec,
    initial_state: Any,
    batch: int,
    layer_dims: list[dict[str, int]],
    dtype: str,
    impl: Implementation,
) -> tuple[dict[str, Any], ...] | None:
    if initial_state is None:
        return None
    n = len(layer_dims)
    if isinstance(initial_state, Mapping) and n == 1:
        initial_state = (initial_state,)
    expected = f"None or a sequence of {n} state mapping(s), one per layer"
    if not isinstance(initial_state, Sequence) or isinstance(initial_state, (str, bytes)):
        raise ShapeError(spec.name, "initial_state", expected, _type_name(initial_state))
    if len(initial_state) != n:
        raise ShapeError(spec.name, "initial_state", expected, f"a sequence of length {len(initial_state)}")
    names = [s.name for s in spec.state]
    out = []
    for k, (entry, dims) in enumerate(zip(initial_state, layer_dims, strict=True)):
        where = f"initial_state[{k}]"
        if not isinstance(entry, Mapping) or set(entry) != set(names):
            got = f"keys {sorted(entry, key=str)}" if isinstance(entry, Mapping) else _type_name(entry)
            raise ShapeError(spec.name, where, f"a mapping with keys {names}", got)
        for s in spec.state:
            arg = f"{where}[{s.name!r}]"
            shape, sdtype = _check_array(spec.name, arg, entry[s.name], impl)
            want = (batch, *(evaluate(e, dims) for e in s.shape))
            if shape != want:
                raise ShapeError(spec.name, arg, f"shape {want} (batch, {', '.join(s.shape)})", f"shape {shape}")
            if sdtype != dtype:
                raise DtypeError(spec.name, arg, f"dtype {dtype} (the dtype of x)", f"dtype {sdtype}")
        out.append(dict(entry))
    return tuple(out)


def check_sequence_call(spec: OpSpec, arguments: Mapping[str, Any], impl: Implementation) -> dict[str, Any]:
    """Validate a call of the sequence op ``spec``; return normalised arguments.

    Parameters
    ----------
    spec
        The op's record.
    arguments
        Every argument of the call by name, defaults filled in.
    impl
        The backend implementation, for its array adapters.
    """
    (batch, time, features), dtype = _check_x(spec, arguments["x"], impl)
    options = {opt.name: arguments[opt.name] for opt in spec.options}
    _check_options(spec, options)
    reverse = arguments["reverse"]
    if not isinstance(reverse, (bool, np.bool_)):
        raise OptionError(spec.name, "reverse", "True or False", repr(reverse))
    layers = _layers(spec, arguments["params"])
    layer_dims = []
    input_size = features
    for k, layer in enumerate(layers):
        dims = _check_layer(
            spec, k, layer, top=k == len(layers) - 1, input_size=input_size, dtype=dtype, options=options, impl=impl
        )
        layer_dims.append(dims)
        input_size = dims["H"]
    return {
        "x": arguments["x"],
        "params": [dict(layer) for layer in layers],
        **options,
        "lengths": _check_lengths(spec, arguments["lengths"], batch, time, impl),
        "initial_state": _check_initial_state(spec, arguments["initial_state"], batch, layer_dims, dtype, impl),
        "reverse": bool(reverse),
    }
