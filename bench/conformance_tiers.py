"""Wall time of the conformance suite on one backend, by check and by kind of case ("tier").

``python -m rnnspec.bench.conformance_tiers BACKEND [--profile ci] [--modules test_values,...]
[-- PYTEST_ARGS]`` runs the suite's modules in one pytest process each (as the jax nox session
does), reads each test's duration from pytest's JUnit XML, and prints a markdown table: per check
module, the seconds of each tier (drawn cases, the large tier, ties, range edges, half precision,
NaN inputs, the float64 long and saturated calls, the rest), summed over ops. It is what the suite
costs a backend, not a comparison; jax's and TensorFlow's first calls include compiling.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

__all__ = ["TIERS", "main", "tier_of"]

#: The modules of the suite, one per check.
MODULES = (
    "test_values",
    "test_gradients",
    "test_properties",
    "test_compiled",
    "test_checkpointing",
    "test_errors",
    "test_inputs",
    "test_edge_cases",
)

#: Tiers by a fragment of their tests' names, first match wins.
TIERS = (
    ("large", "large_shapes"),
    ("ties", "thresholds"),
    ("range edges", "edges_of"),
    ("half precision", "half_precision"),
    ("NaN input", "a_nan_in_x"),
    ("float64 long/saturated", "_in_float64"),
    ("time gate at inference", "a_time_gate_at_inference"),
    ("drawn", "equal_the_reference"),
)


def tier_of(test_name: str) -> str:
    """The tier of a test, by its name (``"other"`` for the tests of the other checks)."""
    return next((tier for tier, fragment in TIERS if fragment in test_name), "other")


def measure(backend: str, profile: str, modules: Sequence[str], extra: Sequence[str]) -> dict[str, dict[str, float]]:
    """``{module: {tier: seconds}}``, each module run in its own pytest process."""
    out: dict[str, dict[str, float]] = {}
    env = dict(os.environ)
    if backend == "jax":
        env.setdefault("JAX_ENABLE_X64", "1")
    with tempfile.TemporaryDirectory() as tmp:
        for module in modules:
            xml = Path(tmp) / f"{module}.xml"
            args = [f"--rnnspec-backend={backend}", f"--hypothesis-profile={profile}", f"--junitxml={xml}", "-q"]
            cmd = [sys.executable, "-m", "pytest", "--pyargs", f"rnnspec.conformance.{module}", *args, *extra]
            subprocess.run(cmd, env=env, check=False, stdout=subprocess.DEVNULL)
            tiers: dict[str, float] = defaultdict(float)
            for case in ET.parse(xml).getroot().iter("testcase"):
                tiers[tier_of(case.get("name", ""))] += float(case.get("time", 0.0))
            out[module] = dict(tiers)
    return out


def table(results: dict[str, dict[str, float]]) -> str:
    """A markdown table: a row per module, a column per tier, seconds."""
    tiers = [t for t, _ in TIERS] + ["other"]
    lines = ["| module | " + " | ".join(tiers) + " | total |", "|---" * (len(tiers) + 2) + "|"]
    for module, row in results.items():
        cells = [f"{row[t]:.1f}" if t in row else "" for t in tiers]
        lines.append(f"| {module} | " + " | ".join(cells) + f" | {sum(row.values()):.1f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the table for one backend."""
    parser = argparse.ArgumentParser(prog="python -m rnnspec.bench.conformance_tiers", description=__doc__)
    parser.add_argument("backend")
    parser.add_argument("--profile", default="ci")
    parser.add_argument("--modules", default=",".join(MODULES), help="comma-separated modules of the suite")
    argv = list(sys.argv[1:] if argv is None else argv)
    # What follows "--" goes to pytest (-n 2, -k ..., -p no:cacheprovider).
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    results = measure(args.backend, args.profile, args.modules.split(","), extra)
    print(f"conformance suite on {args.backend!r}, profile {args.profile}: seconds of test time per tier\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
