"""The examples' training loop, learning-curve CSV, checkpoints and report table, shared by every example and
framework (command line: cli.py).

:func:`train` makes the updates, evaluates on held-out data every so often,
appends a row to the run's CSV at each evaluation, and saves a checkpoint
(:func:`save_checkpoint`) every so often and at the end; given the
:class:`History` and the state of a checkpoint (:func:`load_checkpoint`) it
goes on where that run stopped, to the same result as a run that was never
stopped.
"""

from __future__ import annotations

import csv
import math
import os
import pickle
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from models import Batch, Trainer
from tqdm import tqdm

__all__ = [
    "CHECKPOINT_FORMAT",
    "History",
    "format_table",
    "load_checkpoint",
    "save_checkpoint",
    "train",
    "write_csv",
]

#: The version of the checkpoint files' layout (:func:`save_checkpoint`).
CHECKPOINT_FORMAT = 1


@dataclass
class History:
    """What a training run recorded.

    Parameters
    ----------
    name
        The model's name.
    metric
        The name of the held-out measure (``eval_values``).
    loss
        The training loss of every update.
    eval_steps, eval_values
        The updates after which the model was evaluated (0 first), and the held-out measure then.
    rows
        One row of the learning-curve CSV per evaluation: ``update``, ``train_loss`` (the mean
        training loss since the row before; NaN on the first row), the held-out measure, the
        example's other measures (update fraction, ponder time...), ``seconds`` (training time so
        far, over every resumed part of the run).
    seconds
        Training time so far, in seconds, evaluations included, over every resumed part.
    """

    name: str
    metric: str = "metric"
    loss: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    eval_values: list[float] = field(default_factory=list)
    rows: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0

    def columns(self) -> list[str]:
        """The CSV's columns, in order: those of the first row."""
        return list(self.rows[0]) if self.rows else ["update", "train_loss", self.metric, "seconds"]

    def to_dict(self) -> dict[str, Any]:
        """Plain Python values, for a checkpoint."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> History:
        """The inverse of :meth:`to_dict`."""
        return cls(**dict(values))


def write_csv(path: Path, history: History) -> None:
    """Write the learning curve of ``history`` (its rows) to ``path``, replacing the file."""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=history.columns())
        writer.writeheader()
        writer.writerows(_formatted(row) for row in history.rows)


def _append_csv(path: Path, history: History) -> None:
    """Append the last row of ``history`` to its CSV (written by :func:`write_csv`)."""
    with path.open("a", newline="") as f:
        csv.DictWriter(f, fieldnames=history.columns()).writerow(_formatted(history.rows[-1]))


def _formatted(row: Mapping[str, float]) -> dict[str, str]:
    return {k: (str(int(v)) if k == "update" else repr(float(v))) for k, v in row.items()}


def save_checkpoint(
    path: Path,
    trainer: Trainer,
    rng: np.random.Generator,
    history: History,
    config: Mapping[str, Any],
) -> None:
    """Save what :func:`train` needs to go on: the trainer's :meth:`~models.Trainer.state`, the state of the
    batches' stream ``rng``, the ``history`` so far and the run's ``config`` (what must match to resume).

    The file is a pickle of NumPy arrays and Python values, replaced atomically (a
    run stopped while saving leaves the previous checkpoint).
    """
    payload = {
        "format": CHECKPOINT_FORMAT,
        "config": dict(config),
        "updates": trainer.updates,
        "trainer": trainer.state(),
        "rng": rng.bit_generator.state,
        "history": history.to_dict(),
    }
    partial = path.with_name(path.name + ".partial")
    with partial.open("wb") as f:
        pickle.dump(payload, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(partial, path)


def load_checkpoint(path: Path, config: Mapping[str, Any]) -> dict[str, Any]:
    """Read a checkpoint of :func:`save_checkpoint`, checking it was made by a run of the same ``config``.

    Returns its ``trainer`` state, ``rng`` state, ``history`` (a :class:`History`) and ``updates``.

    Raises
    ------
    ValueError
        The file is not a checkpoint of this layout, or its run's config differs
        (naming each setting that differs, saved and asked for).
    """
    with path.open("rb") as f:
        payload = pickle.load(f)  # the examples' own file, in the folder the user gave
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{path}: expected an example checkpoint of format {CHECKPOINT_FORMAT}, got {found!r}")
    saved, asked = _flat(payload["config"]), _flat(config)
    differ = [
        f"{key}: saved {saved.get(key)!r}, asked {asked.get(key)!r}"
        for key in sorted({*saved, *asked})
        if repr(saved.get(key)) != repr(asked.get(key))
    ]
    if differ:
        raise ValueError(
            f"{path} was saved by a run of other settings ({'; '.join(differ)}): resume with the same "
            "settings, or give another --out, or drop --resume to start over"
        )
    payload["history"] = History.from_dict(payload["history"])
    return payload


def _flat(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one, their keys joined with dots (``{"spec": {"op": "gru"}}`` -> ``{"spec.op": "gru"}``)."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def train(
    trainer: Trainer,
    draw: Callable[[np.random.Generator], Batch],
    steps: int,
    rng: np.random.Generator,
    evaluate: Callable[[Trainer], Mapping[str, float]],
    eval_every: int,
    metric: str,
    *,
    history: History | None = None,
    csv_path: Path | None = None,
    checkpoint_path: Path | None = None,
    checkpoint_every: int = 0,
    config: Mapping[str, Any] | None = None,
) -> History:
    """Train until ``trainer`` has made ``steps`` updates, on batches ``draw(rng)``.

    Parameters
    ----------
    trainer
        A new trainer, or one whose state a checkpoint put back (it goes on from its ``updates``).
    draw
        Draws a training batch ``(x, y)`` or ``(x, y, extras)`` (:func:`models.model_inputs`) from the stream
        ``rng``.
    steps
        The update count to reach.
    rng
        The stream of the training batches (its state from the checkpoint when resuming).
    evaluate
        The held-out measures of the trainer, by name: ``metric`` and any others (one CSV column each).
    eval_every
        Evaluate after every ``eval_every`` updates, after update 0 and after the last.
    metric
        The main measure, shown by the progress bar and kept in :attr:`History.eval_values`.
    history
        The history of the checkpoint when resuming (None: a new run, evaluated at update 0).
    csv_path
        Where the learning curve goes: rewritten from ``history`` at the start, a row appended at
        each evaluation (None: no file).
    checkpoint_path, checkpoint_every, config
        Save a checkpoint (:func:`save_checkpoint`, with ``config``) to ``checkpoint_path`` every
        ``checkpoint_every`` updates (0: only at the end) and after the last update (None: never).

    Returns
    -------
    History
        ``history`` (or a new one) with this part of the run added.
    """
    start = time.perf_counter()
    if history is None:
        history = History(trainer.spec.name, metric)
    base_seconds = history.seconds
    since_row: list[float] = []

    def record(step: int) -> None:
        measures = dict(evaluate(trainer))
        history.eval_steps.append(step)
        history.eval_values.append(float(measures[metric]))
        train_loss = float(np.mean(since_row)) if since_row else math.nan
        history.seconds = base_seconds + time.perf_counter() - start
        extras = {k: float(v) for k, v in measures.items() if k != metric}
        history.rows.append(
            {
                "update": step,
                "train_loss": train_loss,
                metric: history.eval_values[-1],
                **extras,
                "seconds": history.seconds,
            }
        )
        since_row.clear()
        if csv_path is not None:
            _append_csv(csv_path, history)

    if not history.eval_steps:
        record(trainer.updates)
    elif history.eval_steps[-1] < trainer.updates:
        # Losses of the updates after the last evaluation, which the next row averages.
        since_row.extend(history.loss[history.eval_steps[-1] :])
    if csv_path is not None:
        write_csv(csv_path, history)

    def checkpoint() -> None:
        history.seconds = base_seconds + time.perf_counter() - start
        if checkpoint_path is not None:
            save_checkpoint(checkpoint_path, trainer, rng, history, config or {})

    disable = os.environ.get("TQDM_DISABLE") == "1"
    first = trainer.updates + 1
    with tqdm(
        range(first, steps + 1), desc=f"{trainer.spec.name:>10}", unit="step", disable=disable, initial=first - 1
    ) as bar:
        for step in bar:
            history.loss.append(trainer.step(*draw(rng)))
            since_row.append(history.loss[-1])
            if step % eval_every == 0 or step == steps:
                record(step)
            if step == steps or (checkpoint_every and step % checkpoint_every == 0):
                checkpoint()
            bar.set_postfix(loss=f"{history.loss[-1]:.4g}", **{metric: f"{history.eval_values[-1]:.4g}"})
    history.seconds = base_seconds + time.perf_counter() - start
    return history


def format_table(header: list[str], rows: list[list[str]]) -> str:
    """A plain-text table, columns padded to their widest entry."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
