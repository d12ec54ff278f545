"""Time the TensorFlow backend's lstm/gru eagerly, as a graph and under XLA, against keras.layers.LSTM/GRU, on CPU.

    python bench/tensorflow_paths.py [--quick] [--out bench/results]

Also ``python -m rnnspec.bench.tensorflow_paths``, a companion of the suite ``python -m rnnspec.bench``.

Every case runs the same weights (a Keras layer's, converted with
``rnnspec.convert.from_keras``) on the same inputs through each path, in
alternating order so that drift hits all alike, and reports the median wall
time and the median process CPU time of the repeats, with the ratio of wall
medians to Keras' layer run the same way (eager to eager, compiled to
compiled). The header records the load average, since the machine may be
shared: process CPU time is the steadier figure there. Nothing here is
asserted: the figures are for reading.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

import rnnspec
from rnnspec.convert import from_keras

__all__ = ["bench_case", "main"]

#: The Keras layer each path is compared with, by the kind of path.
_BASELINE = {"eager": "keras eager", "graph": "keras tf.function", "xla": "keras jit_compile"}


def _measure(fn: Callable[[], Any]) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call, results fetched to the host."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    for leaf in tf.nest.flatten(out):
        np.asarray(leaf)  # waits for the values: the call is done only when they are
    return time.perf_counter() - wall, time.process_time() - cpu


def bench_case(op: str, batch: int, steps: int, hidden: int, backward: bool, repeats: int) -> dict[str, Any]:
    keras.utils.set_random_seed(0)
    theirs = (keras.layers.LSTM if op == "lstm" else keras.layers.GRU)(hidden, return_sequences=True)
    theirs.build((None, None, hidden))
    backend = rnnspec.get_backend("tensorflow")
    params = [{k: tf.Variable(v) for k, v in layer.items()} for layer in from_keras(theirs)]
    x = tf.constant(np.random.default_rng(0).standard_normal((batch, steps, hidden)).astype(np.float32))
    ours_sources = [x, *(v for layer in params for v in layer.values())]

    def ours_run(x: tf.Tensor) -> tf.Tensor:
        return getattr(backend, op)(x, params).outputs

    def theirs_run(x: tf.Tensor) -> tf.Tensor:
        return theirs(x)

    def with_grad(run: Callable[[tf.Tensor], tf.Tensor], sources: list[Any]) -> Callable[[tf.Tensor], Any]:
        def call(x: tf.Tensor) -> Any:
            if not backward:
                return run(x)
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_sum(run(x))
            return tape.gradient(loss, [x, *sources[1:]])

        return call

    ours = with_grad(ours_run, ours_sources)
    keras_sources = [x, *theirs.trainable_variables]
    baseline = with_grad(theirs_run, keras_sources)
    calls: dict[str, Callable[[], Any]] = {
        "rnnspec eager": lambda: ours(x),
        "rnnspec tf.function": (lambda f: lambda: f(x))(tf.function(ours)),
        "rnnspec jit_compile": (lambda f: lambda: f(x))(tf.function(ours, jit_compile=True)),
        "keras eager": lambda: baseline(x),
        "keras tf.function": (lambda f: lambda: f(x))(tf.function(baseline)),
        "keras jit_compile": (lambda f: lambda: f(x))(tf.function(baseline, jit_compile=True)),
    }
    walls: dict[str, list[float]] = {name: [] for name in calls}
    cpus: dict[str, list[float]] = {name: [] for name in calls}
    for fn in calls.values():  # warm up: traces and XLA compilations are not timed
        _measure(fn)
    for _ in range(repeats):
        for name, fn in calls.items():
            wall, cpu = _measure(fn)
            walls[name].append(wall)
            cpus[name].append(cpu)
    results = {}
    for name in calls:
        kind = "eager" if "eager" in name else ("xla" if "jit" in name else "graph")
        base = statistics.median(walls[_BASELINE[kind]])
        results[name] = {
            "median_wall_ms": 1e3 * statistics.median(walls[name]),
            "median_cpu_ms": 1e3 * statistics.median(cpus[name]),
            "wall_ratio_to_keras": statistics.median(walls[name]) / base,
        }
    return {
        "op": op,
        "shape": f"B={batch} T={steps} I=H={hidden}",
        "pass": "forward+backward" if backward else "forward",
        "repeats": repeats,
        "results": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small shape, few repeats")
    parser.add_argument("--out", type=Path, help="folder for tensorflow_paths_cpu.json")
    args = parser.parse_args()
    tf.get_logger().setLevel("ERROR")  # each case traces its own functions: TensorFlow's retracing notes are expected
    shapes = [(16, 50, 64)] if args.quick else [(16, 50, 64), (32, 100, 128)]
    repeats = 5 if args.quick else 15
    load = os.getloadavg()
    header = {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_1_5_15_min_at_start": [round(v, 2) for v in load],
    }
    print(" ".join(f"{k}={v}" for k, v in header.items()))
    cases = []
    for op in ("lstm", "gru"):
        for batch, steps, hidden in shapes:
            for backward in (False, True):
                case = bench_case(op, batch, steps, hidden, backward, repeats)
                cases.append(case)
                print(f"\n{case['op']} {case['shape']} {case['pass']} (median of {repeats})")
                print(f"  {'path':<22}{'wall ms':>10}{'cpu ms':>10}{'wall / keras':>14}")
                for name, r in case["results"].items():
                    print(
                        f"  {name:<22}{r['median_wall_ms']:>10.2f}{r['median_cpu_ms']:>10.2f}"
                        f"{r['wall_ratio_to_keras']:>14.2f}"
                    )
    header["load_average_1_5_15_min_at_end"] = [round(v, 2) for v in os.getloadavg()]
    print("\nload average at end:", header["load_average_1_5_15_min_at_end"])
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "tensorflow_paths_cpu.json").write_text(json.dumps({"header": header, "cases": cases}, indent=2))


if __name__ == "__main__":
    main()
