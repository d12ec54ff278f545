"""PyTorch trainer: an rnnspec ``torch.nn`` layer, an ``nn.Linear`` readout, ``torch.optim.Adam``."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from models import LAYER_CLASSES, ModelSpec, learning_rate_at
from torch import nn

import rnnspec
from rnnspec.backends.torch import nn as rnn_layers

__all__ = ["TorchTrainer", "make_trainer"]


class Net(nn.Module):  # type: ignore[misc]
    """The recurrent layer of ``spec`` and a linear readout of its last output."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        layer_class = getattr(rnn_layers, LAYER_CLASSES[spec.op])
        self.rnn = layer_class(spec.input_size, spec.hidden_size, spec.num_layers, **spec.options)
        self.head = nn.Linear(spec.hidden_size, spec.output_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Any]:
        result = self.rnn(x)
        return self.head(result.outputs[:, -1]), result


def _to_numpy(tree: Any) -> Any:
    """``tree`` with every tensor a NumPy copy (dicts, lists and tuples kept)."""
    if isinstance(tree, torch.Tensor):
        return tree.detach().cpu().numpy().copy()
    if isinstance(tree, dict):
        return {k: _to_numpy(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_to_numpy(v) for v in tree)
    return tree


def _to_torch(tree: Any) -> Any:
    """The inverse of :func:`_to_numpy`: every NumPy array a tensor."""
    if isinstance(tree, np.ndarray):
        return torch.from_numpy(tree.copy())
    if isinstance(tree, dict):
        return {k: _to_torch(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_to_torch(v) for v in tree)
    return tree


class TorchTrainer:
    """Trains a :class:`Net` with Adam, global-norm clipping and the op's auxiliary loss."""

    def __init__(self, spec: ModelSpec, seed: int) -> None:
        torch.manual_seed(seed)
        self.spec = spec
        self.updates = 0
        self.net = Net(spec)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=learning_rate_at(spec, 0))

    def _loss(self, output: torch.Tensor, result: Any, y: torch.Tensor) -> torch.Tensor:
        if self.spec.loss == "bce":
            loss = nn.functional.binary_cross_entropy_with_logits(output, y)
        elif self.spec.loss == "half_mse":
            loss = 0.5 * nn.functional.mse_loss(output, y)
        else:
            loss = nn.functional.mse_loss(output, y)
        if self.spec.budget_weight:
            loss = loss + rnnspec.skip_budget_loss(result.update_gate, self.spec.budget_weight)
        if self.spec.ponder_weight:
            loss = loss + self.spec.ponder_weight * result.ponder_cost.sum(dim=1).mean()
        return loss

    def step(self, x: np.ndarray, y: np.ndarray) -> float:
        self.net.train()
        output, result = self.net(torch.from_numpy(x))
        loss = self._loss(output, result, torch.from_numpy(y))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.spec.clip_norm is not None:
            nn.utils.clip_grad_norm_(self.net.parameters(), self.spec.clip_norm)
        self.optimizer.step()
        if self.spec.indrnn_bound is not None:
            with torch.no_grad():
                for layer in self.net.rnn.layers:
                    layer.u.copy_(rnnspec.indrnn_constrain(layer.u, self.spec.indrnn_bound))
        self.updates += 1
        self._set_learning_rate()
        return float(loss.detach())

    def _set_learning_rate(self) -> None:
        """The schedule's step size for the next update, into the optimiser."""
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate_at(self.spec, self.updates)

    def learning_rate(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    @torch.no_grad()
    def predict(self, x: np.ndarray) -> dict[str, np.ndarray]:
        self.net.eval()
        output, result = self.net(torch.from_numpy(x))
        out = {"output": output.numpy()}
        for name in ("update_gate", "ponder_cost", "ponder_steps"):
            if name in result._fields:
                out[name] = getattr(result, name).numpy()
        return out

    def state(self) -> dict[str, Any]:
        return {
            "net": _to_numpy(self.net.state_dict()),
            "optimizer": _to_numpy(self.optimizer.state_dict()),
            "updates": self.updates,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(_to_torch(state["net"]))
        self.optimizer.load_state_dict(_to_torch(state["optimizer"]))
        self.updates = int(state["updates"])
        self._set_learning_rate()


def make_trainer(spec: ModelSpec, seed: int) -> TorchTrainer:
    """A :class:`TorchTrainer` for ``spec``, its weights drawn with ``seed``."""
    return TorchTrainer(spec, seed)
