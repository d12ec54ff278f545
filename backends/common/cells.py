"""The cells the sequence ops are built of, from their records: state entries and options.

A framework backend writes each cell's step (``_rnn``, ``_lstm``, ...) and
registers it under the cell's op name; :func:`bind_cell` gives the step its
options and the cell's state entries, as the records say. So ``make_cell`` is
one line in every framework, and a cell's options are named once, in its record.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Self

from rnnspec.ops import OPS

__all__ = ["Cell", "bind_cell", "cell_defaults", "cell_options"]

#: Options that shape how an op runs, not what a cell computes.
_RUN_OPTIONS = frozenset({"checkpoint_every"})


def cell_options(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The options of cell ``name`` (its op's value options) taken from ``options``."""
    return {o.name: options[o.name] for o in OPS[name].value_options if o.name not in _RUN_OPTIONS}


def cell_defaults(name: str) -> dict[str, Any]:
    """Cell ``name``'s options at their defaults (ACT ponders a cell so)."""
    return {o.name: o.default for o in OPS[name].value_options if o.name not in _RUN_OPTIONS}


@dataclass(frozen=True)
class Cell:
    """A cell of the spec with its options: its state entries, input projection and step."""

    #: The cell's op name (rnn, lstm, gru, indrnn).
    name: str
    #: Its state entries, as its record names them (``("h", "c")`` for lstm).
    state_names: tuple[str, ...]
    #: ``(p, state, gi) -> new state``: the framework's step with the cell's options bound.
    fn: Callable[[Mapping[str, Any], dict[str, Any], Any], dict[str, Any]]
    #: The framework's ``linear(x, w, b) = x @ w.T + b`` over any leading axes.
    linear: Callable[[Any, Any, Any], Any]

    def project(self, p: Mapping[str, Any], x: Any) -> Any:
        """``x @ w_ih.T + b_ih``, over any leading axes (every time step at once)."""
        return self.linear(x, p["w_ih"], p["b_ih"])

    def step(self, p: Mapping[str, Any], state: dict[str, Any], gi: Any) -> dict[str, Any]:
        """The new state from ``state`` and the step's input projection ``gi``; its ``"h"`` is the output."""
        return self.fn(p, state, gi)

    def with_recurrent_mask(self, mask: Any) -> Self:
        """This cell under recurrent dropout: its recurrent product reads ``h * mask`` (``(batch, H)``, one
        mask for every step), its state update ``h`` (the framework's step takes ``recurrent_mask=``). The
        cell itself for None."""
        if mask is None:
            return self
        step: Callable[..., dict[str, Any]] = self.fn  # every framework's step takes recurrent_mask=
        return replace(self, fn=functools.partial(step, recurrent_mask=mask))


def bind_cell(
    steps: Mapping[str, Callable[..., Any]], name: str, options: Mapping[str, Any]
) -> tuple[str, tuple[str, ...], Callable[..., Any]]:
    """``(name, state entry names, step)`` of cell ``name``: the framework's step with its options bound,
    the first fields of a :class:`Cell`.

    Raises
    ------
    KeyError
        The framework has no step for ``name``.
    """
    step = steps[name]
    state_names = tuple(s.name for s in OPS[name].state)
    bound = cell_options(name, options)
    return name, state_names, functools.partial(step, **bound) if bound else step
