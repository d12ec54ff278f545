"""What a run records about where it ran: machine, Python, date, command line."""

from __future__ import annotations

import datetime
import os
import platform
import sys
from typing import Any

import numpy as np

import rnnspec

__all__ = ["machine"]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(argv: list[str]) -> dict[str, Any]:
    """The header of a run: machine, CPU, cores, load, versions, UTC date and the command line."""
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(["python -m rnnspec.bench", *argv]),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "load_average_1_5_15": [round(v, 2) for v in os.getloadavg()],
        "python": platform.python_version(),
        "numpy": np.__version__,
        "rnnspec": rnnspec.__version__,
        "platform": platform.platform(),
        "executable": sys.executable,
    }
