"""The papers' tasks as NumPy data generators, and the measures the examples report.

Framework-free: every example draws its batches here and hands NumPy arrays to
the framework's trainer (``trainers/<framework>.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "AddingTask",
    "ParityTask",
    "adding_marker_positions",
    "mse",
    "solved_threshold",
]


@dataclass(frozen=True)
class AddingTask:
    """The adding problem: sum the two values whose marker is 1.

    Each step carries two features: a value and a marker (0 or 1); exactly two
    steps of a sequence are marked and the target is the sum of their values.

    Parameters
    ----------
    length
        T, the number of steps.
    low, high
        The values are drawn from U(low, high).
    first_marker
        ``(start, stop)`` fractions of T where the first marker may fall.
    second_marker
        ``(start, stop)`` fractions of T where the second marker may fall.
    """

    length: int
    low: float = -0.5
    high: float = 0.5
    first_marker: tuple[float, float] = (0.0, 0.1)
    second_marker: tuple[float, float] = (0.5, 1.0)

    def batch(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``size`` sequences: ``x`` (size, T, 2) float32 and the targets ``y`` (size, 1) float32."""
        values = rng.uniform(self.low, self.high, size=(size, self.length))
        first, second = adding_marker_positions(rng, size, self.length, self.first_marker, self.second_marker)
        markers = np.zeros((size, self.length))
        rows = np.arange(size)
        markers[rows, first] = 1.0
        markers[rows, second] = 1.0
        x = np.stack([values, markers], axis=-1).astype(np.float32)
        y = (values[rows, first] + values[rows, second])[:, None].astype(np.float32)
        return x, y

    def target_variance(self) -> float:
        """The variance of the target: two independent U(low, high) values, ``2 (high - low)^2 / 12``."""
        return 2.0 * (self.high - self.low) ** 2 / 12.0


def adding_marker_positions(
    rng: np.random.Generator,
    size: int,
    length: int,
    first: tuple[float, float],
    second: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray]:
    """The two marked steps of each sequence, drawn uniformly from their ranges (fractions of ``length``)."""

    def draw(span: tuple[float, float]) -> np.ndarray:
        start = int(np.floor(span[0] * length))
        stop = max(start + 1, int(np.floor(span[1] * length)))
        return rng.integers(start, stop, size=size)

    a, b = draw(first), draw(second)
    # The ranges may overlap (Le et al.'s halves do not): move a clash one step on.
    clash = a == b
    b[clash] = np.where(b[clash] + 1 < length, b[clash] + 1, b[clash] - 1)
    return a, b


@dataclass(frozen=True)
class ParityTask:
    """ACT's parity task (Graves 2016): one input vector per sequence, target its parity.

    A random number of the first entries, from 1 to ``bits``, are set to -1 or 1
    at random positions, the rest are 0; the target is 1 when the number of
    ones is odd. The sequence has a single step.

    Parameters
    ----------
    bits
        The size of the input vector (64 in the paper).
    """

    bits: int

    def batch(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Draw ``size`` examples: ``x`` (size, 1, bits), ``y`` (size, 1) float32 and the difficulty (size,).

        The difficulty is the number of non-zero entries, from 1 to ``bits``.
        """
        difficulty = rng.integers(1, self.bits + 1, size=size)
        signs = rng.choice(np.array([-1.0, 1.0]), size=(size, self.bits))
        order = np.argsort(rng.random((size, self.bits)), axis=1)  # a random permutation per row
        keep = order < difficulty[:, None]
        x = np.where(keep, signs, 0.0)
        ones = np.sum(x == 1.0, axis=1)
        y = (ones % 2).astype(np.float32)[:, None]
        return x[:, None, :].astype(np.float32), y, difficulty


def mse(prediction: np.ndarray, target: np.ndarray) -> float:
    """The mean squared error."""
    return float(np.mean((np.asarray(prediction, np.float64) - np.asarray(target, np.float64)) ** 2))


def solved_threshold(target_variance: float) -> float:
    """Skip RNN's criterion (Campos et al. 2018): a task is solved when the MSE is 100x below the target's variance."""
    return target_variance / 100.0
