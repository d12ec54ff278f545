"""The examples' training loop and report table, shared by every example and framework (command line: cli.py)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from models import Trainer
from tqdm import tqdm

__all__ = ["History", "format_table", "train"]


@dataclass
class History:
    """What a training run recorded: the training loss per update, the held-out measure at each evaluation."""

    name: str
    loss: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    eval_values: list[float] = field(default_factory=list)
    seconds: float = 0.0


def train(
    trainer: Trainer,
    draw: Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray]],
    steps: int,
    rng: np.random.Generator,
    evaluate: Callable[[Trainer], float],
    eval_every: int,
    metric: str,
) -> History:
    """Train for ``steps`` updates on batches from ``draw(rng)``, evaluating every ``eval_every`` updates.

    A progress bar shows the training loss and the last held-out ``metric``
    (what ``evaluate`` returns); the evaluations are also made at step 0 and at the end.
    """
    history = History(trainer.spec.name)
    start = time.perf_counter()
    history.eval_steps.append(0)
    history.eval_values.append(evaluate(trainer))
    disable = os.environ.get("TQDM_DISABLE") == "1"
    with tqdm(range(1, steps + 1), desc=f"{trainer.spec.name:>10}", unit="step", disable=disable) as bar:
        for step in bar:
            x, y = draw(rng)
            history.loss.append(trainer.step(x, y))
            if step % eval_every == 0 or step == steps:
                history.eval_steps.append(step)
                history.eval_values.append(evaluate(trainer))
            bar.set_postfix(loss=f"{history.loss[-1]:.4g}", **{metric: f"{history.eval_values[-1]:.4g}"})
    history.seconds = time.perf_counter() - start
    return history


def format_table(header: list[str], rows: list[list[str]]) -> str:
    """A plain-text table, columns padded to their widest entry."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
