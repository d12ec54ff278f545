"""The papers' tasks as NumPy data generators, and the measures the examples report.

Framework-free: every example draws its batches here and hands NumPy arrays to
the framework's trainer (``trainers/<framework>.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

__all__ = [
    "AddingTask",
    "FrequencyBatch",
    "FrequencyTask",
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


class FrequencyBatch(NamedTuple):
    """Sequences of :class:`FrequencyTask` with what drew them.

    ``x`` (batch, time, 1) float32, the samples, zero past each row's length; ``y`` (batch, 1) float32, 1 where
    the period lies in the band; ``timestamps`` (batch, time) float32, the sample times in ms, the row's last
    time repeated past its length; ``lengths`` (batch,) int64; ``periods`` and ``shifts`` (batch,) float64, the
    wave ``sin(2 pi t / period - shift)`` of each row.
    """

    x: np.ndarray
    y: np.ndarray
    timestamps: np.ndarray
    lengths: np.ndarray
    periods: np.ndarray
    shifts: np.ndarray


@dataclass(frozen=True)
class FrequencyTask:
    """Phased LSTM's frequency discrimination task (Neil et al. 2016, task 1): is a sine wave's period in the band?

    As the authors' data iterator (``SinWaveIterator`` in dannyneil/public_plstm): each
    sequence samples ``sin(2 pi t / period - shift)`` over a window of ``duration ~ U(15,
    125)`` ms starting at ``start ~ U(0, 125 - duration)`` ms, with ``shift ~ U(0,
    duration)`` (radians) and the period log-uniform in ``period_range``; the first half
    of every batch has its period drawn from ``U(band)`` instead, so that at least half
    of the targets are 1. The target is 1 when ``band[0] <= period <= band[1]``.

    Parameters
    ----------
    resolution
        Regular sampling every ``resolution`` ms (``ceil(duration / resolution)`` samples
        from ``start``), or None: asynchronous sampling, ``n`` sample times drawn uniformly
        over the window and sorted, ``n`` uniform in ``points`` (``[low, high)``).
    period_range, band
        The periods' range (log-uniform) and the target band, in ms.
    duration_range
        The window's length, in ms; every window lies in ``[0, duration_range[1]]``.
    points
        The asynchronous condition's number of samples per sequence, ``[low, high)``.
    """

    resolution: float | None
    period_range: tuple[float, float] = (1.0, 100.0)
    band: tuple[float, float] = (5.0, 6.0)
    duration_range: tuple[float, float] = (15.0, 125.0)
    points: tuple[int, int] = (15, 125)

    def __post_init__(self) -> None:
        if self.resolution is not None and not self.resolution > 0:
            raise ValueError(
                f"FrequencyTask: resolution must be a positive number of ms or None, got {self.resolution}"
            )
        low, high = self.duration_range
        if not 0 < low <= high:
            raise ValueError(f"FrequencyTask: duration_range must satisfy 0 < low <= high, got {self.duration_range}")

    @property
    def max_steps(self) -> int:
        """T, the padded length of every batch: the most samples a sequence can have."""
        if self.resolution is None:
            return self.points[1] - 1
        return int(np.ceil(self.duration_range[1] / self.resolution))

    def sample(self, rng: np.random.Generator, size: int) -> FrequencyBatch:
        """Draw ``size`` sequences, right-padded to :attr:`max_steps`."""
        low, high = self.duration_range
        duration = rng.uniform(low, high, size)
        start = rng.uniform(0.0, high - duration)
        log_low, log_high = np.log(self.period_range[0]), np.log(self.period_range[1])
        periods = np.exp(rng.uniform(log_low, log_high, size))
        half = size // 2
        periods[:half] = rng.uniform(self.band[0], self.band[1], half)
        shifts = rng.uniform(0.0, duration)
        steps = np.arange(self.max_steps)
        if self.resolution is None:
            lengths = rng.integers(self.points[0], self.points[1], size)
            # Sorted uniform draws, the first `lengths` of each row in [0, 1) and the rest pushed past them.
            draws = np.where(steps[None, :] < lengths[:, None], rng.random((size, self.max_steps)), 2.0)
            fractions = np.sort(draws, axis=1)
            times = start[:, None] + fractions * duration[:, None]
        else:
            lengths = np.ceil(duration / self.resolution).astype(np.int64)
            times = start[:, None] + self.resolution * steps[None, :]
        valid = steps[None, :] < lengths[:, None]
        last = times[np.arange(size), lengths - 1]
        times = np.where(valid, times, last[:, None])
        waves = np.where(valid, np.sin(2.0 * np.pi / periods[:, None] * times - shifts[:, None]), 0.0)
        y = ((periods >= self.band[0]) & (periods <= self.band[1])).astype(np.float32)[:, None]
        return FrequencyBatch(
            waves[:, :, None].astype(np.float32),
            y,
            times.astype(np.float32),
            lengths.astype(np.int64),
            periods,
            shifts,
        )

    def batch(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Draw ``size`` sequences: ``x`` (size, T, 1), ``y`` (size, 1) and the extras ``timestamps`` (size, T)
        and ``lengths`` (size,), as the examples' trainers take them (:func:`models.model_inputs`)."""
        drawn = self.sample(rng, size)
        return drawn.x, drawn.y, {"timestamps": drawn.timestamps, "lengths": drawn.lengths}


def mse(prediction: np.ndarray, target: np.ndarray) -> float:
    """The mean squared error."""
    return float(np.mean((np.asarray(prediction, np.float64) - np.asarray(target, np.float64)) ** 2))


def solved_threshold(target_variance: float) -> float:
    """Skip RNN's criterion (Campos et al. 2018): a task is solved when the MSE is 100x below the target's variance."""
    return target_variance / 100.0
