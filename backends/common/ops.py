"""A framework backend's op table, made from the op records.

Every op record names the module of each framework backend that implements
it (:attr:`rnnspec.ops.OpSpec.module_name`). :func:`op_table` imports those
modules from a backend's package and returns, for every op, its function of the
normalised arguments by keyword (what :class:`rnnspec.Backend` hands an
implementation):

- a primitive's module has a function named after the op, taking exactly the
  spec's arguments (``linear_recurrence(*, a, b, initial, lengths, reverse)``);
- a sequence op's module has ``run(call)``, one function for every op it
  serves (``classic.run`` for rnn, lstm and gru), taking a :class:`SequenceCall`:
  the arguments every sequence op has, and the op's own options split as the
  record declares them (value options, array options).

So a backend has no per-op keyword shims and no hand-written op table, and a
new op is one module per framework.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from rnnspec.ops import OPS, OpSpec

__all__ = ["OpFunction", "SequenceCall", "op_table", "sequence_function"]

#: An op's function of the normalised arguments, by keyword.
OpFunction = Callable[..., Any]


class SequenceCall(NamedTuple):
    """One call of a sequence op, normalised (see :mod:`rnnspec.implementation`).

    A NamedTuple rather than a dataclass: ``torch.compile`` traces through it.
    """

    #: The op's name.
    op: str
    #: ``(batch, time, I)``.
    x: Any
    #: One mapping per layer, bottom layer first.
    params: Sequence[Mapping[str, Any]]
    #: None, or the caller's integer array.
    lengths: Any
    #: None, or one mapping per layer.
    initial_state: Sequence[Mapping[str, Any]] | None
    reverse: bool
    #: The op's value options (``activation``, ``reset_after``, ``cell``, ...), every one present.
    options: Mapping[str, Any]
    #: The op's array options (qrnn's ``zoneout_mask``), None where not given.
    arrays: Mapping[str, Any]


def sequence_function(spec: OpSpec, run: Callable[[SequenceCall], Any]) -> OpFunction:
    """The keyword function of sequence op ``spec`` that packs its arguments into a :class:`SequenceCall`."""
    value_names = tuple(o.name for o in spec.value_options if o.name != "checkpoint_every")
    array_names = tuple(o.name for o in spec.options if o.kind == "array")
    op = spec.name

    def call(
        *,
        x: Any,
        params: Sequence[Mapping[str, Any]],
        lengths: Any,
        initial_state: Sequence[Mapping[str, Any]] | None,
        reverse: bool,
        **options: Any,
    ) -> Any:
        values = {name: options.pop(name) for name in value_names}
        arrays = {name: options.pop(name, None) for name in array_names}
        if options:
            raise TypeError(f"{op}() got unexpected keyword arguments {sorted(options)}")
        return run(SequenceCall(op, x, params, lengths, initial_state, reverse, values, arrays))

    call.__name__ = call.__qualname__ = op
    call.__doc__ = f"{spec.summary}\n\n(:func:`{getattr(run, '__module__', '')}.run` of a :class:`SequenceCall`.)"
    return call


def op_table(package: str, ops: Mapping[str, OpSpec] = OPS) -> dict[str, OpFunction]:
    """Every op's function of the normalised arguments, from the modules of ``package`` the records name.

    Raises
    ------
    AttributeError
        A module lacks the function its op needs (``run``, or one named after a primitive).
    """
    table: dict[str, OpFunction] = {}
    for spec in ops.values():
        module = importlib.import_module(f"{package}.{spec.module_name}")
        if spec.kind == "primitive":
            table[spec.name] = getattr(module, spec.name)
        else:
            table[spec.name] = sequence_function(spec, module.run)
    return table
