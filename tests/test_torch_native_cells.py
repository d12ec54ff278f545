"""The native training kernels of skip_rnn/skip_lstm/skip_gru and act (``backends/common/kernels/cells.c``).

In plain eager autograd on float32/float64 CPU tensors, the torch backend's Functions
(:mod:`rnnspec.backends.torch.skip_autograd`, :mod:`rnnspec.backends.torch.act_autograd`) run each
step's elementwise work in the native kernels, recorded as the path ``"native-training"``; with
``RNNSPEC_NATIVE=0`` the same Functions run it in torch ops (``"training"``). The kernels'
``sigmoid``/``tanh`` differ from torch's by a few ulps, so the two paths are compared within the
tolerance policy (``rnnspec.conformance.tolerances``), the discrete decisions (update gates, ponder
steps) for equality, and NaN must sit exactly where the torch-op path puts it.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest
from helpers_nan_halting import nan_case

torch = pytest.importorskip("torch")

import rnnspec  # noqa: E402
from rnnspec.backends.common import native  # noqa: E402
from rnnspec.backends.torch import act_autograd, cell_backward, fused  # noqa: E402
from rnnspec.conformance.assertions import assert_tree_close  # noqa: E402
from rnnspec.conformance.tolerances import tolerance  # noqa: E402

B = rnnspec.get_backend("torch")
SKIP_VARIANTS = (
    ("skip_rnn", {"activation": "tanh"}),
    ("skip_rnn", {"activation": "relu"}),
    ("skip_lstm", {}),
    ("skip_gru", {"reset_after": True}),
    ("skip_gru", {"reset_after": False}),
)
#: (layers, lengths, initial state, reverse): one layer, then every convention at once (unsorted lengths, a 0).
SKIP_SHAPES = {"plain": (1, None, False, False), "three-layers-everything": (3, (7, 0, 3, 5), True, True)}
#: (lengths, initial state, reverse, epsilon, max_steps)
ACT_SHAPES = {"plain": (None, False, False, 0.01, 8), "everything-capped": ((7, 0, 3, 5), True, True, 0.05, 3)}
BATCH, TIME, INPUT, HIDDEN = 4, 7, 3, 5
DTYPES = {"float32": torch.float32, "float64": torch.float64}


@pytest.fixture
def kernels() -> None:
    """Skips the test where the kernel library cannot be built (no C compiler, or ``RNNSPEC_NATIVE=0``)."""
    if native.library(cell_backward.LIBRARY) is None:
        pytest.skip(f"native kernels unavailable: {native.unavailable(cell_backward.LIBRARY)}")


def _variant_id(variant: tuple[str, dict[str, Any]]) -> str:
    return "-".join([variant[0], *map(str, variant[1].values())])


def _leaf(array: np.ndarray, dtype: str) -> Any:
    return torch.tensor(array, dtype=DTYPES[dtype], requires_grad=True)


def _skip_inputs(op: str, options: dict[str, Any], layers: int, with_state: bool, seed: int) -> tuple[Any, ...]:
    """Params whose gates open at some steps and not at others, x, and (optionally) an initial state."""
    host = rnnspec.init_params(
        op, input_size=INPUT, hidden_size=HIDDEN, num_layers=layers, seed=seed, dtype="float64", **options
    )
    rng = np.random.default_rng(seed)
    host[-1]["b_gate"] = np.full(host[-1]["b_gate"].shape, -1.0)
    host[-1]["w_gate"] = rng.normal(0.0, 2.0, host[-1]["w_gate"].shape)
    x = rng.standard_normal((BATCH, TIME, INPUT))
    state = None
    if with_state:
        state = []
        for k in range(layers):
            s = {n: rng.standard_normal((BATCH, HIDDEN)) for n in (("h", "c") if op == "skip_lstm" else ("h",))}
            if k == layers - 1:
                s["update_prob"] = rng.uniform(0.0, 1.0, (BATCH, 1))
                s["cum_update_prob"] = rng.uniform(0.0, 0.4, (BATCH, 1))
            state.append(s)
    return x, host, state


def _skip_run(
    op: str, options: dict[str, Any], dtype: str, shape: str, x_host: Any, host: Any, state_host: Any, seed: int = 1
) -> tuple[str | None, dict[str, Any]]:
    """The path taken, the result's fields and the gradients of a random weighting of them, as NumPy."""
    _, lengths, _, reverse = SKIP_SHAPES[shape]
    x = _leaf(x_host, dtype)
    params = [{k: _leaf(v, dtype) for k, v in p.items()} for p in host]
    state = None if state_host is None else [{k: _leaf(v, dtype) for k, v in s.items()} for s in state_host]
    result = getattr(B, op)(x, params, lengths=lengths, initial_state=state, reverse=reverse, **options)
    path = fused.last_path(op)
    fields = [result.outputs, *(v for s in result.state for v in s.values()), result.update_prob]
    rng = np.random.default_rng(seed)
    weights = [torch.tensor(rng.standard_normal(tuple(f.shape)), dtype=DTYPES[dtype]) for f in fields]
    weights.append(torch.tensor(rng.standard_normal(tuple(result.update_gate.shape)), dtype=DTYPES[dtype]))
    loss = sum((f * w).sum() for f, w in zip([*fields, result.update_gate], weights, strict=True))
    sources = [x, *(v for p in params for v in p.values()), *(v for s in state or [] for v in s.values())]
    grads = torch.autograd.grad(loss, sources, allow_unused=True, materialize_grads=True)
    out = {
        "fields": [f.detach().numpy() for f in fields],
        "update_gate": result.update_gate.detach().numpy(),
        "grads": [g.numpy() for g in grads],
    }
    return path, out


def _act_inputs(cell: str, with_state: bool, seed: int, b_halt: float = -0.4) -> tuple[Any, ...]:
    (host,) = rnnspec.init_params("act", input_size=INPUT, hidden_size=HIDDEN, seed=seed, dtype="float64", cell=cell)
    rng = np.random.default_rng(seed)
    # Halting units spread around sigmoid(b_halt): rows halt after different numbers of inner steps.
    host["w_halt"] = rng.normal(0.0, 6.0, host["w_halt"].shape)
    host["b_halt"] = np.full(host["b_halt"].shape, b_halt)
    if cell == "indrnn":  # its initial w_ih is tiny, and so would be h and the halting unit's spread
        host["w_ih"] = rng.normal(0.0, 1.0, host["w_ih"].shape)
    x = rng.standard_normal((BATCH, TIME, INPUT))
    state = None
    if with_state:
        state = [{n: rng.standard_normal((BATCH, HIDDEN)) for n in (("h", "c") if cell == "lstm" else ("h",))}]
    return x, [host], state


def _act_run(
    cell: str, dtype: str, x_host: Any, host: Any, state_host: Any, options: dict[str, Any], seed: int = 1
) -> tuple[str | None, dict[str, Any]]:
    x = _leaf(x_host, dtype)
    p = {k: _leaf(v, dtype) for k, v in host[0].items()}
    state = None if state_host is None else [{k: _leaf(v, dtype) for k, v in s.items()} for s in state_host]
    result = B.act(x, [p], cell=cell, initial_state=state, **options)
    path = fused.last_path("act")
    fields = [result.outputs, *result.state[0].values(), result.ponder_remainder, result.ponder_cost]
    rng = np.random.default_rng(seed)
    weights = [torch.tensor(rng.standard_normal(tuple(f.shape)), dtype=DTYPES[dtype]) for f in fields]
    loss = sum((f * w).sum() for f, w in zip(fields, weights, strict=True))
    sources = [x, *p.values(), *(v for s in state or [] for v in s.values())]
    grads = torch.autograd.grad(loss, sources, allow_unused=True, materialize_grads=True)
    out = {
        "fields": [f.detach().numpy() for f in fields],
        "ponder_steps": result.ponder_steps.numpy(),
        "grads": [g.numpy() for g in grads],
    }
    return path, out


def _both(monkeypatch: pytest.MonkeyPatch, run: Any) -> tuple[tuple[str | None, Any], tuple[str | None, Any]]:
    """``run()`` with the native kernels, then with ``RNNSPEC_NATIVE=0`` (the torch-op path)."""
    found = run()
    with monkeypatch.context() as patch:
        patch.setenv(native.ENV, "0")
        fallback = run()
    return found, fallback


def _assert_paths_agree(got: dict[str, Any], want: dict[str, Any], discrete: str, dtype: str, steps: int) -> None:
    np.testing.assert_array_equal(got[discrete], want[discrete], err_msg=discrete)
    assert_tree_close(got["fields"], want["fields"], tolerance(dtype, steps=steps), context="fields")
    assert_tree_close(got["grads"], want["grads"], tolerance(dtype, steps=steps, kind="gradient"), context="grads")


# -- the kernels' declarations ----------------------------------------------------------------------------------


def test_the_kernels_signatures_match_their_c_prototypes() -> None:
    """Every exported kernel of cells.c is declared to ctypes with its prototype's argument kinds, in order."""
    source = (native.KERNELS / f"{cell_backward.LIBRARY}.c").read_text()
    found = {}
    for match in re.finditer(r"^void FN\((\w+)\)\(([^)]*)\)", source, re.MULTILINE):
        arguments = [a.strip() for a in match.group(2).split(",")]
        found[match.group(1)] = "".join("p" if "*" in a else "d" if a.startswith("double") else "i" for a in arguments)
    assert found == cell_backward.SIGNATURES


# -- Skip RNN ---------------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("kernels")
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("shape", list(SKIP_SHAPES))
@pytest.mark.parametrize("variant", SKIP_VARIANTS, ids=_variant_id)
def test_skip_ops_train_through_the_native_kernels_with_the_torch_op_paths_values_and_gradients(
    variant: tuple[str, dict[str, Any]], shape: str, dtype: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    op, options = variant
    layers, _, with_state, _ = SKIP_SHAPES[shape]
    inputs = _skip_inputs(op, options, layers, with_state, seed=0)
    (path, got), (fallback_path, want) = _both(monkeypatch, lambda: _skip_run(op, options, dtype, shape, *inputs))
    assert path == "native-training"
    assert fallback_path == "training"
    _assert_paths_agree(got, want, "update_gate", dtype, steps=TIME * layers)
    # The gate must open at some steps and not at others, or the straight-through paths go untested.
    assert 0 < float(want["update_gate"].mean()) < 1


@pytest.mark.usefixtures("kernels")
@pytest.mark.parametrize("where", ["update_prob", "x"])
@pytest.mark.parametrize("variant", SKIP_VARIANTS[2:4], ids=_variant_id)
def test_a_nan_in_a_skip_ops_inputs_reaches_the_torch_op_paths_positions(
    variant: tuple[str, dict[str, Any]], where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A NaN update_prob never opens its row's gate; a NaN in x poisons its row from that step on."""
    op, options = variant
    x, host, state = _skip_inputs(op, options, 2, True, seed=5)
    assert state is not None
    if where == "x":
        x[1, 2, 0] = np.nan
    else:
        state[-1]["update_prob"][1, 0] = np.nan
    (path, got), (_, want) = _both(monkeypatch, lambda: _skip_run(op, options, "float64", "plain", x, host, state))
    assert path == "native-training"
    assert np.isnan(want["fields"][0 if where == "x" else -1]).any()  # the outputs, or update_prob
    _assert_paths_agree(got, want, "update_gate", "float64", steps=2 * TIME)


@pytest.mark.usefixtures("kernels")
def test_skip_kernels_leave_the_inputs_alone_and_a_retained_graph_gives_the_same_gradients_twice() -> None:
    x_host, host, state_host = _skip_inputs("skip_lstm", {}, 2, True, seed=6)
    x = _leaf(x_host, "float32")
    params = [{k: _leaf(v, "float32") for k, v in p.items()} for p in host]
    state = [{k: _leaf(v, "float32") for k, v in s.items()} for s in state_host or []]
    leaves = [x, *(v for p in params for v in p.values()), *(v for s in state for v in s.values())]
    before = [t.detach().clone() for t in leaves]
    result = B.skip_lstm(x, params, lengths=np.array([7, 0, 3, 5]), initial_state=state)
    assert fused.last_path("skip_lstm") == "native-training"
    loss = sum(f.sum() for f in [result.outputs, result.update_prob, *(v for s in result.state for v in s.values())])
    first = torch.autograd.grad(loss, leaves, retain_graph=True)
    second = torch.autograd.grad(loss, leaves)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)
    for a, b in zip(leaves, before, strict=True):
        assert torch.equal(a.detach(), b)
    inputs = {t.data_ptr() for t in leaves}
    assert not any(v.data_ptr() in inputs for s in result.state for v in s.values())


# -- ACT --------------------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("kernels")
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("shape", list(ACT_SHAPES))
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru", "indrnn"])
def test_act_trains_through_the_native_kernels_with_the_torch_op_paths_values_and_gradients(
    cell: str, shape: str, dtype: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    lengths, with_state, reverse, epsilon, max_steps = ACT_SHAPES[shape]
    x, host, state = _act_inputs(cell, with_state, seed=0)
    options = {"lengths": lengths, "reverse": reverse, "epsilon": epsilon, "max_steps": max_steps}
    (path, got), (fallback_path, want) = _both(monkeypatch, lambda: _act_run(cell, dtype, x, host, state, options))
    assert path == "native-training"
    assert fallback_path == "training"
    _assert_paths_agree(got, want, "ponder_steps", dtype, steps=TIME * max_steps)
    # Rows must halt after different numbers of inner steps, or the halting paths go untested.
    assert len(set(want["ponder_steps"].flatten().tolist()) - {0.0}) > 1


@pytest.mark.usefixtures("kernels")
def test_act_keeps_every_inner_step_when_rows_ponder_past_the_first_buffers_capacity(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The saved buffers start with room for two inner steps per input step and grow by doubling."""
    x, host, state = _act_inputs("gru", True, seed=2, b_halt=-6.0)
    options = {"lengths": None, "reverse": False, "epsilon": 0.01, "max_steps": 12}
    (path, got), (_, want) = _both(monkeypatch, lambda: _act_run("gru", "float64", x, host, state, options))
    assert path == "native-training"
    assert want["ponder_steps"].max(0).sum() > 4 * TIME  # at least two doublings
    _assert_paths_agree(got, want, "ponder_steps", "float64", steps=TIME * 12)


@pytest.mark.usefixtures("kernels")
@pytest.mark.parametrize("cell", ["lstm", "gru", "indrnn"])
def test_a_nan_in_acts_input_halts_its_row_as_on_the_torch_op_path(cell: str, monkeypatch: pytest.MonkeyPatch) -> None:
    x, params = nan_case(cell)
    options = {"lengths": np.array([4, 4, 2]), "reverse": False, "epsilon": 0.01, "max_steps": 10**6}
    (path, got), (_, want) = _both(monkeypatch, lambda: _act_run(cell, "float64", x, params, None, options))
    assert path == "native-training"
    assert np.isnan(want["fields"][0]).any()
    if cell == "indrnn":  # relu at NaN: only the other rows' x gradients are comparable (test_act_nan_halting)
        got["grads"], want["grads"] = got["grads"][1:], want["grads"][1:]
    _assert_paths_agree(got, want, "ponder_steps", "float64", steps=x.shape[1] * 2)


@pytest.mark.usefixtures("kernels")
def test_a_nan_halting_bias_stops_every_row_at_its_first_inner_step_as_on_the_torch_op_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    x, host, state = _act_inputs("gru", True, seed=3)
    host[0]["b_halt"] = np.full(1, np.nan)
    options = {"lengths": (7, 0, 3, 5), "reverse": True, "epsilon": 0.01, "max_steps": 10**6}
    (path, got), (_, want) = _both(monkeypatch, lambda: _act_run("gru", "float64", x, host, state, options))
    assert path == "native-training"
    assert set(want["ponder_steps"].flatten().tolist()) == {0.0, 1.0}
    _assert_paths_agree(got, want, "ponder_steps", "float64", steps=TIME)


@pytest.mark.usefixtures("kernels")
def test_act_kernels_leave_the_inputs_alone_and_a_retained_graph_gives_the_same_gradients_twice() -> None:
    x_host, host, state_host = _act_inputs("lstm", True, seed=4)
    x = _leaf(x_host, "float32")
    p = {k: _leaf(v, "float32") for k, v in host[0].items()}
    state = [{k: _leaf(v, "float32") for k, v in s.items()} for s in state_host or []]
    leaves = [x, *p.values(), *state[0].values()]
    before = [t.detach().clone() for t in leaves]
    result = B.act(x, [p], cell="lstm", lengths=np.array([7, 0, 3, 5]), initial_state=state)
    assert fused.last_path("act") == "native-training"
    loss = result.outputs.sum() + result.ponder_cost.sum() + sum(v.sum() for v in result.state[0].values())
    first = torch.autograd.grad(loss, leaves, retain_graph=True)
    second = torch.autograd.grad(loss, leaves)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)
    for a, b in zip(leaves, before, strict=True):
        assert torch.equal(a.detach(), b)
    inputs = {t.data_ptr() for t in leaves}
    assert not any(v.data_ptr() in inputs for v in result.state[0].values())


# -- when the kernels do not run --------------------------------------------------------------------------------


def _small_call(op: str, dtype: Any) -> Any:
    if op == "act":
        (host,) = rnnspec.init_params("act", input_size=INPUT, hidden_size=HIDDEN, seed=0, cell="gru")
        p = {k: torch.tensor(v, dtype=dtype, requires_grad=True) for k, v in host.items()}
        return B.act(torch.randn(2, 3, INPUT, dtype=dtype), [p], cell="gru")
    params = [
        {k: torch.tensor(v, dtype=dtype, requires_grad=True) for k, v in p.items()}
        for p in rnnspec.init_params(op, input_size=INPUT, hidden_size=HIDDEN, seed=0)
    ]
    return getattr(B, op)(torch.randn(2, 3, INPUT, dtype=dtype), params)


@pytest.mark.parametrize("op", ["skip_gru", "act"])
def test_with_native_kernels_disabled_the_function_runs_its_torch_op_steps(
    op: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(native.ENV, "0")
    result = _small_call(op, torch.float32)
    assert fused.last_path(op) == "training"
    assert type(result.outputs.grad_fn).__name__ in ("_SkipFunctionBackward", "_ACTFunctionBackward")


@pytest.mark.usefixtures("kernels")
@pytest.mark.parametrize("op", ["skip_gru", "act"])
def test_a_forced_plain_path_keeps_the_autograd_loop_and_half_precision_trains_natively_in_float32(op: str) -> None:
    _small_call(op, torch.float16)  # the backend computes half precision in float32
    assert fused.last_path(op) == "native-training"
    with fused.plain_path():
        result = _small_call(op, torch.float32)
    assert fused.last_path(op) == "training"
    assert type(result.outputs.grad_fn).__name__ not in ("_SkipFunctionBackward", "_ACTFunctionBackward")
    _small_call(op, torch.float32)
    assert fused.last_path(op) == "native-training"


def test_acts_native_kernels_are_not_offered_for_a_gru_whose_reset_gate_comes_first() -> None:
    """ACT ponders a cell with its default options (gru: reset after the matmul); the other variant keeps torch ops."""
    layout = act_autograd.ACTLayout("gru", "tanh", False, ("h",), 0.01, 3)
    assert act_autograd.native_kernels(layout, [torch.zeros(2, 3)]) is None


@pytest.mark.parametrize("form", ["native", "torch-ops"])
@pytest.mark.parametrize("op", ["skip_lstm", "skip_gru", "act"])
def test_an_empty_batch_trains_through_either_form_of_the_steps(
    op: str, form: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if form == "torch-ops":
        monkeypatch.setenv(native.ENV, "0")
    elif native.library(cell_backward.LIBRARY) is None:
        pytest.skip(f"native kernels unavailable: {native.unavailable(cell_backward.LIBRARY)}")
    init = {"cell": "lstm"} if op == "act" else {}
    params = [
        {k: torch.tensor(v, requires_grad=True) for k, v in p.items()}
        for p in rnnspec.init_params(op, input_size=INPUT, hidden_size=HIDDEN, seed=0, **init)
    ]
    x = torch.zeros((0, TIME, INPUT), requires_grad=True)
    result = getattr(B, op)(x, params, **init)
    assert fused.last_path(op) == ("native-training" if form == "native" else "training")
    loss = result.outputs.sum() + sum(v.sum() for s in result.state for v in s.values())
    grads = torch.autograd.grad(loss, [x, *params[0].values()])
    assert grads[0].shape == x.shape
    assert all(not bool(g.any()) for g in grads)
