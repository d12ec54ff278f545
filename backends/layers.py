"""What the layers of the framework backends share, framework-free.

The PyTorch modules (:mod:`rnnspec.backends.torch.nn`), the Flax NNX modules
(:mod:`rnnspec.backends.jax.nnx`) and the Keras layers
(:mod:`rnnspec.backends.tensorflow.keras`) hold an op's params in the canonical
layout and call their backend's op. This module holds what does not depend on
the framework: the backend a layer calls, the check of the option
``checkpoint_every`` a layer passes to its op, and :class:`ParamFiles`, the
``save_params``/``load_params`` methods every layer has, and the checks that
every layer's ``load_canonical`` makes first (:func:`check_canonical`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, Protocol

import numpy as np

from rnnspec.backend import Backend
from rnnspec.errors import DtypeError, OptionError, ParameterError, ShapeError
from rnnspec.ops import OPS
from rnnspec.param_files import load_numpy_params, save_params

__all__ = [
    "CELL_BIASES",
    "TIME_FIELDS",
    "ParamFiles",
    "check_canonical",
    "check_checkpoint_every",
    "check_layer_input",
    "layer_backend",
]

#: The cell biases that a layer without bias leaves at zero (the gate and halting biases stay trainable).
CELL_BIASES = frozenset({"b_ih", "b_hh", "b"})
#: Results' fields with a time axis (transposed for time-major layers).
TIME_FIELDS = ("outputs", "update_gate", "update_prob", "ponder_steps", "ponder_remainder", "ponder_cost")


#: The backends the layers call, by name, loaded at a layer's first use rather than at import.
_BACKENDS: dict[str, Backend] = {}


def layer_backend(name: str) -> Backend:
    """The backend called ``name``, loaded at the first call of a layer rather than at import."""
    # A plain dict, not functools.cache: torch.compile traces layers and warns on (refuses) cached functions.
    backend = _BACKENDS.get(name)
    if backend is None:
        import rnnspec

        backend = _BACKENDS[name] = rnnspec.get_backend(name)
    return backend


def check_layer_input(layer: str, x: Any, *, input_size: int, dtype: str, backend: str, batch_first: bool) -> None:
    """Refuse an ``x`` that does not fit the layer, naming ``x``.

    The layer's own params are right by construction, so a feature size or dtype that disagrees
    with them is the caller's ``x``: without this check the op's validation would blame the weights
    (``params[0]['w_ih']: expected shape (3*H, I) = (24, 5)``). ``dtype`` is the params' dtype name.
    """
    layout = "(batch, time, input_size)" if batch_first else "(time, batch, input_size)"
    shape = tuple(getattr(x, "shape", ()))
    if len(shape) != 3:
        raise ShapeError(layer, "x", f"a 3-d array {layout}", f"shape {shape}", backend=backend)
    if shape[2] is not None and int(shape[2]) != input_size:
        expected = f"{layout} with input_size={input_size}, the layer's"
        raise ShapeError(layer, "x", expected, f"shape {shape}", backend=backend)
    given = str(getattr(x, "dtype", "")).removeprefix("torch.")
    if given != dtype:
        expected = f"dtype {dtype}, the layer's parameters' (cast x, or the layer)"
        raise DtypeError(layer, "x", expected, f"dtype {given}", backend=backend)


def check_checkpoint_every(layer: str, op: str, value: Any) -> int | None:
    """A layer's ``checkpoint_every``, checked by the spec as the op checks it.

    Parameters
    ----------
    layer
        The layer's name, for the error.
    op
        The op the layer calls.
    value
        None (every step's activations kept) or the segment length K, an integer >= 1.

    Returns
    -------
    int or None
        ``value`` as a Python integer (a NumPy integer too), or None.

    Raises
    ------
    rnnspec.errors.OptionError
        ``value`` is neither, naming the layer and the argument ``checkpoint_every``.
    """
    option = OPS[op].option("checkpoint_every")
    if not option.accepts(value):
        raise OptionError(layer, option.name, option.describe_allowed(), repr(value))
    return None if value is None else int(value)


class _Layer(Protocol):
    """What :class:`ParamFiles` needs of a layer."""

    #: The op of the spec.
    op: ClassVar[str]
    #: The name of the backend whose op the layer calls (its arrays are that backend's).
    backend_name: ClassVar[str]
    #: The number of layers of the stack.
    num_layers: int

    @property
    def options(self) -> Mapping[str, Any] | Iterable[tuple[str, Any]]:
        """The op's options the layer was built with (those that may fix the params' layout among them)."""
        ...

    def canonical_params(self) -> Sequence[Mapping[str, Any]]:
        """The params as the op takes them, one mapping per layer."""
        ...

    def load_canonical(self, params: Sequence[Mapping[str, Any]]) -> None:
        """Copy canonical params into the layer, checked and cast to its dtype."""
        ...


class ParamFiles:
    """A layer's ``save_params`` and ``load_params``: its params in rnnspec's parameter files.

    A mixin of each framework's layer base class, which supplies what
    :class:`_Layer` lists. The ``load_canonical`` that a subclass defines is
    wrapped to run :func:`check_canonical` first, so that every framework's
    layers refuse extra keys and non-numeric arrays alike, before any weight
    is written.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get(_LOAD_CANONICAL)
        if own is not None and not getattr(own, "_checks_canonical", False):
            setattr(cls, _LOAD_CANONICAL, _checking(own))

    def save_params(self: _Layer, path: str | os.PathLike[str]) -> None:
        """Write the params to a parameter file (``.npz`` or ``.safetensors``, by the suffix), exactly.

        The file records the op; :meth:`load_params` of a layer of the same op
        and sizes, on any backend, reads it back (see :func:`rnnspec.save_params`).
        """
        params = self.canonical_params()
        save_params(path, params, backend=layer_backend(self.backend_name), op=self.op, options=dict(self.options))

    def load_params(self: _Layer, path: str | os.PathLike[str]) -> None:
        """Copy the params of a file written by :func:`rnnspec.save_params` (or a layer's :meth:`save_params`) in.

        The file is checked against the layer's op and options first; the values
        are then cast to the layer's dtype, as ``load_canonical`` does.

        Raises
        ------
        rnnspec.errors.ParamFileError
            The file is truncated, corrupt, pickled (refused), or not of this op.
        rnnspec.errors.ParameterError
            Its layers or shapes differ from the layer's.
        """
        params = load_numpy_params(path, op=self.op, options=dict(self.options), widen_bfloat16=True)
        self.load_canonical(params)


_LOAD_CANONICAL = "load_canonical"
#: dtype kinds that params may have: bool, signed and unsigned integers, floats.
_NUMERIC_KINDS = "biuf"


def _checking(load: Callable[[Any, Sequence[Mapping[str, Any]]], None]) -> Callable[..., None]:
    @functools.wraps(load)
    def load_canonical(self: _Layer, params: Sequence[Mapping[str, Any]]) -> None:
        check_canonical(self, params)
        load(self, params)

    load_canonical._checks_canonical = True  # type: ignore[attr-defined]
    return load_canonical


def check_canonical(layer: _Layer, params: Any) -> None:
    """Refuse what a layer's ``load_canonical`` would otherwise ignore, or fail on deep in its framework.

    Parameters
    ----------
    layer
        The layer that loads ``params``.
    params
        Canonical params: a sequence of mappings of named arrays, one per layer.

    Raises
    ------
    rnnspec.errors.ParameterError
        ``params`` is no sequence of mappings, or a layer's mapping has a key
        that the layer does not hold (which would be dropped without a word).
    rnnspec.errors.DtypeError
        An entry is a NumPy array (or a list, a scalar) of no numeric dtype,
        such as an object array.

    Notes
    -----
    A wrong number of layers, a missing key and a wrong shape are left to the
    layer's own ``load_canonical``, which reports them.
    """
    name = type(layer).__name__
    if isinstance(params, (Mapping, str, bytes)) or not isinstance(params, Sequence):
        given = "one mapping" if isinstance(params, Mapping) else _type_name(params)
        raise ParameterError(name, "params", f"a sequence of {layer.num_layers} mappings (one per layer)", given)
    for k, values in enumerate(params):
        if not isinstance(values, Mapping):
            raise ParameterError(name, f"params[{k}]", "a mapping of named arrays", _type_name(values))
    if len(params) != layer.num_layers:
        return
    for k, (values, held) in enumerate(zip(params, _held_keys(layer), strict=True)):
        extra = sorted(repr(key) for key in values if key not in held)
        if extra:
            raise ParameterError(
                name, f"params[{k}]", f"only the keys {sorted(held)}", f"also the keys [{', '.join(extra)}]"
            )
        for key in sorted(held):
            if key in values:
                _check_numeric(name, f"params[{k}][{key!r}]", values[key])


def _held_keys(layer: _Layer) -> list[frozenset[str]]:
    """The keys of each layer of the stack."""
    if getattr(layer, "built", True):  # only Keras layers have ``built``
        return [frozenset(held) for held in layer.canonical_params()]
    # An unbuilt Keras layer holds no weights yet: the keys its op takes stand in.
    spec, options, n = OPS[layer.op], dict(layer.options), layer.num_layers
    return [frozenset(p.name for p in spec.layer_params(top=k == n - 1, options=options)) for k in range(n)]


def _check_numeric(name: str, argument: str, value: Any) -> None:
    # A framework's array is numeric by construction, and converting it could copy it from a device: only NumPy
    # arrays and what becomes one (lists, scalars) are looked at.
    if not isinstance(value, (np.ndarray, np.generic)) and hasattr(value, "shape"):
        return
    expected = "a numeric array (bool, integer or float)"
    try:
        host = np.asarray(value)
    except (TypeError, ValueError) as err:
        raise DtypeError(name, argument, expected, f"{_type_name(value)} ({err})") from err
    if host.dtype.kind not in _NUMERIC_KINDS:
        raise DtypeError(name, argument, expected, f"dtype {host.dtype}")


def _type_name(value: Any) -> str:
    kind = type(value)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
