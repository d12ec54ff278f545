"""Rounding float64 results to the caller's dtype: the last step of every op."""

from __future__ import annotations

from typing import Any

import numpy as np

from rnnspec.tree import tree_map

__all__ = ["round_to"]


def round_to(tree: Any, dtype: np.dtype[Any]) -> Any:
    """Round every array of ``tree`` to ``dtype``.

    Values beyond the dtype's range become inf, as the spec says a low
    precision result does; that is not an error, so NumPy's overflow warning
    is silenced here.
    """
    with np.errstate(over="ignore"):
        return tree_map(lambda a: np.asarray(a).astype(dtype), tree)
