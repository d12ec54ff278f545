"""The torch backend's ACT training path: one autograd Function with a hand-written backward.

In plain eager autograd, ``act`` runs :mod:`rnnspec.backends.torch.act_autograd`; ``plain_path()``
(and so ``torch.func``) and ``torch.compile`` keep the per-step autograd loop. Both must give the
same values and gradients (float64, to rounding), and the reference's. The Function's inner steps
run in native kernels where they build (``"native-training"``: within the tolerance policy) and
in torch ops with ``RNNSPEC_NATIVE=0`` (``"training"``: the loop's operations, to 1e-12).
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import pytest
from helpers import leaf

torch = pytest.importorskip("torch")

import rnnspec  # noqa: E402
from rnnspec.backends.common import native  # noqa: E402
from rnnspec.backends.torch import fused  # noqa: E402
from rnnspec.conformance.tolerances import tolerance  # noqa: E402
from rnnspec.reference import vjp  # noqa: E402

B = rnnspec.get_backend("torch")
CELLS = ("rnn", "lstm", "gru", "indrnn")
#: (lengths, initial state, reverse, epsilon, max_steps)
SHAPES = {"plain": (None, False, False, 0.01, 8), "everything-capped": ((7, 0, 3, 5), True, True, 0.05, 3)}
BATCH, TIME, INPUT, HIDDEN = 4, 7, 3, 5


def _inputs(cell: str, with_state: bool, seed: int) -> tuple[np.ndarray, dict[str, np.ndarray], Any]:
    (host,) = rnnspec.init_params("act", input_size=INPUT, hidden_size=HIDDEN, seed=seed, dtype="float64", cell=cell)
    rng = np.random.default_rng(seed)
    # Halting units spread around sigmoid(-0.4): rows halt after different numbers of inner steps.
    host["w_halt"] = rng.normal(0.0, 6.0, host["w_halt"].shape)
    host["b_halt"] = np.full(host["b_halt"].shape, -0.4)
    if cell == "indrnn":  # its initial w_ih is tiny, and so would be h and the halting unit's spread
        host["w_ih"] = rng.normal(0.0, 1.0, host["w_ih"].shape)
    x = rng.standard_normal((BATCH, TIME, INPUT))
    state = None
    if with_state:
        state = [{n: rng.standard_normal((BATCH, HIDDEN)) for n in (("h", "c") if cell == "lstm" else ("h",))}]
    return x, host, state


def _run(cell: str, shape: str, *, plain: bool, seed: int = 0) -> tuple[list[Any], Any]:
    lengths, with_state, reverse, epsilon, max_steps = SHAPES[shape]
    x_host, host, state_host = _inputs(cell, with_state, seed)
    x = leaf(x_host)
    p = {k: leaf(v) for k, v in host.items()}
    state = None if state_host is None else [{k: leaf(v) for k, v in s.items()} for s in state_host]
    with fused.plain_path() if plain else contextlib.nullcontext():
        result = B.act(
            x,
            [p],
            cell=cell,
            epsilon=epsilon,
            max_steps=max_steps,
            lengths=lengths,
            initial_state=state,
            reverse=reverse,
        )
    fields = [result.outputs, *result.state[0].values(), result.ponder_remainder, result.ponder_cost]
    rng = np.random.default_rng(seed + 1)
    loss = sum((f * torch.from_numpy(rng.standard_normal(tuple(f.shape)))).sum() for f in fields)
    sources = [x, *p.values(), *(v for s in state or [] for v in s.values())]
    grads = torch.autograd.grad(loss, sources, allow_unused=True, materialize_grads=True)
    return [f.detach() for f in fields] + [result.ponder_steps] + list(grads), result


#: The Function's two forms of its inner steps: the path each records.
STEP_FORMS = {"native": "native-training", "torch-ops": "training"}


@pytest.fixture(params=list(STEP_FORMS))
def form(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs a test with the Function's inner steps in native kernels (skipped where they cannot build) or torch ops."""
    if request.param == "torch-ops":
        monkeypatch.setenv(native.ENV, "0")
    elif native.library("cells") is None:
        pytest.skip(f"native kernels unavailable: {native.unavailable('cells')}")
    return str(request.param)


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("cell", CELLS)
def test_the_hand_written_backward_equals_autograd_of_the_loop(cell: str, shape: str, form: str) -> None:
    fast, result = _run(cell, shape, plain=False)
    assert type(result.state[0]["h"].grad_fn).__name__ == "_ACTFunctionBackward"
    assert fused.last_path("act") == STEP_FORMS[form]
    slow, result = _run(cell, shape, plain=True)
    assert type(result.state[0]["h"].grad_fn).__name__ != "_ACTFunctionBackward"
    # The torch-op steps are the loop's operations (to rounding); the native ones within the tolerance policy.
    tol = tolerance("float64", steps=TIME * SHAPES[shape][4], kind="gradient")
    close = {"rtol": 1e-12, "atol": 1e-13} if form == "torch-ops" else {"rtol": tol.rtol, "atol": tol.atol}
    for i, (a, b) in enumerate(zip(fast, slow, strict=True)):
        torch.testing.assert_close(a, b, **close, msg=f"entry {i}")
    # Rows must halt after different numbers of inner steps, or the halting paths go untested.
    assert len(set(result.ponder_steps.flatten().tolist()) - {0.0}) > 1


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_the_hand_written_backward_equals_the_reference(cell: str) -> None:
    lengths, _, reverse, epsilon, max_steps = SHAPES["everything-capped"]
    x_host, host, state_host = _inputs(cell, True, seed=3)
    x = leaf(x_host)
    p = {k: leaf(v) for k, v in host.items()}
    state = [{k: leaf(v) for k, v in s.items()} for s in state_host]
    options = {"cell": cell, "epsilon": epsilon, "max_steps": max_steps, "reverse": reverse}
    result = B.act(x, [p], lengths=lengths, initial_state=state, **options)
    assert type(result.state[0]["h"].grad_fn).__name__ == "_ACTFunctionBackward"
    rng = np.random.default_rng(4)
    d_out = rng.standard_normal(tuple(result.outputs.shape))
    d_cost = rng.standard_normal(tuple(result.ponder_cost.shape))
    got = torch.autograd.grad(
        [result.outputs, result.ponder_cost], [x, *p.values()], [torch.from_numpy(d_out), torch.from_numpy(d_cost)]
    )
    cotangents = {"outputs": d_out, "ponder_cost": d_cost}
    want = vjp("act", cotangents, x_host, [host], lengths=np.array(lengths), initial_state=state_host, **options)
    np.testing.assert_allclose(got[0].numpy(), want["x"], rtol=1e-9, atol=1e-11)
    for g, name in zip(got[1:], p, strict=True):
        np.testing.assert_allclose(g.numpy(), want["params"][0][name], rtol=1e-9, atol=1e-11, err_msg=name)


def test_checkpointing_gives_the_same_gradients_and_no_row_valid_passes_the_state_through() -> None:
    x_host, host, state_host = _inputs("gru", True, seed=7)

    def grads(every: int | None, lengths: Any) -> list[Any]:
        x = leaf(x_host)
        p = {k: leaf(v) for k, v in host.items()}
        state = [{k: leaf(v) for k, v in s.items()} for s in state_host]
        result = B.act(x, [p], cell="gru", lengths=lengths, initial_state=state, checkpoint_every=every)
        loss = (result.outputs**2).sum() + result.ponder_cost.sum() + result.state[0]["h"].sum()
        return list(torch.autograd.grad(loss, [x, *p.values(), state[0]["h"]], materialize_grads=True))

    lengths = np.array([7, 2, 0, 5])
    for a, b in zip(grads(None, lengths), grads(3, lengths), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-13)
    # Every row of length 0: no inner step at all; the state's cotangent comes back unchanged.
    found = grads(None, np.zeros(BATCH, np.int64))
    assert torch.equal(found[-1], torch.ones_like(found[-1]))
    assert all(not bool(g.any()) for g in found[:-1])
