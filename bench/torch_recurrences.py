"""Time the torch backend's elementwise recurrences: the CPU kernel against the plain loop and a tensor copy.

    python bench/torch_recurrences.py [--repeats 15] [--threads N] [--quick] [--sweep | --layout]

Also ``python -m rnnspec.bench.torch_recurrences``, a companion of the suite ``python -m rnnspec.bench``.

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

``--layout`` times instead the linear scan as the kernel runs it (identity steps
past each row's length, the scan, zeros written there), forward and reverse,
with and without lengths, over widths ``batch * H`` from 1024 to 65536: in the
kernel's ``(batch, time, H)`` layout (its rule's path) against a time-major
working layout, the inputs copied to ``(time, batch * H)`` by one transposing
pass (the mask's pass when there are lengths), scanned per step or in chunks,
and the output copied back or returned as a transposed view. Ratios are of
medians of process CPU time, to a copy of one input.
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

__all__ = ["main"]

SHAPES = ((16, 512, 256), (4, 1000, 256), (1, 2000, 64))
#: (steps, batch, H) of the sweep: widths batch * H from 64 to 16384.
SWEEP = tuple(
    (steps, batch, hidden)
    for steps in (64, 512, 2000)
    for batch, hidden in ((1, 64), (4, 64), (4, 256), (8, 256), (16, 256), (16, 1024))
)
#: (steps, batch, H) of the layout comparison: widths batch * H from 1024 to 65536, at most 2**25 elements.
LAYOUT = tuple(
    (steps, batch, hidden)
    for steps in (64, 512, 2000)
    for batch, hidden in ((4, 256), (16, 256), (16, 1024), (64, 1024))
    if steps * batch * hidden <= 2**25
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
            torch.autograd.backward(h, x["dh"])
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


def _time(fn: Callable[[], object], clock: Callable[[], float] = time.perf_counter) -> float:
    start = clock()
    fn()
    return clock() - start


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


def _alternate(
    calls: dict[str, Callable[[], object]], repeats: int, clock: Callable[[], float] = time.perf_counter
) -> dict[str, list[float]]:
    """Seconds per call of each of ``calls`` by ``clock``, ``repeats`` times, alternating, after one warm-up each."""
    for fn in calls.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            times[name].append(_time(fn, clock))
    return times


def _time_major(x: torch.Tensor, valid: torch.Tensor | None, identity: float) -> torch.Tensor:
    """``x`` ``(batch, time, H)`` copied to a contiguous ``(1, time, batch * H)``, ``identity`` past each length.

    One transposing pass: with lengths it is the identity-step pass of the kernel, writing time-major.
    """
    batch, steps, hidden = x.shape
    out = x.new_empty((steps, batch, hidden))
    if valid is None:
        out.copy_(x.transpose(0, 1))
    else:
        torch.where(valid.t()[:, :, None], x.transpose(0, 1), x.new_full((), identity), out=out)
    return out.view(1, steps, batch * hidden)


def _layout_calls(steps: int, batch: int, hidden: int, reverse: bool, lengths: bool) -> dict[str, Callable[[], object]]:
    """The layout comparison's contenders at one shape: a copy, the kernel's layout, three time-major variants."""
    gen = torch.Generator().manual_seed(0)
    a, b = torch.rand(batch, steps, hidden, generator=gen), torch.randn(batch, steps, hidden, generator=gen)
    h0 = torch.randn(batch, hidden, generator=gen)
    # Rows of lengths from half the steps to all of them, most ending mid-chunk.
    valid = None
    if lengths:
        ends = torch.randint(steps // 2, steps + 1, (batch,), generator=gen)
        valid = torch.arange(steps)[None, :] < ends[:, None]

    def kernel_layout() -> torch.Tensor:
        # linear_forward's passes: identity steps, the scan by the rule, zeros past the lengths.
        mult = a if valid is None else torch.where(valid[:, :, None], a, 1.0)
        add = b if valid is None else torch.where(valid[:, :, None], b, 0.0)
        out = torch.empty(batch, steps, hidden)
        recurrence_loops.scan_into(out, mult, add, h0, reverse=reverse)
        return out if valid is None else out.masked_fill_(~valid[:, :, None], 0.0)

    def time_major(chunk: int, back: bool) -> Callable[[], object]:
        def run() -> torch.Tensor:
            mult, add = _time_major(a, valid, 1.0), _time_major(b, valid, 0.0)
            out = torch.empty(steps, batch, hidden)
            flat = out.view(1, steps, batch * hidden)
            recurrence_loops.scan_into(flat, mult, add, h0.reshape(1, batch * hidden), reverse=reverse, chunk=chunk)
            if valid is not None:
                out.masked_fill_(~valid.t()[:, :, None], 0.0)
            return out.transpose(0, 1).contiguous() if back else out.transpose(0, 1)

        return run

    chunk = round(math.sqrt(steps / 2))
    return {
        "copy": a.clone,
        "kernel": kernel_layout,
        "tm-step": time_major(0, back=True),
        "tm-step-view": time_major(0, back=False),
        "tm-chunk-view": time_major(chunk, back=False),
    }


def layout(repeats: int) -> None:
    """Print the linear scan's CPU time in the kernel's layout and in a time-major one, as ratios to a copy."""
    names = ("kernel", "tm-step", "tm-step-view", "tm-chunk-view")
    print("process CPU time: median/copy (min/min copy); best time-major / kernel, medians")
    print(f"{'shape':<24} {'pass':<8} {'lengths':<7} {'C':>3} {'copy ms':>8} " + " ".join(f"{n:>14}" for n in names))
    for steps, batch, hidden in LAYOUT:
        for reverse in (False, True):
            for lengths in (False, True):
                times = _alternate(_layout_calls(steps, batch, hidden, reverse, lengths), repeats, time.process_time)
                med = {k: statistics.median(v) for k, v in times.items()}
                cells = " ".join(
                    f"{med[n] / med['copy']:>6.1f} ({min(times[n]) / min(times['copy']):>5.1f})" for n in names
                )
                best = min(med[n] for n in names[1:]) / med["kernel"]
                shape_text = f"T={steps} B*H={batch}*{hidden}"
                rule = recurrence_loops.chunk_length(steps, batch * hidden)
                print(
                    f"{shape_text:<24} {'reverse' if reverse else 'forward':<8} {'yes' if lengths else 'no':<7}"
                    f" {rule:>3} {1e3 * med['copy']:>8.3f} {cells}  {best:.2f}"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--quick", action="store_true", help="3 repeats, for a smoke run")
    parser.add_argument("--sweep", action="store_true", help="time the bare forward linear scan over a grid")
    parser.add_argument("--layout", action="store_true", help="time the linear scan in a time-major layout")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = 3 if args.quick else args.repeats
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, threads={torch.get_num_threads()}")
    print(f"float32 CPU, median (min) of {repeats} repeats, milliseconds\n")
    if args.sweep:
        sweep(repeats)
        return
    if args.layout:
        layout(repeats)
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
