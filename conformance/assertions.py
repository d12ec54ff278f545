"""Assertions that compare nested results and say exactly what differs, and where.

A message names the path inside the result (``state[1]['c']``), how many
entries differ, the worst one with its index and both values, the tolerance,
and the context the caller passes (backend, op, options, shapes, dtype, and a
repro snippet), so a failure read in a CI log is enough to rerun the case.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .tolerances import Tolerance, round_overflow, ulp

__all__ = ["assert_tree_close", "flatten"]


def flatten(tree: Any, path: str = "") -> dict[str, Any]:
    """``{path: leaf}`` for a result, a dict/list/tuple/NamedTuple tree or an array."""
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        items: Any = ((f".{name}", value) for name, value in zip(tree._fields, tree, strict=True))
    elif isinstance(tree, Mapping):
        items = ((f"[{key!r}]", value) for key, value in tree.items())
    elif isinstance(tree, (list, tuple)):
        items = ((f"[{i}]", value) for i, value in enumerate(tree))
    else:
        return {path or "<value>": tree}
    out: dict[str, Any] = {}
    for suffix, value in items:
        out.update(flatten(value, path + suffix))
    return out


def _compare(
    path: str, actual: Any, expected: Any, tol: Tolerance, check_dtype: bool, dtype: np.dtype[Any] | None
) -> str | None:
    a, b = np.asarray(actual), np.asarray(expected)
    if a.shape != b.shape:
        return f"{path}: shape {a.shape}, but should be {b.shape}"
    want_dtype = b.dtype if dtype is None else dtype
    if check_dtype and a.dtype != want_dtype:
        return f"{path}: dtype {a.dtype}, but should be {want_dtype}"
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    if tol.ulp_dtype is not None:  # an unrounded answer, for a result in a half format: round what overflows
        b64 = round_overflow(b64, tol.ulp_dtype)
    nan_a, nan_b = np.isnan(a64), np.isnan(b64)
    if not np.array_equal(nan_a, nan_b):
        where = tuple(int(i) for i in np.argwhere(nan_a != nan_b)[0])
        return f"{path}: NaN positions differ, first at {where}: {a64[where]!r} vs expected {b64[where]!r}"
    inf_a, inf_b = np.isinf(a64), np.isinf(b64)
    if not np.array_equal(inf_a, inf_b) or not np.array_equal(a64[inf_a], b64[inf_b]):
        where = tuple(int(i) for i in np.argwhere((inf_a != inf_b) | (inf_a & (a64 != b64)))[0])
        return f"{path}: infinities differ, first at {where}: {a64[where]!r} vs expected {b64[where]!r}"
    finite = np.isfinite(b64)
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf where both are inf: masked out below
        allowed = tol.atol + tol.rtol * np.abs(b64)
        if tol.ulps:
            allowed = allowed + tol.ulps * ulp(np.maximum(np.abs(a64), np.abs(b64)), str(tol.ulp_dtype))
        if tol.spread and finite.any():
            allowed = allowed + tol.spread * float(np.abs(b64[finite]).max())
        excess = np.where(finite, np.abs(a64 - b64) - allowed, -np.inf)
    bad = excess > 0
    if not bad.any():
        return None
    worst = tuple(int(i) for i in np.unravel_index(np.argmax(excess), excess.shape))
    ulps = f", {tol.ulps:g} ulp of {tol.ulp_dtype}" if tol.ulps else ""
    ulps += f", spread={tol.spread:.1e} of max|expected|" if tol.spread else ""
    return (
        f"{path}: {int(bad.sum())} of {bad.size} entries differ beyond rtol={tol.rtol:.1e}, atol={tol.atol:.1e}{ulps}; "
        f"worst at {worst}: {a64[worst]!r} vs expected {b64[worst]!r} (|diff| {abs(a64[worst] - b64[worst]):.3e})"
    )


def assert_tree_close(
    actual: Any,
    expected: Any,
    tol: Tolerance,
    *,
    context: str,
    check_dtype: bool = True,
    dtype: np.dtype[Any] | None = None,
) -> None:
    """Assert two results agree leaf by leaf within ``tol``; NaN and inf must match exactly.

    Each leaf of ``actual`` must have the dtype of its ``expected`` leaf, or ``dtype`` when given
    (``expected`` is then an unrounded answer in another dtype); ``check_dtype=False`` skips that.

    Raises
    ------
    AssertionError
        Naming every differing leaf, then ``context``.
    """
    got, want = flatten(actual), flatten(expected)
    problems = []
    if got.keys() != want.keys():
        problems.append(f"structure: got leaves {sorted(got)}, but should be {sorted(want)}")
    for path in sorted(want.keys() & got.keys()):
        problem = _compare(path, got[path], want[path], tol, check_dtype, dtype)
        if problem:
            problems.append(problem)
    if problems:
        raise AssertionError("\n".join(problems) + "\n" + context)
