"""Process CPU time of every op of one backend over a long sequence, forward and forward+backward.

``python -m rnnspec.bench.long_sequences BACKEND [--time T] [--ops a,b]`` runs the
cases of the conformance suite's long-sequence check (``rnnspec.conformance``'s
edge cases: float32, batch 2 with the second row 70% long, sizes 2, act pondering
at most 2 steps) once each, and prints a markdown table: the seconds of the
forward call, and of the forward call plus the reverse mode. It is what that
check costs a backend, not a comparison: the first call of an op includes its
tracing or compiling.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import rnnspec
from rnnspec.conformance.checks_common import LONG_TIME, long_case

__all__ = ["main", "measure"]


def measure(backend: str, time_steps: int, ops: Sequence[str] | None = None) -> list[tuple[str, float, float]]:
    """``(op, forward seconds, forward+backward seconds)`` for each op, process CPU time."""
    b = rnnspec.get_backend(backend)
    rows = []
    for op in ops or b.implementation.ops:
        case = long_case(op, time_steps)
        start = time.process_time()
        result = case.run(b)
        forward = time.process_time() - start
        if "vjp" in b.implementation.capabilities:
            case.vjp(b, case.cotangents(result, seed=1))
        rows.append((op, forward, time.process_time() - start))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """Print the table for one backend."""
    parser = argparse.ArgumentParser(prog="python -m rnnspec.bench.long_sequences", description=__doc__)
    parser.add_argument("backend")
    parser.add_argument("--time", type=int, default=LONG_TIME, help=f"steps (default {LONG_TIME})")
    parser.add_argument("--ops", default="", help="comma-separated ops (default: every op of the backend)")
    args = parser.parse_args(argv)
    ops = [op for op in args.ops.split(",") if op] or None
    print(f"backend {args.backend}, T={args.time}, process CPU seconds\n")
    print("| op | forward | forward+backward |\n|---|---|---|")
    for op, forward, both in measure(args.backend, args.time, ops):
        print(f"| {op} | {forward:.2f} | {both:.2f} |", flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
