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
    if tree is None:
        return None
    if isinstance(tree, Mapping):
        return {key: tree_map(fn, value) for key, value in tree.items()}
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):  # NamedTuple
        return type(tree)(*(tree_map(fn, value) for value in tree))
    if isinstance(tree, (list, tuple)):
        return type(tree)(tree_map(fn, value) for value in tree)
    return fn(tree)


def tree_leaves(tree: Any) -> list[Any]:
    """Return the leaves of ``tree`` in a fixed order (mapping keys in insertion order)."""
    leaves: list[Any] = []
    tree_map(leaves.append, tree)
    return leaves
