"""Shared helpers of the layers' dropout tests (torch, Flax NNX, Keras): spying on the op, checking drawn masks."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from rnnspec.backends.common.layers import layer_backend


class Spy:
    """Records the keyword arguments (the masks None where not passed), ``x`` and the outputs of every call of a
    backend's op, then returns its result."""

    def __init__(self, method: Any) -> None:
        self.method, self.calls = method, []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        result = self.method(*args, **kwargs)
        masks = {"dropout_mask": None, "recurrent_mask": None}
        self.calls.append({**masks, **kwargs, "x": args[0], "outputs": result.outputs})
        return result


def spy_on(monkeypatch: pytest.MonkeyPatch, framework: str, op: str) -> Spy:
    """A :class:`Spy` in place of ``op`` on the backend the layers of ``framework`` call."""
    target = layer_backend(framework)
    spy = Spy(getattr(target, op))
    monkeypatch.setattr(target, op, spy)
    return spy


def assert_dropout_masks(masks: list[Any], shape: tuple[int, ...], p: float, what: str) -> None:
    """Masks of ``shape`` with entries 0 or exactly 1 / (1 - p), zeros at the rate p within 6 sigma, pairwise
    different."""
    drawn = [np.asarray(m.detach() if hasattr(m, "detach") else m) for m in masks]
    scale = np.float32(1.0 / (1.0 - p))
    for k, m in enumerate(drawn):
        assert m.shape == shape, f"{what}[{k}]: shape {m.shape}"
        assert set(np.unique(m)) <= {np.float32(0.0), scale}, f"{what}[{k}]: entries {np.unique(m)[:4]}"
        bound = 6.0 * math.sqrt(p * (1.0 - p) / m.size)
        rate = float((m == 0).mean())
        assert abs(rate - p) <= bound, f"{what}[{k}]: rate of zeros {rate:.4f}, p {p} +- {bound:.4f}"
    for j in range(len(drawn)):
        for k in range(j):
            assert not np.array_equal(drawn[j], drawn[k]), f"{what}: masks {k} and {j} are the same draw"
