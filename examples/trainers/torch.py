"""PyTorch trainer: an rnnspec ``torch.nn`` layer, an ``nn.Linear`` readout, ``torch.optim.Adam``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from models import LAYER_CLASSES, ModelSpec, learning_rate_at, model_inputs
from torch import nn

import rnnspec
from rnnspec.backends.torch import nn as rnn_layers

__all__ = ["TorchTrainer", "make_trainer"]


def _layer(spec: ModelSpec, options: Mapping[str, Any]) -> nn.Module:
    """The recurrent layer of ``spec``, built with ``options``."""
    layer_class = getattr(rnn_layers, LAYER_CLASSES[spec.op])
    return layer_class(spec.input_size, spec.hidden_size, spec.num_layers, **options)


def _last_output(outputs: torch.Tensor, lengths: np.ndarray | None) -> torch.Tensor:
    """Each row's output at its last valid step (the last step without ``lengths``)."""
    if lengths is None:
        return outputs[:, -1]
    last = torch.from_numpy(np.maximum(lengths.astype(np.int64) - 1, 0))
    return outputs[torch.arange(outputs.shape[0]), last]


class Net(nn.Module):  # type: ignore[misc]
    """The recurrent layer of ``spec`` and a linear readout of its last output."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.rnn = _layer(spec, spec.options)
        self.head = nn.Linear(spec.hidden_size, spec.output_size)

    def forward(
        self,
        x: torch.Tensor,
        lengths: np.ndarray | None = None,
        arrays: Mapping[str, torch.Tensor] | None = None,
        rnn: nn.Module | None = None,
    ) -> tuple[torch.Tensor, Any]:
        """The readout and the layer's result; ``rnn`` in place of the net's own layer (its evaluation twin)."""
        result = (rnn or self.rnn)(x, **(arrays or {}))  # over the padding too: see models.py
        return self.head(_last_output(result.outputs, lengths)), result


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
        # The layer of the evaluation options, outside the net: its weights are the net's, copied in by predict.
        self._eval_rnn = _layer(spec, {**spec.options, **spec.eval_options}) if spec.eval_options else None

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

    def _inputs(
        self, x: np.ndarray, extras: Mapping[str, np.ndarray] | None
    ) -> tuple[torch.Tensor, np.ndarray | None, dict[str, torch.Tensor]]:
        inputs, arrays, lengths = model_inputs(self.spec, x, extras)
        return torch.from_numpy(inputs), lengths, {k: torch.from_numpy(np.asarray(v)) for k, v in arrays.items()}

    def step(self, x: np.ndarray, y: np.ndarray, extras: Mapping[str, np.ndarray] | None = None) -> float:
        self.net.train()
        inputs, lengths, arrays = self._inputs(x, extras)
        output, result = self.net(inputs, lengths, arrays)
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

    def layer_params(self) -> list[dict[str, np.ndarray]]:
        params: list[dict[str, np.ndarray]] = self.net.rnn.numpy_params()
        return params

    @torch.no_grad()
    def predict(self, x: np.ndarray, extras: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        self.net.eval()
        if self._eval_rnn is not None:
            self._eval_rnn.load_canonical(self.net.rnn.canonical_params())
        inputs, lengths, arrays = self._inputs(x, extras)
        output, result = self.net(inputs, lengths, arrays, rnn=self._eval_rnn)
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
