"""Move weights between frameworks and rnnspec's canonical layout.

- :func:`from_torch` / :func:`to_torch`: ``torch.nn.RNN``, ``LSTM`` and ``GRU``, and their cells;
- :func:`from_flax` / :func:`to_flax`: Flax's ``LSTMCell``, ``OptimizedLSTMCell``, ``GRUCell`` and ``SimpleCell``;
- :func:`from_keras` / :func:`to_keras`: Keras 3's ``SimpleRNN``, ``LSTM`` and ``GRU``, and their cells;
- :func:`from_tf1_phased_lstm`: TensorFlow 1's ``tf.contrib.rnn.PhasedLSTMCell`` variables (a
  checkpoint's), as ``phased_lstm`` params.

Each converter imports its framework only when called (TensorFlow only to read a checkpoint's path).
"""

from __future__ import annotations

from .flax import from_flax, to_flax
from .keras import from_keras, to_keras
from .tf1 import from_tf1_phased_lstm
from .torch import from_torch, to_torch

__all__ = ["from_flax", "from_keras", "from_tf1_phased_lstm", "from_torch", "to_flax", "to_keras", "to_torch"]
