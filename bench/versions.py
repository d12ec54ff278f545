"""Two versions of rnnspec side by side: each row's rnnspec time after a change over before it.

``python -m rnnspec.bench.versions --before A.json [B.json ...] --after C.json [D.json ...]``
reads suite runs (``bench_{device}.json``) of the code before and after a change,
run alternately on one machine, and prints, for every row of the runs, the
rnnspec time after over before (the least of each version's runs: one slow run
of a shared machine does not count against a version), the geometric mean of
those ratios, and how far runs of one version disagree with each other (the
noise the ratios are to be read against). Nothing is asserted: it is a table.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["Change", "changes", "main", "spread"]

#: A row's identity across runs.
Key = tuple[str, str, str, str, str, str]
#: (after over before, the row, before ms, after ms).
Change = tuple[float, Key, float, float]


def _rows(path: Path, field: str) -> dict[Key, float]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return {
        (r["section"], r["backend"], r["case"], r["shape"], r["mode"], r["ours"]): float(r[field]) for r in data["rows"]
    }


def changes(before: Sequence[Path], after: Sequence[Path], field: str = "ours_min_ms") -> list[Change]:
    """Every row both versions ran: the least ``field`` of the after runs over the least of the before runs."""
    old = [_rows(p, field) for p in before]
    new = [_rows(p, field) for p in after]
    keys = [k for k in old[0] if all(k in run for run in (*old, *new))]
    out = []
    for key in keys:
        b, a = min(run[key] for run in old), min(run[key] for run in new)
        out.append((a / b, key, b, a))
    return sorted(out)


def spread(runs: Sequence[Path], field: str = "ours_min_ms") -> float | None:
    """The largest ratio between two runs of one version on one row (None for a single run)."""
    if len(runs) < 2:
        return None
    tables = [_rows(p, field) for p in runs]
    keys = [k for k in tables[0] if all(k in t for t in tables)]
    return max(max(t[k] for t in tables) / min(t[k] for t in tables) for k in keys)


def main(argv: Sequence[str] | None = None) -> None:
    """Print the table of ``--before`` and ``--after`` runs."""
    parser = argparse.ArgumentParser(prog="python -m rnnspec.bench.versions", description=__doc__)
    parser.add_argument("--before", nargs="+", type=Path, required=True, help="runs of the code before")
    parser.add_argument("--after", nargs="+", type=Path, required=True, help="runs of the code after")
    parser.add_argument("--field", default="ours_min_ms", choices=("ours_min_ms", "ours_ms"), help="min or median")
    args = parser.parse_args(argv)
    found = changes(args.before, args.after, args.field)
    print("| backend | case | shape | mode | rnnspec | before ms | after ms | after / before |")
    print("|---|---|---|---|---|---|---|---|")
    for ratio, key, b, a in found:
        print(f"| {key[1]} | {key[2]} | {key[3]} | {key[4]} | {key[5]} | {b:.2f} | {a:.2f} | {ratio:.3f} |")
    print(f"\ngeometric mean of after / before: {statistics.geometric_mean([c[0] for c in found]):.3f}")
    for name, runs in (("before", args.before), ("after", args.after)):
        noise = spread(runs, args.field)
        if noise is not None:
            print(f"runs of {name} disagree by up to {noise:.2f}x on one row")


if __name__ == "__main__":
    main()
