"""The run's markdown table and JSON, and the verdict of each target.

``python -m rnnspec.bench.report RESULTS.json`` prints a recorded run's targets
summary and the table of its rows that carry a target (what docs/benchmarks.md shows).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .rows import BEST_BACKEND, Row

__all__ = ["main", "markdown", "summary", "targets_table", "write"]

#: The lines of a section's traceback that the markdown shows.
_ERROR_LINES = 8
_COLUMNS = ("backend", "case", "shape", "mode", "rnnspec", "baseline", "ratio", "target", "note")


def _verdict(row: Row) -> str:
    if row["met"] is None:
        return ""
    return f"{row['target']}: {'met' if row['met'] else 'MISSED'}"


def _cells(row: Row) -> list[str]:
    return [
        row["backend"],
        row["case"],
        row["shape"],
        row["mode"],
        f"{row['ours']} {row['ours_ms']:.2f} ({row['ours_min_ms']:.2f})",
        f"{row['baseline']} {row['baseline_ms']:.2f} ({row['baseline_min_ms']:.2f})",
        f"{row['ratio']:.2f}x",
        _verdict(row),
        row["note"],
    ]


def _table(header: Sequence[str], lines: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c).replace("|", "/") for c in line) + " |" for line in lines]
    return out


def summary(rows: Sequence[Row]) -> list[str]:
    """One line per target: met or missed, with the rows that decide it."""
    lines = []
    by_target: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        if row["met"] is not None:
            by_target.setdefault((row["section"], row["target"]), []).append(row)
    for (section, target), group in by_target.items():
        met = sum(1 for r in group if r["met"])
        missed = [
            f"{r['backend']} {r['case']} {r['shape']} {r['mode']} ({r['ratio']:.2f}x)" for r in group if not r["met"]
        ]
        line = f"- {section}, {target}: met in {met} of {len(group)}"
        if BEST_BACKEND in target:  # asked of the best backend only: the others' rows are for information
            best = min(group, key=lambda r: r["ratio"])
            line += f" (by the best, {best['backend']}: {'met' if best['met'] else 'MISSED'})"
        lines.append(line + (f"; missed: {'; '.join(missed)}" if missed else ""))
    return lines


def targets_table(rows: Sequence[Row]) -> list[str]:
    """The rows that carry a target, one line each: what, against what, the ratio and the verdict."""
    header = ("section", "backend", "case", "shape", "mode", "rnnspec", "against", "ratio", "target")
    lines = [
        (
            r["section"],
            r["backend"],
            r["case"],
            r["shape"],
            r["mode"],
            r["ours"],
            r["baseline"],
            f"{r['ratio']:.2f}x",
            _verdict(r),
        )
        for r in rows
        if r["met"] is not None
    ]
    return _table(header, lines)


def markdown(meta: Mapping[str, Any], backends: Mapping[str, Any], rows: Sequence[Row], memory: Any) -> str:
    """The run as markdown: header, target summary, one table per section, memory, errors."""
    out = [
        "# rnnspec benchmark",
        "",
        f"`{meta['command']}`, {meta['date']}; {meta['cpu']} ({meta['machine']}, {meta['cores']} cores), "
        f"load average {meta['load_average_1_5_15']}; Python {meta['python']}, NumPy {meta['numpy']}, "
        f"rnnspec {meta['rnnspec']}, device {meta['device']}, {meta.get('clock', 'wall')} clock, "
        f"threads {meta.get('threads') or 'framework defaults'}.",
        "",
    ]
    for name, info in backends.items():
        fw = info.get("framework", {})
        details = ", ".join(f"{k} {v}" for k, v in fw.items())
        out.append(f"- {name}: {details}; sections {info.get('seconds', {})}")
    out += [
        "",
        "Times in ms: median (min) of alternating repeats on the same inputs in one process; ratio = median of "
        "rnnspec over median of the baseline (below 1: rnnspec is faster).",
        "",
        "## Targets",
        "",
        *(summary(rows) or ["- no target evaluated"]),
    ]
    sections: dict[str, list[Row]] = {}
    for row in rows:
        sections.setdefault(row["section"], []).append(row)
    for section, group in sections.items():
        out += ["", f"## {section}", "", *_table(_COLUMNS, [_cells(r) for r in group])]
    if memory:
        keys = list(dict.fromkeys(k for row in memory for k in row))
        out += ["", "## memory", "", *_table(keys, [[_fmt(row.get(k, "")) for k in keys] for row in memory])]
    errors = {f"{name} {section}": text for name, info in backends.items() for section, text in info["errors"].items()}
    if errors:
        out += ["", "## Errors", ""]
        for where, text in errors.items():  # the traceback's end here; the JSON has all of it
            out += [f"{where}:", "", "```", *text.rstrip().splitlines()[-_ERROR_LINES:], "```", ""]
    return "\n".join(out).rstrip() + "\n"


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def write(
    out: Path, stem: str, meta: Mapping[str, Any], backends: Mapping[str, Any], rows: Sequence[Row], memory: Any
) -> dict[str, Path]:
    """Write ``{stem}.md`` and ``{stem}.json`` into ``out``; the paths written, by kind."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / f"{stem}.md", "json": out / f"{stem}.json"}
    paths["markdown"].write_text(markdown(meta, backends, rows, memory))
    record = {"meta": meta, "backends": backends, "rows": list(rows), "memory": memory}
    paths["json"].write_text(json.dumps(record, indent=1, default=str) + "\n")
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    """Print the targets summary and table of a recorded run (its JSON)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m rnnspec.bench.report", description=main.__doc__)
    parser.add_argument("results", type=Path, help="a run's JSON, e.g. bench/results/bench_cpu.json")
    args = parser.parse_args(argv)
    record = json.loads(args.results.read_text())
    meta = record["meta"]
    print(f"`{meta.get('command', '')}`, {meta.get('date', '')}\n")
    print("\n".join([*summary(record["rows"]), "", *targets_table(record["rows"])]))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
