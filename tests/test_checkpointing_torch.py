"""checkpoint_every on the PyTorch backend: autograd keeps a segment's inputs only, and the results hold."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import rnnspec
from rnnspec.conformance.tolerances import tolerance
from rnnspec.tree import tree_leaves

TORCH = rnnspec.get_backend("torch")
BATCH, TIME, INPUT, HIDDEN = 3, 60, 4, 8


def saved_bytes(op: str, every: int | None) -> int:
    """Bytes of the tensors autograd saves for the backward pass of one call (checkpoints keep none)."""
    params = TORCH.from_numpy(rnnspec.init_params(op, input_size=INPUT, hidden_size=HIDDEN, num_layers=2, seed=0))
    for layer in params:
        for value in layer.values():
            value.requires_grad_(True)
    x = torch.randn(BATCH, TIME, INPUT, generator=torch.Generator().manual_seed(0))
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        getattr(TORCH, op)(x, params, checkpoint_every=every)
    return total


@pytest.mark.parametrize("op", ["lstm", "skip_gru", "qrnn"])
def test_autograd_keeps_a_fraction_of_the_activations_with_checkpoint_every(op: str) -> None:
    whole, cut = saved_bytes(op, None), saved_bytes(op, 10)
    assert whole > 0
    assert cut < whole / 4, (op, whole, cut)


def grads(op: str, every: int | None, lengths: Any) -> list[torch.Tensor]:
    layers = 1 if op == "act" else 2
    params = TORCH.from_numpy(
        rnnspec.init_params(op, input_size=INPUT, hidden_size=HIDDEN, num_layers=layers, seed=1, dtype="float64")
    )
    leaves = [v.requires_grad_(True) for layer in params for v in layer.values()]
    x = torch.randn(BATCH, 23, INPUT, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    x.requires_grad_(True)
    result = getattr(TORCH, op)(x, params, lengths=lengths, reverse=True, checkpoint_every=every)
    fields = [f for f in tree_leaves(result._asdict()) if f.is_floating_point()]
    weights = [torch.randn(f.shape, dtype=f.dtype, generator=torch.Generator().manual_seed(3)) for f in fields]
    loss = sum((f * w).sum() for f, w in zip(fields, weights, strict=True))
    return [*fields, *torch.autograd.grad(loss, [x, *leaves], allow_unused=True, materialize_grads=True)]


@pytest.mark.parametrize("op", ["gru", "skip_lstm", "act", "indrnn"])
def test_lengths_given_as_a_tensor_are_cut_into_segments_like_host_lengths(op: str) -> None:
    lengths = torch.tensor([23, 9, 0])
    tol = tolerance("float64", steps=2 * 23 * (100 if op == "act" else 1), kind="gradient")
    for got, want in zip(grads(op, 5, lengths), grads(op, None, np.array([23, 9, 0])), strict=True):
        torch.testing.assert_close(got, want, rtol=tol.rtol, atol=tol.atol)
