"""Time the torch backend's elementwise recurrences: the CPU kernel against the plain loop and a tensor copy.

    python bench/torch_recurrences.py [--repeats 15] [--threads N] [--quick] [--sweep]

For each recurrence (linear, indrnn with tanh) and shape, the script times, side
by side and in alternating order, on float32 CPU tensors:

- ``copy``: ``a.clone()`` of one ``(batch, time, H)`` input, the memory-bandwidth yardstick;
- ``cpu-kernel``: :func:`rnnspec.backends.torch.recurrences.linear_scan` / ``indrnn_scan``
  on their default CPU path (hand-written forward and backward; the linear scans in
  chunks where :func:`rnnspec.backends.torch.recurrence_loops.chunk_length` says so,
  its ``C`` in the table, 0 for one op per step);
- ``per-step``: the same, every linear scan forced to one op per step;
- ``plain``: the same calls under :func:`rnnspec.backends.torch.fused.plain_path`
  (the per-step torch loop differentiated by autograd).

"forward" calls the scan without autograd; "forward+backward" calls it on
leaves that require grad and backpropagates a fixed cotangent of ``h``. The
table gives the median (and minimum) of the repeats in milliseconds and the
ratios of medians: kernel / copy, per-step / kernel and plain / kernel.

``--sweep`` times instead the bare linear scan (forward,
:func:`~rnnspec.backends.torch.recurrence_loops.scan_into`) over a grid of
lengths and widths ``batch * H``: one op per step against chunk lengths around
:math:`\\sqrt{T / 2}`, the measurement behind ``chunk_length``. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time
from collections.abc import Callable

import torch

from rnnspec.backends.torch import fused, recurrence_loops
from rnnspec.backends.torch.recurrences import indrnn_scan, linear_scan

SHAPES = ((16, 512, 256), (4, 1000, 256), (1, 2000, 64))
#: (steps, batch, H) of the sweep: widths batch * H from 64 to 16384.
SWEEP = tuple(
    (steps, batch, hidden)
    for steps in (64, 512, 2000)
    for batch, hidden in ((1, 64), (4, 64), (4, 256), (8, 256), (16, 256), (16, 1024))
)


def _inputs(batch: int, steps: int, hidden: int, grad: bool) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {
        "a": torch.rand(batch, steps, hidden, generator=gen).requires_grad_(grad),
        "b": torch.randn(batch, steps, hidden, generator=gen).requires_grad_(grad),
        "u": torch.rand(hidden, generator=gen).requires_grad_(grad),
        "h0": torch.randn(batch, hidden, generator=gen).requires_grad_(grad),
        "dh": torch.randn(batch, steps, hidden, generator=gen),
    }


def _call(
    kind: str, x: dict[str, torch.Tensor], plain: bool, backward: bool, per_step: bool = False
) -> Callable[[], object]:
    def run() -> object:
        if kind == "linear":
            h, _ = linear_scan(x["a"], x["b"], x["h0"], None)
        else:
            h, _ = indrnn_scan(x["b"], x["u"], x["h0"], "tanh", None)
        if backward:
            h.backward(x["dh"])
        return h

    def call() -> object:
        if plain:
            with fused.plain_path():
                return run()
        if per_step:
            with recurrence_loops.forced_chunk_length(0):
                return run()
        return run()

    return call


def _time(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench(kind: str, shape: tuple[int, int, int], backward: bool, repeats: int) -> dict[str, list[float]]:
    """Seconds per call of each contender, ``repeats`` times, alternating."""
    x = _inputs(*shape, grad=backward)
    calls = {
        "copy": lambda: x["a"].detach().clone(),
        "cpu-kernel": _call(kind, x, plain=False, backward=backward),
        "per-step": _call(kind, x, plain=False, backward=backward, per_step=True),
        "plain": _call(kind, x, plain=True, backward=backward),
    }
    with torch.enable_grad() if backward else torch.no_grad():
        return _alternate(calls, repeats)


def _sweep_calls(steps: int, batch: int, hidden: int) -> dict[str, Callable[[], object]]:
    """The sweep's contenders at one shape: a copy, one op per step, and chunks of a few lengths."""
    gen = torch.Generator().manual_seed(0)
    a, b = torch.rand(batch, steps, hidden, generator=gen), torch.randn(batch, steps, hidden, generator=gen)
    h0, out = torch.randn(batch, hidden, generator=gen), torch.empty(batch, steps, hidden)

    def scan(chunk: int) -> Callable[[], object]:
        return lambda: recurrence_loops.scan_into(out, a, b, h0, chunk=chunk)

    chunks = sorted({round(f * math.sqrt(steps)) for f in (0.5, math.sqrt(0.5), 1.0)} - {0, 1})
    return {"copy": a.clone, "per-step": scan(0), **{f"C={c}": scan(c) for c in chunks}}


def sweep(repeats: int) -> None:
    """Print the bare forward linear scan's times: one op per step against a few chunk lengths."""
    print(f"{'shape':<20} {'copy':>15} {'per-step':>15}  chunked: C median (min) per-step/chunked")
    for steps, batch, hidden in SWEEP:
        times = _alternate(_sweep_calls(steps, batch, hidden), repeats)
        med = {k: statistics.median(v) for k, v in times.items()}
        cells = [f"{1e3 * med[k]:>7.3f} ({1e3 * min(times[k]):>6.3f})" for k in ("copy", "per-step")]
        chunked = [
            f"{k} {1e3 * med[k]:.3f} ({1e3 * min(times[k]):.3f}) {med['per-step'] / med[k]:.1f}x"
            for k in times
            if k.startswith("C=")
        ]
        shape_text = f"T={steps} B*H={batch}*{hidden}"
        rule = recurrence_loops.chunk_length(steps, batch * hidden)
        print(f"{shape_text:<20} {' '.join(cells)}  {' | '.join(chunked)}  [rule: C={rule}]")


def _alternate(calls: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Seconds per call of each of ``calls``, ``repeats`` times, alternating, after one warm-up call each."""
    for fn in calls.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            times[name].append(_time(fn))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--quick", action="store_true", help="3 repeats, for a smoke run")
    parser.add_argument("--sweep", action="store_true", help="time the bare forward linear scan over a grid")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = 3 if args.quick else args.repeats
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, threads={torch.get_num_threads()}")
    print(f"float32 CPU, median (min) of {repeats} repeats, milliseconds\n")
    if args.sweep:
        sweep(repeats)
        return
    header = (
        f"{'op':<7} {'shape':<18} {'C':>3} {'pass':<17} {'copy':>15} {'cpu-kernel':>15} {'per-step':>15}"
        f" {'plain':>15} {'kernel/copy':>12} {'per-step/kernel':>16} {'plain/kernel':>13}"
    )
    print(header)
    print("-" * len(header))
    for kind in ("linear", "indrnn"):
        for shape in SHAPES:
            for backward in (False, True):
                times = bench(kind, shape, backward, repeats)
                med = {k: statistics.median(v) for k, v in times.items()}
                cells = " ".join(f"{1e3 * med[k]:>7.3f} ({1e3 * min(times[k]):>6.3f})" for k in times)
                shape_text = "B={} T={} H={}".format(*shape)
                chunk = recurrence_loops.chunk_length(shape[1], shape[0] * shape[2])
                print(
                    f"{kind:<7} {shape_text:<18} {chunk:>3} {'forward+backward' if backward else 'forward':<17} {cells}"
                    f" {med['cpu-kernel'] / med['copy']:>12.1f} {med['per-step'] / med['cpu-kernel']:>16.1f}"
                    f" {med['plain'] / med['cpu-kernel']:>13.1f}"
                )


if __name__ == "__main__":
    main()
