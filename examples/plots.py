"""The examples' figures, drawn with matplotlib's Agg backend (no display needed) and saved as PNG."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.patches import Rectangle
from training import History

__all__ = ["learning_curves", "parity_difficulty", "save", "update_patterns"]


def learning_curves(ax: Axes, histories: Sequence[History], ylabel: str, threshold: float | None = None) -> None:
    """The held-out measure of each run against the update step, log scale; ``threshold`` as a dashed line."""
    for history in histories:
        ax.plot(history.eval_steps, history.eval_values, marker=".", label=history.name)
    if threshold is not None:
        ax.axhline(threshold, color="k", linestyle="--", linewidth=1, label="solved")
    ax.set_yscale("log")
    ax.set_xlabel("update step")
    ax.set_ylabel(ylabel)
    ax.legend()
    ax.grid(True, alpha=0.3)


def update_patterns(ax: Axes, gates: Mapping[str, np.ndarray], markers: np.ndarray, title: str) -> None:
    """Which steps each model updated its state on, for one sequence; marked steps outlined in red.

    Parameters
    ----------
    ax
        Where to draw.
    gates
        One row of update gates (time,) per model name, 1 where the state was updated.
    markers
        The marker feature of the sequence (time,), 1 on the two steps to add.
    """
    names = list(gates)
    image = np.stack([np.asarray(gates[n], dtype=float) for n in names])
    ax.imshow(image, aspect="auto", cmap="Greys", vmin=0, vmax=1.6, interpolation="nearest")
    for row in range(1, len(names)):
        ax.axhline(row - 0.5, color="white", linewidth=2)
    for step in np.flatnonzero(markers):
        ax.add_patch(Rectangle((step - 0.5, -0.5), 1, len(names), fill=False, edgecolor="red", linewidth=2))
    ax.set_yticks(range(len(names)), names)
    used = ", ".join(f"{n} {100 * image[i].mean():.0f}%" for i, n in enumerate(names))
    ax.set_title(f"{title}: updates used {used}", fontsize=9)


def parity_difficulty(
    axes: Sequence[Axes],
    difficulty: np.ndarray,
    errors: Mapping[str, np.ndarray],
    ponder: Mapping[str, np.ndarray],
) -> None:
    """Error rate (first axes) and ponder time (second) against the number of non-zero bits.

    ``errors`` and ``ponder`` map a model name to per-example values (0/1 errors,
    ponder cost), averaged here for each difficulty.
    """
    levels = np.unique(difficulty)
    for name, wrong in errors.items():
        axes[0].plot(levels, [wrong[difficulty == d].mean() for d in levels], marker=".", label=name)
    axes[0].set_ylabel("error rate")
    axes[0].set_ylim(-0.02, 1.02)
    for name, cost in ponder.items():
        axes[1].plot(levels, [cost[difficulty == d].mean() for d in levels], marker=".", label=name)
    axes[1].set_ylabel("ponder time (N + R)")
    for ax in axes:
        ax.set_xlabel("difficulty (non-zero bits)")
        ax.legend()
        ax.grid(True, alpha=0.3)


def save(fig: plt.Figure, path: Path) -> Path:
    """Save ``fig`` as PNG at ``path``, close it, and return the path."""
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
