"""Move weights between frameworks and rnnspec's canonical layout.

- :func:`from_torch` / :func:`to_torch`: ``torch.nn.RNN``, ``LSTM`` and ``GRU``.

Each converter imports its framework only when called.
"""

from __future__ import annotations

from .torch import from_torch, to_torch

__all__ = ["from_torch", "to_torch"]
