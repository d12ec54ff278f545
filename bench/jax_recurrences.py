"""Timings of the JAX backend's loops on this machine, which choose its paths.

- ``linear_recurrence``: the sequential ``lax.scan`` against ``lax.associative_scan``
  (``rnnspec.backends.jax.recurrences``), forward and forward + backward, over
  the time length; this sets ``ASSOCIATIVE_MIN_TIME`` for the device;
- ``lax.scan``'s ``unroll`` (1, 2, 4, 8) for the linear recurrence and lstm;
  this sets ``rnnspec.backends.jax.sequence.UNROLL``;
- the lstm step's forms in the time loop: ``w_hh`` as given or transposed
  once before the loop (:func:`rnnspec.backends.jax.cells.prepare`), and the
  gates' sigmoid over three slices or over the whole block; the backend runs
  the last row;
- lstm forward with ``b_ih`` added over the whole hoisted projection or to
  each step's slice inside the loop (:func:`rnnspec.backends.jax.classic.plain_layer`
  runs the second): the first makes a second temporary as large as the
  projection, and the table shows what that costs in the kernel (system CPU
  time and minor page faults per call);
- lstm forward through the backend (``jax.jit``) against ``torch.nn.LSTM``
  (when torch is installed), at the sizes of ``shared/notes/anchors.md``:
  wall and process CPU time (``time.process_time``, every thread of the
  process), the two callables alternated at each repeat so that load from
  other processes falls on both alike.

Every figure is the median of ``--repeats`` runs after a compiling (or
warm-up) run, in milliseconds. Run::

    python bench/jax_recurrences.py            # every table
    python bench/jax_recurrences.py --quick    # fewer sizes, fewer repeats

The lstm comparison is fair single-threaded, both frameworks: with their
default thread pools, alternated calls contend (torch's OpenMP workers
spin-wait after each call while XLA's pool runs), which on a 2-core machine
made torch.nn.LSTM 5 to 40 times slower than alone. XLA sizes its CPU thread
pool, which runs its YNNPACK dots, from the ``NPROC`` environment variable
when it is set (else from the CPUs the process may run on), once, when jax
starts; ``--xla_cpu_multi_thread_eigen=false`` leaves that pool alone::

    NPROC=1 python bench/jax_recurrences.py --quick --lstm-only --torch-threads 1
"""

from __future__ import annotations

import argparse
import functools
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import rnnspec
from rnnspec.backends.jax import cells, recurrences, sequence
from rnnspec.backends.jax.run import OP_FUNCTIONS

__all__ = ["main"]


def _lstm_outputs(x: Any, p: Any) -> Any:
    return OP_FUNCTIONS["lstm"](x=x, params=p, lengths=None, initial_state=None, reverse=False).outputs


def wait(value: Any) -> Any:
    """``value`` once every array in it is computed (``jax.block_until_ready``, typed)."""
    return jax.block_until_ready(value)  # type: ignore[no-untyped-call]


def median_ms(fn: Callable[[], Any], repeats: int) -> float:
    """The median wall time of ``fn()`` in ms, results waited for, after one untimed run."""
    wait(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        wait(fn())
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


class Timing(NamedTuple):
    """Medians over the repeats of one callable, per call: ms of wall, process CPU and system CPU time; minor faults."""

    wall: float
    cpu: float
    system: float
    faults: float


def alternated_ms(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, Timing]:
    """Each callable's median :class:`Timing`, results waited for, after one untimed run each.

    The callables take turns within each repeat, so that a change in the machine's load
    falls on all of them rather than on whichever ran last.
    """
    for fn in fns.values():
        wait(fn())
    samples: dict[str, list[Timing]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            usage = resource.getrusage(resource.RUSAGE_SELF)
            start, start_cpu = time.perf_counter(), time.process_time()
            wait(fn())
            wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
            after = resource.getrusage(resource.RUSAGE_SELF)
            system, faults = after.ru_stime - usage.ru_stime, after.ru_minflt - usage.ru_minflt
            samples[name].append(Timing(wall * 1e3, cpu * 1e3, system * 1e3, float(faults)))
    return {name: Timing(*map(statistics.median, zip(*runs, strict=True))) for name, runs in samples.items()}


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
            vars(recurrences)["UNROLL"] = unroll  # its own copy, imported from sequence
            row = [str(unroll)]
            linear = jax.jit(lambda a, b: recurrences.sequential_linear_scan(a, b, h0, None)[0])
            lstm = jax.jit(lambda x, p: _lstm_outputs(x, p))
            for fn, args in ((linear, (a, b)), (lstm, (x, params))):
                start = time.perf_counter()
                wait(fn(*args))
                compile_s = time.perf_counter() - start
                row.append(f"{median_ms(functools.partial(fn, *args), repeats):.2f} ({compile_s:.2f})")
            lines.append("| " + " | ".join(row) + " |")
    finally:
        sequence.UNROLL = saved
        vars(recurrences)["UNROLL"] = saved
    return lines


def _sliced_lstm(p: cells.Params, state: sequence.State, gi: jax.Array) -> sequence.State:
    """The lstm step with a sigmoid over each of the three gates' slices, for comparison with the block's."""
    a = gi + cells._recurrent(p, state["h"])
    ai, af, ag, ao = jnp.split(a, 4, axis=-1)
    i, f, g, o = jax.nn.sigmoid(ai), jax.nn.sigmoid(af), jnp.tanh(ag), jax.nn.sigmoid(ao)
    c = f * state["c"] + i * g
    return {"h": o * jnp.tanh(c), "c": c}


def _step_loop(step: cells.Cell | Callable[..., sequence.State], transposed: bool) -> Callable[..., jax.Array]:
    """The jitted time loop of ``step`` over a time-major projection, with ``w_hh`` transposed before it or not."""
    fn = step.fn if isinstance(step, cells.Cell) else step

    def loop(gi: jax.Array, p: dict[str, jax.Array]) -> jax.Array:
        q = cells.prepare(p) if transposed else p
        zeros = jnp.zeros(gi.shape[1:2] + p["w_hh"].shape[1:], gi.dtype)
        state = {"h": zeros, "c": zeros}
        out: jax.Array = sequence.scan(lambda s, xs: fn(q, s, xs[0]), [gi], state, None, time_major_inputs=True)[0]
        return out

    return jax.jit(loop)


def lstm_step_table(shapes: list[tuple[int, int, int]], repeats: int) -> list[str]:
    """The time loop alone (the input projection given) for each form of the lstm step."""
    steps: dict[str, cells.Cell | Callable[..., sequence.State]] = {
        "3 sigmoids": _sliced_lstm,
        "block sigmoid": cells.make_cell("lstm", {}),
    }
    forms = [(w, g) for g in steps for w in ("w_hh", "w_hh_t")]
    lines = [
        f"lstm time loop, float32, projection given ({jax.default_backend()}): ms, wall / process CPU",
        "| B | T | H | " + " | ".join(f"{w}, {g}" for w, g in forms) + " |",
        "|---|---|---|" + "---|" * len(forms),
    ]
    for batch, time_, hidden in shapes:
        host = rnnspec.init_params("lstm", input_size=hidden, hidden_size=hidden)[0]
        raw = {k: jnp.asarray(v) for k, v in host.items()}
        gi = jnp.asarray(np.random.default_rng(3).standard_normal((time_, batch, 4 * hidden)).astype(np.float32))
        fns: dict[str, Callable[[], Any]] = {}
        for w, g in forms:
            run = _step_loop(steps[g], transposed=w == "w_hh_t")
            fns[f"{w}, {g}"] = functools.partial(run, gi, raw)
        timed = alternated_ms(fns, repeats)
        row = [str(batch), str(time_), str(hidden)] + [f"{timed[k].wall:.2f} / {timed[k].cpu:.2f}" for k in fns]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def _bias_loop(per_step: bool) -> Callable[..., jax.Array]:
    """The jitted lstm layer, ``b_ih`` added to each step's slice in the loop or over the whole projection."""
    cell = cells.make_cell("lstm", {})

    def layer(x: jax.Array, p: dict[str, jax.Array]) -> jax.Array:
        gi = cell.project(p, sequence.time_major(x), bias=not per_step)
        q, b_ih = cells.prepare(p), p["b_ih"]
        zeros = jnp.zeros(x.shape[:1] + p["w_hh"].shape[1:], x.dtype)

        def step(s: sequence.State, xs: Sequence[jax.Array]) -> sequence.State:
            return cell.step(q, s, xs[0] + b_ih if per_step else xs[0])

        out: jax.Array = sequence.scan(step, [gi], {"h": zeros, "c": zeros}, None, time_major_inputs=True)[0]
        return out

    return jax.jit(layer)


def lstm_bias_table(shapes: list[tuple[int, int, int]], repeats: int) -> list[str]:
    """lstm forward with ``b_ih`` over the whole projection against per step: time, system time, page faults."""
    forms = {"whole": _bias_loop(per_step=False), "per step": _bias_loop(per_step=True)}
    lines = [
        f"lstm forward, b_ih added over the whole projection or per step, float32 ({jax.default_backend()}): "
        "ms wall / process CPU / system CPU, minor page faults per call",
        "| B | T | H | projection MiB | whole | per step |",
        "|---|---|---|---|---|---|",
    ]
    for batch, time_, hidden in shapes:
        host = rnnspec.init_params("lstm", input_size=hidden, hidden_size=hidden, seed=0)[0]
        p = {k: jnp.asarray(v) for k, v in host.items()}
        x = jnp.asarray(np.random.default_rng(2).standard_normal((batch, time_, hidden)).astype(np.float32))
        timed = alternated_ms({k: functools.partial(f, x, p) for k, f in forms.items()}, repeats)
        cols = [f"{t.wall:.2f} / {t.cpu:.2f} / {t.system:.2f}, {t.faults:.0f}" for t in timed.values()]
        mib = batch * time_ * 4 * hidden * 4 / 2**20
        lines.append("| " + " | ".join([str(batch), str(time_), str(hidden), f"{mib:.1f}", *cols]) + " |")
    return lines


def _backend_lstm(backend: Any, x: Any, params: Any) -> Any:
    return backend.lstm(x, params).outputs


def lstm_table(shapes: list[tuple[int, int, int]], repeats: int) -> list[str]:
    """lstm forward: the backend under jax.jit against torch.nn.LSTM (no autograd), one layer, I = H."""
    backend = rnnspec.get_backend("jax")
    torch: Any
    try:
        import torch
    except ImportError:
        torch = None
    threads = f", torch threads {torch.get_num_threads()}" if torch is not None else ""
    lines = [
        f"lstm forward, float32, one layer, I = H ({jax.default_backend()}{threads}): ms, wall / process CPU",
        "| B | T | H | rnnspec jax | torch.nn.LSTM | ratio wall | ratio CPU | jax system CPU, faults |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for batch, time_, hidden in shapes:
        rng = np.random.default_rng(2)
        host_x = rng.standard_normal((batch, time_, hidden)).astype(np.float32)
        host_p = rnnspec.init_params("lstm", input_size=hidden, hidden_size=hidden, seed=0)
        x, params = backend.from_numpy(host_x), backend.from_numpy(host_p)
        fns: dict[str, Callable[[], Any]] = {"jax": functools.partial(_backend_lstm, backend, x, params)}
        if torch is not None:
            from rnnspec.convert import to_torch

            module = to_torch(host_p, "lstm")
            tx = torch.from_numpy(host_x)

            def theirs(module: Any = module, tx: Any = tx) -> Any:
                with torch.no_grad():
                    return module(tx)[0]

            fns["torch"] = theirs
        timed = alternated_ms(fns, repeats)
        ours = timed["jax"]
        row = [str(batch), str(time_), str(hidden), f"{ours.wall:.2f} / {ours.cpu:.2f}"]
        if torch is not None:
            other = timed["torch"]
            ratios = [f"{ours.wall / other.wall:.2f}", f"{ours.cpu / other.cpu:.2f}"]
            row += [f"{other.wall:.2f} / {other.cpu:.2f}", *ratios]
        else:
            row += ["-", "-", "-"]
        row.append(f"{ours.system:.2f}, {ours.faults:.0f}")
        lines.append("| " + " | ".join(row) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer sizes and repeats")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--torch-threads", type=int, default=None, help="torch.set_num_threads before timing")
    parser.add_argument("--lstm-only", action="store_true", help="only the lstm tables")
    args = parser.parse_args()
    if args.torch_threads is not None:
        import torch

        torch.set_num_threads(args.torch_threads)
    repeats = args.repeats or (5 if args.quick else 20)
    times = [64, 1024] if args.quick else [16, 64, 256, 1024, 4096]
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}, {repeats} repeats\n")
    shapes = [(16, 256, 256), (1, 1000, 64), (64, 100, 128)]
    tables: list[Callable[[], list[str]]] = [
        lambda: lstm_step_table(shapes, repeats=repeats),
        lambda: lstm_bias_table(shapes, repeats=repeats),
        lambda: lstm_table(shapes, repeats=repeats),
    ]
    if not args.lstm_only:
        tables[:0] = [
            lambda: linear_table(times, batch=16, hidden=256, repeats=repeats),
            lambda: unroll_table(batch=16, time_=256, hidden=256, repeats=repeats),
        ]
    for table in tables:
        print("\n".join(table()) + "\n")


if __name__ == "__main__":
    main()
