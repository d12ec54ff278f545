"""Peak memory of forward plus backward with ``checkpoint_every`` (issue "Memory").

Each measurement runs in a fresh interpreter (``python -m rnnspec.bench.memory
--measure BACKEND OP T K``), so no framework, cache or allocator state of
another measurement counts. The worker builds the call, runs forward plus
backward once to warm up (TensorFlow and torch build their kernels; JAX's
program is compiled ahead instead, and its first execution measured, since
XLA keeps one execution's buffers for the next), resets the kernel's peak-RSS
mark (``/proc/self/clear_refs``), runs forward plus backward again and reports
``VmHWM - VmRSS`` before it: the peak resident memory the step added (the
warm-up's own figure, kernels and caches included, comes beside it). RSS
sees every allocator (torch's, XLA's, TensorFlow's) where ``tracemalloc`` sees
Python's only. For JAX the rows also give XLA's own figure, the compiled
program's temporary buffers (``memory_analysis()``). glibc is told to map and
unmap every block of 64 KiB or more, and ``malloc_trim(0)`` gives back the
pages of the smaller freed blocks before the measured run, so freed
activations leave the RSS and the next run starts from the same base. Where
the peak mark cannot be reset, the worker falls back to ``ru_maxrss`` (the
peak of the whole process).

Every framework runs on one thread (``--threads``, default 1) in the workers:
with their default thread pools, torch's OpenMP workers spin-wait for cores
that the other processes on a shared machine hold, and one forward plus
backward of the 2-layer LSTM at T=5000 took minutes instead of seconds
(T=1000: 0.9 s on 1 thread, 3 to 20 s on 2 threads with the load at 5). The
thread count changes the time, not the activations kept for backward.

The backward pass takes cotangents of the outputs, so the outputs, their
cotangent and the gradient of x (each O(T) values of one layer) are in every
row; the activations that ``checkpoint_every`` removes come on top of them:
about T steps without it, about T/K states and K steps with it.

:func:`cases` returns one row per measurement; ``python -m rnnspec.bench.memory``
prints them as a table.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import json
import os
import resource
import subprocess
import sys
import time as clock
from pathlib import Path
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
#: Seconds one measurement may take before it is reported as timed out.
TIMEOUT = 1800


def _thread_env(threads: int) -> dict[str, str]:
    """Environment giving every framework ``threads`` threads (0: leave their defaults)."""
    env = {"TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    if threads:
        names = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")
        env.update(dict.fromkeys(names, str(threads)))
        env["RNNSPEC_BENCH_THREADS"] = str(threads)
        if threads == 1:
            env["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    return env


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

        if os.environ.get("RNNSPEC_BENCH_THREADS"):
            torch.set_num_threads(int(os.environ["RNNSPEC_BENCH_THREADS"]))

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


def _trim() -> None:
    """Give the pages of freed blocks in every glibc arena back to the kernel (``malloc_trim(0)``).

    The mmap threshold only covers blocks of 64 KiB or more: the per-step tensors of the eager loops
    (TensorFlow's, torch's Skip RNN) are smaller, so the heap keeps the warm-up's activations resident
    and the measured step would reuse them without a rise in RSS (TensorFlow's lstm at T=1000 showed
    8 MiB without the trim, 294 MiB with it).
    """
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)


def measure(backend: str, op: str, time: int, every: int | None) -> dict[str, object]:
    """Peak memory added by one forward plus backward, measured in this process (call it in a fresh one).

    Returns
    -------
    dict
        ``peak_bytes``, the peak the measured step added over the RSS before it; ``first_call_bytes``,
        the same for the warm-up step (kernel building and caches included; not for JAX, compiled ahead);
        ``method``; and ``xla_temp_bytes`` for JAX.
    """
    step = _step(backend, op, time, every)
    found: dict[str, object] = {}
    if not getattr(step, "warm", False):
        start = _status("VmRSS")
        if _reset_peak():
            step()  # build kernels, fill caches
            found["first_call_bytes"] = max(_status("VmHWM") - start, 0)
        else:
            step()
    _trim()
    base = _status("VmRSS")
    exact = _reset_peak()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    step()
    peak = _status("VmHWM") if exact else max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, before)
    found.update(peak_bytes=max(peak - base, 0), method="VmHWM reset" if exact else "ru_maxrss")
    if getattr(step, "xla_temp_bytes", None) is not None:
        found["xla_temp_bytes"] = step.xla_temp_bytes
    return found


def _run_worker(backend: str, op: str, time: int, every: int | None, threads: int) -> dict[str, object]:
    env = {**os.environ, **_MALLOC_ENV, **_thread_env(threads)}
    command = [sys.executable, "-m", "rnnspec.bench.memory", "--measure", backend, op, str(time), str(every)]
    start = clock.perf_counter()
    try:
        proc = subprocess.run(command, capture_output=True, text=True, env=env, check=False, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {TIMEOUT} s", "seconds": TIMEOUT}
    seconds = round(clock.perf_counter() - start, 1)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:]
        return {"error": tail[0] if tail else f"exit {proc.returncode}", "seconds": seconds}
    result: dict[str, object] = json.loads(lines[-1])
    result["seconds"] = seconds
    return result


def cases(
    quick: bool,
    backends: tuple[str, ...] = BACKENDS,
    ops: tuple[str, ...] | None = None,
    every: tuple[int | None, ...] | None = None,
    threads: int = 1,
    progress: Any = None,
) -> list[dict[str, object]]:
    """One row per (backend, op, K): peak bytes of forward plus backward at T=5000 (quick: T=300).

    Parameters
    ----------
    quick : bool
        The CI subset: lstm, K in None/50, T=300.
    backends, ops, every : tuple, optional
        What to measure (defaults: :data:`BACKENDS`, ``OPS[quick]``, ``EVERY[quick]``).
    threads : int
        Threads of every framework in the workers (0: their defaults).
    progress : callable, optional
        Called with the rows so far after each measurement.

    Returns
    -------
    list of dict
        The peak, its ratio to the same call with ``checkpoint_every=None``, the seconds the worker took.
    """
    time = TIME[quick]
    rows: list[dict[str, object]] = []
    for backend in backends:
        for op in ops or OPS[quick]:
            baseline: float | None = None
            for k in every or EVERY[quick]:
                found = _run_worker(backend, op, time, k, threads)
                row: dict[str, object] = {
                    "backend": backend,
                    "op": op,
                    "T": time,
                    "checkpoint_every": k,
                    "shape": f"B={BATCH} I={INPUT} H={HIDDEN} layers={LAYERS} float32",
                    "peak_bytes": found.get("peak_bytes"),
                    "ratio_to_none": None,
                }
                for extra in ("error", "first_call_bytes", "xla_temp_bytes", "method", "seconds"):
                    if extra in found:
                        row[extra] = found[extra]
                peak = row["peak_bytes"]
                if k is None and isinstance(peak, int):
                    baseline = float(peak)
                if isinstance(peak, int) and baseline:
                    row["ratio_to_none"] = round(peak / baseline, 3)
                rows.append(row)
                if progress is not None:
                    progress(rows)
    return rows


def _mib(value: object) -> str:
    return f"{value / 2**20:.1f}" if isinstance(value, int) else ""


def _table(rows: list[dict[str, object]]) -> str:
    lines = [
        "| backend | op | T | checkpoint_every | peak MiB | ratio to None | first call MiB | XLA temp MiB | seconds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        peak = _mib(r["peak_bytes"]) or f"error: {r.get('error')}"
        lines.append(
            f"| {r['backend']} | {r['op']} | {r['T']} | {r['checkpoint_every']} | {peak} | {r['ratio_to_none']} "
            f"| {_mib(r.get('first_call_bytes'))} | {_mib(r.get('xla_temp_bytes'))} | {r.get('seconds', '')} |"
        )
    return "\n".join(lines)


def write(out: Path, meta: dict[str, Any], rows: list[dict[str, object]]) -> dict[str, Path]:
    """Write ``memory_cpu.md`` and ``memory_cpu.json`` into ``out``; the paths written, by kind."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "memory_cpu.md", "json": out / "memory_cpu.json"}
    loads = f"load average (1, 5, 15 min) {meta['load_average_1_5_15']} at the start"
    if "load_average_end" in meta:
        loads += f", {meta['load_average_end']} at the end"
    header = [
        "# Peak memory of forward + backward with checkpoint_every",
        "",
        f"`{meta['command']}`, {meta['date']}; {meta['cpu']} ({meta['machine']}, {meta['cores']} cores), {loads}; "
        f"Python {meta['python']}, NumPy {meta['numpy']}, rnnspec {meta['rnnspec']}; "
        f"{', '.join(f'{k} {v}' for k, v in meta.get('frameworks', {}).items())}; "
        f"{meta['threads'] or 'default'} thread(s) per framework.",
        "",
        "Peak resident memory one forward plus backward adds (VmHWM after it minus VmRSS before it, each in a "
        "fresh process after one warm-up step; JAX: the first execution of the compiled program), "
        f"B={BATCH} I={INPUT} H={HIDDEN} {LAYERS} layers float32. XLA temp: the compiled program's temporary "
        "buffers (`memory_analysis()`). Seconds: the whole worker process (imports, warm-up, measured step), "
        "on a shared machine.",
        "",
    ]
    paths["markdown"].write_text("\n".join([*header, _table(rows)]) + "\n")
    paths["json"].write_text(json.dumps({"meta": meta, "rows": rows}, indent=1, default=str) + "\n")
    return paths


def _versions(backends: tuple[str, ...]) -> dict[str, str]:
    from importlib import metadata

    names = {"torch": "torch", "jax": "jax", "tensorflow": "tensorflow-cpu"}
    found = {}
    for backend in backends:
        for dist in (names.get(backend, backend), backend):
            try:
                found[backend] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    return found


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m rnnspec.bench.memory", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="lstm, K in None/50, T=300 (CI)")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated framework backends")
    parser.add_argument("--ops", default=None, help="comma-separated ops (default: lstm,skip_gru; quick: lstm)")
    parser.add_argument("--every", default=None, help="comma-separated K values, None for no checkpointing")
    parser.add_argument("--threads", type=int, default=1, help="threads of every framework (0: their defaults)")
    parser.add_argument("--out", type=Path, default=None, help="write memory_cpu.md and .json into this folder")
    return parser


def main(argv: list[str]) -> None:
    """Measure one case (``--measure BACKEND OP T K``, in a worker) or all of them, and print the table."""
    if argv[:1] == ["--measure"]:
        backend, op, time, every = argv[1], argv[2], int(argv[3]), None if argv[4] == "None" else int(argv[4])
        print(json.dumps(measure(backend, op, time, every)))
        return
    args = _parser().parse_args(argv)
    backends = tuple(b for b in args.backends.split(",") if b)
    ops = tuple(args.ops.split(",")) if args.ops else None
    ks = tuple(None if k == "None" else int(k) for k in args.every.split(",")) if args.every else None
    from .system import machine

    meta: dict[str, Any] = machine([])
    meta["command"] = " ".join(["python -m rnnspec.bench.memory", *argv])
    meta.update(threads=args.threads, frameworks=_versions(backends), malloc_env=_MALLOC_ENV)

    def progress(rows: list[dict[str, object]]) -> None:
        print(f"{rows[-1]}", file=sys.stderr, flush=True)
        if args.out is not None:
            write(args.out, {**meta, "partial": True}, rows)

    rows = cases(args.quick, backends, ops, ks, args.threads, progress)
    meta["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    print(_table(rows))
    if args.out is not None:
        for kind, path in write(args.out, meta, rows).items():
            print(f"{kind}: {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
