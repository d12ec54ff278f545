"""Side-by-side timing: callables run in alternating order on the same inputs, several repeats.

Every callable waits for its own results (each framework adapter builds its callables so), so the
wall time of a call is the time of the work. Alternating the callables within each repeat makes
drift in the machine's load fall on all of them alike.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

__all__ = ["CLOCKS", "Timing", "alternate", "use_clock"]


@dataclass(frozen=True)
class Timing:
    """Times of one callable over the repeats, in seconds."""

    times: tuple[float, ...]

    @property
    def median_ms(self) -> float:
        """The median, in milliseconds."""
        return 1e3 * statistics.median(self.times)

    @property
    def min_ms(self) -> float:
        """The minimum, in milliseconds."""
        return 1e3 * min(self.times)


#: The clocks a run may time with: wall time, or this process's CPU time (every thread's; on a machine
#: shared with other jobs it counts the work done rather than the time spent waiting for a core).
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = CLOCKS["wall"]


def use_clock(name: str) -> None:
    """Time every later :func:`alternate` with the clock ``name`` (a key of :data:`CLOCKS`)."""
    global _clock
    _clock = CLOCKS[name]


def alternate(calls: Mapping[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, Timing]:
    """Time each of ``calls`` ``repeats`` times, alternating, after ``warmup`` untimed runs each, by the clock in use.

    Parameters
    ----------
    calls
        Callables that return once their work is done (results waited for).
    repeats
        Timed runs of each callable.
    warmup
        Untimed runs of each callable first (compilation, caches, allocator).

    Returns
    -------
    dict
        The :class:`Timing` of each callable, by name.
    """
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            start = _clock()
            fn()
            times[name].append(_clock() - start)
    return {name: Timing(tuple(t)) for name, t in times.items()}
