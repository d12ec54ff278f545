"""The ``rnnspec`` command: ``rnnspec backends`` prints the table of backends."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .registry import BackendRecord, list_backends

__all__ = ["main"]


def _table(records: Sequence[BackendRecord]) -> str:
    header = ("name", "status", "distribution", "framework", "device", "ops", "fast paths")
    rows = []
    for r in records:
        status = "ok" if r.loaded else f"ERROR: {r.error}"
        framework = f"{r.framework} {r.framework_version}".strip()
        rows.append(
            (
                r.name,
                status,
                f"{r.distribution} {r.version}",
                framework,
                r.device,
                ", ".join(r.ops) or "-",
                ", ".join(r.fast_paths) or "-",
            )
        )
    widths = [max(len(str(row[i])) for row in (header, *rows)) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in (header, *rows)]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rnnspec`` console script."""
    parser = argparse.ArgumentParser(prog="rnnspec", description="rnnspec: recurrent-network ops, spec and backends")
    sub = parser.add_subparsers(dest="command", required=True)
    backends = sub.add_parser("backends", help="list the registered backends, loading each")
    backends.add_argument("--no-load", action="store_true", help="only read the plugins, import no framework")
    args = parser.parse_args(argv)
    if args.command == "backends":
        records = list_backends(load=not args.no_load)
        print(_table(records) if records else "no backends registered")
        return 0 if all(r.error is None for r in records) else 1
    return 2  # pragma: no cover - argparse rejects other commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
