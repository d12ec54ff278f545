"""Move weights between frameworks and rnnspec's canonical layout.

- :func:`from_torch` / :func:`to_torch`: ``torch.nn.RNN``, ``LSTM`` and ``GRU``;
- :func:`from_flax`: Flax's ``LSTMCell``, ``OptimizedLSTMCell``, ``GRUCell`` and ``SimpleCell``;
- :func:`from_keras` / :func:`to_keras`: Keras 3's ``SimpleRNN``, ``LSTM`` and ``GRU``.

Each converter imports its framework only when called.
"""

from __future__ import annotations

from .flax import from_flax
from .keras import from_keras, to_keras
from .torch import from_torch, to_torch

__all__ = ["from_flax", "from_keras", "from_torch", "to_keras", "to_torch"]
