"""The torch adapter of the suite (see :class:`.framework.Framework`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .framework import LAYER_CLASSES, Framework, Net, leaves, task_loss

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


def _rnnspec_layer(net: Net, host: Sequence[Mapping[str, np.ndarray]]) -> Any:
    from rnnspec.backends.torch import nn as layers

    layer = getattr(layers, LAYER_CLASSES[net.op])(net.features, net.hidden, net.layers, **net.kwargs)
    layer.load_canonical(host)
    return layer


def _native_layer(net: Net) -> Any:
    """torch.nn's GRU/LSTM/RNN of ``net``'s sizes (batch first), with torch's own init."""
    assert net.native is not None
    more = {"nonlinearity": net.activation} if net.native == "RNN" else {}
    return getattr(torch.nn, net.native)(net.features, net.hidden, net.layers, batch_first=True, **more)


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

    def model(
        self, net: Net, x: Any, y: Any, *, training: bool, host: Sequence[Mapping[str, np.ndarray]] | None = None
    ) -> Callable[[], Any]:
        native = host is None
        layer = _native_layer(net) if host is None else _rnnspec_layer(net, host)
        head = torch.nn.Linear(net.hidden, net.outputs)
        layer.to(self.device)
        head.to(self.device)

        def output() -> Any:
            result = layer(x)
            return head((result[0] if native else result.outputs)[:, -1])

        if not training:
            return self.forward(output)
        optimizer = torch.optim.Adam([*layer.parameters(), *head.parameters()], lr=net.learning_rate)

        def call() -> Any:
            loss = task_loss(self, output(), y, net.loss)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            self.wait(loss)
            return loss.detach()

        return call

    def adam(self, loss: Callable[[Any], Any], params: Any, learning_rate: float) -> Callable[[], Any]:
        params = _map(params, _as_leaf)
        optimizer = torch.optim.Adam(list(leaves(params)), lr=learning_rate)

        def call() -> Any:
            value = loss(params)
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
            self.wait(value)
            return value.detach()

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

    def mean(self, x: Any) -> Any:
        return torch.mean(x)

    def swap01(self, x: Any) -> Any:
        return x.transpose(0, 1)

    def fma(self, a: Any, b: Any, c: Any) -> Any:
        return torch.addcmul(c, a, b)

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

    def rnn_cell(self, x: Any, h: Any, p: Mapping[str, Any]) -> Any:
        # What nn.RNNCell runs.
        return torch.rnn_tanh_cell(x, h, p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"])

    def gru_cell(self, x: Any, h: Any, p: Mapping[str, Any]) -> Any:
        # What nn.GRUCell runs.
        return torch.gru_cell(x, h, p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"])

    def lstm_cell(self, x: Any, h: Any, c: Any, p: Mapping[str, Any]) -> tuple[Any, Any]:
        # What nn.LSTMCell runs.
        h, c = torch.lstm_cell(x, (h, c), p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"])
        return h, c
