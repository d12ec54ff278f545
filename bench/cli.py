"""``python -m rnnspec.bench``: run the suite, one process per framework backend, and write its results.

    python -m rnnspec.bench [--quick] [--backends torch,jax,tensorflow] [--device cpu|cuda]
        [--sections classic,skip,act,phased,recurrences,python_loops,training,memory] [--repeats N] [--threads N]
        [--clock wall|cpu] [--out DIR]

Writes ``bench_{device}.md`` (the table and the targets' verdicts), ``bench_{device}.json``
(every row, with the machine, versions, device, date and command line) and
``bench_{device}.png`` (the ratios) into ``--out``: ``bench/results`` for a full run, a
folder in the system's temporary directory for ``--quick``, so that a quick run never
replaces recorded figures. Nothing is asserted about timings: targets are printed as met
or missed.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from . import plot, report
from .cases import SECTIONS
from .rows import Row
from .system import machine
from .timing import CLOCKS

__all__ = ["main", "memory_rows", "run_backend"]

BACKENDS = ("torch", "jax", "tensorflow")
#: The pseudo-section of the memory measurements (:mod:`rnnspec.bench.memory`, when present).
MEMORY = "memory"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m rnnspec.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small shapes and 3 repeats (CI; about a minute)")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated framework backends")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where torch runs the cases")
    parser.add_argument("--sections", default=",".join([*SECTIONS, MEMORY]), help="comma-separated sections")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats of every case (default 5; quick 3)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall", help="wall time, or process CPU time")
    parser.add_argument("--threads", type=int, default=0, help="threads of every framework (0: their defaults)")
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: bench/results, a temp dir with --quick)"
    )
    return parser


def _env(backend: str, threads: int) -> dict[str, str]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    if backend == "jax":
        # torch.nn's baseline shares the process with XLA's thread pool: OpenMP's spin-waiting workers would
        # take the cores XLA's threads need between the alternating calls.
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if threads:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
            env[name] = str(threads)
        if threads == 1:
            env["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    return env


def run_backend(backend: str, args: argparse.Namespace, sections: list[str], scratch: Path) -> dict[str, Any]:
    """One backend's worker process; its JSON, or an error record when the process failed."""
    out = scratch / f"{backend}.json"
    command = [sys.executable, "-m", f"{__package__}.worker", "--backend", backend, "--device", args.device]
    command += ["--sections", ",".join(sections), "--out", str(out)]
    command += ["--quick"] if args.quick else []
    command += ["--repeats", str(args.repeats)] if args.repeats else []
    command += ["--clock", args.clock]
    done = subprocess.run(command, env=_env(backend, args.threads), check=False)
    if done.returncode != 0 or not out.exists():
        error = f"worker exited with status {done.returncode}"
        return {"backend": backend, "framework": {}, "rows": [], "errors": {"all": error}, "seconds": {}}
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def memory_rows(quick: bool, backends: list[str]) -> list[dict[str, Any]] | None:
    """The rows of ``rnnspec.bench.memory.cases(quick)``, or None when there is no such module or function.

    That module measures peak memory of forward + backward per backend, in processes of its own;
    ``backends`` goes to it when its ``cases`` takes them.
    """
    try:
        module = importlib.import_module(f"{__package__}.memory")
    except ModuleNotFoundError as error:
        if error.name == f"{__package__}.memory":
            return None
        raise
    cases = getattr(module, "cases", None)
    if cases is None:
        return None
    takes_backends = "backends" in inspect.signature(cases).parameters
    found = cases(quick, backends=tuple(backends)) if takes_backends else cases(quick)
    return [dict(row) for row in found]


def main(argv: list[str] | None = None) -> int:
    """Run the suite; print the table; write the table, JSON and plot. Returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    backends = [b for b in args.backends.split(",") if b]
    sections = [s for s in args.sections.split(",") if s]
    unknown = [s for s in sections if s not in SECTIONS and s != MEMORY] + [b for b in backends if b not in BACKENDS]
    if unknown:
        _parser().error(f"unknown sections or backends: {unknown}")
    out = args.out or (Path(tempfile.gettempdir()) / "rnnspec-bench-quick" if args.quick else Path("bench/results"))
    meta = dict(machine(argv), device=args.device, quick=args.quick, clock=args.clock, threads=args.threads)
    start = time.perf_counter()
    results: dict[str, Any] = {}
    rows: list[Row] = []
    timed = [s for s in sections if s != MEMORY]
    with tempfile.TemporaryDirectory() as scratch:
        for backend in backends if timed else []:
            result = run_backend(backend, args, timed, Path(scratch))
            rows.extend(result.pop("rows"))
            results[backend] = result
    memory = None
    if MEMORY in sections:
        try:
            memory = memory_rows(args.quick, backends)
        except Exception:  # reported with the timings, not lost with them
            results[MEMORY] = {"framework": {}, "errors": {MEMORY: traceback.format_exc()}, "seconds": {}}
    meta["seconds"] = round(time.perf_counter() - start, 1)
    stem = f"bench_{args.device}"
    paths = report.write(out, stem, meta, results, rows, memory)
    try:
        paths["plot"] = plot.plot(rows, out / f"{stem}.png", f"{meta['command']} ({meta['date']})")
    except ImportError as error:  # matplotlib is the bench extra's: without it, no plot
        print(f"no plot: {error}", file=sys.stderr)
    print(paths["markdown"].read_text())
    print("written:", ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
