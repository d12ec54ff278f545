"""The layer core: what the ``torch.nn``, Flax NNX and Keras layers share, framework-free, driven by the op records.

The PyTorch modules (:mod:`rnnspec.backends.torch.nn`), the Flax NNX modules
(:mod:`rnnspec.backends.jax.nnx`) and the Keras layers
(:mod:`rnnspec.backends.tensorflow.keras`) hold an op's params in the canonical
layout and call their backend's op. Each framework's module adapts its
Module/Layer protocol only; this module owns, once, for every op:

- the constructor's options (:func:`layer_options`): the op's value options
  from its record (:class:`rnnspec.ops.OpSpec`), the init-only options of
  :func:`rnnspec.init_params` (``init_style``, ``trainable_initial_state``,
  ``initial_state_std``, ``seq_len``/``mag``/``last_layer_init``, ``window``)
  and a framework's own (Keras' ``budget_loss_weight``), with their defaults;
  their check, naming the layer and the argument; the layer class's
  ``__signature__`` and docstring listing them (:class:`LayerCore`);
- initialisation through :func:`rnnspec.init_params` and the canonical
  parameter exchange (``load_canonical``, ``numpy_params``, the cell biases
  left at zero without bias: :data:`CELL_BIASES`), over the names and shapes
  each layer of the stack holds (:class:`ParamSlots`);
- the forward call of the backend op, with the per-step results transposed for
  time-major layers (:class:`SizedLayer`, the PyTorch-style constructor of the
  ``torch.nn`` and NNX layers);
- ``save_params``/``load_params`` (:class:`ParamFiles`) and the checks every
  ``load_canonical`` makes first (:func:`check_canonical`).

A framework's layer base class derives from :class:`LayerCore` (or
:class:`SizedLayer`) and its framework's class, and supplies a few hooks: how
its arrays are read, converted and written. A layer of one op is then a
declaration, ``class SkipGRU(Base): op = "skip_gru"``.
"""

from __future__ import annotations

import functools
import inspect
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol

import numpy as np

from rnnspec.backend import Backend
from rnnspec.errors import CallError, DtypeError, OptionError, ParameterError, ShapeError, UnknownArgumentError
from rnnspec.init import init_options, init_params
from rnnspec.memo import memoized
from rnnspec.ops import OPS
from rnnspec.param_files import load_numpy_params, save_params
from rnnspec.shapes import evaluate

__all__ = [
    "CELL_BIASES",
    "DROPOUT",
    "RECURRENT_DROPOUT",
    "ZONEOUT",
    "LayerCore",
    "LayerOption",
    "ParamFiles",
    "ParamSlots",
    "SizedLayer",
    "check_canonical",
    "check_checkpoint_every",
    "check_layer_input",
    "check_probability",
    "dropout_masks",
    "input_size_of",
    "layer_backend",
    "layer_options",
    "time_fields",
]

#: The cell biases that a layer without bias leaves at zero (the gate and halting biases stay trainable).
CELL_BIASES = frozenset({"b_ih", "b_hh", "b"})


def time_fields(op: str) -> tuple[str, ...]:
    """The result fields of ``op`` with a time axis (every one but the state): transposed for time-major layers."""
    return tuple(f for f in OPS[op].result_fields if f != "state")


# -- the constructor's options ----------------------------------------------------------------


@dataclass(frozen=True)
class LayerOption:
    """One keyword option of a layer's constructor.

    ``kind`` says where it goes: ``"op"`` to the op at every call (from the
    record), ``"init"`` to :func:`rnnspec.init_params` only, ``"layer"`` to the
    framework's layer itself (Keras' ``budget_loss_weight``), checked and
    normalised by ``check(layer, name, value)``.
    """

    name: str
    default: Any
    annotation: str
    description: str
    kind: Literal["op", "init", "layer"] = "layer"
    check: Callable[[str, str, Any], Any] | None = None


def check_probability(layer: str, name: str, value: Any) -> float:
    """``value`` as a float when it is a probability in [0, 1) (a real number, not a bool; NaN refused), else an
    :class:`rnnspec.errors.OptionError` naming the layer and the argument."""
    real = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    if not (real and 0.0 <= value < 1.0):
        raise OptionError(layer, name, "a probability in [0, 1) (a float)", repr(value))
    return float(value)


#: QRNN's zoneout (Krueger et al. 2017, as the QRNN paper uses it), the same option in every framework's layer.
ZONEOUT = LayerOption(
    "zoneout",
    0.0,
    "float",
    "The zoneout probability p (0 <= p < 1; 0: none). In training the layer draws a Bernoulli(p) "
    "``zoneout_mask`` (batch, time, hidden) per layer at every call, so that each f is 1 with probability p; in "
    "evaluation it passes a mask filled with p, so that f is its expectation f + (1 - f) * p. A "
    "``zoneout_mask`` given to the call is used instead.",
    check=check_probability,
)

#: Dropout between stacked layers, torch.nn's ``dropout`` (not Keras' input dropout): for ops with a ``dropout_mask``.
DROPOUT = LayerOption(
    "dropout",
    0.0,
    "float",
    "The dropout probability p between stacked layers (0 <= p < 1; 0: none), as ``torch.nn.LSTM``'s "
    "``dropout`` (not Keras' ``dropout``, which drops the inputs): in training the layer draws a "
    "Bernoulli(1 - p) / (1 - p) ``dropout_mask`` (batch, time, hidden) for the outputs of every layer but the "
    "top one at every call; in evaluation it passes none. With ``num_layers=1`` there is no boundary (a "
    "warning, as torch.nn gives).",
    check=check_probability,
)

#: Recurrent dropout with one mask per layer shared over time, Keras' ``recurrent_dropout``: for ops with a
#: ``recurrent_mask``.
RECURRENT_DROPOUT = LayerOption(
    "recurrent_dropout",
    0.0,
    "float",
    "The recurrent dropout probability p (0 <= p < 1; 0: none), as Keras' ``recurrent_dropout``: in training "
    "the layer draws a Bernoulli(1 - p) / (1 - p) ``recurrent_mask`` (batch, hidden) per layer at every call, "
    "the same at every step, on the h_{t-1} that enters the recurrent product; in evaluation it passes none.",
    check=check_probability,
)

#: The dropout options and the op's array option each one fills.
_DROPOUT_OPTIONS = ((DROPOUT, "dropout_mask"), (RECURRENT_DROPOUT, "recurrent_mask"))


def dropout_masks(
    layer: Any, *, batch: Any, time: Any, draw: Callable[[tuple[Any, ...], float], Any], layers: int | None = None
) -> dict[str, list[Any]]:
    """The dropout masks of one training call of ``layer``, batch-major, from ``draw``.

    ``layer`` holds ``op``, ``num_layers``, ``dropout`` and ``recurrent_dropout`` (0 where its op lacks the mask);
    ``draw(shape, p)`` returns a Bernoulli(1 - p) / (1 - p) array of ``shape`` in the layer's dtype from the
    framework's generator. ``layers`` (default: the layer's) is the depth of the stack one op call runs (1 for
    one layer of a torch bidirectional stack, which drops between layers itself). A probability of 0 draws
    nothing; the result has ``dropout_mask`` (one (batch, time, hidden) per boundary) and ``recurrent_mask``
    (one (batch, hidden) per layer) where drawn.
    """
    depth = layer.num_layers if layers is None else layers
    hidden = int(getattr(layer, "hidden_size", None) or layer.units)
    out: dict[str, list[Any]] = {}
    dropout, recurrent = getattr(layer, "dropout", 0.0), getattr(layer, "recurrent_dropout", 0.0)
    if dropout > 0 and depth > 1:
        out["dropout_mask"] = [draw((batch, time, hidden), dropout) for _ in range(depth - 1)]
    if recurrent > 0:
        out["recurrent_mask"] = [draw((batch, hidden), recurrent) for _ in range(depth)]
    return out


#: What the init-only options of :func:`rnnspec.init_params` mean for a layer: (annotation, description).
_INIT_OPTIONS: dict[str, tuple[str, str]] = {
    "init_style": (
        "str",
        "``'torch'`` (PyTorch's uniform init) or ``'tf1'`` (TF1's cells: glorot-uniform kernels, gate biases 1; "
        "see ``rnnspec.init_params``).",
    ),
    "trainable_initial_state": (
        "bool",
        "Learn ``h0`` (and an lstm's ``c0``) per layer, used when no ``initial_state`` is passed.",
    ),
    "initial_state_std": (
        "float",
        "The learnt ``h0`` (and ``c0``) start from ``N(0, std**2)``; 0.0: zeros. Needs ``trainable_initial_state``.",
    ),
    "seq_len": (
        "int | None",
        "With ``mag`` and ``last_layer_init``, the range of ``u`` (see ``rnnspec.init_params``).",
    ),
    "mag": ("float | None", "The bound of ``u`` is ``mag ** (1/seq_len)``; None: init_params' 2.0, only with seq_len."),
    "last_layer_init": ("bool", "The top layer's ``u`` from ``mag ** (-1/seq_len)`` up (``seq_len`` required)."),
    "window": ("int", "K, the width of the causal convolution."),
    "period_range": (
        "tuple[float, float]",
        "``(low, high)``: the periods ``tau ~ exp(U(log low, log high))`` (Phased LSTM; the paper's (1, 1000)).",
    ),
    "ratio_on": ("float", "The open ratio ``r_on`` every unit starts with (Phased LSTM; the paper's 0.05)."),
}
#: Init options a layer leaves out of init_params at None (their default there differs): init_params refuses
#: IndRNN's mag without seq_len only when it is given, so the layers' default None must not give it.
_GIVEN_ONLY = frozenset({"mag"})
#: What a layer adds to the op's summary, whatever its framework.
_NOTES: dict[str, str] = {
    "skip_rnn": "``b_gate`` starts at 1 (Campos et al. 2018).",
    "skip_lstm": "``b_gate`` starts at 1 (Campos et al. 2018).",
    "skip_gru": "``b_gate`` starts at 1 (Campos et al. 2018).",
    "act": "Graves 2016; ``b_halt`` starts at 1. ``w_ih`` has ``input_size + 1`` columns (the last reads the "
    "flag). One layer only.",
    "indrnn": "Li et al. 2018, with the authors' init. No constraint is applied to ``u`` when the layer runs: "
    "apply :func:`rnnspec.indrnn_constrain` after optimizer steps.",
    "qrnn": "Bradbury et al. 2016.",
    "phased_lstm": "Neil et al. 2016, with the paper's init of ``tau``, ``s`` and ``r_on``.",
}


@memoized
def layer_options(op: str) -> tuple[LayerOption, ...]:
    """The options a layer of ``op`` takes, besides the sizes and flags every layer takes, in order.

    The op's value options come from its record (``checkpoint_every``, which
    every layer takes, aside), the init-only options from
    :func:`rnnspec.init_params`'s table, each with the default the layers have
    always had (the record's and init_params', but IndRNN's ``mag``: None).
    """
    spec = OPS[op]
    out = []
    for opt in spec.value_options:
        if opt.name == "checkpoint_every":
            continue
        kind = type(opt.allowed[0] if opt.allowed else opt.default).__name__
        description = f"{opt.description[0].upper()}{opt.description[1:]}: {opt.describe_allowed()}."
        out.append(LayerOption(opt.name, opt.default, kind, description, "op"))
    for name, default in init_options(op).items():
        annotation, description = _INIT_OPTIONS[name]
        out.append(LayerOption(name, None if name in _GIVEN_ONLY else default, annotation, description, "init"))
    arrays = {o.name for o in spec.array_options}
    out += [option for option, mask in _DROPOUT_OPTIONS if mask in arrays]
    return tuple(out)


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


def input_size_of(layer: str, op: str, first: Mapping[str, Any], options: Mapping[str, Any]) -> int:
    """The input size that the first layer's params ``first`` imply (for a layer built from its params).

    Raises
    ------
    rnnspec.errors.ParameterError
        ``first`` lacks the op's first weight, named.
    """
    param = OPS[op].layer_params(top=False, options=options)[0]
    if param.name not in first:
        raise ParameterError(layer, "params[0]", f"a key {param.name!r}", repr(sorted(first)))
    # The first weight reads the input along one axis, as I plus a constant (act's flag column).
    axis = next(j for j, expr in enumerate(param.shape) if "I" in expr)
    offset = evaluate(param.shape[axis], {"I": 0})
    return int(np.shape(first[param.name])[axis]) - offset


# -- the backend and the input ------------------------------------------------------------------


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
    given = _dtype_name(x)
    if given != dtype:
        expected = f"dtype {dtype}, the layer's parameters' (cast x, or the layer)"
        raise DtypeError(layer, "x", expected, f"dtype {given}", backend=backend)


def _dtype_name(array: Any) -> str:
    return str(getattr(array, "dtype", "")).removeprefix("torch.")


# -- parameter files and the checks of load_canonical -----------------------------------------


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


# -- one layer of the stack ---------------------------------------------------------------------


class ParamSlots:
    """The names and shapes of one layer's params, in the spec's order, and those left out without bias.

    A mixin of each framework's container of one layer's arrays; :meth:`hold`
    records the slots and gives the arrays to create.
    """

    #: ``(name, shape)`` of every array the op takes, in the spec's order.
    shapes: tuple[tuple[str, tuple[int, ...]], ...]
    #: The names that are no trainable parameters (``bias=False``): zeros for the op.
    left_out: tuple[str, ...]

    def hold(self, arrays: Mapping[str, np.ndarray], left_out: frozenset[str]) -> dict[str, np.ndarray]:
        """Record the slots of ``arrays`` (one layer's, from :func:`rnnspec.init_params`); return the kept ones."""
        self.shapes = tuple((name, tuple(int(n) for n in array.shape)) for name, array in arrays.items())
        self.left_out = tuple(name for name in arrays if name in left_out)
        return {name: array for name, array in arrays.items() if name not in left_out}

    def gather(self, read: Callable[[str], Any], zeros: Callable[[tuple[int, ...]], Any]) -> dict[str, Any]:
        """The arrays as the op takes them, in the spec's order: ``read(name)``, or ``zeros(shape)`` if left out."""
        return {name: zeros(shape) if name in self.left_out else read(name) for name, shape in self.shapes}


# -- the layer ---------------------------------------------------------------------------------


class _Signature:
    """A layer class's ``__signature__``: its constructor with the op's options spelt out (``help``, IDEs).

    Only the class has it: an instance's signature stays its call's.
    """

    def __get__(self, instance: object, owner: type[LayerCore]) -> inspect.Signature:
        if instance is not None or getattr(owner, "op", None) is None:
            raise AttributeError("__signature__")
        return owner.constructor_signature()


class LayerCore(ParamFiles):
    """What every framework's layer of an op does, on the framework's arrays through a few hooks.

    A framework's base class calls :meth:`_configure` in its constructor and
    supplies :meth:`canonical_params`, :meth:`_layer_slots`, :meth:`_as_array`,
    :meth:`_set_param` and :meth:`_to_numpy`; a subclass that sets ``op`` gets
    its docstring and ``__signature__`` from the op's record.
    """

    #: The op of the spec.
    op: ClassVar[str]
    #: The backend whose op the layer calls.
    backend_name: ClassVar[str]
    #: The framework's own options of this layer, beyond the op's (Keras' ``budget_loss_weight``).
    extra_options: ClassVar[tuple[LayerOption, ...]] = ()
    #: The name of the constructor's argument that init_params calls ``hidden_size`` (Keras': ``units``).
    hidden_argument: ClassVar[str] = "hidden_size"
    #: The numpydoc entries of the framework's own constructor arguments, first in every layer's docstring.
    common_parameters: ClassVar[str] = ""

    __signature__: ClassVar[Any] = _Signature()

    num_layers: int
    checkpoint_every: int | None
    #: The op's options, as the op takes them (a mapping, or pairs where a framework wants static data).
    options: Any
    #: The options of init_params only (they shape or initialise params; the op never sees them).
    init_options: Any

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "op" in cls.__dict__:
            cls.__doc__ = cls._docstring()

    # -- the constructor --------------------------------------------------------------------

    @classmethod
    def all_options(cls) -> tuple[LayerOption, ...]:
        """The layer's keyword options: the op's, init_params', then the framework's own."""
        return layer_options(cls.op) + cls.extra_options

    @classmethod
    def _takes(cls, keyword: str) -> bool:
        """Whether the constructor's argument ``keyword`` belongs in this layer's signature."""
        return True

    @classmethod
    def constructor_signature(cls) -> inspect.Signature:
        """The constructor's signature, with the layer's options in place of ``**options``."""
        own = list(inspect.signature(cls.__init__).parameters.values())[1:]
        kept = [p for p in own if p.name != "options" and cls._takes(p.name)]
        options = [
            inspect.Parameter(o.name, inspect.Parameter.KEYWORD_ONLY, default=o.default, annotation=o.annotation)
            for o in cls.all_options()
        ]
        # The options first among the keyword-only arguments, where the constructors have always listed them.
        at = next((j for j, p in enumerate(kept) if p.kind >= inspect.Parameter.KEYWORD_ONLY), len(kept))
        return inspect.Signature(kept[:at] + options + kept[at:])

    @classmethod
    def _docstring(cls) -> str:
        spec = OPS[cls.op]
        parts = [f"{spec.summary} rnnspec op ``{spec.name}``."]
        if spec.name in _NOTES:
            parts.append(_NOTES[spec.name])
        own = inspect.cleandoc(cls.__dict__.get("__doc__") or "")
        if own:
            parts.append(own)
        entries = [cls.common_parameters.strip("\n")] if cls.common_parameters else []
        for o in cls.all_options():
            entries.append(f"{o.name} : {o.annotation}, default {o.default!r}\n    {o.description}")
        parts.append("Parameters\n----------\n" + "\n".join(entries))
        return "\n\n".join(parts)

    def _configure(
        self, *, num_layers: int, checkpoint_every: Any, flags: Mapping[str, Any], options: Mapping[str, Any]
    ) -> None:
        """Check and keep what every layer is built with.

        Parameters
        ----------
        num_layers, checkpoint_every
            As given (init_params and the op check the first).
        flags
            The constructor's True/False arguments by name (``bias``, ``batch_first``, ...).
        options
            The keyword options given, checked against :meth:`all_options`; the
            framework's own are set as attributes of the same name.

        Raises
        ------
        rnnspec.errors.UnknownArgumentError
            A keyword the layer does not take (a TypeError), named.
        rnnspec.errors.OptionError
            A flag that is no bool, a bad ``checkpoint_every`` or framework option, named.
        """
        name = type(self).__name__
        known = {o.name: o for o in self.all_options()}
        for key in options:
            if key not in known:
                expected = f"an option of {name}, {sorted(known)}" if known else f"no option ({name} takes none)"
                raise UnknownArgumentError(name, str(key), expected, repr(key))
        for flag, value in flags.items():
            if not isinstance(value, bool):
                raise OptionError(name, flag, "True or False", repr(value))
        values = {key: options.get(key, o.default) for key, o in known.items()}
        for key, o in known.items():
            if o.kind == "layer":
                setattr(self, key, values[key] if o.check is None else o.check(name, key, values[key]))
        self.checkpoint_every = check_checkpoint_every(name, self.op, checkpoint_every)
        self.num_layers = num_layers
        dropout = getattr(self, "dropout", 0.0)
        if dropout > 0 and num_layers == 1:
            # torch.nn's warning: the option acts between stacked layers only. The caller's line: the constructor's.
            message = f"{name}: dropout={dropout!r} acts between stacked layers, and num_layers=1 has none"
            warnings.warn(message, UserWarning, stacklevel=4 if isinstance(self, SizedLayer) else 3)
        self.options = self._hold({k: v for k, v in values.items() if known[k].kind == "op"})
        # An init option left at None that init_params has another default for is not given to init_params.
        self.init_options = self._hold(
            {k: v for k, v in values.items() if known[k].kind == "init" and not (k in _GIVEN_ONLY and v is None)}
        )

    def _hold(self, options: dict[str, Any]) -> Any:
        """``options`` as the framework keeps them (a dict; NNX keeps pairs, static data of its graph)."""
        return options

    def keyword_options(self) -> dict[str, Any]:
        """The layer's keyword options as given to the constructor (its config), defaults filled in."""
        given = {**dict(self.options), **dict(self.init_options)}
        return {
            o.name: getattr(self, o.name) if o.kind == "layer" else given.get(o.name, o.default)
            for o in self.all_options()
        }

    # -- parameters -------------------------------------------------------------------------

    def _draw(self, *, input_size: int, hidden_size: int, seed: int) -> list[dict[str, np.ndarray]]:
        """Fresh params from :func:`rnnspec.init_params` in float64; its errors re-raised under the layer's name."""
        try:
            return init_params(
                self.op,
                input_size=input_size,
                hidden_size=hidden_size,
                num_layers=self.num_layers,
                seed=seed,
                dtype="float64",
                **dict(self.options),
                **dict(self.init_options),
            )
        except CallError as err:
            argument = self.hidden_argument if err.argument == "hidden_size" else err.argument
            raise type(err)(type(self).__name__, argument, err.expected, err.actual) from None

    def canonical_params(self) -> list[dict[str, Any]]:
        """The params as the op takes them: one dict per layer of the framework's arrays."""
        raise NotImplementedError

    def _layer_slots(self) -> Sequence[ParamSlots]:
        """The slots of each layer of the stack."""
        raise NotImplementedError

    def _as_array(self, k: int, key: str, value: Any) -> Any:
        """``value`` as the array that :meth:`_set_param` writes (a copy, in the layer's dtype where it casts)."""
        raise NotImplementedError

    def _set_param(self, k: int, key: str, value: Any) -> None:
        """Write ``value`` (from :meth:`_as_array`, of the right shape) into layer ``k``'s param ``key``."""
        raise NotImplementedError

    @staticmethod
    def _to_numpy(value: Any) -> np.ndarray:
        """A host copy of one of the framework's arrays."""
        raise NotImplementedError

    def _prepare_load(self, params: Sequence[Mapping[str, Any]]) -> None:
        """Make the layer ready for ``params`` (a Keras layer not built yet builds for their input size)."""

    def load_canonical(self, params: Sequence[Mapping[str, Any]]) -> None:
        """Copy canonical params (one mapping per layer, NumPy or the framework's arrays) into the layer.

        The values are cast to the layer's dtype; left-out cell biases (no bias)
        stay zero whatever ``params`` holds.

        Raises
        ------
        rnnspec.errors.ParameterError
            A wrong number of layers, or a missing or misshapen entry, named.
        """
        name = type(self).__name__
        if len(params) != self.num_layers:
            expected = f"a sequence of {self.num_layers} mappings (one per layer)"
            raise ParameterError(name, "params", expected, f"{len(params)} layers")
        self._prepare_load(params)
        for k, (slots, values) in enumerate(zip(self._layer_slots(), params, strict=True)):
            for key, shape in slots.shapes:
                if key not in values:
                    raise ParameterError(name, f"params[{k}]", f"a key {key!r}", repr(sorted(values)))
                if key in slots.left_out:
                    continue
                value = self._as_array(k, key, values[key])
                if tuple(value.shape) != shape:
                    actual = f"shape {tuple(value.shape)}"
                    raise ParameterError(name, f"params[{k}][{key!r}]", f"shape {shape}", actual)
                self._set_param(k, key, value)

    def numpy_params(self) -> list[dict[str, np.ndarray]]:
        """A copy of the params as NumPy arrays (float32 for half-precision layers)."""
        return [{k: self._to_numpy(v) for k, v in layer.items()} for layer in self.canonical_params()]


class SizedLayer(LayerCore):
    """A layer built, as ``torch.nn``'s, from ``input_size``, ``hidden_size``, ``num_layers``, ``bias`` and
    ``batch_first``, called on ``x`` in either layout (the ``torch.nn`` and Flax NNX layers).

    The framework's base class supplies :meth:`_prepare_call` and :meth:`_swap`.

    Parameters
    ----------
    input_size, hidden_size, num_layers, bias, batch_first
        I, H, the depth of the stack, whether the cell biases are trained, the layout of ``x``.
    checkpoint_every
        None, or the segment length K of gradient checkpointing.
    **options
        The op's options, listed by each layer.
    """

    input_size: int
    hidden_size: int
    bias: bool
    batch_first: bool

    def _configure_sizes(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int,
        bias: bool,
        batch_first: bool,
        checkpoint_every: Any,
        options: Mapping[str, Any],
    ) -> list[dict[str, np.ndarray]]:
        """Check and keep the constructor's arguments; return the params drawn with seed 0.

        init_params checks the sizes and every option then, naming the argument under the layer's name.
        """
        flags = {"bias": bias, "batch_first": batch_first}
        self._configure(num_layers=num_layers, checkpoint_every=checkpoint_every, flags=flags, options=options)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        self.batch_first = batch_first
        return self._draw(seed=0)

    def _draw(
        self, *, seed: int, input_size: int | None = None, hidden_size: int | None = None
    ) -> list[dict[str, np.ndarray]]:
        input_size = self.input_size if input_size is None else input_size
        hidden_size = self.hidden_size if hidden_size is None else hidden_size
        return super()._draw(input_size=input_size, hidden_size=hidden_size, seed=seed)

    @property
    def left_out(self) -> frozenset[str]:
        """The cell biases that are no parameters (``bias=False``)."""
        return frozenset() if self.bias else CELL_BIASES

    def describe(self) -> str:
        """The constructor's arguments that differ from the defaults, as ``repr`` shows them."""
        parts = [f"{self.input_size}", f"{self.hidden_size}"]
        if self.num_layers != 1:
            parts.append(f"num_layers={self.num_layers}")
        if not self.bias:
            parts.append("bias=False")
        if not self.batch_first:
            parts.append("batch_first=False")
        parts += [f"{k}={v!r}" for k, v in {**dict(self.options), **dict(self.init_options)}.items()]
        parts += [f"{o.name}={getattr(self, o.name)!r}" for o, _ in _DROPOUT_OPTIONS if getattr(self, o.name, 0.0)]
        if self.checkpoint_every is not None:
            parts.append(f"checkpoint_every={self.checkpoint_every}")
        return ", ".join(parts)

    # -- the call ------------------------------------------------------------------------------

    def _prepare_call(self, x: Any, initial_state: Any, arrays: dict[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
        """``x``, ``initial_state`` and the per-step arrays as the op takes them (refused or converted)."""
        return x, initial_state, arrays

    @staticmethod
    def _swap(a: Any) -> Any:
        """``a`` with its first two axes swapped (time-major <-> batch-major)."""
        raise NotImplementedError

    def _swap_arrays(self, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, (list, tuple)):  # one per layer
            return [self._swap(v) for v in value]
        return self._swap(value)

    def _call_op(
        self,
        x: Any,
        initial_state: Any,
        lengths: Any,
        reverse: bool,
        arrays: Mapping[str, Any],
        draw: Callable[[tuple[int, ...], float], Any] | None = None,
    ) -> Any:
        """Run the op over ``x`` in the layer's layout; ``arrays`` are the op's per-step options (``zoneout_mask``).

        ``draw`` (in training; None in evaluation) draws the dropout masks (:func:`dropout_masks`) that
        ``arrays`` does not give.
        """
        name = f"{type(self).__name__} layer"
        per_step = OPS[self.op].per_step[1:]
        for key in arrays:
            if key not in per_step:
                expected = f"one of {list(per_step)}" if per_step else "no per-step option (this op takes none)"
                raise UnknownArgumentError(name, key, expected, repr(key), backend=self.backend_name)
        x, initial_state, given = self._prepare_call(x, initial_state, dict(arrays))
        params = self.canonical_params()
        dtype = _dtype_name(next(iter(params[0].values())))
        check_layer_input(
            name, x, input_size=self.input_size, dtype=dtype, backend=self.backend_name, batch_first=self.batch_first
        )
        if not self.batch_first:
            x = self._swap(x)
            given = {k: self._swap_arrays(v) for k, v in given.items()}
        if draw is not None:  # batch-major now: (batch, time) are x's first two axes
            masks = dropout_masks(self, batch=int(x.shape[0]), time=int(x.shape[1]), draw=draw)
            given = {**masks, **{k: v for k, v in given.items() if v is not None}}
        method = getattr(layer_backend(self.backend_name), self.op)
        result = method(
            x,
            params,
            **dict(self.options),
            **given,
            lengths=lengths,
            initial_state=initial_state,
            reverse=reverse,
            checkpoint_every=self.checkpoint_every,
        )
        if self.batch_first:
            return result
        return result._replace(**{f: self._swap(getattr(result, f)) for f in time_fields(self.op)})
