"""Memoization that ``torch.compile`` can trace through.

The spec's validation, result checks and the torch backend's dispatch run inside compiled models,
and dynamo refuses to trace through ``functools.cache``/``lru_cache`` (their wrapper is written in C):
it warns and breaks the graph. A plain ``dict`` read from Python code is traced like any other
Python, so the package memoizes with the two helpers here instead, written once:

- :func:`memoized`: a decorator for a function of hashable arguments, computed once per arguments.
- :class:`Memo`: a dict that a function consults and fills itself, for keys it builds; bounded by
  ``limit`` entries, and keys that turn out unhashable (an option value such as a list) are
  neither looked up nor kept, so the caller simply computes again.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable
from typing import Generic, ParamSpec, TypeVar

__all__ = ["Memo", "memoized"]

P = ParamSpec("P")
R = TypeVar("R")
V = TypeVar("V")


class Memo(Generic[V]):
    """Values by key in a plain dict (not ``functools.cache``, which ``torch.compile`` refuses to trace through).

    With ``limit`` given it keeps at most that many entries: once full it keeps what it has and adds
    nothing, so a long-running model that keeps meeting new shapes never grows it without bound.
    """

    __slots__ = ("_values", "limit")

    def __init__(self, limit: int | None = None) -> None:
        self._values: dict[Hashable, V] = {}
        self.limit = limit

    def get(self, key: Hashable) -> V | None:
        """The value kept for ``key``, or None (also when ``key`` is not hashable)."""
        try:
            return self._values.get(key)
        except TypeError:  # a key holding an unhashable value: never kept
            return None

    def put(self, key: Hashable, value: V) -> V:
        """Keep ``value`` for ``key`` (unless full or ``key`` is not hashable); return ``value``."""
        if self.limit is None or len(self._values) < self.limit:
            try:  # noqa: SIM105  (try/except, which dynamo traces, rather than contextlib.suppress)
                self._values[key] = value
            except TypeError:  # a key holding an unhashable value: computed again next time
                pass
        return value

    def clear(self) -> None:
        """Forget every value."""
        self._values.clear()

    def __len__(self) -> int:
        return len(self._values)


def memoized(fn: Callable[P, R]) -> Callable[P, R]:
    """``fn`` computed once per (hashable) arguments, kept in a plain dict that ``torch.compile`` traces through.

    A drop-in for ``functools.cache`` on functions that run inside compiled models. The results are
    never evicted: use it for functions of a few distinct arguments (op names, expressions).
    """
    values: dict[Hashable, R] = {}

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        key = (args, tuple(kwargs.items())) if kwargs else args
        if key in values:
            return values[key]
        result = values[key] = fn(*args, **kwargs)
        return result

    return wrapper
