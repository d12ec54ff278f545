"""Time the PyTorch backend's skip_gru and act at inference: the skipping loop against the training loop.

    python bench/torch_skip_inference.py [--time 1000] [--hidden 128] [--inputs 64] [--batches 1 32]
        [--repeats 7] [--threads 1] [--act-time 200] [--clock wall|cpu]

Also ``python -m rnnspec.bench.torch_skip_inference``, a companion of the suite ``python -m rnnspec.bench``.

skip_gru's update rate is fixed with ``w_gate = 0`` and ``b_gate = logit(p)``:
then ``du~ = p`` at every update and, from ``update_prob = 1``, ``u~`` grows by
``p`` until it reaches 0.5, so p = 0.5 updates at every step, p = 0.3 at every
2nd and p = 0.13 at every 4th. The rate reported is the one measured from the
result's ``update_gate``. act's ponder level is set with ``w_halt = 0`` and
``b_halt = logit(q)``: every row halts after ``ceil((1 - epsilon) / q)`` inner
steps (capped by ``max_steps``); "mixed" draws ``w_halt`` at random, so that
rows halt at different inner steps.

The skipping loop runs under ``torch.no_grad()``; the training loop is the
same call under :func:`rnnspec.backends.torch.fused.plain_path`, forward only.
Both are timed in alternating order, on the same inputs; the figures are the
medians (and minima) of the repeats. Nothing here is asserted.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

import rnnspec
from rnnspec.backends.torch import fused

__all__ = ["main"]

#: The skip_gru update rates and the du~ that gives each (see the module docstring).
RATES = {1.0: 0.5, 0.5: 0.3, 0.25: 0.13}
#: The act halting unit of every inner step, by the steps each gives with epsilon = 0.01 (None: varied by row).
PONDER: dict[str, float | None] = {"1": 0.995, "2": 0.5, "4": 0.25, "mixed": None}


#: The clock of every timing: "wall" (time.perf_counter) or "cpu" (time.process_time, this process's CPU time:
#: on a machine shared with other jobs it counts the work done, not the time spent waiting for a core).
CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = time.perf_counter


def _median_ms(calls: dict[str, Callable[[], object]], repeats: int) -> dict[str, tuple[float, float]]:
    times: dict[str, list[float]] = {name: [] for name in calls}
    for fn in calls.values():  # warm up
        fn()
    for _ in range(repeats):
        for name, fn in calls.items():  # alternating, so drift hits all alike
            start = _clock()
            fn()
            times[name].append(_clock() - start)
    return {name: (1e3 * statistics.median(t), 1e3 * min(t)) for name, t in times.items()}


def _paths(op: str, call: Callable[[], object]) -> dict[str, Callable[[], object]]:
    def skip() -> object:
        out = call()
        assert fused.last_path(op) == "skipping"
        return out

    def train() -> object:
        with fused.plain_path():
            out = call()
        assert fused.last_path(op) == "training"
        return out

    return {"skipping": skip, "training": train}


def bench_skip(batch: int, steps: int, inputs: int, hidden: int, repeats: int, stagger: bool) -> list[str]:
    """Rows of the skip_gru table at every rate for one batch size.

    ``stagger``: rows start at different points of the gate's cycle (``cum_update_prob`` of row
    ``b`` is ``(b mod k) p`` for an update every ``k`` steps), so they update at different steps.
    """
    backend = rnnspec.get_backend("torch")
    params = backend.from_numpy(rnnspec.init_params("skip_gru", input_size=inputs, hidden_size=hidden, seed=0))
    x = torch.randn(batch, steps, inputs, generator=torch.Generator().manual_seed(0))
    rows = []
    times: dict[float, dict[str, tuple[float, float]]] = {}
    for rate, p in RATES.items():
        layer = dict(params[0], w_gate=torch.zeros(1, hidden), b_gate=torch.tensor([math.log(p / (1.0 - p))]))
        state = None
        if stagger:
            phase = (torch.arange(batch) % round(1.0 / rate)).to(torch.float32)[:, None]
            start = {"h": torch.zeros(batch, hidden), "update_prob": torch.full((batch, 1), p)}
            state = [dict(start, cum_update_prob=phase * p)]

        def call(layer: dict[str, torch.Tensor] = layer, state: list[dict[str, torch.Tensor]] | None = state) -> Any:
            return backend.skip_gru(x, [layer], initial_state=state)

        measured = float(call().update_gate.mean())
        times[rate] = _median_ms(_paths("skip_gru", call), repeats)
        skip_ms, train_ms = times[rate]["skipping"], times[rate]["training"]
        full = times[max(RATES)]["skipping"][0]
        rows.append(
            f"| {batch}{' staggered' if stagger else ''} | {rate:.2f} | {measured:.4f} | "
            f"{skip_ms[0]:.1f} ({skip_ms[1]:.1f}) | {train_ms[0]:.1f} ({train_ms[1]:.1f}) | "
            f"{train_ms[0] / skip_ms[0]:.2f} | {skip_ms[0] / full:.2f} |"
        )
    return rows


def bench_act(batch: int, steps: int, inputs: int, hidden: int, repeats: int) -> list[str]:
    """Rows of the act table at every ponder level for one batch size."""
    backend = rnnspec.get_backend("torch")
    params = backend.from_numpy(rnnspec.init_params("act", input_size=inputs, hidden_size=hidden, cell="gru", seed=0))
    x = torch.randn(batch, steps, inputs, generator=torch.Generator().manual_seed(0))
    rows = []
    for level, q in PONDER.items():
        if q is None:  # halting units that depend on the state: rows halt at different inner steps
            w_halt = torch.randn(1, hidden, generator=torch.Generator().manual_seed(1))
            q = 0.3
        else:
            w_halt = torch.zeros(1, hidden)
        b_halt = torch.tensor([math.log(q / (1.0 - q))])
        layer = dict(params[0], w_halt=w_halt, b_halt=b_halt)

        def call(layer: dict[str, torch.Tensor] = layer) -> Any:
            return backend.act(x, [layer], cell="gru", epsilon=0.01, max_steps=8)

        measured = float(call().ponder_steps.mean())
        t = _median_ms(_paths("act", call), repeats)
        skip_ms, train_ms = t["skipping"], t["training"]
        rows.append(
            f"| {batch} | {level} | {measured:.2f} | {skip_ms[0]:.1f} ({skip_ms[1]:.1f}) | "
            f"{train_ms[0]:.1f} ({train_ms[1]:.1f}) | {train_ms[0] / skip_ms[0]:.2f} |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--time", type=int, default=1000)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--inputs", type=int, default=64)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (0: torch's default)")
    parser.add_argument("--act-time", type=int, default=200, help="act's sequence length")
    parser.add_argument("--clock", choices=sorted(CLOCK), default="wall", help="wall time, or this process's CPU time")
    args = parser.parse_args()
    global _clock
    _clock = CLOCK[args.clock]
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), CPU, {args.clock} clock")
    print(f"\nskip_gru, T={args.time} I={args.inputs} H={args.hidden}: median (min) ms of {args.repeats} repeats")
    print("| batch | rate | measured rate | skipping | training loop | training / skipping | vs rate 1 |")
    print("|---|---|---|---|---|---|---|")
    with torch.no_grad():
        for batch in args.batches:
            print("\n".join(bench_skip(batch, args.time, args.inputs, args.hidden, args.repeats, stagger=False)))
            if batch > 1:
                print("\n".join(bench_skip(batch, args.time, args.inputs, args.hidden, args.repeats, stagger=True)))
        print(f"\nact (gru cell, max_steps=8), T={args.act_time} I={args.inputs} H={args.hidden}: median (min) ms")
        print("| batch | ponder steps | measured mean N | skipping | training loop | training / skipping |")
        print("|---|---|---|---|---|---|")
        for batch in args.batches:
            print("\n".join(bench_act(batch, args.act_time, args.inputs, args.hidden, args.repeats)))


if __name__ == "__main__":
    main()
