"""Time the PyTorch backend's lstm/gru against torch.nn.LSTM/GRU, fused and plain paths, side by side.

    python bench/torch_paths.py --device cpu [--quick] [--out bench/results]

Also ``python -m rnnspec.bench.torch_paths``, a companion of the suite ``python -m rnnspec.bench``.

Each case times three callables on the same inputs, in alternating order, and
reports the minimum and median of the repeats and the ratio of medians to
torch.nn's. Nothing here is asserted: the figures are for reading.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import rnnspec
from rnnspec.backends.torch import fused
from rnnspec.convert import from_torch

__all__ = ["bench_case", "main"]


def _timer(device: str) -> Callable[[Callable[[], object]], float]:
    def run(fn: Callable[[], object]) -> float:
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    return run


def bench_case(
    op: str, batch: int, steps: int, hidden: int, device: str, backward: bool, repeats: int
) -> dict[str, Any]:
    torch.manual_seed(0)
    module = (torch.nn.LSTM if op == "lstm" else torch.nn.GRU)(hidden, hidden, batch_first=True).to(device)
    params = rnnspec.get_backend("torch").from_numpy(from_torch(module))
    params = [{k: v.to(device).requires_grad_(backward) for k, v in p.items()} for p in params]
    x = torch.randn(batch, steps, hidden, device=device, requires_grad=backward)
    backend = rnnspec.get_backend("torch")

    def nn_call() -> object:
        out, _ = module(x)
        return out.sum().backward() if backward else out

    def ours(plain: bool) -> Callable[[], object]:
        def call() -> object:
            if plain:
                with fused.plain_path():
                    out = getattr(backend, op)(x, params).outputs
            else:
                out = getattr(backend, op)(x, params).outputs
            return out.sum().backward() if backward else out

        return call

    calls = {"torch.nn": nn_call, "rnnspec fused": ours(False), "rnnspec plain": ours(True)}
    timer = _timer(device)
    times: dict[str, list[float]] = {name: [] for name in calls}
    context = torch.enable_grad() if backward else torch.no_grad()
    with context:
        for fn in calls.values():  # warm up
            fn()
        for _ in range(repeats):
            for name, fn in calls.items():  # alternating, so drift hits all alike
                times[name].append(timer(fn))
    base = statistics.median(times["torch.nn"])
    return {
        "op": op,
        "shape": f"B={batch} T={steps} H={hidden}",
        "pass": "forward+backward" if backward else "forward",
        "results": {
            name: {
                "min_ms": 1e3 * min(t),
                "median_ms": 1e3 * statistics.median(t),
                "ratio": statistics.median(t) / base,
            }
            for name, t in times.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--quick", action="store_true", help="one small shape, few repeats")
    parser.add_argument("--out", default=None, help="folder for the markdown table and JSON")
    args = parser.parse_args()
    shapes = [(16, 64, 64)] if args.quick else [(16, 256, 256), (1, 1000, 64)]
    repeats = 3 if args.quick else 7
    rows = []
    for op in ("lstm", "gru"):
        for batch, steps, hidden in shapes:
            for backward in (False, True):
                rows.append(bench_case(op, batch, steps, hidden, args.device, backward, repeats))
    device = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or platform.machine()
    header = f"torch {torch.__version__}, device {args.device} ({device}), threads {torch.get_num_threads()}"
    lines = [
        header,
        "",
        "| op | shape | pass | torch.nn ms | rnnspec fused ms (ratio) | rnnspec plain ms (ratio) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        res = r["results"]
        lines.append(
            f"| {r['op']} | {r['shape']} | {r['pass']} | {res['torch.nn']['median_ms']:.2f} | "
            f"{res['rnnspec fused']['median_ms']:.2f} ({res['rnnspec fused']['ratio']:.2f}x) | "
            f"{res['rnnspec plain']['median_ms']:.2f} ({res['rnnspec plain']['ratio']:.2f}x) |"
        )
    table = "\n".join(lines)
    print(table)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        stem = f"torch_paths_{args.device}"
        (out / f"{stem}.md").write_text(table + "\n")
        (out / f"{stem}.json").write_text(json.dumps({"header": header, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
