"""What the tests of the paper examples' trainers share (test_examples_recipes.py, test_tensorflow_examples_recipes.py).

Importing it puts ``examples/`` on ``sys.path``, as running an example does, so
that its modules (``models``, ``training``...) import by their own names.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"
if str(EXAMPLES_DIR) not in sys.path:
    sys.path.insert(0, str(EXAMPLES_DIR))

import models  # noqa: E402
import training  # noqa: E402

__all__ = ["EXAMPLES_DIR", "SPECS", "batches", "models", "restored_environment", "training"]

#: Small models of the ops the examples train, with the options the examples give them.
SPECS = {
    "skip_gru": models.ModelSpec(
        "Skip GRU", "skip_gru", 2, 4, options={"trainable_initial_state": True}, budget_weight=1e-2
    ),
    "act": models.ModelSpec(
        "ACT", "act", 3, 4, options={"cell": "rnn"}, loss="bce", ponder_weight=1e-2, clip_norm=None
    ),
    "indrnn": models.ModelSpec(
        "IndRNN",
        "indrnn",
        2,
        4,
        num_layers=2,
        options={"seq_len": 6, "last_layer_init": True},
        indrnn_bound=1.1,
        lr_decay_every=3,
        clip_norm=None,
    ),
}


def restored_environment() -> Iterator[None]:
    """No progress bars; the examples' thread settings (written into os.environ) undone afterwards."""
    saved = dict(os.environ)
    os.environ["TQDM_DISABLE"] = "1"
    yield
    os.environ.clear()
    os.environ.update(saved)


def batches(spec: models.ModelSpec, count: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``count`` small batches (3 rows) of the shapes and targets ``spec``'s model trains on."""
    rng = np.random.default_rng(seed)
    time = 6 if spec.op == "indrnn" else 1 if spec.op == "act" else 5
    out = []
    for _ in range(count):
        x = rng.standard_normal((3, time, spec.input_size)).astype(np.float32)
        y = (rng.random((3, 1)) < 0.5) if spec.loss == "bce" else rng.standard_normal((3, 1))
        out.append((x, y.astype(np.float32)))
    return out
