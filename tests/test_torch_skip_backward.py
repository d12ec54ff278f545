"""The torch backend's Skip RNN training path: one autograd Function with a hand-written backward.

In plain eager autograd, ``skip_rnn/lstm/gru`` run :mod:`rnnspec.backends.torch.skip_autograd`;
``plain_path()`` (and so ``torch.func``) and ``torch.compile`` keep the per-step autograd loop.
Both must give the same values and gradients (float64, to rounding), and the reference's. The
Function's steps run in native kernels where they build (``"native-training"``: within the
tolerance policy, their sigmoid/tanh being torch's to a few ulps) and in torch ops with
``RNNSPEC_NATIVE=0`` (``"training"``: the loop's operations, to 1e-12);
``test_torch_native_cells.py`` compares the two forms further.
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
from rnnspec.backends.torch import fused, skip_autograd  # noqa: E402
from rnnspec.conformance.tolerances import tolerance  # noqa: E402
from rnnspec.reference import vjp  # noqa: E402

B = rnnspec.get_backend("torch")
VARIANTS = (
    ("skip_rnn", {"activation": "tanh"}),
    ("skip_rnn", {"activation": "relu"}),
    ("skip_lstm", {}),
    ("skip_gru", {"reset_after": True}),
    ("skip_gru", {"reset_after": False}),
)
#: (layers, lengths, initial state, reverse): plain, then every convention at once.
SHAPES = {"plain": (1, None, False, False), "stacked-everything": (2, (7, 0, 3, 5), True, True)}
BATCH, TIME, INPUT, HIDDEN = 4, 7, 3, 5


def _inputs(op: str, options: dict[str, Any], layers: int, with_state: bool, seed: int) -> tuple[Any, ...]:
    host = rnnspec.init_params(
        op, input_size=INPUT, hidden_size=HIDDEN, num_layers=layers, seed=seed, dtype="float64", **options
    )
    rng = np.random.default_rng(seed)
    for p in host:  # gates that open at some steps and not at others
        p["b_gate"] = np.full(p["b_gate"].shape, -1.0) if "b_gate" in p else None
        p["w_gate"] = rng.normal(0.0, 2.0, p["w_gate"].shape) if "w_gate" in p else None
    host = [{k: v for k, v in p.items() if v is not None} for p in host]
    x = rng.standard_normal((BATCH, TIME, INPUT))
    state = None
    if with_state:
        state = []
        for k in range(layers):
            s = {"h": rng.standard_normal((BATCH, HIDDEN))}
            if op == "skip_lstm":
                s["c"] = rng.standard_normal((BATCH, HIDDEN))
            if k == layers - 1:
                s["update_prob"] = rng.uniform(0.0, 1.0, (BATCH, 1))
                s["cum_update_prob"] = rng.uniform(0.0, 0.4, (BATCH, 1))
            state.append(s)
    return x, host, state


def _run(op: str, options: dict[str, Any], shape: str, *, plain: bool, seed: int = 0) -> tuple[list[Any], Any]:
    """The result fields and the gradients of a random weighting of them, from the fast path or the autograd loop."""
    layers, lengths, with_state, reverse = SHAPES[shape]
    x_host, host, state_host = _inputs(op, options, layers, with_state, seed)
    x = leaf(x_host)
    params = [{k: leaf(v) for k, v in p.items()} for p in host]
    state = None if state_host is None else [{k: leaf(v) for k, v in s.items()} for s in state_host]
    with fused.plain_path() if plain else contextlib.nullcontext():
        result = getattr(B, op)(x, params, lengths=lengths, initial_state=state, reverse=reverse, **options)
    fields = [result.outputs, *(v for s in result.state for v in s.values()), result.update_gate, result.update_prob]
    rng = np.random.default_rng(seed + 1)
    loss = sum((f * torch.from_numpy(rng.standard_normal(tuple(f.shape)))).sum() for f in fields)
    sources = [x, *(v for p in params for v in p.values()), *(v for s in state or [] for v in s.values())]
    grads = torch.autograd.grad(loss, sources, allow_unused=True, materialize_grads=True)
    return [f.detach() for f in fields] + list(grads), result


#: The Function's two forms of its steps: the path each records, and the tolerance against the autograd loop.
STEP_FORMS = {"native": "native-training", "torch-ops": "training"}


def _closeness(form: str) -> dict[str, float]:
    """The torch-op steps are the loop's operations (to rounding); the native ones within the tolerance policy."""
    if form == "torch-ops":
        return {"rtol": 1e-12, "atol": 1e-13}
    tol = tolerance("float64", steps=TIME * 2, kind="gradient")
    return {"rtol": tol.rtol, "atol": tol.atol}


@pytest.fixture(params=list(STEP_FORMS))
def form(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs a test with the Function's steps in native kernels (skipped where they cannot build) or torch ops."""
    if request.param == "torch-ops":
        monkeypatch.setenv(native.ENV, "0")
    elif native.library("cells") is None:
        pytest.skip(f"native kernels unavailable: {native.unavailable('cells')}")
    return str(request.param)


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: f"{v[0]}-{'-'.join(map(str, v[1].values()))}")
def test_the_hand_written_backward_equals_autograd_of_the_loop(
    variant: tuple[str, dict[str, Any]], shape: str, form: str
) -> None:
    op, options = variant
    fast, result = _run(op, options, shape, plain=False)
    assert type(result.state[-1]["h"].grad_fn).__name__ == "_SkipFunctionBackward"
    assert fused.last_path(op) == STEP_FORMS[form]
    slow, result = _run(op, options, shape, plain=True)
    assert type(result.state[-1]["h"].grad_fn).__name__ != "_SkipFunctionBackward"
    for i, (a, b) in enumerate(zip(fast, slow, strict=True)):
        torch.testing.assert_close(a, b, **_closeness(form), msg=f"entry {i}")
    # The case must exercise both branches of the gate, or the straight-through paths go untested.
    assert 0 < float(result.update_gate.detach().mean()) < 1


@pytest.mark.parametrize("variant", VARIANTS[2:4], ids=["skip_lstm", "skip_gru"])
def test_the_hand_written_backward_equals_the_reference(variant: tuple[str, dict[str, Any]]) -> None:
    op, options = variant
    layers, lengths, _, reverse = SHAPES["stacked-everything"]
    x_host, host, state_host = _inputs(op, options, layers, True, seed=3)
    x = leaf(x_host)
    params = [{k: leaf(v) for k, v in p.items()} for p in host]
    state = [{k: leaf(v) for k, v in s.items()} for s in state_host or []]
    result = getattr(B, op)(x, params, lengths=lengths, initial_state=state, reverse=reverse, **options)
    assert type(result.state[-1]["h"].grad_fn).__name__ == "_SkipFunctionBackward"
    rng = np.random.default_rng(4)
    d_out = rng.standard_normal(tuple(result.outputs.shape))
    d_gate = rng.standard_normal(tuple(result.update_gate.shape))
    got = torch.autograd.grad(
        [result.outputs, result.update_gate],
        [x, *params[0].values()],
        [torch.from_numpy(d_out), torch.from_numpy(d_gate)],
    )
    want = vjp(
        op,
        {"outputs": d_out, "update_gate": d_gate},
        x_host,
        host,
        lengths=np.array(lengths),
        initial_state=state_host,
        reverse=reverse,
        **options,
    )
    np.testing.assert_allclose(got[0].numpy(), want["x"], rtol=1e-9, atol=1e-11)
    for g, name in zip(got[1:], params[0], strict=True):
        np.testing.assert_allclose(g.numpy(), want["params"][0][name], rtol=1e-9, atol=1e-11, err_msg=name)


def test_a_nan_update_prob_gives_the_autograd_loops_nan_positions(form: str) -> None:
    """A NaN update_prob never opens the gate; its NaN reaches the same gradients in both paths."""

    def grads(plain: bool) -> list[Any]:
        x_host, host, state_host = _inputs("skip_gru", {}, 1, True, seed=5)
        assert state_host is not None
        state_host[0]["update_prob"][1, 0] = np.nan
        x = leaf(x_host)
        params = [{k: leaf(v) for k, v in p.items()} for p in host]
        state = [{k: leaf(v) for k, v in s.items()} for s in state_host]
        with fused.plain_path() if plain else contextlib.nullcontext():
            result = B.skip_gru(x, params, initial_state=state)
        loss = result.outputs.sum() + result.update_prob.sum() + sum(v.sum() for v in result.state[0].values())
        found = torch.autograd.grad(loss, [x, *params[0].values(), *state[0].values()])
        return [*found, result.outputs.detach(), result.update_prob.detach()]

    fast, slow = grads(False), grads(True)
    assert bool(torch.isnan(slow[-1][1]).all())  # the row's u~ is NaN at every step: its gate never opens
    for a, b in zip(fast, slow, strict=True):
        assert torch.equal(torch.isnan(a), torch.isnan(b))
        torch.testing.assert_close(a, b, **_closeness(form), equal_nan=True)


def test_the_inputs_are_neither_modified_nor_aliased() -> None:
    x_host, host, state_host = _inputs("skip_lstm", {}, 2, True, seed=6)
    x = leaf(x_host)
    params = [{k: leaf(v) for k, v in p.items()} for p in host]
    state = [{k: leaf(v) for k, v in s.items()} for s in state_host or []]
    before = [
        t.detach().clone()
        for t in [x, *(v for p in params for v in p.values()), *(v for s in state for v in s.values())]
    ]
    result = B.skip_lstm(x, params, initial_state=state)
    sum(f.sum() for f in [result.outputs, *(v for s in result.state for v in s.values())]).backward()
    after = [x, *(v for p in params for v in p.values()), *(v for s in state for v in s.values())]
    for a, b in zip(after, before, strict=True):
        assert torch.equal(a.detach(), b)
    inputs = {t.data_ptr() for t in after}
    assert not any(v.data_ptr() in inputs for s in result.state for v in s.values())


def test_checkpointing_and_torch_func_give_the_same_gradients() -> None:
    """checkpoint_every recomputes the Function's forward; torch.func runs the autograd loop: the same gradients."""
    x_host, host, _ = _inputs("skip_gru", {}, 2, False, seed=7)
    params = [{k: torch.from_numpy(v) for k, v in p.items()} for p in host]
    x = torch.from_numpy(x_host)

    def loss(x: Any, params: Any, every: int | None = None) -> Any:
        result = B.skip_gru(x, params, lengths=np.array([7, 2, 0, 5]), checkpoint_every=every)
        return (result.outputs**2).sum() + result.update_prob.sum()

    leaves = [
        x.clone().requires_grad_(True),
        [{k: v.clone().requires_grad_(True) for k, v in p.items()} for p in params],
    ]
    flat = [leaves[0], *(v for p in leaves[1] for v in p.values())]
    whole = torch.autograd.grad(loss(leaves[0], leaves[1]), flat)
    cut = torch.autograd.grad(loss(leaves[0], leaves[1], every=3), flat)
    func = torch.func.grad(loss, argnums=(0, 1))(x, params)
    func_flat = [func[0], *(v for p in func[1] for v in p.values())]
    for a, b, c in zip(whole, cut, func_flat, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-13)
        torch.testing.assert_close(c, a, rtol=1e-12, atol=1e-13)


def test_the_fast_path_is_chosen_only_in_plain_eager_mode() -> None:
    t = torch.zeros(2, requires_grad=True)
    assert skip_autograd.usable([t])
    with fused.plain_path():
        assert not skip_autograd.usable([t])


@pytest.mark.parametrize("training", [False, True])
def test_the_benchmarks_matmul_floor_runs_each_unavoidable_matmul_once(training: bool) -> None:
    """Forward: the input projection and one recurrent product per step; training adds the backward's."""
    from rnnspec.bench import ports
    from rnnspec.bench.framework import load

    fw = load("torch")
    batch, steps, features, hidden, gates, inner = 2, 5, 3, 4, 3, 7
    arrays = ports.floor_arrays(fw, batch, steps, features, hidden, gates, inner)
    shapes: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    real = fw.matmul_t

    def counted(x: Any, w: Any) -> Any:
        shapes.append((tuple(x.shape), tuple(w.T.shape)))
        return real(x, w)

    fw.matmul_t = counted  # type: ignore[method-assign]
    ports.matmul_floor(fw, arrays, training)
    wide = gates * hidden
    want = [((batch * steps, features), (features, wide))] + [((batch, hidden), (hidden, wide))] * inner
    if training:
        want += [((batch, wide), (wide, hidden))] * inner
        want += [
            ((wide, batch * inner), (batch * inner, hidden)),
            ((wide, batch * steps), (batch * steps, features)),
            ((batch * steps, wide), (wide, features)),
        ]
    assert shapes == want
