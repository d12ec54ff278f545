"""PyTorch language model: ``nn.Embedding``, rnnspec ``torch.nn`` layers, an ``nn.Linear`` readout, Adam."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from lm import EvalStream, LMSpec, check_arrays, flatten_state, unflatten_state
from rnnspec.backends.torch import nn as rnn_layers

__all__ = ["TorchLMTrainer", "make_trainer"]

#: The rnnspec layer class of each op.
_LAYERS = {"qrnn": "QRNN", "lstm": "LSTM"}
#: A carried state: the op's state (one mapping per layer) of each layer module.
State = list[list[dict[str, torch.Tensor]]]


class Net(nn.Module):  # type: ignore[misc]
    """Embedding, one rnnspec layer module per layer of ``spec`` (each its own window), readout at every step."""

    def __init__(self, spec: LMSpec) -> None:
        super().__init__()
        layer_class = getattr(rnn_layers, _LAYERS[spec.op])
        self.embed = nn.Embedding(spec.vocab_size, spec.embed_size)
        self.rnns = nn.ModuleList(
            [
                layer_class(spec.layer_input(k), spec.hidden_size, **spec.layer_options(k))
                for k in range(spec.num_layers)
            ]
        )
        self.head = nn.Linear(spec.hidden_size, spec.vocab_size)

    def forward(
        self, x: torch.Tensor, state: State | None, masks: list[torch.Tensor] | None
    ) -> tuple[torch.Tensor, State]:
        h = self.embed(x)
        new_state = []
        for k, rnn in enumerate(self.rnns):
            more = {} if masks is None else {"zoneout_mask": masks[k]}
            result = rnn(h, initial_state=None if state is None else state[k], **more)
            h = result.outputs
            new_state.append(result.state)
        return self.head(h), new_state


def _detached(state: State) -> State:
    return [[{k: v.detach() for k, v in layer.items()} for layer in module] for module in state]


class TorchLMTrainer:
    """Trains a :class:`Net` with Adam and global-norm clipping, the state carried from chunk to chunk."""

    def __init__(self, spec: LMSpec, seed: int, batch: int) -> None:
        torch.manual_seed(seed)
        self.spec = spec
        self.batch = batch
        self.net = Net(spec)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=spec.learning_rate)
        self.zoneout = torch.Generator().manual_seed(seed + 1)
        self.state: State | None = None

    def _masks(self, x: torch.Tensor, *, training: bool = True) -> list[torch.Tensor] | None:
        """Zoneout masks: drawn in training, the expectation (every entry p) in evaluation."""
        if self.spec.op != "qrnn" or self.spec.zoneout == 0:
            return None
        shape = (*x.shape, self.spec.hidden_size)
        if not training:
            return [torch.full(shape, self.spec.zoneout)] * self.spec.num_layers
        return [
            (torch.rand(shape, generator=self.zoneout) < self.spec.zoneout).float() for _ in range(self.spec.num_layers)
        ]

    def step(self, x: np.ndarray, y: np.ndarray) -> float:
        self.net.train()
        inputs = torch.from_numpy(x).long()
        logits, state = self.net(inputs, self.state, self._masks(inputs))
        loss = nn.functional.cross_entropy(logits.reshape(-1, self.spec.vocab_size), torch.from_numpy(y).long().ravel())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.net.parameters(), self.spec.clip_norm)
        self.optimizer.step()
        self.state = _detached(state)
        return float(loss.detach())

    def reset_state(self) -> None:
        self.state = None

    @torch.no_grad()
    def evaluate(self, stream: EvalStream) -> float:
        self.net.eval()
        total, state = 0.0, None
        for start in range(0, stream.inputs.shape[1], stream.seq):
            x = torch.from_numpy(stream.inputs[:, start : start + stream.seq]).long()
            y = torch.from_numpy(stream.targets[:, start : start + stream.seq]).long()
            logits, state = self.net(x, state, self._masks(x, training=False))
            loss = nn.functional.cross_entropy(logits.reshape(-1, self.spec.vocab_size), y.ravel(), reduction="sum")
            total += float(loss)
        return total / stream.chars

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.net.parameters() if p.requires_grad)

    def arrays(self) -> dict[str, np.ndarray]:
        out = {f"model/{k}": v.detach().numpy().copy() for k, v in self.net.state_dict().items()}
        for index, entries in self.optimizer.state_dict()["state"].items():
            out.update({f"adam/{index}/{k}": torch.as_tensor(v).numpy().copy() for k, v in entries.items()})
        out.update({k: v.numpy().copy() for k, v in flatten_state("state", self.state).items()})
        out["rng/zoneout"] = self.zoneout.get_state().numpy().copy()
        return out

    def _expected(self) -> dict[str, tuple[int, ...]]:
        """The names and shapes of :meth:`arrays` once an update has run (Adam's moments exist)."""
        shapes = {f"model/{k}": tuple(v.shape) for k, v in self.net.state_dict().items()}
        for index, p in enumerate(self.net.parameters()):
            shapes |= {f"adam/{index}/step": (), f"adam/{index}/exp_avg": tuple(p.shape)}
            shapes[f"adam/{index}/exp_avg_sq"] = tuple(p.shape)
        return shapes | {"rng/zoneout": tuple(self.zoneout.get_state().shape)}

    def load_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        kept = {k: v for k, v in arrays.items() if not k.startswith("state/")}
        check_arrays(type(self).__name__, self._expected(), kept)
        self.net.load_state_dict(
            {k.removeprefix("model/"): torch.from_numpy(v) for k, v in kept.items() if k[:6] == "model/"}
        )
        moments: dict[int, dict[str, Any]] = {}
        for key, value in kept.items():
            if key.startswith("adam/"):
                _, index, name = key.split("/")
                moments.setdefault(int(index), {})[name] = torch.from_numpy(value.copy())
        saved = self.optimizer.state_dict()
        self.optimizer.load_state_dict({"state": moments, "param_groups": saved["param_groups"]})
        self.zoneout.set_state(torch.from_numpy(arrays["rng/zoneout"].copy()))
        state = unflatten_state("state", arrays, self.spec.num_layers)
        self.state = (
            None
            if state is None
            else [[{k: torch.from_numpy(v.copy()) for k, v in layer.items()} for layer in m] for m in state]
        )


def make_trainer(spec: LMSpec, seed: int, batch: int) -> TorchLMTrainer:
    """A :class:`TorchLMTrainer` for ``spec``, its weights drawn with ``seed``."""
    return TorchLMTrainer(spec, seed, batch)
