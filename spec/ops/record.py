"""The record types that describe one op of the spec."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["FLOAT_DTYPES", "OpSpec", "OptionSpec", "ParamSpec", "StateSpec"]

#: Floating dtypes an op may accept, by name. float32 and float64 are required of
#: every backend; float16 and bfloat16 are optional and follow the dtype policy.
FLOAT_DTYPES: tuple[str, ...] = ("float16", "bfloat16", "float32", "float64")
#: The dtypes every backend must support.
REQUIRED_DTYPES: tuple[str, ...] = ("float32", "float64")


@dataclass(frozen=True)
class ParamSpec:
    """One named parameter array of a layer.

    ``shape`` is symbolic (see :mod:`rnnspec.shapes`). ``layers`` says which
    layers of a stack carry it; ``required=False`` marks an optional entry.
    """

    name: str
    shape: tuple[str, ...]
    description: str
    required: bool = True
    layers: Literal["all", "top"] = "all"


@dataclass(frozen=True)
class StateSpec:
    """One named entry of a layer's state, of shape ``(batch,) + shape``.

    ``layers="top"`` marks an entry only the top layer's state carries.
    """

    name: str
    shape: tuple[str, ...]
    description: str
    layers: Literal["all", "top"] = "all"


@dataclass(frozen=True)
class OptionSpec:
    """A keyword option of an op, with its default and allowed values."""

    name: str
    default: Any
    allowed: tuple[Any, ...]
    description: str
    #: ``"value"``: one of ``allowed`` (or passing ``check``); ``"array"``: an
    #: optional array checked by shape.
    kind: Literal["value", "array"] = "value"
    #: For options over a range (``epsilon``, ``max_steps``): the test, and what it asks for.
    check: Callable[[Any], bool] | None = None
    expected: str = ""

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` is allowed (``True`` is not taken for ``1``)."""
        if self.check is not None:
            return self.check(value)
        return any(type(value) is type(a) and value == a for a in self.allowed)

    def describe_allowed(self) -> str:
        """What the option accepts, for error messages and pages."""
        return self.expected or " or ".join(repr(a) for a in self.allowed)


@dataclass(frozen=True)
class OpSpec:
    """The contract of one op: what it takes, what it returns, what it computes.

    The op's Python signature is the method of the same name on
    :class:`rnnspec.Backend`; this record holds everything else.
    """

    name: str
    summary: str
    equations: tuple[str, ...]
    params: tuple[ParamSpec, ...]
    state: tuple[StateSpec, ...]
    options: tuple[OptionSpec, ...]
    result_fields: tuple[str, ...]
    gradient: str
    #: Sizes fixed by the options, such as ``{"G": 4}`` gate blocks.
    fixed_dims: Callable[[Mapping[str, Any]], dict[str, int]] = field(default=lambda options: {})
    dtypes: tuple[str, ...] = FLOAT_DTYPES
    #: ``"sequence"``: x and per-layer params; ``"primitive"``: the arrays in
    #: ``params`` are positional arguments with shapes over ``B``, ``T``, ``H``.
    kind: Literal["sequence", "primitive"] = "sequence"
    #: When the layout depends on an option (ACT's ``cell``), these give the
    #: params and the state for the options of a call instead of ``params`` / ``state``.
    params_for: Callable[[Mapping[str, Any]], tuple[ParamSpec, ...]] | None = None
    state_for: Callable[[Mapping[str, Any]], tuple[StateSpec, ...]] | None = None
    #: The most layers a call may stack (``None``: any number).
    max_layers: int | None = None
    #: The module of each framework backend that implements the op (``backends/<framework>/<module>.py``;
    #: ``None``: the op's name). A sequence op's module has ``run(call)`` for every op it serves; a
    #: primitive's has a function named after the op (see :mod:`rnnspec.backends.common.ops`).
    module: str | None = None
    #: The class name of the op's layer in every framework (``torch.nn``, Flax NNX, Keras); ``None``: no layer.
    layer: str | None = None

    @property
    def module_name(self) -> str:
        """The framework backends' module that implements the op."""
        return self.module or self.name

    @property
    def per_step(self) -> tuple[str, ...]:
        """The arguments holding one entry per step on axis 1: a sequence op's ``x`` and array options
        (``zoneout_mask``); a primitive's ``(B, T, ...)`` arrays (``a``, ``b``; ``pre``)."""
        if self.kind == "primitive":
            return tuple(p.name for p in self.params if p.shape[:2] == ("B", "T"))
        return ("x", *(o.name for o in self.options if o.kind == "array"))

    @property
    def value_options(self) -> tuple[OptionSpec, ...]:
        """The options chosen from a fixed set of values."""
        return tuple(o for o in self.options if o.kind == "value")

    def option(self, name: str) -> OptionSpec:
        """Return the option record called ``name``."""
        for opt in self.options:
            if opt.name == name:
                return opt
        raise KeyError(name)

    def layer_params(self, *, top: bool, options: Mapping[str, Any] | None = None) -> tuple[ParamSpec, ...]:
        """The parameters a layer may carry (the top layer may carry more)."""
        params = self.params if self.params_for is None else self.params_for(self._with_defaults(options))
        return tuple(p for p in params if p.layers == "all" or top)

    def layer_state(self, *, top: bool, options: Mapping[str, Any] | None = None) -> tuple[StateSpec, ...]:
        """The state entries of a layer (the top layer may carry more)."""
        state = self.state if self.state_for is None else self.state_for(self._with_defaults(options))
        return tuple(s for s in state if s.layers == "all" or top)

    def _with_defaults(self, options: Mapping[str, Any] | None) -> dict[str, Any]:
        return {**{o.name: o.default for o in self.options}, **(options or {})}
