"""The object users call: a loaded backend whose methods are the spec's ops.

``rnnspec.get_backend(name)`` returns a :class:`Backend`. Its op methods fix
the Python signature of every op (the registry checks implementations against
them), validate each call once for every backend, and then run the backend's
:class:`~rnnspec.implementation.Implementation`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ParamSpec, TypeVar

import numpy as np

from .cotangents import check_cotangents
from .docstrings import render_op_docstring
from .errors import CallError, OptionError, UnknownArgumentError, UnsupportedOpError
from .implementation import Implementation
from .memo import memoized
from .ops import OPS
from .result_check import check_result
from .results import ACTResult, SequenceResult, SkipResult
from .tree import tree_leaves, tree_map
from .validate import CallSizes, checked_call

__all__ = ["LATER_KEYWORDS", "Backend", "op_signature"]

P = ParamSpec("P")
R = TypeVar("R")

Params = Mapping[str, Any] | Sequence[Mapping[str, Any]]
InitialState = Sequence[Mapping[str, Any]] | Mapping[str, Any] | None


def _op(stub: Callable[P, R]) -> Callable[P, R]:
    """Turn a signature-only method into the validated op of the same name."""
    name = stub.__name__

    @functools.wraps(stub)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        self, *rest = args
        assert isinstance(self, Backend)
        return self._call(name, rest, kwargs)  # type: ignore[no-any-return]

    call.__doc__ = render_op_docstring(OPS[name])
    return call


@memoized  # made once per op: every call reads one, and the validation runs inside compiled models
def op_signature(op: str) -> inspect.Signature:
    """The spec's signature of ``op``, without ``self``."""
    sig = inspect.signature(getattr(Backend, op))
    return sig.replace(parameters=list(sig.parameters.values())[1:])


#: Keywords the spec gained after backends were written against it. An implementation written
#: before one of them may lack it: the :class:`Backend` then leaves it out of the call while it
#: has its default, and refuses any other value with an :class:`~rnnspec.errors.OptionError`
#: naming the backend (the values would be the same, but not the memory the caller asked for).
LATER_KEYWORDS: tuple[str, ...] = ("checkpoint_every", "dropout_mask", "recurrent_mask")


def _lacking(implementation: Implementation) -> dict[str, tuple[str, ...]]:
    """For each op of ``implementation``, the :data:`LATER_KEYWORDS` its method does not take."""
    lacking: dict[str, tuple[str, ...]] = {}
    for op in implementation.ops:
        method = getattr(implementation, op, None)
        if not callable(method):
            continue
        try:
            names = inspect.signature(method).parameters
        except (TypeError, ValueError):
            continue
        missing = tuple(k for k in LATER_KEYWORDS if k not in names and k in op_signature(op).parameters)
        if missing:
            lacking[op] = missing
    return lacking


class Backend:
    """A loaded backend. Create it with :func:`rnnspec.get_backend`.

    Attributes
    ----------
    name
        The backend's registered name.
    version
        The version of the distribution that registered it.
    implementation
        The backend's :class:`~rnnspec.implementation.Implementation`.
    """

    def __init__(self, name: str, implementation: Implementation, *, version: str) -> None:
        self.name = name
        self.version = version
        self.implementation = implementation
        self._compiled: dict[str, Callable[..., Any]] = {}
        # Read once here, not per call: the validation runs inside torch.compile'd models.
        self._lacking = _lacking(implementation)

    def __repr__(self) -> str:
        return f"<rnnspec backend {self.name!r} {self.version} on {self.implementation.framework}>"

    @property
    def ops(self) -> tuple[str, ...]:
        """The spec ops this backend implements."""
        return tuple(self.implementation.ops)

    def lacking(self, op: str) -> tuple[str, ...]:
        """The keywords of :data:`LATER_KEYWORDS` that this backend's ``op`` method does not take:
        it predates them, and runs only with their defaults."""
        return self._lacking.get(op, ())

    def from_numpy(self, tree: Any) -> Any:
        """Convert NumPy arrays (in nested dicts/lists/tuples) to this backend's arrays."""
        return self.implementation.from_numpy(tree)

    def to_numpy(self, tree: Any) -> Any:
        """Convert this backend's arrays (in nested dicts/lists/tuples) to NumPy arrays."""
        return self.implementation.to_numpy(tree)

    def check_call(self, op: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Validate a call of ``op`` as the op method would; return the normalised
        arguments its implementation receives (see :mod:`rnnspec.implementation`).

        Raises
        ------
        CallError
            The call breaks the spec; the message names op, argument, expected, actual.
        UnsupportedOpError
            This backend does not implement ``op``.
        """
        return self._checked(op, args, kwargs)[0]

    def _checked(self, op: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], CallSizes]:
        """:meth:`check_call`, also returning the sizes the call fixes (for :meth:`vjp`'s cotangents)."""
        if op not in OPS:
            raise UnknownArgumentError(op, "op", f"an op of the spec {sorted(OPS)}", repr(op), backend=self.name)
        if op not in self.implementation.ops:
            raise UnsupportedOpError(
                f"backend {self.name!r} does not implement op {op!r}; it implements {list(self.ops)}"
            )
        try:
            arguments = _bind(op, op_signature(op), args, kwargs)
            if self.implementation.accepts_numpy:
                arguments = {
                    name: value if name == "lengths" else self._from_numpy_argument(op, name, value)
                    for name, value in arguments.items()
                }
            normalised, sizes = checked_call(OPS[op], arguments, self.implementation)
            for name in self._lacking.get(op, ()):
                default = op_signature(op).parameters[name].default
                value = normalised.pop(name, default)  # the validation may leave out an array option at its default
                if value is not default and value != default:  # a mask: a tuple of arrays, never None
                    raise OptionError(
                        op,
                        name,
                        f"its default {default!r}: this backend's {op}() predates the option",
                        "arrays" if isinstance(value, tuple) else repr(value),
                    )
            return normalised, sizes
        except CallError as err:
            raise err.with_backend(self.name) from None

    def _from_numpy_argument(self, op: str, name: str, value: Any) -> Any:
        """``value`` with its NumPy arrays made this backend's (:attr:`Implementation.accepts_numpy`);
        a conversion the backend refuses (float64 without jax's x64) names the op and the argument."""
        if not any(isinstance(leaf, np.ndarray) for leaf in tree_leaves(value)):
            return value
        try:
            return tree_map(lambda a: self.implementation.asarray(a) if isinstance(a, np.ndarray) else a, value)
        except CallError as err:
            raise type(err)(op, name, err.expected, err.actual) from None

    def vjp(self, op: str, cotangents: Mapping[str, Any], *args: Any, **options: Any) -> dict[str, Any]:
        """Reverse mode of ``op`` at the call ``op(*args, **options)``, by this backend's autodiff.

        Parameters
        ----------
        op
            The op's name.
        cotangents
            Cotangents of the result fields, in the result's structure; missing
            fields or entries (or ``None``) count as zero. For a sequence op:
            ``"outputs"``, ``"state"`` (one mapping per layer, any of its entries;
            one mapping alone for one layer) and any other field of the result;
            for a primitive: ``"h"``. Each is an array of this backend, of any
            floating dtype, of exactly its field's shape (none is broadcast).
        *args, **options
            The call, as it would be passed to the op method.

        Returns
        -------
        dict
            For a sequence op: ``"x"``, ``"params"`` (in the structure of
            ``params``: a mapping for a mapping) and ``"initial_state"`` (one
            mapping per layer, also when none was given); for a primitive one
            entry per array argument (``"a"``, ``"b"``, ``"initial"``; ``"pre"``,
            ``"u"``, ``"initial"``).

        Raises
        ------
        CallError
            The call breaks the spec, as for the op method, or the cotangents do: a key
            that is no field of the result (``UnknownArgumentError``), a state for another
            number of layers or an array of another shape (``ShapeError``), a cotangent
            that is no floating array of this backend (``DtypeError``).
        UnsupportedOpError
            The backend has no reverse mode (its capabilities lack ``"vjp"``).
        """
        if "vjp" not in self.implementation.capabilities:
            raise UnsupportedOpError(f"backend {self.name!r} declares no reverse mode (capability 'vjp')")
        normalised, sizes = self._checked(op, args, options)
        try:
            # Here, not in each backend's autodiff: there a misspelt field reads as no cotangent and
            # a (batch, time, 1) array broadcasts, with no error at all.
            if self.implementation.accepts_numpy:
                cotangents = self._from_numpy_argument(op, "cotangents", cotangents)
            read = check_cotangents(OPS[op], cotangents, sizes, self.implementation)
        except CallError as err:
            raise err.with_backend(self.name) from None
        grads = self.implementation.vjp(op, normalised, read)
        params = options.get("params", args[1] if len(args) > 1 else None)
        if OPS[op].kind == "sequence" and isinstance(params, Mapping):
            grads["params"] = grads["params"][0]  # the structure the caller used
        return grads

    def compiled(self, op: str) -> Callable[..., Any]:
        """``op`` under this backend's compiler, validated like the op method.

        The returned callable takes the op's arguments; the backend compiles
        once per op (and the framework per shape and option values).

        Raises
        ------
        UnsupportedOpError
            The backend has no compiled mode (its capabilities lack ``"compile"``).
        """
        if "compile" not in self.implementation.capabilities:
            raise UnsupportedOpError(f"backend {self.name!r} declares no compiled mode (capability 'compile')")
        if op not in OPS:
            raise UnknownArgumentError(op, "op", f"an op of the spec {sorted(OPS)}", repr(op), backend=self.name)
        if op not in self.implementation.ops:
            raise UnsupportedOpError(
                f"backend {self.name!r} does not implement op {op!r}; it implements {list(self.ops)}"
            )
        if op not in self._compiled:
            self._compiled[op] = self.implementation.compile(op)
        run = self._compiled[op]

        def call(*args: Any, **options: Any) -> Any:
            return run(**self.check_call(op, *args, **options))

        call.__name__ = op
        return call

    def _call(self, op: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        normalised = self.check_call(op, *args, **kwargs)
        result = getattr(self.implementation, op)(**normalised)
        # The caller never gets a result of another structure or shape than the spec's (None, a lost layer...).
        check_result(self.name, op, normalised, result, self.implementation)
        return result

    # -- classic recurrences ----------------------------------------------------

    @_op
    def rnn(
        self,
        x: Any,
        params: Params,
        *,
        activation: str = "tanh",
        dropout_mask: Any = None,
        recurrent_mask: Any = None,
        lengths: Any = None,
        initial_state: InitialState = None,
        reverse: bool = False,
        checkpoint_every: int | None = None,
    ) -> SequenceResult: ...

    @_op
    def lstm(
        self,
        x: Any,
        params: Params,
        *,
        dropout_mask: Any = None,
        recurrent_mask: Any = None,
        lengths: Any = None,
        initial_state: InitialState = None,
        reverse: bool = False,
        checkpoint_every: int | None = None,
    ) -> SequenceResult: ...

    @_op
    def gru(
        self,
        x: Any,
        params: Params,
        *,
        reset_after: bool = True,
        dropout_mask: Any = None,
        recurrent_mask: Any = None,
        lengths: Any = None,
        initial_state: InitialState = None,
        reverse: bool = False,
        checkpoint_every: int | None = None,
    ) -> SequenceResult: ...

    # -- Skip RNN: the state-update gate ----------------------------------------

    @_op
    def skip_rnn(
        self,
        x: Any,
        params: Params,
        *,
        activation: str = "tanh",
        dropout_mask: Any = None,
        recurrent_mask: Any = None,
        lengths: Any = None,
        initial_state: InitialState = None,
        reverse: bool = False,
        checkpoint_every: int | None = None,
    ) -> SkipResult: ...

    @_op
    def skip_lstm(
        self,
        x: Any,
        params: Params,
        *,
        dropout_mask: Any = None,
        recurrent_mask: Any = None,
        lengths: Any = None,
        initial_state: InitialState = None,
        reverse: bool = False,
        checkpoint_every: int | None = None,
    ) -> SkipResult: ...

    @_op
    def skip_gru(
        self,
        x: Any,
        params: Params,
        *,
        reset_after: bool = True,
        dropout_mask: Any = None,
        recurrent_mask: Any = None,
        lengths: Any = None,
        initial_state: InitialState = None,
        reverse: bool = False,
        checkpoint_every: int | None = None,
    ) -> SkipResult: ...

    # -- Adaptive Computation Time ---------------------------------------------

    @_op
    def act(
        self,
        x: Any,
        params: Params,
        *,
        cell: str = "rnn",
        epsilon: float = 0.01,
        max_steps: int = 100,
        recurrent_mask: Any = None,
        lengths: Any = None,
        initial_state: InitialState = None,
        reverse: bool = False,
        checkpoint_every: int | None = None,
    ) -> ACTResult: ...

    # -- independent recurrence and pooling -------------------------------------

    @_op
    def indrnn(
        self,
        x: Any,
        params: Params,
        *,
        activation: str = "relu",
        dropout_mask: Any = None,
        recurrent_mask: Any = None,
        lengths: Any = None,
        initial_state: InitialState = None,
        reverse: bool = False,
        checkpoint_every: int | None = None,
    ) -> SequenceResult: ...

    @_op
    def indrnn_recurrence(
        self,
        pre: Any,
        u: Any,
        initial: Any = None,
        *,
        activation: str = "relu",
        lengths: Any = None,
        reverse: bool = False,
        checkpoint_every: int | None = None,
    ) -> Any: ...

    @_op
    def qrnn(
        self,
        x: Any,
        params: Params,
        *,
        mode: str = "fo",
        zoneout_mask: Any = None,
        dropout_mask: Any = None,
        lengths: Any = None,
        initial_state: InitialState = None,
        reverse: bool = False,
        checkpoint_every: int | None = None,
    ) -> SequenceResult: ...

    @_op
    def linear_recurrence(
        self,
        a: Any,
        b: Any,
        initial: Any = None,
        *,
        lengths: Any = None,
        reverse: bool = False,
        checkpoint_every: int | None = None,
    ) -> Any: ...

    # -- Phased LSTM: the time gate -----------------------------------------------

    @_op
    def phased_lstm(
        self,
        x: Any,
        params: Params,
        *,
        timestamps: Any,
        leak: float = 1e-3,
        peepholes: bool = False,
        dropout_mask: Any = None,
        recurrent_mask: Any = None,
        lengths: Any = None,
        initial_state: InitialState = None,
        reverse: bool = False,
        checkpoint_every: int | None = None,
    ) -> SequenceResult: ...


def _bind(op: str, signature: inspect.Signature, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Bind a call to the op's signature, raising rnnspec errors for bad calls."""
    params = list(signature.parameters.values())
    known = [p.name for p in params]
    for key in kwargs:
        if key not in known:
            raise UnknownArgumentError(op, key, f"one of the op's arguments {known}", f"an unknown argument {key!r}")
    positional = [p for p in params if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    if len(args) > len(positional):
        raise UnknownArgumentError(
            op,
            "*args",
            f"at most {len(positional)} positional arguments ({', '.join(p.name for p in positional)})",
            f"{len(args)} positional arguments",
        )
    bound: dict[str, Any] = {}
    for p, value in zip(positional, args, strict=False):
        if p.name in kwargs:
            raise UnknownArgumentError(op, p.name, "one value", "a value both by position and by keyword")
        bound[p.name] = value
    bound.update(kwargs)
    for p in params:
        if p.name not in bound:
            if p.default is inspect.Parameter.empty:
                raise UnknownArgumentError(op, p.name, "a value for this required argument", "nothing")
            bound[p.name] = p.default
    return bound
