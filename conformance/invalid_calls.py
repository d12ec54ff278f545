"""Hypothesis strategies of invalid calls, each with the error class the spec decides for it.

An invalid call starts from a valid case of the op (:func:`draw_base`: every
optional argument present, so that each can be broken) and changes one thing
with a :class:`Breaker`: the rank or dtype of ``x``, a missing, unknown or
misshapen parameter, ``lengths`` out of range, a state of the wrong batch, an
unknown option value... Some breakers break the cotangents of ``vjp`` at the
valid call instead (a misspelt field, an unknown state entry, an extra layer,
a shape that would broadcast): their calls go through ``Backend.vjp``. Every
draw is labelled, so a falsifying example reads as the call it made::

    @given(data=st.data())
    def test_my_backend_refuses(data):
        base = draw_base(data, "lstm", dtypes=("float32",))
        for breaker in breakers_for("lstm"):
            bad = breaker.draw(data, base)
            ...  # bad.args, bad.kwargs; bad.error is the class the spec decides
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import strategies as st

import rnnspec
from rnnspec.backend import Backend, op_signature
from rnnspec.errors import (
    CallError,
    DtypeError,
    LengthsError,
    OptionError,
    ParameterError,
    ShapeError,
    UnknownArgumentError,
)
from rnnspec.ops import OPS
from rnnspec.shapes import evaluate, symbols
from rnnspec.tree import tree_map

from .cases import Case, CaseSpec
from .strategies import draw_case

__all__ = ["BREAKERS", "Breaker", "InvalidCall", "NotApplicable", "breakers_for", "draw_base"]

#: Dtypes of x (or a primitive's first array) that no op accepts.
BAD_DTYPES = ("int32", "int64", "uint8", "bool", "complex64", "complex128")
#: Values that options and ``reverse`` are drawn from; each option keeps those it does not accept.
BAD_VALUES: tuple[Any, ...] = (
    None, "bogus", "", "TANH", 0, 1, -1, 3, 0.0, 1.0, -0.5, 1.5, 2.5, math.nan, math.inf, True, False, "1", (1,),
    2**31, 2**63,  # past 32-bit counters (act's max_steps), past int64
)  # fmt: skip
#: Keyword names no op takes, and option names of other ops.
OTHER_KEYWORDS = (
    "dropout", "batch_first", "bidirectional", "time_major", "window",
    "activation", "mode", "cell", "epsilon", "max_steps", "reset_after", "zoneout_mask", "initial_state",
)  # fmt: skip
#: Keys no layer carries.
UNKNOWN_KEYS = ("bias", "weight", "w_xh", "W_ih", "h_0")
#: Size changes a breaker applies to one axis.
DELTAS = (-1, 1, 2)
#: Entries no layer's state carries.
UNKNOWN_STATE_KEYS = ("extra", "h_0", "cell")


@dataclass
class InvalidCall:
    """A call that breaks the spec, in NumPy, and the error class the spec decides for it.

    Attributes
    ----------
    op
        The op's name.
    what
        What was broken, in words.
    args, kwargs
        The call; NumPy arrays become the backend's (``lengths`` only when ``native_lengths``).
    error
        The :mod:`rnnspec.errors` class every backend must raise.
    worded_by_backend
        Whether the error's ``expected`` or ``actual`` names the backend's array type
        (``"a torch array"``), so only the class and the argument compare across backends.
    native_lengths
        Whether ``lengths`` is passed as the backend's array rather than NumPy's.
    foreign
        ``(path, make)``: the array at ``path`` (see :meth:`at`) is replaced by
        ``make(backend)``, an array the backend does not take, after conversion.
    reverse_mode
        Whether the call is ``vjp(op, cotangents, *args, **kwargs)`` rather than the op.
    cotangents
        The cotangents of that ``vjp``, in NumPy (converted like the arguments).
    """

    op: str
    what: str
    args: list[Any]
    kwargs: dict[str, Any]
    error: type[CallError]
    worded_by_backend: bool = False
    native_lengths: bool = False
    foreign: tuple[tuple[Any, ...], Callable[[Backend], Any]] | None = None
    reverse_mode: bool = False
    cotangents: Any = None

    def at(self, path: tuple[Any, ...]) -> Any:
        """The value at ``path``: ``("args", i, ...)`` or ``("kwargs", name, ...)``, then keys and indices."""
        node: Any = self.args if path[0] == "args" else self.kwargs
        for key in path[1:]:
            node = node[key]
        return node

    def call_args(self, backend: Backend) -> tuple[list[Any], dict[str, Any]]:
        """The call with ``backend``'s arrays in place of NumPy's, without the keywords its op lacks (a dropout
        mask it predates, which it would refuse after validating the rest) unless they are what is broken."""

        def convert(value: Any) -> Any:
            return backend.from_numpy(value) if isinstance(value, np.ndarray) else value

        lacking = {k for k in backend.lacking(self.op) if k not in self.what} if self.op in backend.ops else set()
        args = [tree_map(convert, a) for a in self.args]
        kwargs = {
            k: (v if k == "lengths" and not self.native_lengths else tree_map(convert, v))
            for k, v in self.kwargs.items()
            if k not in lacking
        }
        if self.foreign is not None:
            path, make = self.foreign
            node: Any = args if path[0] == "args" else kwargs
            for key in path[1:-1]:
                node = node[key]
            node[path[-1]] = make(backend)
        return args, kwargs

    def raised_by(self, backend: Backend) -> BaseException | None:
        """What calling the op (or its ``vjp``) on ``backend`` raised (``None`` if the call succeeded)."""
        args, kwargs = self.call_args(backend)
        try:
            if self.reverse_mode:
                cotangents = tree_map(
                    lambda v: backend.from_numpy(v) if isinstance(v, np.ndarray) else v, self.cotangents
                )
                backend.vjp(self.op, cotangents, *args, **kwargs)
            else:
                getattr(backend, self.op)(*args, **kwargs)
        except Exception as err:  # the caller reports any exception, rnnspec's or a framework's
            return err
        return None

    def describe(self) -> str:
        """The call, for failure messages: what was broken and the arguments' shapes and dtypes."""

        def show(value: Any) -> Any:
            if isinstance(value, np.ndarray):
                return f"array{value.shape}:{value.dtype}" + ("" if value.size > 8 else f"={value.tolist()}")
            return value

        args = [tree_map(show, a) for a in self.args]
        kwargs = {k: tree_map(show, v) for k, v in self.kwargs.items()}
        call = f"{self.op} with {self.what}: args={args!r}, kwargs={kwargs!r}, native_lengths={self.native_lengths}"
        return call + (f", vjp with cotangents={tree_map(show, self.cotangents)!r}" if self.reverse_mode else "")


@dataclass
class _Call:
    """A mutable copy of a valid case's call, which a breaker edits (never the arrays in place)."""

    spec: CaseSpec
    args: list[Any]
    kwargs: dict[str, Any]
    #: Set by a breaker of the cotangents (:func:`_reverse_mode`): the call becomes a ``vjp``.
    reverse_mode: bool = False
    cotangents: Any = None

    @property
    def sequence(self) -> bool:
        return OPS[self.spec.op].kind == "sequence"

    @property
    def params(self) -> list[dict[str, Any]]:
        params: list[dict[str, Any]] = self.args[1]
        return params


Edit = Callable[[st.DataObject, _Call], Any]


class NotApplicable(Exception):
    """Raised by a breaker that cannot break the base case it was given (a mask with no entries)."""


@dataclass(frozen=True)
class Breaker:
    """One way to break a valid call, and the error class the spec decides for it.

    ``edit`` changes the call; what it returns (if not ``None``) is added to
    :attr:`InvalidCall.what`. ``applies`` says which ops it can break.
    """

    name: str
    error: type[CallError]
    edit: Edit
    applies: Callable[[str], bool] = lambda op: True
    worded_by_backend: bool = False
    native_lengths: bool = False
    #: Whether it breaks the cotangents of ``vjp`` (a backend without reverse mode skips it).
    reverse_mode: bool = False

    def draw(self, data: st.DataObject, base: Case) -> InvalidCall | None:
        """Break a deep copy of ``base``'s call (the base itself is left untouched).

        ``None`` when this breaker cannot break ``base`` (see :class:`NotApplicable`).
        """
        call = _Call(base.spec, list(copy.deepcopy(base.args)), copy.deepcopy(base.kwargs))
        if call.sequence:
            call.args[1] = [dict(layer) for layer in call.args[1]]
            state = call.kwargs.get("initial_state")
            call.kwargs["initial_state"] = None if state is None else [dict(s) for s in state]
        try:
            detail = self.edit(data, call)
        except NotApplicable:
            return None
        native = (
            self.native_lengths
            and isinstance(call.kwargs.get("lengths"), np.ndarray)
            and data.draw(st.booleans(), label="lengths as the backend's array")
        )
        what = self.name if detail is None else f"{self.name} ({detail})"
        return InvalidCall(
            base.spec.op,
            what,
            call.args,
            call.kwargs,
            self.error,
            self.worded_by_backend,
            native,
            reverse_mode=call.reverse_mode,
            cotangents=call.cotangents,
        )


def draw_base(data: st.DataObject, op: str, *, dtypes: Sequence[str]) -> Case:
    """A small valid case of ``op`` with every optional argument present, for breakers to break."""
    time = data.draw(st.integers(0, 4), label="time")
    batch = data.draw(st.integers(1, 3), label="batch")
    lengths = tuple(data.draw(st.lists(st.integers(0, time), min_size=batch, max_size=batch), label="lengths"))
    spec = draw_case(
        data,
        op,
        dtypes=dtypes,
        batch=batch,
        time=time,
        lengths=lengths,
        has_lengths=True,
        initial_state=True,
        zoneout=True,  # every array option passed (qrnn's zoneout mask)
        masks=True,  # and the dropout masks
        scale=1.0,
    )
    return spec.build()


# -- helpers -------------------------------------------------------------------------


def _resized(a: np.ndarray, axis: int, size: int) -> np.ndarray:
    shape = list(a.shape)
    shape[axis] = size
    return np.zeros(shape, dtype=a.dtype)


def _draw_resize(data: st.DataObject, a: np.ndarray, label: str, *, axes: Sequence[int] | None = None) -> np.ndarray:
    """``a`` with one axis made longer or shorter (never negative)."""
    axis = data.draw(st.sampled_from(list(axes if axes is not None else range(a.ndim))), label=f"{label} axis")
    size = data.draw(st.sampled_from([a.shape[axis] + d for d in DELTAS if a.shape[axis] + d >= 0]), label="size")
    return _resized(a, axis, size)


def _draw_rank(data: st.DataObject, a: np.ndarray, label: str) -> np.ndarray:
    """``a`` with an axis added or (if it has one) removed."""
    if a.ndim == 0 or data.draw(st.booleans(), label=f"{label}: add an axis"):
        return a[..., None]
    return np.zeros(a.shape[:-1], dtype=a.dtype)


def _other_float(dtype: np.dtype[Any]) -> np.dtype[Any]:
    return np.dtype("float64" if dtype != np.float64 else "float32")


def _draw_layer(data: st.DataObject, call: _Call) -> int:
    return data.draw(st.integers(0, len(call.params) - 1), label="layer")


def _draw_param(data: st.DataObject, call: _Call, *, required: bool = False) -> tuple[int, str]:
    k = _draw_layer(data, call)
    spec = OPS[call.spec.op]
    options = dict(call.spec.options)
    top = k == len(call.params) - 1
    names = [p.name for p in spec.layer_params(top=top, options=options) if p.name in call.params[k]]
    if required:
        names = [p.name for p in spec.layer_params(top=top, options=options) if p.required]
    return k, data.draw(st.sampled_from(sorted(names)), label="parameter")


def _draw_state_entry(data: st.DataObject, call: _Call) -> tuple[int, str]:
    state = call.kwargs["initial_state"]
    k = data.draw(st.integers(0, len(state) - 1), label="state layer")
    return k, data.draw(st.sampled_from(sorted(state[k])), label="state entry")


def _primitive_arrays(call: _Call) -> list[int]:
    """Positions of a primitive's array arguments that the call passes."""
    return [i for i, a in enumerate(call.args) if isinstance(a, np.ndarray)]


def _positional_names(op: str) -> list[str]:
    return [p.name for p in op_signature(op).parameters.values() if p.kind is p.POSITIONAL_OR_KEYWORD]


def _is_sequence(op: str) -> bool:
    return OPS[op].kind == "sequence"


def _is_primitive(op: str) -> bool:
    return OPS[op].kind == "primitive"


def _has_value_options(op: str) -> bool:
    return bool(OPS[op].value_options)


# -- x, or a primitive's first array -----------------------------------------------


def _x_rank(data: st.DataObject, call: _Call) -> str:
    x = call.args[0]
    rank = data.draw(st.sampled_from([r for r in (1, 2, 4) if r != x.ndim]), label="rank")
    call.args[0] = x.reshape((*x.shape[: rank - 1], -1)) if rank < x.ndim else x.reshape((1,) * (rank - 3) + x.shape)
    return f"rank {rank}"


def _x_dtype(data: st.DataObject, call: _Call) -> str:
    dtype = data.draw(st.sampled_from(BAD_DTYPES), label="dtype")
    call.args[0] = call.args[0].astype(dtype)
    return dtype


def _array_as_list(data: st.DataObject, call: _Call) -> str:
    positions = _primitive_arrays(call) if not call.sequence else [0]
    i = data.draw(st.sampled_from(positions), label="argument position")
    call.args[i] = call.args[i].tolist()
    return f"positional argument {i}"


def _x_features(data: st.DataObject, call: _Call) -> None:
    call.args[0] = _draw_resize(data, call.args[0], "x", axes=[2])


# -- params ------------------------------------------------------------------------


def _param_missing(data: st.DataObject, call: _Call) -> str:
    k, name = _draw_param(data, call, required=True)
    del call.params[k][name]
    return f"params[{k}] without {name!r}"


def _param_unknown(data: st.DataObject, call: _Call) -> str:
    k = _draw_layer(data, call)
    key = data.draw(st.sampled_from(UNKNOWN_KEYS), label="key")
    call.params[k][key] = np.zeros(3, dtype=call.args[0].dtype)
    return f"params[{k}][{key!r}]"


def _param_misshapen(data: st.DataObject, call: _Call) -> str:
    k, name = _draw_param(data, call)
    a = call.params[k][name]
    # A size only the params fix (qrnn's window K, read off w's last axis) takes any value >= 1 there.
    spec = OPS[call.spec.op]
    free = set(spec.init_sizes)
    layout = {p.name: p for p in spec.layer_params(top=k == len(call.params) - 1, options=dict(call.spec.options))}
    axes = [i for i, e in enumerate(layout[name].shape) if not symbols(e) & free]
    call.params[k][name] = _draw_resize(data, a, f"params[{k}][{name!r}]", axes=axes)
    return f"params[{k}][{name!r}] of shape {call.params[k][name].shape}"


def _param_rank(data: st.DataObject, call: _Call) -> str:
    k, name = _draw_param(data, call)
    call.params[k][name] = _draw_rank(data, call.params[k][name], name)
    return f"params[{k}][{name!r}] of shape {call.params[k][name].shape}"


def _param_dtype(data: st.DataObject, call: _Call) -> str:
    k, name = _draw_param(data, call)
    a = call.params[k][name]
    dtype = data.draw(st.sampled_from([_other_float(a.dtype), np.dtype("int32")]), label="dtype")
    call.params[k][name] = a.astype(dtype)
    return f"params[{k}][{name!r}] of dtype {dtype}"


def _param_as_list(data: st.DataObject, call: _Call) -> str:
    k, name = _draw_param(data, call)
    call.params[k][name] = call.params[k][name].tolist()
    return f"params[{k}][{name!r}]"


def _params_container(data: st.DataObject, call: _Call) -> str:
    choices: list[tuple[str, Any]] = [
        ("an empty list", []),
        ("a number", 42),
        ("a string", "w_ih"),
        ("None", None),
        ("a layer that is an array", [*call.params[:-1], call.args[0]]),
    ]
    label, value = data.draw(st.sampled_from(choices), label="params")
    call.args[1] = value
    return str(label)


def _too_many_layers(data: st.DataObject, call: _Call) -> str:
    most = OPS[call.spec.op].max_layers or 1
    call.args[1] = [call.params[0], *(dict(call.params[0]) for _ in range(most))]
    return f"{most + 1} layers"


def _window_zero(data: st.DataObject, call: _Call) -> str:
    k = _draw_layer(data, call)
    sizes = sorted(OPS[call.spec.op].init_sizes)
    size = sizes[0] if len(sizes) == 1 else data.draw(st.sampled_from(sizes), label="size")
    _sized(call, k, size, 0)  # a size >= 1 that only the params fix (qrnn's window K)
    return f"params[{k}] with {size} = 0"


def _sized(call: _Call, k: int, size: str, value: int) -> None:
    """Layer ``k``'s params with the size ``size`` (``"H"`` or ``"I"``) set to ``value`` on every axis using it."""
    spec = OPS[call.spec.op]
    options = dict(call.spec.options)
    layout = {p.name: p for p in spec.layer_params(top=k == len(call.params) - 1, options=options)}
    for name, a in call.params[k].items():
        dims = {**spec.fixed_dims(options), "I": 1, "H": 1, "K": 1, size: value}
        shape = [
            evaluate(e, dims) if size in symbols(e) else n for e, n in zip(layout[name].shape, a.shape, strict=True)
        ]
        call.params[k][name] = np.zeros(shape, a.dtype)


def _hidden_zero(data: st.DataObject, call: _Call) -> str:
    k = _draw_layer(data, call)
    _sized(call, k, "H", 0)  # layer k is checked before anything that reads its H (the next layer, the state)
    return f"params[{k}] of hidden size 0"


def _input_zero(data: st.DataObject, call: _Call) -> None:
    call.args[0] = _resized(call.args[0], 2, 0)
    _sized(call, 0, "I", 0)  # params that agree with x: only x's size is at fault


# -- lengths -----------------------------------------------------------------------


def _lengths(call: _Call) -> np.ndarray:
    batch, time = call.args[0].shape[:2]
    return np.full(batch, time, dtype=np.int64)


def _lengths_negative(data: st.DataObject, call: _Call) -> None:
    lengths = _lengths(call)
    lengths[data.draw(st.integers(0, len(lengths) - 1), label="row")] = -data.draw(st.integers(1, 3), label="minus")
    call.kwargs["lengths"] = lengths


def _lengths_beyond_time(data: st.DataObject, call: _Call) -> None:
    lengths = _lengths(call)
    lengths[data.draw(st.integers(0, len(lengths) - 1), label="row")] += data.draw(st.integers(1, 3), label="plus")
    call.kwargs["lengths"] = lengths


def _lengths_dtype(data: st.DataObject, call: _Call) -> str:
    dtype = data.draw(st.sampled_from(["float32", "float64", "bool"]), label="dtype")
    call.kwargs["lengths"] = _lengths(call).astype(dtype)
    return dtype


def _lengths_batch(data: st.DataObject, call: _Call) -> None:
    call.kwargs["lengths"] = _draw_resize(data, _lengths(call), "lengths", axes=[0])


def _lengths_form(data: st.DataObject, call: _Call) -> str:
    lengths = _lengths(call)
    choices: list[tuple[str, Any]] = [("rank 2", lengths[:, None]), ("a number", int(lengths[0])), ("a string", "1")]
    label, value = data.draw(st.sampled_from(choices), label="lengths")
    call.kwargs["lengths"] = value
    return str(label)


# -- initial_state -----------------------------------------------------------------


def _state_layers(data: st.DataObject, call: _Call) -> str:
    state = call.kwargs["initial_state"]
    fewer = data.draw(st.booleans(), label="fewer layers")
    call.kwargs["initial_state"] = state[:-1] if fewer else [*state, state[-1]]
    return f"{len(call.kwargs['initial_state'])} layer(s)"


def _state_keys(data: st.DataObject, call: _Call) -> str:
    state = call.kwargs["initial_state"]
    k, name = _draw_state_entry(data, call)
    if data.draw(st.booleans(), label="drop the entry"):
        del state[k][name]
        return f"initial_state[{k}] without {name!r}"
    state[k]["extra"] = state[k][name]
    return f"initial_state[{k}] with an extra key"


def _state_shape(data: st.DataObject, call: _Call) -> str:
    state = call.kwargs["initial_state"]
    k, name = _draw_state_entry(data, call)
    state[k][name] = _draw_resize(data, state[k][name], f"initial_state[{k}][{name!r}]")
    return f"initial_state[{k}][{name!r}] of shape {state[k][name].shape}"


def _state_dtype(data: st.DataObject, call: _Call) -> None:
    state = call.kwargs["initial_state"]
    k, name = _draw_state_entry(data, call)
    state[k][name] = state[k][name].astype(_other_float(state[k][name].dtype))


def _state_as_list(data: st.DataObject, call: _Call) -> None:
    state = call.kwargs["initial_state"]
    k, name = _draw_state_entry(data, call)
    state[k][name] = state[k][name].tolist()


def _state_container(data: st.DataObject, call: _Call) -> None:
    call.kwargs["initial_state"] = data.draw(st.sampled_from([3, "h", 1.5]), label="initial_state")


# -- options and the form of the call ------------------------------------------------


def _unknown_keyword(data: st.DataObject, call: _Call) -> str:
    taken = set(op_signature(call.spec.op).parameters)
    name = data.draw(st.sampled_from([k for k in OTHER_KEYWORDS if k not in taken]), label="keyword")
    call.kwargs[name] = data.draw(st.sampled_from([None, 1, "tanh", True]), label="value")
    return name


def _option_value(data: st.DataObject, call: _Call) -> str:
    opt = data.draw(st.sampled_from(OPS[call.spec.op].value_options), label="option")
    value = data.draw(st.sampled_from([v for v in BAD_VALUES if not opt.accepts(v)]), label="value")
    call.kwargs[opt.name] = value
    return f"{opt.name}={value!r}"


def _reverse_value(data: st.DataObject, call: _Call) -> str:
    value = data.draw(st.sampled_from([v for v in BAD_VALUES if not isinstance(v, bool)]), label="reverse")
    call.kwargs["reverse"] = value
    return repr(value)


def _too_many_positional(data: st.DataObject, call: _Call) -> None:
    positional = _positional_names(call.spec.op)
    call.args.extend([None] * (len(positional) + 1 - len(call.args)))


def _missing_required(data: st.DataObject, call: _Call) -> None:
    del call.args[1:]  # params (sequence ops), b or u (primitives)


def _positional_and_keyword(data: st.DataObject, call: _Call) -> None:
    call.kwargs[_positional_names(call.spec.op)[0]] = call.args[0]


# -- array options (qrnn's zoneout mask, Phased LSTM's timestamps) ----------------


def _draw_array_option(data: st.DataObject, call: _Call) -> str:
    options = OPS[call.spec.op].array_options
    return str(options[0].name if len(options) == 1 else data.draw(st.sampled_from([o.name for o in options])))


def _mask_shape(data: st.DataObject, call: _Call) -> str:
    name = _draw_array_option(data, call)
    call.kwargs[name] = _draw_resize(data, call.kwargs[name], name)
    return name


def _mask_dtype(data: st.DataObject, call: _Call) -> str:
    name = _draw_array_option(data, call)
    mask = call.kwargs[name]
    dtype = data.draw(st.sampled_from([_other_float(mask.dtype), np.dtype("int32")]), label="dtype")
    call.kwargs[name] = mask.astype(dtype)
    return name


def _mask_values(data: st.DataObject, call: _Call) -> str:
    options = [o for o in OPS[call.spec.op].array_options if o.values is not None]
    opt = options[0] if len(options) == 1 else data.draw(st.sampled_from(options), label="array option")
    mask = call.kwargs[opt.name].copy()
    if mask.size == 0:
        raise NotApplicable("an empty mask (batch or time 0) has no value to break")
    assert opt.values is not None  # as filtered above
    low, high = opt.values[0], opt.values[-1]
    bad = [high + 1.0, low - 1.0, high + 0.5, math.nan]  # outside the closed interval the entries must lie in
    value = data.draw(st.sampled_from(bad), label="value")
    mask.flat[data.draw(st.integers(0, mask.size - 1), label="index")] = value
    call.kwargs[opt.name] = mask
    return f"{opt.name}: {value!r}"


def _clock_backwards(data: st.DataObject, call: _Call) -> str:
    opt = next(o for o in OPS[call.spec.op].array_options if o.nondecreasing)
    stamps = call.kwargs[opt.name].copy()
    batch, time = stamps.shape
    lengths = np.full(batch, time) if call.kwargs.get("lengths") is None else np.asarray(call.kwargs["lengths"])
    rows = [b for b in range(batch) if lengths[b] >= 2]
    if not rows:
        raise NotApplicable("no row has two valid steps whose times could go backwards")
    row = data.draw(st.sampled_from(rows), label="row")
    step = data.draw(st.integers(1, int(lengths[row]) - 1), label="step")
    stamps[row, step] = stamps[row, step - 1] - data.draw(st.sampled_from([0.125, 1.0, 100.0]), label="back by")
    call.kwargs[opt.name] = stamps
    return f"{opt.name}[{row}, {step}]"


def _required_array_missing(data: st.DataObject, call: _Call) -> str:
    names = [o.name for o in OPS[call.spec.op].array_options if o.required]
    name = str(data.draw(st.sampled_from(names), label="array option"))
    del call.kwargs[name]
    return name


def _mask_count(data: st.DataObject, call: _Call) -> str:
    name = _draw_array_option(data, call)
    call.kwargs[name] = [call.kwargs[name]] * (len(call.params) + 1)
    return name


# -- primitives ----------------------------------------------------------------------


def _primitive_shape(data: st.DataObject, call: _Call) -> str:
    layout = OPS[call.spec.op].params
    passed = _primitive_arrays(call)
    # An axis whose size no other array repeats (indrnn_recurrence's T) is free: changing it breaks nothing.
    axes = [
        (i, axis)
        for i in passed
        for axis, name in enumerate(layout[i].shape)
        if any(name in layout[j].shape for j in passed if j != i)
    ]
    i, axis = data.draw(st.sampled_from(axes), label="argument and axis")
    call.args[i] = _draw_resize(data, call.args[i], f"argument {i}", axes=[axis])
    return f"positional argument {i} of shape {call.args[i].shape}"


def _primitive_mixed_dtype(data: st.DataObject, call: _Call) -> str:
    i = data.draw(st.sampled_from(_primitive_arrays(call)[1:]), label="argument position")
    a = call.args[i]
    call.args[i] = a.astype(data.draw(st.sampled_from([_other_float(a.dtype), np.dtype("int32")]), label="dtype"))
    return f"positional argument {i} of dtype {call.args[i].dtype}"


# -- the cotangents of vjp, at the valid call ------------------------------------------


def _reverse_mode(call: _Call) -> dict[str, Any]:
    """Make ``call`` a ``vjp`` with cotangents of every field of its result (ones); return them."""
    result = getattr(rnnspec.get_backend("numpy"), call.spec.op)(*call.args, **call.kwargs)
    fields = {"h": result} if OPS[call.spec.op].kind == "primitive" else result._asdict()
    cotangents: dict[str, Any] = {name: tree_map(np.ones_like, value) for name, value in fields.items()}
    if "state" in cotangents:
        cotangents["state"] = [dict(layer) for layer in cotangents["state"]]
    call.reverse_mode, call.cotangents = True, cotangents
    return cotangents


def _cotangent_paths(cotangents: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Where the cotangents hold an array: ``(field,)`` or ``("state", k, entry)``."""
    paths: list[tuple[Any, ...]] = [(name,) for name in cotangents if name != "state"]
    paths += [("state", k, name) for k, layer in enumerate(cotangents.get("state", ())) for name in layer]
    return paths


def _draw_cotangent(data: st.DataObject, call: _Call) -> tuple[dict[str, Any], tuple[Any, ...]]:
    cotangents = _reverse_mode(call)
    return cotangents, data.draw(st.sampled_from(_cotangent_paths(cotangents)), label="cotangent")


def _set_at(cotangents: dict[str, Any], path: tuple[Any, ...], value: Any) -> str:
    node: Any = cotangents
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return "cotangents" + "".join(f"[{key!r}]" for key in path)


def _misspelt(field: str) -> str:
    return field[:-1] if field.endswith("s") else field + "s"


def _cotangent_misspelt(data: st.DataObject, call: _Call) -> str:
    cotangents = _reverse_mode(call)
    field = data.draw(st.sampled_from(sorted(cotangents)), label="field")
    cotangents[_misspelt(field)] = cotangents.pop(field)
    return f"{_misspelt(field)!r} for {field!r}"


def _cotangent_state_entry(data: st.DataObject, call: _Call) -> str:
    state = _reverse_mode(call)["state"]
    k = data.draw(st.integers(0, len(state) - 1), label="state layer")
    key = data.draw(st.sampled_from(UNKNOWN_STATE_KEYS), label="entry")
    state[k][key] = state[k]["h"] if "h" in state[k] else next(iter(state[k].values()))
    return f"cotangents['state'][{k}][{key!r}]"


def _cotangent_state_layers(data: st.DataObject, call: _Call) -> str:
    cotangents = _reverse_mode(call)
    state = cotangents["state"]
    fewer = data.draw(st.booleans(), label="fewer layers")
    cotangents["state"] = state[:-1] if fewer else [*state, dict(state[-1])]
    return f"{len(cotangents['state'])} layer(s)"


def _cotangent_broadcastable(data: st.DataObject, call: _Call) -> str:
    cotangents, path = _draw_cotangent(data, call)
    a = _at(cotangents, path)
    axes = [axis for axis, n in enumerate(a.shape) if n != 1]
    if not axes:
        raise NotApplicable("every axis has size 1: no broadcastable shape differs")
    axis = data.draw(st.sampled_from(axes), label="axis of size 1")
    where = _set_at(cotangents, path, _resized(a, axis, 1))
    return f"{where} of shape {_at(cotangents, path).shape}"


def _cotangent_misshapen(data: st.DataObject, call: _Call) -> str:
    cotangents, path = _draw_cotangent(data, call)
    a = _at(cotangents, path)
    if data.draw(st.booleans(), label="change the rank"):
        where = _set_at(cotangents, path, _draw_rank(data, a, "cotangent"))
    else:
        where = _set_at(cotangents, path, _draw_resize(data, a, "cotangent"))
    return f"{where} of shape {_at(cotangents, path).shape}"


def _cotangent_dtype(data: st.DataObject, call: _Call) -> str:
    cotangents, path = _draw_cotangent(data, call)
    dtype = data.draw(st.sampled_from(BAD_DTYPES), label="dtype")
    return f"{_set_at(cotangents, path, _at(cotangents, path).astype(dtype))} of dtype {dtype}"


def _cotangent_as_list(data: st.DataObject, call: _Call) -> str:
    cotangents, path = _draw_cotangent(data, call)
    return _set_at(cotangents, path, _at(cotangents, path).tolist())


def _cotangents_container(data: st.DataObject, call: _Call) -> str:
    cotangents = _reverse_mode(call)
    choices: list[tuple[str, Any]] = [("a list of the fields", list(cotangents.values())), ("a number", 3),
                                      ("a string", "outputs")]  # fmt: skip
    label, value = data.draw(st.sampled_from(choices), label="cotangents")
    call.cotangents = value
    return str(label)


def _at(cotangents: dict[str, Any], path: tuple[Any, ...]) -> Any:
    node: Any = cotangents
    for key in path:
        node = node[key]
    return node


def _has_array_options(op: str) -> bool:
    return bool(OPS[op].array_options)


def _has_value_restricted_arrays(op: str) -> bool:
    return any(o.values is not None for o in OPS[op].array_options)


def _has_nondecreasing_arrays(op: str) -> bool:
    return any(o.nondecreasing for o in OPS[op].array_options)


def _has_required_arrays(op: str) -> bool:
    return any(o.required for o in OPS[op].array_options)


def _has_per_layer_arrays(op: str) -> bool:
    return any(o.per_layer for o in OPS[op].array_options)


def _has_free_sizes(op: str) -> bool:
    return bool(OPS[op].init_sizes)


def _stacks_few_layers(op: str) -> bool:
    return OPS[op].max_layers is not None


#: Every breaker, with the error class the spec decides for it.
BREAKERS: tuple[Breaker, ...] = (
    Breaker("x of the wrong rank", ShapeError, _x_rank),
    Breaker("x of a dtype no op takes", DtypeError, _x_dtype),
    Breaker("an array argument that is a list", DtypeError, _array_as_list, worded_by_backend=True),
    Breaker("x of an input size the params do not take", ParameterError, _x_features, _is_sequence),
    Breaker("a required parameter left out", ParameterError, _param_missing, _is_sequence),
    Breaker("a parameter of an unknown name", ParameterError, _param_unknown, _is_sequence),
    Breaker("a misshapen parameter", ParameterError, _param_misshapen, _is_sequence),
    Breaker("a parameter of the wrong rank", ParameterError, _param_rank, _is_sequence),
    Breaker("a parameter of another dtype than x", DtypeError, _param_dtype, _is_sequence),
    Breaker("a parameter that is a list", DtypeError, _param_as_list, _is_sequence, worded_by_backend=True),
    Breaker("params that are not mappings", ParameterError, _params_container, _is_sequence, worded_by_backend=True),
    Breaker("more layers than the op stacks", ParameterError, _too_many_layers, _stacks_few_layers),
    Breaker("a window of width 0", ParameterError, _window_zero, _has_free_sizes),
    Breaker("a layer of hidden size 0", ParameterError, _hidden_zero, _is_sequence),
    Breaker("x and params of input size 0", ShapeError, _input_zero, _is_sequence),
    Breaker("a negative length", LengthsError, _lengths_negative, native_lengths=True),
    Breaker("a length beyond time", LengthsError, _lengths_beyond_time, native_lengths=True),
    Breaker("lengths of a non-integer dtype", LengthsError, _lengths_dtype, native_lengths=True),
    Breaker("lengths of another batch than x", LengthsError, _lengths_batch, native_lengths=True),
    Breaker("lengths of the wrong form", LengthsError, _lengths_form, native_lengths=True),
    Breaker("an initial state for another number of layers", ShapeError, _state_layers, _is_sequence),
    Breaker("an initial state with a missing or extra entry", ShapeError, _state_keys, _is_sequence),
    Breaker("a misshapen initial state entry", ShapeError, _state_shape, _is_sequence),
    Breaker("an initial state entry of another dtype than x", DtypeError, _state_dtype, _is_sequence),
    Breaker("an initial state entry that is a list", DtypeError, _state_as_list, _is_sequence, worded_by_backend=True),
    Breaker("an initial state that is not a sequence of mappings", ShapeError, _state_container, _is_sequence),
    Breaker("an unknown keyword", UnknownArgumentError, _unknown_keyword),
    Breaker("an option value outside its allowed set", OptionError, _option_value, _has_value_options),
    Breaker("reverse that is not a bool", OptionError, _reverse_value),
    Breaker("too many positional arguments", UnknownArgumentError, _too_many_positional),
    Breaker("a required argument left out", UnknownArgumentError, _missing_required),
    Breaker("an argument given by position and by keyword", UnknownArgumentError, _positional_and_keyword),
    Breaker("an array option of the wrong shape", ShapeError, _mask_shape, _has_array_options),
    Breaker("an array option of another dtype than x", DtypeError, _mask_dtype, _has_array_options),
    Breaker("an array option with values outside its set", OptionError, _mask_values, _has_value_restricted_arrays),
    Breaker("array options for another number of layers", ShapeError, _mask_count, _has_per_layer_arrays,
            worded_by_backend=True),
    Breaker("timestamps that go back in time", OptionError, _clock_backwards, _has_nondecreasing_arrays),
    Breaker("a required array option left out", UnknownArgumentError, _required_array_missing,
            _has_required_arrays),
    Breaker("a misshapen array argument", ShapeError, _primitive_shape, _is_primitive),
    Breaker("an array argument of another dtype than the first", DtypeError, _primitive_mixed_dtype, _is_primitive),
    Breaker("a cotangent under a misspelt field", UnknownArgumentError, _cotangent_misspelt, reverse_mode=True),
    Breaker("a state cotangent of an unknown entry", UnknownArgumentError, _cotangent_state_entry, _is_sequence,
            reverse_mode=True),
    Breaker("state cotangents for another number of layers", ShapeError, _cotangent_state_layers, _is_sequence,
            reverse_mode=True),
    Breaker("a cotangent of a shape that broadcasts to its field's", ShapeError, _cotangent_broadcastable,
            reverse_mode=True),
    Breaker("a misshapen cotangent", ShapeError, _cotangent_misshapen, reverse_mode=True),
    Breaker("a cotangent of a dtype that is not floating", DtypeError, _cotangent_dtype, reverse_mode=True),
    Breaker("a cotangent that is a list", DtypeError, _cotangent_as_list, worded_by_backend=True, reverse_mode=True),
    Breaker("cotangents that are not a mapping", ShapeError, _cotangents_container, reverse_mode=True),
)  # fmt: skip


def breakers_for(op: str) -> tuple[Breaker, ...]:
    """The breakers that apply to ``op``."""
    return tuple(b for b in BREAKERS if b.applies(op))
