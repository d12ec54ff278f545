"""The ``rnnspec`` command: ``rnnspec backends`` prints the table of backends.

Each row's status is ``ok`` (loaded, and matching the spec's signatures),
``not loaded`` (with ``--no-load``), ``NOT INSTALLED: what`` (its framework is
absent, with the command that installs it: not an error), ``ERROR: why`` (unusable, or with
``--check`` an op that raised on a small valid call or returned a result that
breaks the spec) or ``WARNING: why`` (usable, with a faulty plugin beside it or
a slow plugin import). The command exits with 1 when any row is an error, and
with ``--strict`` when any is a warning too. A faulty plugin shows on its own
row, whatever it does at import (``sys.exit`` included); one whose import does
not finish within ``RNNSPEC_PLUGIN_IMPORT_TIMEOUT`` seconds (default 30) is an
error. With ``RNNSPEC_STRICT_PLUGINS=1`` the first fault ends it: the error is
printed on stderr, without a traceback, and the command exits with 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .errors import BackendError
from .registry import BackendRecord, list_backends

__all__ = ["main"]


def _table(records: Sequence[BackendRecord]) -> str:
    header = ("name", "status", "distribution", "framework", "device", "ops", "fast paths")
    rows = []
    for r in records:
        status = r.status if r.reason is None else f"{r.status.upper()}: {r.reason}"
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
    backends = sub.add_parser("backends", help="list the registered backends, loading each; exit 1 if one is broken")
    depth = backends.add_mutually_exclusive_group()
    depth.add_argument("--no-load", action="store_true", help="only read the plugins, import no framework")
    depth.add_argument(
        "--check", action="store_true", help="also call each op once, small, and check its result against the spec"
    )
    backends.add_argument("--strict", action="store_true", help="exit 1 on a warning (a slow import, a shadowed name)")
    args = parser.parse_args(argv)
    if args.command == "backends":
        try:
            records = list_backends(load=not args.no_load, check=args.check)
        except BackendError as err:  # RNNSPEC_STRICT_PLUGINS=1: the first faulty plugin ends the listing
            print(f"rnnspec backends: {type(err).__name__}: {err}", file=sys.stderr)
            return 1
        print(_table(records) if records else "no backends registered")
        failing = ("error", "warning") if args.strict else ("error",)
        return 1 if any(r.status in failing for r in records) else 0
    return 2  # pragma: no cover - argparse rejects other commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
