"""Data-parallel training of an rnnspec layer with torch.distributed: DDP over gloo, 2 processes on the CPU.

Each rank runs this file as a script on its half of the batch; DDP averages the gradients, which must
equal one process's gradients of the mean loss over the whole batch. The ranks write their gradients
and updated parameters to files; a rank that hangs is killed at the timeout and fails the test.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

import rnnspec  # noqa: E402
from rnnspec.backends.torch.nn import SkipGRU  # noqa: E402
from rnnspec.conformance.tolerances import tolerance  # noqa: E402

WORLD = 2
BATCH, T, I, H, LAYERS = 4, 4, 3, 5, 2  # noqa: E741
LENGTHS = np.array([T, 2, 3, 1])  # each rank's half has rows of different lengths
LR = 0.1
TIMEOUT_S = 120.0


class Model(torch.nn.Module):  # type: ignore[misc,unused-ignore]
    """A two-layer SkipGRU and a linear read-out of every step."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = SkipGRU(I, H, num_layers=LAYERS, dtype=torch.float64)
        self.head = torch.nn.Linear(H, 1, dtype=torch.float64)

    def forward(self, x: Any, lengths: Any) -> Any:
        result = self.rnn(x, lengths=lengths)
        return self.head(result.outputs)[..., 0], result.update_gate


def batch() -> tuple[Any, Any]:
    g = torch.Generator().manual_seed(7)
    return torch.randn(BATCH, T, I, generator=g, dtype=torch.float64), torch.randn(BATCH, T, generator=g).double()


def loss_per_row(model: Any, x: Any, target: Any, lengths: np.ndarray) -> Any:
    """Each row's squared error and Skip RNN's budget loss: the mean over rows is linear in the rows."""
    prediction, gate = model(x, lengths)
    budget = torch.stack([rnnspec.skip_budget_loss(gate[b : b + 1], 1e-2) for b in range(x.shape[0])])
    return (prediction - target).square().mean(dim=1) + budget


def model() -> Any:
    torch.manual_seed(0)
    return Model()


def train_step(net: Any, loss: Any) -> dict[str, Any]:
    """One SGD step; the gradients and the parameters after it, by name."""
    optimiser = torch.optim.SGD(net.parameters(), lr=LR)
    optimiser.zero_grad()
    loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in net.named_parameters()}
    optimiser.step()
    return {"grads": grads, "params": {name: p.detach().clone() for name, p in net.named_parameters()}}


def rank_main(rank: int, out: Path) -> None:
    """One rank: DDP over gloo, this rank's half of the batch, one training step; writes ``rank{rank}.pt``."""
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        net = model()
        ddp = torch.nn.parallel.DistributedDataParallel(net)
        x, target = batch()
        rows = slice(rank * BATCH // WORLD, (rank + 1) * BATCH // WORLD)
        loss = loss_per_row(ddp, x[rows], target[rows], LENGTHS[rows]).mean()
        step = train_step(ddp.module, loss)
        torch.save(step, out / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_ranks(out: Path) -> None:
    """Start the ranks as processes running this file; fail with their output if one fails or hangs."""
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": str(WORLD)}
    if sys.platform.startswith("linux"):
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # the loopback device, whatever the host name resolves to
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, str(rank), str(out)],
            env={**env, "RANK": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(WORLD)
    ]
    failures = []
    for rank, proc in enumerate(procs):
        try:
            output, _ = proc.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            output, _ = proc.communicate()
            failures.append(f"rank {rank} did not finish within {TIMEOUT_S} s:\n{output}")
            continue
        if proc.returncode != 0:
            failures.append(f"rank {rank} exited with {proc.returncode}:\n{output}")
    assert not failures, "\n".join(failures)


def test_ddp_over_two_processes_gives_the_gradients_of_one_process_on_the_whole_batch(tmp_path: Path) -> None:
    run_ranks(tmp_path)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    net = model()
    x, target = batch()
    want = train_step(net, loss_per_row(net, x, target, LENGTHS).mean())
    tol = tolerance("float64", steps=T * LAYERS, kind="gradient")
    assert set(want["grads"]) == {name for name, _ in net.named_parameters()}
    assert any(bool(g.abs().sum() > 0) for g in want["grads"].values())
    for r, got in enumerate(ranks):
        for part in ("grads", "params"):
            assert got[part].keys() == want[part].keys(), (r, part)
            for name in want[part]:
                torch.testing.assert_close(
                    got[part][name], want[part][name], rtol=tol.rtol, atol=tol.atol, msg=f"rank {r} {part} {name}"
                )


def test_each_half_of_the_batch_alone_gives_other_gradients() -> None:
    """The comparison above could not pass by a rank training on the whole batch, or on its half alone."""
    x, target = batch()
    whole = train_step(net := model(), loss_per_row(net, x, target, LENGTHS).mean())["grads"]
    half = train_step(net := model(), loss_per_row(net, x[:2], target[:2], LENGTHS[:2]).mean())["grads"]
    tol = tolerance("float64", steps=T * LAYERS, kind="gradient")
    assert any(not torch.allclose(half[name], whole[name], rtol=tol.rtol, atol=tol.atol) for name in whole), (
        "each half alone gives the gradients of the whole batch: the test could not tell"
    )


if __name__ == "__main__":
    rank_main(int(sys.argv[1]), Path(sys.argv[2]))
