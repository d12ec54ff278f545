"""Validation of op calls, done once here for every backend.

:func:`check_sequence_call` checks a call of a sequence op against its record
and returns the normalised arguments an :class:`~rnnspec.implementation.Implementation`
receives. Every failure raises an error from :mod:`rnnspec.errors` that names
the op, the argument, the expected and the actual value. Nothing the user
passed is modified: normalising builds new containers around the same arrays.
:func:`checked_call` also returns the sizes the call fixes (:class:`CallSizes`),
from which :mod:`rnnspec.cotangents` knows the shapes of the result.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from .errors import CallError, DtypeError, LengthsError, OptionError, ParameterError, ShapeError
from .implementation import Implementation
from .memo import Memo
from .ops.record import OpSpec, OptionSpec, ParamSpec
from .shapes import evaluate, format_shape, solve, symbols
from .structure import param_layers
from .structure import type_name as _type_name

__all__ = ["CallSizes", "check_call", "check_primitive_call", "check_sequence_call", "checked_call"]

_INT_KINDS = ("int", "uint")
#: Sizes read off the parameters that have a lower bound, and what each is (qrnn's window K >= 1:
#: a window of width 0 reads no input, and K-1 = -1 would be the size of its state x_prev).
_LEAST_SIZES: dict[str, int] = {"K": 1}
#: A sequence op's layers also need H >= 1: a layer of no hidden units computes nothing, and the
#: frameworks' kernels refuse it with errors of their own (torch's oneDNN lstm and qrnn convolution,
#: jax's lstm, TensorFlow's act). A primitive's H is only an array axis, which may be empty.
_LEAST_LAYER_SIZES: dict[str, int] = {**_LEAST_SIZES, "H": 1}
_SIZE_MEANING: dict[str, str] = {"K": "the convolution window", "H": "the hidden size"}
#: How the messages name the sizes of an array option's shape.
_SHAPE_WORDS: dict[str, str] = {"B": "batch", "T": "time"}


class CallSizes(NamedTuple):
    """The sizes a valid call fixes, from which the shapes of its result follow.

    Attributes
    ----------
    batch, time
        ``B`` and ``T``.
    layers
        Each layer's sizes (``I``, ``H``, op-specific ones such as ``K``), bottom layer
        first; a primitive has one, with its ``B``, ``T`` and ``H``.
    options
        The call's value options (normalised), which pick the layout of the state.
    """

    batch: int
    time: int
    layers: tuple[Mapping[str, int], ...]
    options: Mapping[str, Any]


def _array_kind(impl: Implementation) -> str:
    return f"a {impl.framework} array"


def _check_array(op: str, argument: str, value: Any, impl: Implementation) -> tuple[tuple[int, ...], str]:
    if not impl.is_array(value):
        expected = _array_kind(impl)
        if isinstance(value, np.ndarray):  # say what to do: the backend's convention is its framework's arrays only
            expected += " (convert NumPy arrays with rnnspec.get_backend(...).from_numpy(tree))"
        raise DtypeError(op, argument, expected, f"an object of type {_type_name(value)}")
    return impl.shape(value), impl.dtype_name(value)


def _check_x(spec: OpSpec, x: Any, impl: Implementation) -> tuple[tuple[int, int, int], str]:
    shape, dtype = _check_array(spec.name, "x", x, impl)
    if len(shape) != 3:
        raise ShapeError(spec.name, "x", "rank 3 (batch, time, input_size)", f"shape {shape} of rank {len(shape)}")
    _check_dtype(spec, "x", dtype, impl)
    return (shape[0], shape[1], shape[2]), dtype


def _check_dtype(spec: OpSpec, argument: str, dtype: str, impl: Implementation) -> None:
    """The dtype of the call's first array: one of the op's (the same words on every backend), then
    one of the backend's."""
    if dtype not in spec.dtypes:
        raise DtypeError(spec.name, argument, f"a floating dtype ({', '.join(spec.dtypes)})", f"dtype {dtype}")
    if dtype not in impl.dtypes:
        expected = f"a dtype this backend supports ({', '.join(impl.dtypes)})"
        raise DtypeError(spec.name, argument, expected, f"dtype {dtype}")


def _python_scalar(value: Any) -> Any:
    """A NumPy bool, integer or string as the Python value it equals (``np.False_`` is ``False``);
    anything else as it is (NumPy's floats pass epsilon's range check as they are)."""
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.str_):
        return str(value)
    return value


def _check_options(spec: OpSpec, arguments: Mapping[str, Any]) -> dict[str, Any]:
    """The op's value options, checked; NumPy scalars become Python values, so that a backend
    compares, hashes (jax's static arguments) and guards (torch.compile) one kind of value."""
    options: dict[str, Any] = {}
    for opt in spec.value_options:
        value = _python_scalar(arguments[opt.name])
        if not opt.accepts(value):
            raise OptionError(spec.name, opt.name, opt.describe_allowed(), repr(arguments[opt.name]))
        options[opt.name] = value
    return options


def _layers(spec: OpSpec, params: Any) -> list[Mapping[str, Any]]:
    return param_layers(spec.name, params)


#: The sizes solved from a layer's shapes, by op, layer, shapes and options: a model calls an op with the
#: same shapes again and again, and solving costs more than a short sequence's kernel. Only calls that
#: passed are kept (and calls with an unhashable option value are solved every time).
_SOLVED: Memo[dict[str, int]] = Memo(limit=4096)


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
    allowed = spec.layer_params(top=top, options=options)
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
    memo = (spec.name, k, top, input_size, tuple(shapes.items()), tuple(options.items()))
    solved = _SOLVED.get(memo)
    if solved is None:
        known = {**spec.fixed_dims(options), "I": input_size}
        solved = _solve_shapes(
            spec, allowed, shapes, known, lambda name: f"{where}[{name!r}]", ParameterError, _LEAST_LAYER_SIZES
        )
        _SOLVED.put(memo, solved)
    return dict(solved)


def _solve_shapes(
    spec: OpSpec,
    layout: Sequence[ParamSpec],
    shapes: Mapping[str, tuple[int, ...]],
    known: Mapping[str, int],
    argument: Callable[[str], str],
    error: type[CallError],
    least_sizes: Mapping[str, int] = _LEAST_SIZES,
) -> dict[str, int]:
    """Read the sizes off ``shapes`` and check every shape against ``layout``."""
    pairs = [(e, n) for p in layout if p.name in shapes for e, n in zip(p.shape, shapes[p.name], strict=True)]
    dims = solve(pairs, known)
    for name, least in least_sizes.items():
        if dims.get(name, least) < least:
            p = next(p for p in layout if p.name in shapes and any(name in symbols(e) for e in p.shape))
            expected = f"shape {format_shape(p.shape)} with {name} >= {least} ({_SIZE_MEANING[name]})"
            raise error(spec.name, argument(p.name), expected, f"shape {shapes[p.name]}")
    for p in layout:
        if p.name not in shapes:
            continue
        try:
            want: tuple[int, ...] | None = tuple(evaluate(e, dims) for e in p.shape)
        except KeyError:
            want = None
        if want != shapes[p.name]:
            sizes = ", ".join(f"{n}={v}" for n, v in sorted(dims.items()))
            expected = f"shape {format_shape(p.shape)}" + (f" = {want} with {sizes}" if want else f" with {sizes}")
            raise error(spec.name, argument(p.name), expected, f"shape {shapes[p.name]}")
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
    options: Mapping[str, Any],
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
    out = []
    for k, (entry, dims) in enumerate(zip(initial_state, layer_dims, strict=True)):
        where = f"initial_state[{k}]"
        entries = spec.layer_state(top=k == n - 1, options=options)
        names = [s.name for s in entries]
        if not isinstance(entry, Mapping) or set(entry) != set(names):
            got = f"keys {sorted(entry, key=str)}" if isinstance(entry, Mapping) else _type_name(entry)
            raise ShapeError(spec.name, where, f"a mapping with keys {names}", got)
        for s in entries:
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
    return _checked_sequence_call(spec, arguments, impl)[0]


def _checked_sequence_call(
    spec: OpSpec, arguments: Mapping[str, Any], impl: Implementation
) -> tuple[dict[str, Any], CallSizes]:
    (batch, time, features), dtype = _check_x(spec, arguments["x"], impl)
    options = _check_options(spec, arguments)
    reverse = _check_reverse(spec, arguments["reverse"])
    layers = _layers(spec, arguments["params"])
    if spec.max_layers is not None and len(layers) > spec.max_layers:
        raise ParameterError(
            spec.name, "params", f"at most {spec.max_layers} layer(s) for this op", f"{len(layers)} layers"
        )
    layer_dims = []
    input_size = features
    for k, layer in enumerate(layers):
        dims = _check_layer(
            spec, k, layer, top=k == len(layers) - 1, input_size=input_size, dtype=dtype, options=options, impl=impl
        )
        layer_dims.append(dims)
        input_size = dims["H"]
    if features < 1:
        # After the layers, so that x and params of different input sizes read as before (the params
        # do not take x); here they agree on none. Frameworks' kernels refuse it (torch's qrnn).
        expected = "shape (batch, time, input_size) with input_size >= 1"
        raise ShapeError(spec.name, "x", expected, f"shape {(batch, time, features)}")
    lengths = _check_lengths(spec, arguments["lengths"], batch, time, impl)
    array_options = {
        opt.name: _check_array_option(
            spec,
            opt,
            arguments[opt.name],
            batch,
            time,
            layer_dims,
            dtype,
            impl,
            _host_lengths(lengths, batch, time, impl),
        )
        for opt in spec.array_options
    }
    normalised = {
        "x": arguments["x"],
        "params": [dict(layer) for layer in layers],
        **options,
        **array_options,
        "lengths": lengths,
        "initial_state": _check_initial_state(
            spec, arguments["initial_state"], batch, layer_dims, dtype, options, impl
        ),
        "reverse": reverse,
    }
    return normalised, CallSizes(batch, time, tuple(layer_dims), options)


def _check_reverse(spec: OpSpec, reverse: Any) -> bool:
    if not isinstance(reverse, (bool, np.bool_)):
        raise OptionError(spec.name, "reverse", "True or False", repr(reverse))
    return bool(reverse)


def _check_array_option(
    spec: OpSpec,
    opt: OptionSpec,
    value: Any,
    batch: int,
    time: int,
    layer_dims: list[dict[str, int]],
    dtype: str,
    impl: Implementation,
    lengths: np.ndarray | None,
) -> tuple[Any, ...] | None:
    """An array of the shape ``opt.shape`` says over ``B``, ``T`` and each layer's sizes, of x's dtype, (if
    ``opt.values``) of entries in that closed interval and (if ``opt.nondecreasing``) not decreasing along
    each row's valid prefix (``lengths`` on the host; None: not known, and not checked): one for
    every layer, or (``opt.per_layer``) one per layer. ``opt.between_layers``: one per boundary between layers,
    of the sizes of the layer below it (a dropout mask; None for one layer). None where the option is not
    required."""
    if value is None and not opt.required:
        return None
    # A boundary k lies above layer k: its array has layer k's sizes.
    owners = layer_dims[:-1] if opt.between_layers else layer_dims
    n = len(owners)
    words = f"({', '.join(_SHAPE_WORDS.get(e, e) for e in opt.shape)})"
    if value is None:  # required: say that an array is expected
        _check_array(spec.name, opt.name, value, impl)
    values = [value] * n if impl.is_array(value) else value
    if (
        not isinstance(values, Sequence)
        or isinstance(values, (str, bytes))
        or len(values) != n
        or not (opt.per_layer or impl.is_array(value))
    ):
        # A value of the wrong structure (another framework's array among them), as for initial_state.
        expected = f"{'' if opt.required else 'None, '}{_array_kind(impl)} {words}"
        each = "one per boundary between layers" if opt.between_layers else "one per layer"
        expected += f", or a sequence of {n} such arrays ({each})" if opt.per_layer else ""
        raise ShapeError(spec.name, opt.name, expected, _type_name(value))
    checked = list(zip(values, owners, strict=True))
    if not checked and impl.is_array(value):  # one layer: the array stands for no boundary, but is still checked
        checked = [(value, layer_dims[0])]
    for k, (array, dims) in enumerate(checked):
        arg = opt.name if impl.is_array(value) else f"{opt.name}[{k}]"
        shape, adtype = _check_array(spec.name, arg, array, impl)
        want = tuple(evaluate(e, {**dims, "B": batch, "T": time}) for e in opt.shape)
        if shape != want:
            raise ShapeError(spec.name, arg, f"shape {want} {words} of layer {k}", f"shape {shape}")
        if adtype != dtype:
            raise DtypeError(spec.name, arg, f"dtype {dtype} (the dtype of x)", f"dtype {adtype}")
        if opt.nondecreasing:
            _check_nondecreasing(spec, arg, impl.host_values(array), lengths, time)
        if opt.values is None:
            continue
        host = impl.host_values(array)
        if host is not None:
            low, high = opt.values[0], opt.values[-1]
            entries = np.asarray(host, dtype=np.float64)
            outside = ~((entries >= low) & (entries <= high))  # NaN is outside
            if outside.any():
                bad = float(entries.flat[int(np.argmax(outside))])
                raise OptionError(spec.name, arg, f"values in [{low:g}, {high:g}] (NaN refused)", f"a value {bad!r}")
    return tuple(values) if values or not opt.between_layers else None


def _host_lengths(lengths: Any, batch: int, time: int, impl: Implementation) -> np.ndarray | None:
    """Each row's length (validated) as NumPy, ``time`` for every row without lengths; None where they are
    not on the host."""
    if lengths is None:
        return np.full((batch,), time, dtype=np.int64)
    host = impl.host_values(lengths) if impl.is_array(lengths) else np.asarray(lengths)
    return None if host is None else np.asarray(host).astype(np.int64)


def _check_nondecreasing(
    spec: OpSpec, arg: str, host: np.ndarray | None, lengths: np.ndarray | None, time: int
) -> None:
    """Refuse a ``(batch, time)`` array whose entries decrease somewhere along a row's valid prefix (a NaN
    compares as no decrease: it reaches the values, as a NaN in x does). Arrays or lengths off the host are
    not read."""
    if host is None or lengths is None or host.size == 0:
        return
    values = np.asarray(host, dtype=np.float64)
    valid = np.arange(1, time)[None, :] < lengths[:, None]
    drops = (values[:, 1:] < values[:, :-1]) & valid
    if drops.any():
        row, step = (int(i) for i in np.argwhere(drops)[0])
        actual = f"row {row}: {float(values[row, step + 1])!r} at step {step + 1} after {float(values[row, step])!r}"
        raise OptionError(spec.name, arg, "values that do not decrease along each row's valid prefix", actual)


def check_primitive_call(spec: OpSpec, arguments: Mapping[str, Any], impl: Implementation) -> dict[str, Any]:
    """Validate a call of a primitive (``linear_recurrence``, ``indrnn_recurrence``).

    Its array arguments are described by ``spec.params`` with shapes over
    ``B`` (batch), ``T`` (time) and ``H``; they share the first one's dtype.
    """
    return _checked_primitive_call(spec, arguments, impl)[0]


def _checked_primitive_call(
    spec: OpSpec, arguments: Mapping[str, Any], impl: Implementation
) -> tuple[dict[str, Any], CallSizes]:
    shapes: dict[str, tuple[int, ...]] = {}
    dtype = ""
    for p in spec.params:
        value = arguments[p.name]
        if value is None and not p.required:
            continue
        shape, adtype = _check_array(spec.name, p.name, value, impl)
        if not dtype:
            _check_dtype(spec, p.name, adtype, impl)
            dtype = adtype
        elif adtype != dtype:
            first = spec.params[0].name
            raise DtypeError(spec.name, p.name, f"dtype {dtype} (the dtype of {first})", f"dtype {adtype}")
        if len(shape) != len(p.shape):
            raise ShapeError(
                spec.name, p.name, f"shape {format_shape(p.shape)} of rank {len(p.shape)}", f"shape {shape}"
            )
        shapes[p.name] = shape
    dims = _solve_shapes(spec, spec.params, shapes, {}, lambda name: name, ShapeError)
    options = _check_options(spec, arguments)
    normalised = {
        **{p.name: arguments[p.name] for p in spec.params},
        **options,
        "lengths": _check_lengths(spec, arguments["lengths"], dims["B"], dims["T"], impl),
        "reverse": _check_reverse(spec, arguments["reverse"]),
    }
    return normalised, CallSizes(dims["B"], dims["T"], (dims,), options)


def check_call(spec: OpSpec, arguments: Mapping[str, Any], impl: Implementation) -> dict[str, Any]:
    """Validate a call of any op of the spec; return its normalised arguments."""
    return checked_call(spec, arguments, impl)[0]


def checked_call(spec: OpSpec, arguments: Mapping[str, Any], impl: Implementation) -> tuple[dict[str, Any], CallSizes]:
    """Validate a call of any op of the spec; return its normalised arguments and the sizes it fixes."""
    if spec.kind == "primitive":
        return _checked_primitive_call(spec, arguments, impl)
    return _checked_sequence_call(spec, arguments, impl)
