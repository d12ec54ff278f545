"""The torch backend's native recurrence kernels (``backends/common/kernels/recurrences.c``), against the reference.

On float32 and float64 CPU tensors, with the library built, ``linear_recurrence``,
``indrnn_recurrence``, indrnn's layers and qrnn's gates and pooling take the ``"native"``
path: one kernel call over the whole sequence forward and one backward. Values and every
gradient match the NumPy reference within the conformance policy, for unsorted lengths
with a zero-length row, reverse, initial states, stacks of layers, every qrnn mode,
window (longer than the sequence too) and zoneout mask, checkpointing, rows narrower
than, as wide as and wider than a cache line, and blocks of short rows; they match the
fallback (the cpu-kernel, with ``RNNSPEC_NATIVE=0``), which the fallback's switch
selects; the padding is never read, NaN and infinities go where the reference puts them,
broadcast and strided cotangents give the gradients of dense ones, inputs are never
modified nor returned, and a second derivative is refused with the way out. Half
precision reaches the kernels in float32 through the ops; ``torch.func`` transforms and a
forced plain path keep the existing paths. Skipped where no C compiler builds the library
(``RNNSPEC_NATIVE=require`` makes that an error instead).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import helpers_recurrences as shared  # noqa: E402  (it imports torch)

import rnnspec  # noqa: E402  (after the skip: the backend imports torch)
from rnnspec.backends.common import native  # noqa: E402
from rnnspec.backends.torch import fused  # noqa: E402
from rnnspec.backends.torch.recurrences import indrnn_scan, linear_scan  # noqa: E402
from rnnspec.conformance.assertions import assert_tree_close  # noqa: E402
from rnnspec.conformance.cases import CaseSpec  # noqa: E402
from rnnspec.conformance.tolerances import reference_tolerance, tolerance  # noqa: E402
from rnnspec.tree import tree_leaves, tree_map  # noqa: E402

if native.library("recurrences") is None:
    pytest.skip(f"the native recurrences are unavailable: {native.unavailable('recurrences')}", allow_module_level=True)

B = rnnspec.get_backend("torch")
REFERENCE = rnnspec.get_backend("numpy")
BATCH, STEPS, HIDDEN = shared.KERNEL_BATCH, shared.KERNEL_STEPS, shared.KERNEL_HIDDEN

#: Sequence-op cases through the native path: (op, options, window, zoneout), over the layouts below.
SEQUENCE_VARIANTS = [
    ("indrnn", {"activation": "relu"}, 1, False),
    ("indrnn", {"activation": "tanh"}, 1, False),
    ("qrnn", {"mode": "f"}, 1, False),
    ("qrnn", {"mode": "fo"}, 2, True),
    ("qrnn", {"mode": "ifo"}, 3, True),
    ("qrnn", {"mode": "f"}, 2, True),
    ("qrnn", {"mode": "fo"}, 1, False),
    ("qrnn", {"mode": "ifo"}, 1, False),
]
#: (batch, time, hidden, layers, lengths, initial state, reverse): short rows in blocks (a partial one
#: last), one cache line of float32 (16) and of float64 (8) plus a remainder, wide rows one at a time.
SEQUENCE_LAYOUTS = [
    (4, 7, 5, 2, (7, 0, 3, 5), True, True),
    (5, 6, 20, 1, (2, 6, 0, 6, 4), False, False),
    (3, 5, 37, 2, None, True, False),
    (2, 4, 70, 1, (3, 4), True, True),
]


def sequence_id(value: Any) -> str:
    if isinstance(value, tuple) and isinstance(value[0], str):
        op, options, window, zoneout = value
        return "-".join([op, *options.values(), f"K{window}", *(["zoneout"] if zoneout else [])])
    batch, time, hidden, layers, lengths, initial, reverse = value
    flags = ["lengths"] * (lengths is not None) + ["initial"] * initial + ["reverse"] * reverse
    return "-".join([f"B{batch}T{time}H{hidden}L{layers}", *flags])


def sequence_case(variant: tuple[Any, ...], layout: tuple[Any, ...], dtype: str, **changes: Any) -> CaseSpec:
    op, options, window, zoneout = variant
    batch, time, hidden, layers, lengths, initial, reverse = layout
    fields: dict[str, Any] = dict(
        op=op,
        dtype=dtype,
        batch=batch,
        time=time,
        input_size=3,
        hidden_size=hidden,
        num_layers=layers,
        lengths=lengths,
        initial_state=initial,
        reverse=reverse,
        options=tuple(options.items()),
        window=window,
        zoneout=zoneout,
        seed=batch * 100 + hidden,
    )
    return CaseSpec(**{**fields, **changes})


def check_case(spec: CaseSpec) -> None:
    """The torch backend's values and gradients at ``spec`` equal the reference's, on the native path."""
    case = spec.build()
    got, want = case.run(B), case.run(REFERENCE)
    assert fused.last_path(spec.op) == "native"
    assert_tree_close(got, want, reference_tolerance(spec.dtype, steps=spec.steps), context=repr(spec))
    cotangents = case.cotangents(want, seed=1)
    got_grads, want_grads = case.vjp(B, cotangents), case.vjp(REFERENCE, cotangents)
    tol = reference_tolerance(spec.dtype, steps=spec.steps, kind="gradient")
    assert_tree_close(got_grads, want_grads, tol, context=f"vjp at {spec!r}")


@pytest.mark.parametrize("variant", shared.KERNEL_VARIANTS, ids=shared.kernel_variant_id)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("layout", shared.KERNEL_LAYOUTS)
def test_the_recurrences_take_the_native_path_and_match_the_reference(
    variant: tuple[str, dict[str, Any]], dtype: str, layout: tuple[Any, ...]
) -> None:
    op, options = variant
    shared.check_kernel_against_reference(op, options, dtype, layout)
    assert fused.last_path(op) == "native"


@pytest.mark.parametrize("variant", SEQUENCE_VARIANTS, ids=sequence_id)
@pytest.mark.parametrize("layout", SEQUENCE_LAYOUTS, ids=sequence_id)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_indrnn_and_qrnn_on_the_native_path_match_the_reference_in_values_and_gradients(
    variant: tuple[Any, ...], layout: tuple[Any, ...], dtype: str
) -> None:
    check_case(sequence_case(variant, layout, dtype))


@pytest.mark.parametrize(("window", "time"), [(3, 1), (3, 2), (4, 2), (4, 3), (2, 1)])
def test_qrnn_windows_reaching_past_the_first_step_read_the_given_x_prev(window: int, time: int) -> None:
    """Windows longer than the sequence: early positions read only x_prev, the final x_prev keeps part of it."""
    lengths = tuple(min(n, time) for n in (time, 0, 1))
    layout = (3, time, 6, 2, lengths, True, True)
    check_case(sequence_case(("qrnn", {"mode": "fo"}, window, True), layout, "float64"))


@pytest.mark.parametrize("op", ["indrnn", "qrnn"])
def test_checkpointed_calls_recompute_through_the_native_path(op: str) -> None:
    variant = SEQUENCE_VARIANTS[0] if op == "indrnn" else SEQUENCE_VARIANTS[4]
    spec = sequence_case(variant, SEQUENCE_LAYOUTS[0], "float64")
    check_case(spec.with_(options=(*spec.options, ("checkpoint_every", 3))))


@pytest.mark.parametrize("variant", shared.KERNEL_VARIANTS, ids=shared.kernel_variant_id)
@pytest.mark.parametrize("lengths", [None, [6, 0, 3]])
def test_the_native_path_and_the_cpu_kernel_agree_on_outputs_final_states_and_gradients(
    variant: tuple[str, dict[str, Any]], lengths: list[int] | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    op, options = variant
    arrays, cotangent = shared.kernel_case(op, "float64", True, seed=1)
    valid = None if lengths is None else torch.arange(STEPS)[None, :] < torch.tensor(lengths)[:, None]
    d_final = torch.from_numpy(np.random.default_rng(2).normal(size=(BATCH, HIDDEN)))
    results = {}
    for path in ("native", "cpu-kernel"):
        monkeypatch.setenv(native.ENV, "0" if path == "cpu-kernel" else "1")
        leaves = [t.requires_grad_(True) for t in shared.as_tensors(arrays) if t is not None]
        h, final = _scan(op, options, *leaves, valid)
        assert fused.last_path(op) == path
        grads = torch.autograd.grad([h, final], leaves, [torch.from_numpy(cotangent), d_final])
        results[path] = [h, final, *grads]
    tol = tolerance("float64", steps=STEPS, kind="gradient")
    for ours, theirs in zip(results["native"], results["cpu-kernel"], strict=True):
        torch.testing.assert_close(ours, theirs, rtol=tol.rtol, atol=tol.atol)
    if lengths is not None:  # a zero-length row's final state is its initial state, exactly
        assert torch.equal(results["native"][1][1], torch.from_numpy(arrays[2])[1])  # type: ignore[index]


def _scan(op: str, options: dict[str, Any], *args: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if op == "linear_recurrence":
        return linear_scan(*args)
    pre, u, h0, valid = args
    return indrnn_scan(pre, u, h0, options["activation"], valid)


@pytest.mark.parametrize("mode", ["f", "fo", "ifo"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_qrnn_on_the_native_path_agrees_with_its_fallback(
    mode: str, dtype: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = sequence_case(("qrnn", {"mode": mode}, 2, True), SEQUENCE_LAYOUTS[0], dtype)
    case = spec.build()
    cotangents = case.cotangents(case.run(REFERENCE), seed=3)
    results = {}
    for path in ("native", "cpu-kernel"):
        monkeypatch.setenv(native.ENV, "0" if path == "cpu-kernel" else "1")
        results[path] = (case.run(B), case.vjp(B, cotangents))
        assert fused.last_path("qrnn") == path
    tol = tolerance(dtype, steps=spec.steps, kind="gradient")
    assert_tree_close(results["native"], results["cpu-kernel"], tol, context=repr(spec))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_u_per_row_matches_the_cpu_kernel(dtype: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``indrnn_scan`` takes ``u`` of ``(batch, H)`` too (its vmap rule folds a vmapped ``u`` so)."""
    rng = np.random.default_rng(4)
    pre, h0 = (torch.from_numpy(rng.normal(size=s).astype(dtype)) for s in ((3, 6, 20), (3, 20)))
    u = torch.from_numpy(rng.uniform(-1.0, 1.0, (3, 20)).astype(dtype))
    valid = torch.arange(6)[None, :] < torch.tensor([6, 0, 4])[:, None]
    results = {}
    for path in ("native", "cpu-kernel"):
        monkeypatch.setenv(native.ENV, "0" if path == "cpu-kernel" else "1")
        leaves = [t.clone().requires_grad_(True) for t in (pre, u, h0)]
        h, final = indrnn_scan(*leaves[:2], leaves[2], "tanh", valid)
        assert fused.last_path("indrnn_recurrence") == path
        results[path] = [h, final, *torch.autograd.grad((h * h).sum() + final.sum(), leaves)]
    tol = tolerance(dtype, steps=6, kind="gradient")
    for ours, theirs in zip(results["native"], results["cpu-kernel"], strict=True):
        torch.testing.assert_close(ours, theirs, rtol=tol.rtol, atol=tol.atol)


def _sequence_leaves(op: str, dtype: torch.dtype) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]], dict[str, Any]]:
    host = rnnspec.init_params(op, input_size=3, hidden_size=20, num_layers=2, seed=5, **_init_options(op))
    params = [{k: torch.tensor(v, dtype=dtype, requires_grad=True) for k, v in p.items()} for p in host]
    x = torch.from_numpy(np.random.default_rng(6).normal(size=(4, 9, 3))).to(dtype).requires_grad_(True)
    options = {"activation": "tanh"} if op == "indrnn" else {"mode": "ifo"}
    return x, params, {**options, "lengths": np.array([9, 0, 4, 7])}


def _init_options(op: str) -> dict[str, Any]:
    return {"window": 2, "mode": "ifo"} if op == "qrnn" else {}


@pytest.mark.parametrize("op", ["linear_recurrence", "indrnn_recurrence", "indrnn", "qrnn"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_broadcast_and_strided_cotangents_give_the_gradients_of_dense_ones(op: str, dtype: torch.dtype) -> None:
    """A sum's cotangent (broadcast: strides 0) and a transposed copy's (strided rows) read in place, or compacted."""
    if op in ("indrnn", "qrnn"):
        x, params, kwargs = _sequence_leaves(op, dtype)
        leaves = [x, *(v for p in params for v in p.values())]

        def run() -> torch.Tensor:
            out: torch.Tensor = getattr(B, op)(x, params, **kwargs).outputs
            return out

    else:
        arrays, _ = shared.kernel_case(op, "float64", True, steps=9)
        leaves = [t.to(dtype).requires_grad_(True) for t in shared.as_tensors(arrays) if t is not None]
        options = {} if op == "linear_recurrence" else {"activation": "relu"}

        def run() -> torch.Tensor:
            out: torch.Tensor = getattr(B, op)(*leaves, **options, lengths=np.array([9, 0, 4]))
            return out

    h = run()
    assert fused.last_path(op) == "native"
    dense = torch.autograd.grad(h, leaves, torch.ones_like(h), allow_unused=True)
    broadcast = torch.autograd.grad(run().sum(), leaves, allow_unused=True)
    weights = torch.randn(h.shape[2], h.shape[1], h.shape[0], dtype=dtype).transpose(0, 2)  # strided, like h
    strided = torch.autograd.grad((run() * weights).sum(), leaves, allow_unused=True)
    expected = torch.autograd.grad(run(), leaves, weights.contiguous(), allow_unused=True)
    for got, want in [*zip(broadcast, dense, strict=True), *zip(strided, expected, strict=True)]:
        assert (got is None) == (want is None)
        if got is not None:
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("op", ["linear_recurrence", "indrnn_recurrence"])
def test_the_padding_is_never_read(op: str) -> None:
    """NaN in the inputs past a row's length reaches neither the outputs nor the final state nor a gradient."""
    arrays, cotangent = shared.kernel_case(op, "float64", True)
    lengths = [6, 0, 3]
    tensors = shared.as_tensors(arrays)
    first = tensors[0]
    assert first is not None
    first[1, :] = float("nan")
    first[2, 3:] = float("nan")
    if op == "linear_recurrence":
        second = tensors[1]
        assert second is not None
        second[2, 3:] = float("nan")
    leaves = [t.requires_grad_(True) for t in tensors if t is not None]
    valid = torch.arange(STEPS)[None, :] < torch.tensor(lengths)[:, None]
    h, final = _scan(op, {"activation": "tanh"}, *leaves, valid)
    assert fused.last_path(op) == "native"
    grads = torch.autograd.grad([h, final], leaves, [torch.from_numpy(cotangent), torch.ones_like(final)])
    for value in (h, final, *grads):
        assert torch.isfinite(value).all()
    assert not h[~valid].any()
    assert not grads[0][~valid].any()


@pytest.mark.parametrize("op", ["indrnn", "qrnn"])
@pytest.mark.parametrize("poison", ["nan", "inf"])
def test_a_nan_or_inf_in_x_goes_where_the_reference_puts_it(op: str, poison: str) -> None:
    """The values only, as the conformance suite's NaN check (the gradients' NaN depend on the matmuls' order)."""
    variant = SEQUENCE_VARIANTS[1] if op == "indrnn" else SEQUENCE_VARIANTS[3]
    spec = sequence_case(variant, SEQUENCE_LAYOUTS[1], "float64", nan_at=(3, 1, 2), poison=poison)
    case = spec.build()
    with warnings.catch_warnings():  # the reference's NumPy warns of the invalid values it makes
        warnings.simplefilter("ignore", RuntimeWarning)
        want = case.run(REFERENCE)
    got = case.run(B)
    assert fused.last_path(op) == "native"
    if poison == "nan":  # an inf saturates the gates instead
        assert np.isnan(np.asarray(want.outputs)[3, 1]).any()
    assert_tree_close(got, want, reference_tolerance(spec.dtype, steps=spec.steps), context=repr(spec))


def test_calls_on_the_native_path_never_modify_their_inputs_nor_return_them() -> None:
    for op in ("indrnn", "qrnn"):
        x, params, kwargs = _sequence_leaves(op, torch.float64)
        state = (
            [{k: torch.randn_like(v) for k, v in s.items()} for s in B.qrnn(x, params, **kwargs).state]
            if (op == "qrnn")
            else [{"h": torch.randn(4, 20, dtype=torch.float64)} for _ in params]
        )
        arguments = (x, params, state)
        before = tree_map(lambda t: t.detach().clone(), arguments)
        result = getattr(B, op)(x, params, **kwargs, initial_state=state, reverse=True)
        assert fused.last_path(op) == "native"
        B.vjp(op, tree_map(torch.ones_like, result._asdict()), x, params, **kwargs, initial_state=state)
        for got, want in zip(tree_leaves(arguments), tree_leaves(before), strict=True):
            assert torch.equal(got, want)
        given = {t.data_ptr() for t in tree_leaves(arguments) if t.numel()}
        assert not any(t.data_ptr() in given for t in tree_leaves(result._asdict()) if t.numel())


def test_the_fallback_takes_the_cpu_kernel_path_when_the_native_kernels_are_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(native.ENV, "0")
    arrays, _ = shared.kernel_case("indrnn_recurrence", "float32", False)
    B.indrnn_recurrence(*shared.as_tensors(arrays))
    assert fused.last_path("indrnn_recurrence") == "cpu-kernel"
    x, params, kwargs = _sequence_leaves("qrnn", torch.float32)
    B.qrnn(x, params, **kwargs)
    assert fused.last_path("qrnn") == "cpu-kernel"
    monkeypatch.setenv(native.ENV, "1")
    B.qrnn(x, params, **kwargs)
    assert fused.last_path("qrnn") == "native"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_half_precision_runs_natively_through_the_ops_and_keeps_the_cpu_kernel_in_the_scans(
    dtype: torch.dtype,
) -> None:
    """The ops compute half precision in float32 (the kernels see float32 and run); the scans called with half
    tensors take the cpu-kernel, which accumulates in float32 itself."""
    arrays, _ = shared.kernel_case("linear_recurrence", "float32", True)
    a, b, h0 = (t.to(dtype) for t in shared.as_tensors(arrays) if t is not None)
    h = B.linear_recurrence(a, b, h0, lengths=np.array([6, 0, 4]))
    assert fused.last_path("linear_recurrence") == "native"
    assert h.dtype == dtype
    expected = REFERENCE.linear_recurrence(*(t.float().numpy() for t in (a, b, h0)), lengths=np.array([6, 0, 4]))
    tol = reference_tolerance("float16" if dtype == torch.float16 else "bfloat16", steps=STEPS)
    assert_tree_close(h.float().numpy(), expected, tol, context="half", check_dtype=False)
    linear_scan(a, b, h0, None)
    assert fused.last_path("linear_recurrence") == "cpu-kernel"


def test_transforms_and_a_forced_plain_path_keep_the_existing_paths() -> None:
    arrays, _ = shared.kernel_case("indrnn_recurrence", "float64", True)
    pre, u, h0 = (t for t in shared.as_tensors(arrays) if t is not None)

    def loss(p: torch.Tensor) -> torch.Tensor:
        h, final = indrnn_scan(p, u, h0, "tanh", None)
        return (h * h).sum() + final.sum()

    torch.func.vmap(torch.func.grad(loss))(torch.stack([pre, 2.0 * pre]))
    assert fused.last_path("indrnn_recurrence") == "cpu-kernel"
    with fused.plain_path():
        loss(pre)
        assert fused.last_path("indrnn_recurrence") == "plain"
        x, params, kwargs = _sequence_leaves("qrnn", torch.float64)
        B.qrnn(x, params, **kwargs)
        assert fused.last_path("qrnn") == "plain"


@pytest.mark.parametrize("op", ["indrnn", "qrnn"])
def test_a_second_derivative_through_the_native_path_is_refused_with_the_way_out(op: str) -> None:
    x, params, kwargs = _sequence_leaves(op, torch.float64)
    (dx,) = torch.autograd.grad(getattr(B, op)(x, params, **kwargs).outputs.sum(), [x], create_graph=True)
    assert fused.last_path(op) == "native"
    with pytest.raises(NotImplementedError, match=r"no second derivative.*plain_path\(\)"):
        torch.autograd.grad(dx.sum(), [x])


def test_an_empty_time_axis_gives_empty_outputs_and_the_initial_state() -> None:
    x, params, kwargs = _sequence_leaves("qrnn", torch.float64)
    state = [{k: torch.randn_like(v) for k, v in s.items()} for s in B.qrnn(x, params, **kwargs).state]
    result = B.qrnn(x[:, :0], params, mode="ifo", initial_state=state)
    assert result.outputs.shape == (4, 0, 20)
    for got, want in zip(tree_leaves(result.state), tree_leaves(state), strict=True):
        assert torch.equal(got, want)
