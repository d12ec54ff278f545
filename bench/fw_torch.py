"""The torch adapter of the suite (see :class:`.framework.Framework`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .framework import Framework, leaves

__all__ = ["Adapter"]


def _as_leaf(t: Any) -> Any:
    # A tensor that already requires grad (an nn.Module's parameter) stays: the module reads it.
    return t if t.requires_grad else t.detach().requires_grad_(True)


def _map(tree: Any, fn: Callable[[Any], Any]) -> Any:
    if isinstance(tree, Mapping):
        return {k: _map(v, fn) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return type(tree)(_map(v, fn) for v in tree)
    return fn(tree)


class Adapter(Framework):
    """torch: eager calls, ``torch.autograd.grad`` for the backward pass."""

    name = "torch"

    def tensor(self, array: np.ndarray) -> Any:
        return torch.from_numpy(np.ascontiguousarray(array)).to(self.device)

    def wait(self, value: Any) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()

    def forward(self, fn: Callable[..., Any], *args: Any, compile: bool = False) -> Callable[[], Any]:
        def call() -> Any:
            with torch.no_grad():
                out = fn(*args)
            self.wait(out)
            return out

        return call

    def train(self, fn: Callable[[Any, Any], Any], x: Any, params: Any, *, compile: bool = False) -> Callable[[], Any]:
        x, params = _as_leaf(x), _map(params, _as_leaf)
        sources = list(leaves([x, params]))

        def call() -> Any:
            with torch.enable_grad():
                out = fn(x, params)
                grads = torch.autograd.grad(out.sum(), sources, allow_unused=True)
            self.wait(grads)
            return grads

        return call

    def clone(self, x: Any) -> Any:
        return x.clone()

    def describe(self) -> dict[str, str]:
        device = torch.cuda.get_device_name() if self.device.startswith("cuda") else self.device
        return {"version": torch.__version__, "device": device, "threads": str(torch.get_num_threads())}

    def sigmoid(self, x: Any) -> Any:
        return torch.sigmoid(x)

    def tanh(self, x: Any) -> Any:
        return torch.tanh(x)

    def relu(self, x: Any) -> Any:
        return torch.relu(x)

    def matmul_t(self, x: Any, w: Any) -> Any:
        return x @ w.T

    def linear(self, x: Any, w: Any, b: Any) -> Any:
        return torch.nn.functional.linear(x, w, b)

    def where(self, cond: Any, a: Any, b: Any) -> Any:
        return torch.where(cond, a, b)

    def minimum(self, a: Any, b: Any) -> Any:
        return torch.minimum(a, b)

    def concat(self, xs: Sequence[Any], axis: int) -> Any:
        return torch.cat(list(xs), dim=axis)

    def stack(self, xs: Sequence[Any], axis: int) -> Any:
        return torch.stack(list(xs), dim=axis)

    def zeros(self, shape: tuple[int, ...]) -> Any:
        return torch.zeros(shape, device=self.device)

    def to_float(self, mask: Any) -> Any:
        return mask.to(torch.float32)

    def stop_gradient(self, x: Any) -> Any:
        return x.detach()

    def all(self, mask: Any) -> bool:
        return bool(mask.all())

    def log(self, x: Any) -> Any:
        return torch.log(x)

    def exp(self, x: Any) -> Any:
        return torch.exp(x)

    def softplus(self, x: Any) -> Any:
        return torch.nn.functional.softplus(x)

    def log_sigmoid(self, x: Any) -> Any:
        return torch.nn.functional.logsigmoid(x)

    def cumsum(self, x: Any, axis: int) -> Any:
        return torch.cumsum(x, dim=axis)

    def logcumsumexp(self, x: Any, axis: int) -> Any:
        return torch.logcumsumexp(x, dim=axis)

    def gru_cell(self, x: Any, h: Any, p: Mapping[str, Any]) -> Any:
        # What nn.GRUCell runs.
        return torch.gru_cell(x, h, p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"])

    def lstm_cell(self, x: Any, h: Any, c: Any, p: Mapping[str, Any]) -> tuple[Any, Any]:
        # What nn.LSTMCell runs.
        h, c = torch.lstm_cell(x, (h, c), p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"])
        return h, c
