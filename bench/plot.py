"""The ratios of a run as a PNG: one bar per row, log scale, coloured by the target's verdict."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .rows import Row

__all__ = ["plot"]

#: Bar colour by verdict: met, missed, no target.
COLOURS = {True: "tab:green", False: "tab:red", None: "tab:gray"}


def _pyplot() -> Any:
    # Imported here, with the Agg backend: the suite needs matplotlib only for the plot.
    matplotlib = importlib.import_module("matplotlib")
    matplotlib.use("Agg")
    return importlib.import_module("matplotlib.pyplot")


def plot(rows: Sequence[Row], path: Path, title: str) -> Path:
    """Draw every row's ratio (rnnspec over its baseline) and save the figure to ``path``."""
    plt = _pyplot()
    labels = [f"{r['backend']} {r['case']} {r['shape']} {r['mode']}: {r['ours']} / {r['baseline']}" for r in rows]
    fig, ax = plt.subplots(figsize=(12, 1.5 + 0.22 * max(len(rows), 1)))
    y = list(range(len(rows)))
    ax.barh(y, [r["ratio"] for r in rows], color=[COLOURS[r["met"]] for r in rows])
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("time ratio, rnnspec / baseline (log scale; green: target met, red: missed, grey: no target)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
