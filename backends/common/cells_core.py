"""The cell core: one step of a sequence op, for the step-by-step cells of ``torch.nn``, Flax NNX and Keras.

A cell holds one layer of an op's params in the canonical layout (the names and
shapes of a one-layer layer's, so ``load_canonical``, ``numpy_params`` and the
parameter files work as the layers') and computes one step: it calls the
backend op with ``T = 1``, the step's input, its per-step arrays and the state
it is given as ``initial_state``, and returns the step's output, the state the
op returns (the op's own state dict: Skip RNN's carries ``update_prob`` and
``cum_update_prob``, QRNN's the window ``x_prev`` of the last ``K - 1``
inputs) and the op's per-step extras (Skip RNN's ``update_gate`` and
``update_prob``, ACT's ``ponder_*``). Every op chunks exactly (a run cut into
pieces, each starting from the state the one before returned, equals the whole
run), so stepping a cell over a sequence is the layer over it.

This module owns, once for every op and framework: which ops have a cell and
what they are called (:func:`cell_ops`, :func:`cell_name`), the state's
entries and shapes, the start state (the record's ``start``, or the learnt
``h0``/``c0``), the checks of a step's ``x``, ``state`` and per-step arrays
naming the cell and the argument, and the step itself (:class:`CellCore`). A
framework's cell base class adapts its Module/Layer protocol and supplies the
hooks of :class:`~.layers.LayerCore` and a few of its own; a cell of one op is
then a declaration, ``class SkipGRUCell(Base): op = "skip_gru"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from rnnspec.errors import DtypeError, OptionError, ShapeError, UnknownArgumentError
from rnnspec.ops import OPS, OptionSpec
from rnnspec.shapes import evaluate

from .arrays import ArrayOps
from .layers import CELL_BIASES, LayerCore, layer_backend, time_fields
from .state import layer_dims, start_state

__all__ = ["CellCore", "cell_name", "cell_ops", "step_options"]


def cell_ops() -> tuple[str, ...]:
    """The ops that have a cell: every sequence op with a layer, in the records' order."""
    return tuple(op for op, spec in OPS.items() if spec.kind == "sequence" and spec.layer is not None)


def cell_name(op: str) -> str:
    """The class name of ``op``'s cell in every framework: its layer's, with ``Cell`` (``SkipGRUCell``)."""
    return f"{OPS[op].layer}Cell"


def step_options(op: str) -> tuple[OptionSpec, ...]:
    """The array options a step of ``op``'s cell takes: those with one entry per step (Phased LSTM's
    ``timestamps``, QRNN's ``zoneout_mask``), which a step takes without their time axis, and those of
    one array for every step (``recurrent_mask`` ``(B, H)``), taken as they are. An option read between
    the layers of a stack (``dropout_mask``) has no place in one layer."""
    return tuple(o for o in OPS[op].array_options if not getattr(o, "between_layers", False))


def _per_step(option: OptionSpec) -> bool:
    return tuple(option.shape[:2]) == ("B", "T")


def _fits(have: tuple[Any, ...], want: tuple[Any, ...]) -> bool:
    """Whether shape ``have`` is ``want``, a size unknown on either side (None, in a Keras trace) fitting any."""
    return len(have) == len(want) and all(w is None or h is None or w == h for w, h in zip(want, have, strict=True))


def _dtype_name(array: Any) -> str:
    return str(getattr(array, "dtype", "")).removeprefix("torch.").removeprefix("<dtype: '").removesuffix("'>")


class CellCore(LayerCore):
    """What every framework's cell of an op does: one layer of params, one step of the op.

    A framework's base class supplies :class:`~.layers.LayerCore`'s hooks (for a
    stack of one layer), :attr:`array_ops`, :meth:`_add_time` and
    :meth:`_first_step`, and calls :meth:`_configure_cell` in its constructor
    and :meth:`step` in its call.
    """

    #: The framework's array operations (its ``sequence.ARRAY_OPS``), which make the start state.
    array_ops: ClassVar[ArrayOps]
    #: The extra per-step result fields (Skip RNN's ``update_gate``...; empty: ``return_extras`` is refused).
    extra_fields: ClassVar[tuple[str, ...]] = ()

    input_size: int
    hidden_size: int
    return_extras: bool
    #: The cell biases that are no parameters (built without bias): zeros for the op.
    left_out: frozenset[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "op" in cls.__dict__:
            cls.extra_fields = time_fields(cls.op)[1:]

    @classmethod
    def _takes(cls, keyword: str) -> bool:
        return keyword != "return_extras" or bool(cls.extra_fields)

    @classmethod
    def _docstring(cls) -> str:
        spec = OPS[cls.op]
        return (
            f"One step of {spec.name} (one layer): the cell of "
            f":class:`{spec.layer}`, with its params under the same names.\n\n{super()._docstring()}"
        )

    def _configure_cell(
        self, *, input_size: int, hidden_size: int, bias: Any, flags: Mapping[str, Any], options: Mapping[str, Any]
    ) -> None:
        """Check and keep what every cell is built with: its sizes, whether its cell biases are trained
        (``bias``, among the ``flags`` under the framework's name), ``return_extras`` (among the ``flags``)
        and the op's and init_params' options.

        Raises
        ------
        rnnspec.errors.OptionError
            ``return_extras=True`` for an op without extra fields, a flag that is no bool, a bad option.
        """
        name = type(self).__name__
        return_extras = flags.get("return_extras", False)
        if return_extras is not False and not self.extra_fields:
            expected = f"False ({self.op} has no extra result fields)"
            raise OptionError(name, "return_extras", expected, repr(return_extras))
        self._configure(num_layers=1, checkpoint_every=None, flags=flags, options=options)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.return_extras = bool(return_extras)
        self.left_out = frozenset() if bias else CELL_BIASES

    def _draw_cell(self, *, seed: int, input_size: int | None = None) -> dict[str, Any]:
        """The params of one layer from :func:`rnnspec.init_params` (float64), drawn with ``seed``."""
        size = self.input_size if input_size is None else input_size
        return self._draw(input_size=size, hidden_size=self.hidden_size, seed=seed)[0]

    def describe(self) -> str:
        """The constructor's arguments that differ from the defaults, as ``repr`` shows them."""
        parts = [f"{self.input_size}", f"{self.hidden_size}"]
        if self.left_out:
            parts.append("bias=False")
        if self.return_extras:
            parts.append("return_extras=True")
        parts += [f"{k}={v!r}" for k, v in {**dict(self.options), **dict(self.init_options)}.items()]
        return ", ".join(parts)

    # -- the state ------------------------------------------------------------------------

    @property
    def state_names(self) -> tuple[str, ...]:
        """The entries of the state a step takes and returns, in the record's order."""
        return tuple(s.name for s in OPS[self.op].layer_state(top=True, options=dict(self.options)))

    def state_shapes(self) -> dict[str, tuple[int, ...]]:
        """Each state entry's shape after the batch axis (``x_prev``: ``(K - 1, input_size)``)."""
        options = dict(self.options)
        dims = layer_dims(self.op, self.canonical_params()[0], options, top=True)
        return {
            s.name: tuple(evaluate(e, dims) for e in s.shape)
            for s in OPS[self.op].layer_state(top=True, options=options)
        }

    def start_state(self, like: Any) -> dict[str, Any]:
        """The state a sequence starts from, for the batch of ``like`` (an array ``(batch, ...)`` of the params'
        dtype): the record's start of each entry (zeros; Skip RNN's ``update_prob`` one), or the learnt
        ``h0``/``c0`` (``trainable_initial_state=True``), through which gradients reach them."""
        return start_state(self.op, like, self.canonical_params(), dict(self.options), self.array_ops)[0]

    # -- the step -------------------------------------------------------------------------

    def _add_time(self, a: Any) -> Any:
        """``a`` ``(batch, ...)`` with a time axis of one step, ``(batch, 1, ...)``."""
        raise NotImplementedError

    def _first_step(self, a: Any) -> Any:
        """``a`` ``(batch, 1, ...)`` without its time axis."""
        raise NotImplementedError

    def _run_op(self, x: Any, params: list[dict[str, Any]], state: dict[str, Any], arrays: dict[str, Any]) -> Any:
        """The op over ``x`` ``(batch, 1, input_size)`` from ``state`` (its public entry point: checked)."""
        method = getattr(layer_backend(self.backend_name), self.op)
        return method(x, params, **dict(self.options), **arrays, initial_state=[state])

    def step(self, x: Any, state: Any, arrays: Mapping[str, Any]) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        """One step: ``(y, new_state, extras)`` from the step's input ``x`` ``(batch, input_size)``.

        Parameters
        ----------
        x
            The step's input, of the params' dtype.
        state
            The state (a mapping of the entries :attr:`state_names`, each ``(batch, ...)``), or None: the
            start (:meth:`start_state`).
        arrays
            The op's array options for this step (:func:`step_options`): a per-step one without its time
            axis (Phased LSTM's ``timestamps`` ``(batch,)``, QRNN's ``zoneout_mask`` ``(batch, hidden_size)``).

        Returns
        -------
        y, new_state, extras
            The output ``(batch, hidden_size)``; the op's final state (a dict, what the next step takes);
            the extra per-step fields by name, each ``(batch,)`` (empty for an op without).

        Raises
        ------
        rnnspec.errors.ShapeError, rnnspec.errors.DtypeError
            An ``x``, state entry or per-step array of the wrong shape or dtype, named.
        rnnspec.errors.UnknownArgumentError
            A state that is not of the op's entries, an unknown per-step array, or a required one missing.
        """
        name = type(self).__name__
        params = self.canonical_params()
        dtype = _dtype_name(next(iter(params[0].values())))
        shape = tuple(getattr(x, "shape", ()))
        if len(shape) != 2 or (shape[1] is not None and int(shape[1]) != self.input_size):
            expected = f"an array (batch, input_size) = (batch, {self.input_size}), one step's input"
            raise ShapeError(name, "x", expected, f"shape {shape}", backend=self.backend_name)
        if _dtype_name(x) != dtype:
            expected = f"dtype {dtype}, the cell's parameters' (cast x, or the cell)"
            raise DtypeError(name, "x", expected, f"dtype {_dtype_name(x)}", backend=self.backend_name)
        batch = shape[0]
        options = dict(self.options)
        dims = {**layer_dims(self.op, params[0], options, top=True), "B": batch}
        given = self._step_arrays(name, arrays, dims)
        if state is None:
            state = self.start_state(x)
        state = self._check_state(name, state, batch, dtype)
        result = self._run_op(self._add_time(x), params, state, given)
        extras = {f: self._first_step(getattr(result, f)) for f in self.extra_fields}
        return self._first_step(result.outputs), dict(result.state[0]), extras

    def _step_arrays(self, name: str, arrays: Mapping[str, Any], dims: Mapping[str, Any]) -> dict[str, Any]:
        """The step's array options as the op takes them over one step, checked: known, the required ones
        given, each of its shape (a per-step one without its time axis, which is added)."""
        options = {o.name: o for o in step_options(self.op)}
        for key in arrays:
            if key not in options:
                expected = f"one of {sorted(options)}" if options else f"no array option ({self.op} takes none)"
                raise UnknownArgumentError(name, key, expected, repr(key), backend=self.backend_name)
        given = {}
        for key, option in options.items():
            value = arrays.get(key)
            if value is None:
                if option.required:
                    expected = f"the step's {key}, an array of shape {option.shape} without its time axis"
                    raise UnknownArgumentError(name, key, expected, "None", backend=self.backend_name)
                continue
            tail = option.shape[2:] if _per_step(option) else option.shape[1:]
            want = (dims["B"], *(evaluate(e, dims) for e in tail))
            have = tuple(getattr(value, "shape", ()))
            if not _fits(have, want):
                layout = f"{option.shape} without its time axis (one step's)" if _per_step(option) else option.shape
                raise ShapeError(name, key, f"shape {want}: {layout}", f"shape {have}", backend=self.backend_name)
            given[key] = self._add_time(value) if _per_step(option) else value
        return given

    def _check_state(self, name: str, state: Any, batch: Any, dtype: str) -> dict[str, Any]:
        """``state`` as a dict of the op's entries, each ``(batch, *shape)`` of the params' dtype."""
        names = self.state_names
        if not isinstance(state, Mapping) or sorted(state) != sorted(names):
            actual = f"a mapping of keys {sorted(state)}" if isinstance(state, Mapping) else type(state).__name__
            expected = f"None or a mapping of the entries {list(names)} (the state a step returns)"
            raise UnknownArgumentError(name, "state", expected, actual, backend=self.backend_name)
        for key, tail in self.state_shapes().items():
            value = state[key]
            want = (batch, *tail)
            have = tuple(getattr(value, "shape", ()))
            if not _fits(have, want):
                raise ShapeError(name, f"state[{key!r}]", f"shape {want}", f"shape {have}", backend=self.backend_name)
            if _dtype_name(value) != dtype:
                expected = f"dtype {dtype}, the cell's parameters'"
                actual = f"dtype {_dtype_name(value)}"
                raise DtypeError(name, f"state[{key!r}]", expected, actual, backend=self.backend_name)
        return {key: state[key] for key in names}
