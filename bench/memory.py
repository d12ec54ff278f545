"""Peak memory of forward plus backward with ``checkpoint_every`` (issue "Memory").

Each measurement runs in a fresh interpreter (``python -m rnnspec.bench.memory
--measure BACKEND OP T K``), so no framework, cache or allocator state of
another measurement counts. The worker builds the call, runs forward plus
backward once to warm up (TensorFlow and torch build their kernels; JAX's
program is compiled ahead instead, and its first execution measured, since
XLA keeps one execution's buffers for the next), resets the kernel's peak-RSS
mark (``/proc/self/clear_refs``), runs forward plus backward again and reports
``VmHWM - VmRSS`` before it: the peak resident memory the step added. RSS
sees every allocator (torch's, XLA's, TensorFlow's) where ``tracemalloc`` sees
Python's only. For JAX the rows also give XLA's own figure, the compiled
program's temporary buffers (``memory_analysis()``). glibc is told to map and
unmap every block of 64 KiB or more, so freed activations leave the RSS and the
next run starts from the same base. Where the peak mark cannot be reset, the
worker falls back to ``ru_maxrss`` (the peak of the whole process).

The backward pass takes cotangents of the outputs, so the outputs, their
cotangent and the gradient of x (each O(T) values of one layer) are in every
row; the activations that ``checkpoint_every`` removes come on top of them:
about T steps without it, about T/K states and K steps with it.

:func:`cases` returns one row per measurement; ``python -m rnnspec.bench.memory``
prints them as a table.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from typing import Any

import numpy as np

__all__ = ["BATCH", "HIDDEN", "INPUT", "LAYERS", "cases", "measure"]

BATCH, INPUT, HIDDEN, LAYERS = 16, 16, 128, 2
#: The backends, ops and segment lengths measured.
BACKENDS: tuple[str, ...] = ("torch", "jax", "tensorflow")
#: Quick mode (CI) only keeps the suite working: one op, two settings, a short sequence.
OPS: dict[bool, tuple[str, ...]] = {False: ("lstm", "skip_gru"), True: ("lstm",)}
EVERY: dict[bool, tuple[int | None, ...]] = {False: (None, 500, 100, 50), True: (None, 50)}
TIME: dict[bool, int] = {False: 5000, True: 300}
#: Blocks this large or larger are mapped and unmapped by glibc, never kept in its heap.
_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}


def _status(field: str) -> int:
    """A ``/proc/self/status`` size field, in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _step(backend: str, op: str, time: int, every: int | None) -> Any:
    """A callable running forward plus backward of ``op`` once on ``backend``."""
    import rnnspec

    B = rnnspec.get_backend(backend)
    rng = np.random.default_rng(0)
    params = B.from_numpy(
        rnnspec.init_params(op, input_size=INPUT, hidden_size=HIDDEN, num_layers=LAYERS, seed=0, dtype="float32")
    )
    x = B.from_numpy(rng.standard_normal((BATCH, time, INPUT)).astype(np.float32))
    cotangent = B.from_numpy(rng.standard_normal((BATCH, time, HIDDEN)).astype(np.float32))
    if backend == "jax":
        import jax

        def loss(x: Any, params: Any) -> Any:
            out = getattr(B, op)(x, params, checkpoint_every=every).outputs
            return (out * cotangent).sum()

        # Compiled ahead, so the measured run is the first execution: XLA keeps the buffers of one
        # execution for the next, so a second run would show no peak of its own.
        compiled = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(x, params).compile()
        analysis = compiled.memory_analysis()
        temp = getattr(analysis, "temp_size_in_bytes", None)
        run_jax: Any = lambda: [g.block_until_ready() for g in jax.tree_util.tree_leaves(compiled(x, params))]  # noqa: E731
        run_jax.xla_temp_bytes = temp
        run_jax.warm = True
        return run_jax
    if backend == "torch":
        import torch

        def run_torch() -> Any:
            xs = x.clone().requires_grad_(True)
            ps = [{k: v.clone().requires_grad_(True) for k, v in p.items()} for p in params]
            out = getattr(B, op)(xs, ps, checkpoint_every=every).outputs
            return torch.autograd.grad((out * cotangent).sum(), [xs, *[v for p in ps for v in p.values()]])

        return run_torch
    import tensorflow as tf

    def run_tf() -> Any:
        with tf.GradientTape() as tape:
            tape.watch([x, *[v for p in params for v in p.values()]])
            out = getattr(B, op)(x, params, checkpoint_every=every).outputs
            loss = tf.reduce_sum(out * cotangent)
        return [g.numpy() for g in tape.gradient(loss, [x, *[v for p in params for v in p.values()]])]

    return run_tf


def measure(backend: str, op: str, time: int, every: int | None) -> dict[str, object]:
    """Peak memory added by one forward plus backward, measured in this process (call it in a fresh one)."""
    step = _step(backend, op, time, every)
    if not getattr(step, "warm", False):
        step()  # build kernels, fill caches
    base = _status("VmRSS")
    exact = _reset_peak()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    step()
    peak = _status("VmHWM") if exact else max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, before)
    found: dict[str, object] = {"peak_bytes": max(peak - base, 0), "method": "VmHWM reset" if exact else "ru_maxrss"}
    if getattr(step, "xla_temp_bytes", None) is not None:
        found["xla_temp_bytes"] = step.xla_temp_bytes
    return found


def _run_worker(backend: str, op: str, time: int, every: int | None) -> dict[str, object]:
    env = {**os.environ, **_MALLOC_ENV}
    command = [sys.executable, "-m", "rnnspec.bench.memory", "--measure", backend, op, str(time), str(every)]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, check=False, timeout=1800)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit {proc.returncode}"]}
    result: dict[str, object] = json.loads(lines[-1])
    return result


def cases(quick: bool, backends: tuple[str, ...] = BACKENDS) -> list[dict[str, object]]:
    """One row per (backend, op, K): peak bytes of forward plus backward at T=5000 (quick: T=300),
    and its ratio to the same call with ``checkpoint_every=None``."""
    time = TIME[quick]
    rows: list[dict[str, object]] = []
    for backend in backends:
        for op in OPS[quick]:
            baseline: float | None = None
            for every in EVERY[quick]:
                found = _run_worker(backend, op, time, every)
                row: dict[str, object] = {
                    "backend": backend,
                    "op": op,
                    "T": time,
                    "checkpoint_every": every,
                    "shape": f"B={BATCH} I={INPUT} H={HIDDEN} layers={LAYERS} float32",
                    "peak_bytes": found.get("peak_bytes"),
                    "ratio_to_none": None,
                }
                for extra in ("error", "xla_temp_bytes"):
                    if extra in found:
                        row[extra] = found[extra]
                peak = row["peak_bytes"]
                if every is None and isinstance(peak, int):
                    baseline = float(peak)
                if isinstance(peak, int) and baseline:
                    row["ratio_to_none"] = round(peak / baseline, 3)
                rows.append(row)
    return rows


def _table(rows: list[dict[str, object]]) -> str:
    lines = ["| backend | op | T | checkpoint_every | peak MiB | ratio to None |", "|---|---|---|---|---|---|"]
    for r in rows:
        peak = r["peak_bytes"]
        mib = f"{peak / 2**20:.1f}" if isinstance(peak, int) else f"error: {r.get('error')}"
        lines.append(
            f"| {r['backend']} | {r['op']} | {r['T']} | {r['checkpoint_every']} | {mib} | {r['ratio_to_none']} |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    if argv[:1] == ["--measure"]:
        backend, op, time, every = argv[1], argv[2], int(argv[3]), None if argv[4] == "None" else int(argv[4])
        print(json.dumps(measure(backend, op, time, every)))
        return
    quick = "--quick" in argv
    chosen = [tuple(a.split("=", 1)[1].split(",")) for a in argv if a.startswith("--backends=")]
    print(_table(cases(quick, chosen[0] if chosen else BACKENDS)))


if __name__ == "__main__":
    main(sys.argv[1:])
