"""The PyTorch backend's own behaviour, beyond the conformance suite.

Its two paths for rnn, lstm and gru, torch's fused kernels and the plain per-step
loop, agree in float64 within 1e-10, values and gradients, for zero-length rows,
reverse, stacks of mixed sizes and given initial states; the right path runs
(gru with reset_after=False takes the plain one, ``plain_path()`` and
``RNNSPEC_TORCH_PLAIN`` force it); ``list_backends`` shows the fast path; calls
never modify their inputs; half-precision results have the input dtype and are
close to the float32 results.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import numpy as np
import pytest
from helpers import variant_id

torch = pytest.importorskip("torch")

import rnnspec  # noqa: E402  (after the skip: the backend imports torch)
from rnnspec.backends.torch import fused  # noqa: E402
from rnnspec.conformance.cases import CaseSpec  # noqa: E402
from rnnspec.ops import OPS  # noqa: E402
from rnnspec.tree import tree_leaves, tree_map  # noqa: E402

B = rnnspec.get_backend("torch")
REFERENCE = rnnspec.get_backend("numpy")

#: (op, options): every variant of the classic ops that the fused kernels take.
FUSED_VARIANTS = [
    ("rnn", {"activation": "tanh"}),
    ("rnn", {"activation": "relu"}),
    ("lstm", {}),
    ("gru", {"reset_after": True}),
]
#: Agreement of the two paths in float64.
TOL = 1e-10
#: Half-precision results against float32 results (inputs and results rounded: a few units of the last place).
HALF_TOL = {"float16": 5e-3, "bfloat16": 4e-2}

#: (hidden sizes of the stack, lengths, initial state given, reverse).
SHAPES = [
    ((4,), None, False, False),
    ((4,), [5, 0, 3], True, False),
    ((4, 4), [0, 5, 2], True, True),
    ((4, 4, 3), [3, 5, 0], False, True),  # two groups of fused layers: (4, 4) and (3,)
    ((3, 4), [5, 5, 5], True, True),
    ((4, 4), [0, 0, 0], True, False),
]


def make_call(
    op: str, options: dict[str, Any], hidden: tuple[int, ...], lengths: list[int] | None, given: bool, reverse: bool
) -> tuple[Any, list[dict[str, Any]], dict[str, Any]]:
    """x, params and keywords of a float64 call (torch tensors), batch 3, time 5, input size 3."""
    rng = np.random.default_rng(len(hidden) * 7 + (0 if lengths is None else sum(lengths)))
    params: list[dict[str, np.ndarray]] = []
    inputs = 3
    for k, h in enumerate(hidden):
        params += rnnspec.init_params(op, input_size=inputs, hidden_size=h, seed=k, dtype="float64", **options)
        inputs = h
    kwargs: dict[str, Any] = dict(options, lengths=None if lengths is None else np.asarray(lengths), reverse=reverse)
    if given:
        names = ("h", "c") if op == "lstm" else ("h",)
        draw = rng.standard_normal
        kwargs["initial_state"] = tuple({n: torch.from_numpy(draw((3, h))) for n in names} for h in hidden)
    x = torch.from_numpy(rng.standard_normal((3, 5, 3)))
    return x, [{k: torch.from_numpy(v) for k, v in p.items()} for p in params], kwargs


def cotangents_for(result: Any, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)

    def draw(t: Any) -> Any:
        return torch.from_numpy(rng.standard_normal(tuple(t.shape)))

    return {"outputs": draw(result.outputs), "state": [tree_map(draw, s) for s in result.state]}


def assert_close(got: Any, want: Any, tol: float = TOL) -> None:
    got_leaves, want_leaves = tree_leaves(B.to_numpy(got)), tree_leaves(B.to_numpy(want))
    assert len(got_leaves) == len(want_leaves)
    for g, w in zip(got_leaves, want_leaves, strict=True):
        np.testing.assert_allclose(np.asarray(g, np.float64), np.asarray(w, np.float64), rtol=tol, atol=tol)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}-{s[1]}-init{s[2]}-rev{s[3]}")
@pytest.mark.parametrize("variant", FUSED_VARIANTS, ids=variant_id)
def test_fused_and_plain_paths_agree(variant: tuple[str, dict[str, Any]], shape: tuple[Any, ...]) -> None:
    """Values and gradients (x, every param, the initial state) of both paths agree within 1e-10."""
    op, options = variant
    x, params, kwargs = make_call(op, options, *shape)
    fast = getattr(B, op)(x, params, **kwargs)
    assert fused.last_path(op) == "fused"
    with fused.plain_path():
        plain = getattr(B, op)(x, params, **kwargs)
        assert fused.last_path(op) == "plain"
    assert_close(fast, plain)
    as_numpy = tree_map(lambda t: t.numpy() if isinstance(t, torch.Tensor) else t, (x, params, kwargs))
    assert_close(fast, getattr(REFERENCE, op)(as_numpy[0], as_numpy[1], **as_numpy[2]))
    lengths, initial = kwargs["lengths"], kwargs.get("initial_state")
    for row in [] if lengths is None else np.flatnonzero(lengths == 0):  # zero outputs, the initial state back
        assert not fast.outputs[row].any()
        for k, layer in enumerate(fast.state):
            for name, value in layer.items():
                assert torch.equal(value[row], initial[k][name][row] if initial else torch.zeros_like(value[row]))
    cotangents = cotangents_for(fast, seed=len(shape[0]))
    grads_fast = B.vjp(op, cotangents, x, params, **kwargs)
    assert fused.last_path(op) == "fused"
    with fused.plain_path():
        grads_plain = B.vjp(op, cotangents, x, params, **kwargs)
    assert_close(grads_fast, grads_plain)


def test_the_path_taken() -> None:
    """gru with reset_after=False takes the plain path; everything the kernels match takes the fused one."""
    x, params, kwargs = make_call("gru", {"reset_after": False}, (4,), [5, 1, 0], False, False)
    B.gru(x, params, **kwargs)
    assert fused.last_path("gru") == "plain"
    x, params, kwargs = make_call("gru", {"reset_after": True}, (4,), [5, 1, 0], False, False)
    B.gru(x, params, **kwargs)
    assert fused.last_path("gru") == "fused"
    assert fused.why_plain("gru", x, {"reset_after": False}) == "gru with reset_after=False has no fused kernel"
    assert fused.why_plain("gru", x, {"reset_after": True}) is None


def test_plain_path_is_forced_by_the_context_manager_and_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    x, params, kwargs = make_call("lstm", {}, (4,), None, False, False)
    with fused.plain_path():
        B.lstm(x, params, **kwargs)
        assert fused.last_path("lstm") == "plain"
        with fused.plain_path():
            pass
        assert fused.plain_forced()  # the inner block restores the outer one's setting
    assert not fused.plain_forced()
    B.lstm(x, params, **kwargs)
    assert fused.last_path("lstm") == "fused"
    monkeypatch.setenv(fused.PLAIN_ENV, "1")
    B.lstm(x, params, **kwargs)
    assert fused.last_path("lstm") == "plain"
    assert "off now" in fused.fast_paths_available()[fused.FAST_PATH]
    monkeypatch.setenv(fused.PLAIN_ENV, "0")
    B.lstm(x, params, **kwargs)
    assert fused.last_path("lstm") == "fused"


def test_plain_path_holds_for_its_own_thread_only() -> None:
    seen: list[bool] = []
    with fused.plain_path():
        thread = threading.Thread(target=lambda: seen.append(fused.plain_forced()))
        thread.start()
        thread.join()
        assert fused.plain_forced()
    assert seen == [False]


def test_list_backends_shows_the_fast_path() -> None:
    record = next(r for r in rnnspec.list_backends() if r.name == "torch")
    assert record.loaded, record.error
    assert record.framework == "torch"
    assert set(record.ops) == set(OPS)
    assert fused.FAST_PATH in record.fast_paths
    assert "reset_after=True" in record.fast_paths[fused.FAST_PATH]


@pytest.mark.parametrize("kind", ["numpy", "list", "int32 tensor"])
def test_lengths_of_any_kind(kind: str) -> None:
    """NumPy, a list and a CPU int tensor give the same result on both paths."""
    x, params, kwargs = make_call("lstm", {}, (4,), [2, 0, 5], True, True)
    want = B.lstm(x, params, **kwargs)
    given = {"numpy": np.array([2, 0, 5], np.int16), "list": [2, 0, 5], "int32 tensor": torch.tensor([2, 0, 5])}[kind]
    kwargs["lengths"] = given.to(torch.int32) if isinstance(given, torch.Tensor) else given
    assert_close(B.lstm(x, params, **kwargs), want, tol=0.0)
    with fused.plain_path():
        assert_close(B.lstm(x, params, **kwargs), want)


def _op_call(op: str, dtype: str = "float32", **changes: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    fields: dict[str, Any] = dict(batch=3, time=5, lengths=(5, 0, 3), initial_state=True, reverse=True, seed=3)
    if OPS[op].kind == "sequence" and op != "act":
        fields["num_layers"] = 2
    if op == "qrnn":
        fields.update(window=2, zoneout=True)
    fields.update(changes)
    return CaseSpec(op, dtype=dtype, **fields).build().call_args(B)


@pytest.mark.parametrize("op", list(OPS))
def test_calls_never_modify_their_inputs(op: str) -> None:
    """Forward and reverse mode leave every array the caller passed (lengths included) as it was."""
    args, kwargs = _op_call(op, dtype="float64")
    kwargs["lengths"] = torch.tensor(kwargs["lengths"])
    before = tree_map(lambda t: t.clone() if isinstance(t, torch.Tensor) else t, (args, kwargs))
    result = getattr(B, op)(*args, **kwargs)
    rng = np.random.default_rng(0)
    if OPS[op].kind == "primitive":
        cotangents: dict[str, Any] = {"h": torch.from_numpy(rng.standard_normal(tuple(result.shape)))}
    else:
        cotangents = tree_map(lambda t: torch.from_numpy(rng.standard_normal(tuple(t.shape))), result._asdict())
    B.vjp(op, cotangents, *args, **kwargs)
    for got, want in zip(tree_leaves((args, kwargs)), tree_leaves(before), strict=True):
        if isinstance(want, torch.Tensor):
            assert torch.equal(got, want)
            assert not got.requires_grad


@pytest.mark.parametrize("variant", FUSED_VARIANTS, ids=variant_id)
@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_inference_without_autograd_agrees_and_leaves_no_graph_nor_trace_on_the_weights(
    variant: tuple[str, dict[str, Any]], mode: str
) -> None:
    """Without autograd the CPU kernels get their weights as views marked as requiring grad (see
    ``fused._weights``): the values are those of a call with autograd on, nothing requires grad, and the
    caller's tensors are untouched."""
    op, options = variant
    x, params, kwargs = make_call(op, options, (4, 4), [5, 0, 3], True, True)
    with_autograd = getattr(B, op)(x, params, **kwargs)
    context = torch.no_grad() if mode == "no_grad" else torch.inference_mode()
    with context:
        result = getattr(B, op)(x, params, **kwargs)
    assert fused.last_path(op) == "fused"
    assert_close(result, with_autograd)
    assert not any(t.requires_grad for t in tree_leaves(result))
    assert not any(t.requires_grad for t in tree_leaves((x, params, kwargs)) if isinstance(t, torch.Tensor))


@pytest.mark.parametrize("plain", [False, True], ids=["fused", "plain"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("op", list(OPS))
def test_half_precision_has_the_input_dtype_and_is_close_to_float32(op: str, dtype: str, plain: bool) -> None:
    """Computed in float32 inside, rounded back: the result is within the half dtype's rounding of float32's."""
    if plain and op not in ("rnn", "lstm", "gru"):
        pytest.skip("only rnn, lstm and gru have two paths")
    args, kwargs = _op_call(op)
    half = getattr(torch, dtype)
    args_h, kwargs_h = tree_map(
        lambda t: t.to(half) if isinstance(t, torch.Tensor) and t.is_floating_point() else t, (args, kwargs)
    )
    with fused.plain_path() if plain else contextlib.nullcontext():
        got = getattr(B, op)(*args_h, **kwargs_h)
        want = getattr(B, op)(*args, **kwargs)
    tol = HALF_TOL[dtype]
    for g, w in zip(tree_leaves(got), tree_leaves(want), strict=True):
        assert g.dtype == half
        if op.startswith("skip_") or op == "act":
            continue  # a discrete decision may flip with the rounding of the inputs
        np.testing.assert_allclose(g.float().numpy(), w.numpy(), rtol=tol, atol=tol)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("variant", FUSED_VARIANTS, ids=variant_id)
def test_cuda_agrees_with_the_cpu(variant: tuple[str, dict[str, Any]]) -> None:
    """On CUDA (cuDNN), with lengths as a CUDA tensor, values and gradients equal the CPU's in float64."""
    op, options = variant
    x, params, kwargs = make_call(op, options, (4, 4, 3), [3, 5, 0], True, True)
    want = getattr(B, op)(x, params, **kwargs)
    cotangents = cotangents_for(want, seed=1)
    grads = B.vjp(op, cotangents, x, params, **kwargs)
    cuda = tree_map(lambda t: t.cuda() if isinstance(t, torch.Tensor) else t, (x, params, kwargs, cotangents))
    cuda[2]["lengths"] = torch.as_tensor(kwargs["lengths"]).cuda()
    got = getattr(B, op)(*cuda[:2], **cuda[2])
    assert fused.last_path(op) == "fused"
    assert got.outputs.is_cuda
    assert_close(got, want, tol=1e-9)
    assert_close(B.vjp(op, cuda[3], *cuda[:2], **cuda[2]), grads, tol=1e-9)


def test_numpy_params_are_refused_saying_how_to_convert_them() -> None:
    """torch's convention is tensors only; the error says what to do instead."""
    backend = rnnspec.get_backend("torch")
    params = rnnspec.init_params("gru", input_size=3, hidden_size=4)
    refused = r"argument params\[0\]\['w_ih'\]: expected a torch array \(convert NumPy"
    with pytest.raises(rnnspec.errors.DtypeError, match=refused):
        backend.gru(torch.zeros(2, 3, 3), params)
