"""Page faults and CPU time of each training update, per contender: ``python -m rnnspec.bench.page_faults``.

The training section's medians of rnnspec's updates lie well above their minimums where those of
torch.nn's layers and of the floor do not. This prints, for the first ``--cases`` cases of the
training section (torch, one thread), every repeat's process CPU time and minor page faults
(``getrusage``): an update that faults has had its buffers handed back to the operating system
by the C allocator between calls (glibc returns a freed heap top above its trim threshold, and
its thresholds move with the sizes it has seen) and pays for touching fresh pages again.

    OMP_NUM_THREADS=1 python -m rnnspec.bench.page_faults [--cases 2] [--repeats 10]

Run it with ``GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824``
to see the same updates with the allocator keeping what it frees (torch only; a diagnosis, not a
benchmark: the suite's ratios are :mod:`rnnspec.bench`'s).
"""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Callable, Mapping

from . import training
from .framework import load
from .sizes import sizes
from .timing import Timing, use_clock

__all__ = ["main"]


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _each(repeats: int) -> training.Timer:
    """A timer running each callable ``repeats`` times in a row (after one untimed run), printing every repeat."""

    def timer(calls: Mapping[str, Callable[[], object]], _repeats: int) -> dict[str, Timing]:
        for fn in calls.values():
            fn()
        timings = {}
        for name, fn in calls.items():
            seconds, faults = [], []
            for _ in range(repeats):
                before, start = _faults(), time.process_time()
                fn()
                seconds.append(time.process_time() - start)
                faults.append(_faults() - before)
            print(f"  {name}: ms {[round(1e3 * s, 1) for s in seconds]}", flush=True)
            print(f"  {' ' * len(name)}  faults {faults}", flush=True)
            timings[name] = Timing(tuple(seconds))
        return timings

    return timer


def main(argv: list[str] | None = None) -> None:
    """Print each repeat's CPU time and page faults of the training section's first cases."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=2, help="the training section's first N cases (default 2)")
    parser.add_argument("--repeats", type=int, default=10, help="timed updates of each contender (default 10)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    use_clock("cpu")
    fw = load("torch", "cpu")
    for case in training.cases(sizes(False))[: args.cases]:
        print(f"{case.net.op} {case.task.text()}", flush=True)
        training.run_case(fw, case, args.repeats, timer=_each(args.repeats))


if __name__ == "__main__":
    main()
