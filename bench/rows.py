"""The suite's result rows: one comparison of an rnnspec call with its baseline, and its target."""

from __future__ import annotations

from typing import TypedDict

from .timing import Timing

__all__ = ["BEST_BACKEND", "Row", "compare", "shape_text"]

#: In a target's words: the target is asked of the best backend, not of each (the summary judges it so).
BEST_BACKEND = "in the best backend"


class Row(TypedDict):
    """One comparison, as it goes into the JSON and the table.

    ``ratio`` is the median time of ``ours`` over the median time of ``baseline``
    (below 1: ours is faster). ``target`` states the target in words, empty when
    the row has none; ``met`` is its verdict (None: no target).
    """

    section: str
    backend: str
    case: str
    shape: str
    mode: str
    ours: str
    baseline: str
    ours_ms: float
    ours_min_ms: float
    baseline_ms: float
    baseline_min_ms: float
    ratio: float
    target: str
    met: bool | None
    note: str


def compare(
    section: str,
    backend: str,
    case: str,
    shape: str,
    mode: str,
    names: tuple[str, str],
    timings: dict[str, Timing],
    *,
    at_most: float | None = None,
    target: str = "",
    note: str = "",
) -> Row:
    """The row comparing ``timings[names[0]]`` (ours) with ``timings[names[1]]`` (the baseline).

    Parameters
    ----------
    at_most
        The target as a bound on the ratio: met when ``ratio <= at_most``.
    target
        The target in words; by default ``"<= {at_most}x"`` when ``at_most`` is given.
    """
    ours, base = timings[names[0]], timings[names[1]]
    ratio = ours.median_ms / base.median_ms
    return Row(
        section=section,
        backend=backend,
        case=case,
        shape=shape,
        mode=mode,
        ours=names[0],
        baseline=names[1],
        ours_ms=ours.median_ms,
        ours_min_ms=ours.min_ms,
        baseline_ms=base.median_ms,
        baseline_min_ms=base.min_ms,
        ratio=ratio,
        target=target or (f"<= {at_most:.2f}x" if at_most is not None else ""),
        met=None if at_most is None else ratio <= at_most,
        note=note,
    )


def shape_text(batch: int, steps: int, hidden: int) -> str:
    """``"B=16 T=256 H=256"``."""
    return f"B={batch} T={steps} H={hidden}"
