"""Symbolic dimensions: the shape language of the spec's parameter layouts.

A parameter's shape is written with small linear expressions over named sizes,
``("4*H", "I")``, ``("I+1",)`` or ``("K-1", "I")``: ``I`` the layer's input size, ``H`` its hidden
size, and op-specific symbols (``G`` the number of gate blocks, ``K`` a window).
:func:`solve` reads unknown sizes off the arrays a user passed, and
:func:`evaluate` turns an expression back into a number, so one layout serves
validation, ``init_params`` and the spec pages.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from .memo import memoized

__all__ = ["evaluate", "format_shape", "solve", "symbols"]

_TOKEN = re.compile(r"\s*(?:(\d+)|([A-Za-z_]\w*)|([+*-]))")


@memoized  # every call of an op evaluates the same few expressions; the validation runs inside compiled models
def _parse(expr: str) -> tuple[tuple[int | str, ...], ...]:
    """Parse ``expr`` into a sum of products; each product a tuple of factors."""
    terms: list[list[int | str]] = [[]]
    pos = 0
    expect_factor = True
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if match is None or match.end() == pos:
            raise ValueError(f"bad dimension expression {expr!r} at position {pos}")
        number, name, op = match.groups()
        pos = match.end()
        if op is not None:
            if expect_factor:
                raise ValueError(f"bad dimension expression {expr!r}: operator without operand")
            if op in "+-":
                terms.append([] if op == "+" else [-1])
            expect_factor = True
        else:
            if not expect_factor:
                raise ValueError(f"bad dimension expression {expr!r}: missing operator")
            terms[-1].append(int(number) if number is not None else name)
            expect_factor = False
    if expect_factor:
        raise ValueError(f"bad dimension expression {expr!r}: ends with an operator")
    return tuple(tuple(term) for term in terms)


@memoized
def symbols(expr: str) -> frozenset[str]:
    """Return the names an expression uses."""
    return frozenset(f for term in _parse(expr) for f in term if isinstance(f, str))


def evaluate(expr: str, dims: Mapping[str, int]) -> int:
    """Evaluate ``expr`` with the sizes in ``dims``.

    Raises
    ------
    KeyError
        If ``expr`` uses a name that ``dims`` lacks.
    """
    total = 0
    for term in _parse(expr):
        product = 1
        for factor in term:
            product *= factor if isinstance(factor, int) else dims[factor]
        total += product
    return total


def solve(pairs: Iterable[tuple[str, int]], known: Mapping[str, int]) -> dict[str, int]:
    """Bind the unknown names of expressions to the sizes they must equal.

    Each pair is ``(expression, actual size)``. An expression with exactly one
    unknown name, which it uses linearly (all our layouts do), fixes that name;
    solving repeats until nothing new is learnt. Sizes that admit no
    non-negative integer solution are left unbound: the caller's check of every
    shape against :func:`evaluate` then reports them with the full layout.
    """
    dims = dict(known)
    pending = list(pairs)
    progress = True
    while progress:
        progress = False
        for expr, size in pending:
            unknown = symbols(expr) - dims.keys()
            if len(unknown) != 1:
                continue
            (name,) = unknown
            offset = evaluate(expr, {**dims, name: 0})
            slope = evaluate(expr, {**dims, name: 1}) - offset
            if slope > 0 and (size - offset) % slope == 0 and size >= offset:
                dims[name] = (size - offset) // slope
                progress = True
    return dims


def format_shape(exprs: Iterable[str]) -> str:
    """Format a symbolic shape the way the spec pages write it: ``(4*H, I)``."""
    items = list(exprs)
    return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
