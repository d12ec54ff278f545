"""One backend's cases in a process of its own: ``python -m rnnspec.bench.worker --backend NAME --out FILE``.

:mod:`.cli` starts one worker per backend, so that each framework runs with its own thread
settings and frameworks that do not coexist (Triton, which torch's compiler imports, aborts a
process where tensorflow was imported first) never meet. The worker writes its rows, the
framework's version and device, and the error of any section that failed, as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from .cases import SECTIONS
from .framework import load
from .sizes import sizes
from .timing import CLOCKS, use_clock

__all__ = ["main", "run"]


def run(
    backend: str, device: str, quick: bool, sections: list[str], repeats: int | None = None, clock: str = "wall"
) -> dict[str, Any]:
    """The rows of ``sections`` for ``backend``, with its description and any section's error."""
    use_clock(clock)
    fw = load(backend, device)
    chosen = sizes(quick, repeats)
    rows: list[Any] = []
    errors: dict[str, str] = {}
    seconds: dict[str, float] = {}
    for name in sections:
        start = time.perf_counter()
        try:
            rows.extend(SECTIONS[name](fw, chosen))
        except Exception:  # a broken section is reported with the others' figures, not lost with them
            errors[name] = traceback.format_exc()
            print(f"[{backend}] section {name} failed:\n{errors[name]}", file=sys.stderr)
        seconds[name] = round(time.perf_counter() - start, 2)
        print(f"[{backend}] {name}: {seconds[name]:.1f} s", file=sys.stderr, flush=True)
    return {"backend": backend, "framework": fw.describe(), "rows": rows, "errors": errors, "seconds": seconds}


def main(argv: list[str] | None = None) -> None:
    """Run one backend's sections and write the JSON to ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    result = run(args.backend, args.device, args.quick, args.sections.split(","), args.repeats, args.clock)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
