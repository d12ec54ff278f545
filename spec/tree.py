"""Nested containers of arrays ("trees"): params, states, results.

A tree is an array (a leaf) or a dict, list, tuple or NamedTuple of trees.
Mapping over a tree builds new containers of the same types and never touches
the leaves themselves, so a user's structure is never modified.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["tree_leaves", "tree_map"]


def tree_map(fn: Callable[[Any], Any], tree: Any) -> Any:
    """Apply ``fn`` to every leaf of ``tree``; containers are rebuilt, never mutated.

    ``None`` stays ``None`` (an absent optional entry), so ``initial_state=None``
    or a missing state entry round-trips.
    """
    kind = type(tree)
    # Exact types first: every op call walks its arguments, and the ABC checks below cost more than the op
    # itself on short sequences.
    if kind is dict:
        return {key: tree_map(fn, value) for key, value in tree.items()}
    if kind is list:
        return [tree_map(fn, value) for value in tree]
    if kind is tuple:
        return tuple(tree_map(fn, value) for value in tree)
    if tree is None:
        return None
    if isinstance(tree, Mapping):
        return {key: tree_map(fn, value) for key, value in tree.items()}
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):  # NamedTuple
        return kind(*(tree_map(fn, value) for value in tree))
    if isinstance(tree, (list, tuple)):
        return kind(tree_map(fn, value) for value in tree)
    return fn(tree)


def _gather(tree: Any, leaves: list[Any]) -> None:
    kind = type(tree)
    if kind is dict:
        for value in tree.values():
            _gather(value, leaves)
    elif kind is list or kind is tuple or (isinstance(tree, (list, tuple))):
        for value in tree:
            _gather(value, leaves)
    elif tree is None:
        return
    elif isinstance(tree, Mapping):
        for value in tree.values():
            _gather(value, leaves)
    else:
        leaves.append(tree)


def tree_leaves(tree: Any) -> list[Any]:
    """Return the leaves of ``tree`` in a fixed order (mapping keys in insertion order)."""
    leaves: list[Any] = []
    _gather(tree, leaves)
    return leaves
