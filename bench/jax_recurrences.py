"""Timings of the JAX backend's loops on this machine, which choose its paths.

- ``linear_recurrence``: the sequential ``lax.scan`` against ``lax.associative_scan``
  (``rnnspec.backends.jax.recurrences``), forward and forward + backward, over
  the time length; this sets ``ASSOCIATIVE_MIN_TIME`` for the device;
- ``lax.scan``'s ``unroll`` (1, 2, 4, 8) for the linear recurrence and lstm;
  this sets ``rnnspec.backends.jax.sequence.UNROLL``;
- lstm forward through the backend (``jax.jit``) against ``torch.nn.LSTM``
  (when torch is installed), at the sizes of ``shared/notes/anchors.md``.

Every figure is the median of ``--repeats`` runs after a compiling (or
warm-up) run, in milliseconds. Run::

    python bench/jax_recurrences.py            # every table
    python bench/jax_recurrences.py --quick    # fewer sizes, fewer repeats
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import rnnspec
from rnnspec.backends.jax import classic, recurrences, sequence


def median_ms(fn: Callable[[], Any], repeats: int) -> float:
    """The median wall time of ``fn()`` in ms, results waited for, after one untimed run."""
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _linear_inputs(batch: int, time_: int, hidden: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.uniform(0.0, 1.0, (batch, time_, hidden)).astype(np.float32))
    b = jnp.asarray(rng.standard_normal((batch, time_, hidden)).astype(np.float32))
    return a, b, jnp.zeros((batch, hidden), jnp.float32)


def _linear_ms(fn: Callable[..., Any], batch: int, time_: int, hidden: int, grad: bool, repeats: int) -> float:
    a, b, h0 = _linear_inputs(batch, time_, hidden)

    def forward(a: jax.Array, b: jax.Array) -> jax.Array:
        h: jax.Array = fn(a, b, h0, None)[0]
        return h

    run = jax.jit(jax.grad(lambda a, b: forward(a, b).sum(), (0, 1)) if grad else forward)
    return median_ms(lambda: run(a, b), repeats)


def linear_table(times: list[int], batch: int, hidden: int, repeats: int) -> list[str]:
    """Sequential against associative scan, forward and forward + backward."""
    forms = (recurrences.sequential_linear_scan, recurrences.associative_linear_scan)
    lines = [
        f"linear_recurrence, float32, B={batch} H={hidden} ({jax.default_backend()}): ms",
        "| T | sequential fwd | associative fwd | sequential fwd+bwd | associative fwd+bwd |",
        "|---|---|---|---|---|",
    ]
    for t in times:
        row = [str(t)] + [
            f"{_linear_ms(fn, batch, t, hidden, grad, repeats):.2f}" for grad in (False, True) for fn in forms
        ]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def unroll_table(batch: int, time_: int, hidden: int, repeats: int) -> list[str]:
    """``lax.scan``'s unroll for the sequential linear recurrence and lstm (forward)."""
    backend = rnnspec.get_backend("jax")
    a, b, h0 = _linear_inputs(batch, time_, hidden)
    params = backend.from_numpy(rnnspec.init_params("lstm", input_size=hidden, hidden_size=hidden, seed=0))
    x = jnp.asarray(np.random.default_rng(1).standard_normal((batch, time_, hidden)).astype(np.float32))
    lines = [
        f"lax.scan unroll, float32, B={batch} T={time_} H={hidden} ({jax.default_backend()}): ms (compile s)",
        "| unroll | linear fwd | lstm fwd |",
        "|---|---|---|",
    ]
    saved = sequence.UNROLL
    try:
        for unroll in (1, 2, 4, 8):
            sequence.UNROLL = unroll
            recurrences.UNROLL = unroll
            row = [str(unroll)]
            linear = jax.jit(lambda a, b: recurrences.sequential_linear_scan(a, b, h0, None)[0])
            lstm = jax.jit(
                lambda x, p: classic.lstm(x=x, params=p, lengths=None, initial_state=None, reverse=False).outputs
            )
            for fn, args in ((linear, (a, b)), (lstm, (x, params))):
                start = time.perf_counter()
                jax.block_until_ready(fn(*args))
                compile_s = time.perf_counter() - start
                row.append(f"{median_ms(lambda fn=fn, args=args: fn(*args), repeats):.2f} ({compile_s:.2f})")
            lines.append("| " + " | ".join(row) + " |")
    finally:
        sequence.UNROLL = saved
        recurrences.UNROLL = saved
    return lines


def lstm_table(shapes: list[tuple[int, int, int]], repeats: int) -> list[str]:
    """lstm forward: the backend under jax.jit against torch.nn.LSTM (no autograd), one layer, I = H."""
    backend = rnnspec.get_backend("jax")
    lines = [
        f"lstm forward, float32, one layer, I = H ({jax.default_backend()}): ms",
        "| B | T | H | rnnspec jax | torch.nn.LSTM | ratio |",
        "|---|---|---|---|---|---|",
    ]
    try:
        import torch
    except ImportError:
        torch = None
    for batch, time_, hidden in shapes:
        rng = np.random.default_rng(2)
        host_x = rng.standard_normal((batch, time_, hidden)).astype(np.float32)
        host_p = rnnspec.init_params("lstm", input_size=hidden, hidden_size=hidden, seed=0)
        x, params = backend.from_numpy(host_x), backend.from_numpy(host_p)
        ours = median_ms(lambda x=x, params=params: backend.lstm(x, params).outputs, repeats)
        row = [str(batch), str(time_), str(hidden), f"{ours:.2f}"]
        if torch is not None:
            from rnnspec.convert import to_torch

            module = to_torch(host_p, "lstm")
            tx = torch.from_numpy(host_x)
            with torch.no_grad():
                theirs = median_ms(lambda module=module, tx=tx: module(tx)[0], repeats)
            row += [f"{theirs:.2f}", f"{ours / theirs:.2f}"]
        else:
            row += ["-", "-"]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer sizes and repeats")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    repeats = args.repeats or (5 if args.quick else 20)
    times = [64, 1024] if args.quick else [16, 64, 256, 1024, 4096]
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}, {repeats} repeats\n")
    for table in (
        linear_table(times, batch=16, hidden=256, repeats=repeats),
        unroll_table(batch=16, time_=256, hidden=256, repeats=repeats),
        lstm_table([(16, 256, 256), (1, 1000, 64), (64, 100, 128)], repeats=repeats),
    ):
        print("\n".join(table) + "\n")


if __name__ == "__main__":
    main()
