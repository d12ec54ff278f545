"""The torch backend's kernels of linear_recurrence and indrnn_recurrence, against the NumPy reference.

These are the tests of the fallback paths: every test here runs with the native kernels off
(``RNNSPEC_NATIVE=0``, see ``test_torch_native_recurrences.py`` for the native path), so CPU
tensors take the cpu-kernel path. The CPU kernel (hand-written loops with their own backward) matches the reference,
values and gradients, for zero-length rows, reverse, given initial states,
float32, float64 and half precision; it matches the plain autograd-through-the-loop
path, final state included; the path taken is reported and can be forced to the
plain one. Its two-level (chunked) linear scan, in the forward of
linear_recurrence and in both backwards, matches the reference for whole and
partial chunks, scans shorter than two chunks, rows of length 0 and rows ending
mid-chunk, inputs of any strides, and over 2000 float32 steps within the policy
tolerance; final states and padding stay exact. The Triton kernels run under Triton's interpreter, in a subprocess
(``TRITON_INTERPRET`` must be set before ``triton`` is imported), forward and
backward, against the reference.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import helpers_recurrences as shared  # noqa: E402  (it imports torch)

import rnnspec  # noqa: E402  (after the skip: the backend imports torch)
from rnnspec.backends.common import native  # noqa: E402
from rnnspec.backends.torch import fused, recurrence_loops  # noqa: E402
from rnnspec.backends.torch.recurrences import TRITON_ENV, indrnn_scan, linear_scan  # noqa: E402
from rnnspec.conformance.tolerances import tolerance  # noqa: E402
from rnnspec.errors import BackendError  # noqa: E402

B = rnnspec.get_backend("torch")
REFERENCE = rnnspec.get_backend("numpy")

# The cases and checks shared with the native kernels' tests, under this module's names.
BATCH, STEPS, HIDDEN = shared.KERNEL_BATCH, shared.KERNEL_STEPS, shared.KERNEL_HIDDEN
LAYOUTS, VARIANTS = shared.KERNEL_LAYOUTS, shared.KERNEL_VARIANTS
make_case, as_torch, assert_close = shared.kernel_case, shared.as_tensors, shared.assert_kernel_close
check_against_reference = shared.check_kernel_against_reference


@pytest.fixture(autouse=True)
def without_native_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are the fallback's: the native kernels off (RNNSPEC_NATIVE=0), CPU tensors take the cpu-kernel."""
    monkeypatch.setenv(native.ENV, "0")


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join([v[0], *v[1].values()]))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_cpu_kernel_matches_the_reference_in_values_and_gradients(
    variant: tuple[str, dict[str, Any]], dtype: str, layout: tuple[Any, ...]
) -> None:
    op, options = variant
    check_against_reference(op, options, dtype, layout)
    assert fused.last_path(op) == "cpu-kernel"


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join([v[0], *v[1].values()]))
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_through_the_public_op_matches_the_reference(
    variant: tuple[str, dict[str, Any]], dtype: str
) -> None:
    if dtype == "bfloat16":  # NumPy has no bfloat16: the reference sees the same values in float32
        arrays, _ = make_case(variant[0], "float32", True)
        tensors = [None if x is None else torch.from_numpy(x).to(torch.bfloat16) for x in arrays]
        rounded = [None if t is None else t.float().numpy() for t in tensors]
        h = getattr(B, variant[0])(*tensors, **variant[1], lengths=np.array([6, 0, 4]))
        assert h.dtype == torch.bfloat16
        expected = getattr(REFERENCE, variant[0])(*rounded, **variant[1], lengths=np.array([6, 0, 4]))
        assert_close(h, expected, dtype, "value", "bfloat16 h")
    else:
        check_against_reference(variant[0], variant[1], dtype, ([6, 0, 4], True, True))
        check_scan_in_half(*variant)
    assert fused.last_path(variant[0]) == "cpu-kernel"


def scan_call(op: str, activation: str) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    if op == "linear_recurrence":
        return lambda x, y, h0, valid: linear_scan(x, y, h0, valid)
    return lambda x, y, h0, valid: indrnn_scan(x, y, h0, activation, valid)


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join([v[0], *v[1].values()]))
@pytest.mark.parametrize("lengths", [None, [6, 0, 3]])
def test_the_cpu_kernel_and_the_plain_path_agree_on_outputs_final_state_and_gradients(
    variant: tuple[str, dict[str, Any]], lengths: list[int] | None
) -> None:
    op, options = variant
    arrays, cotangent = make_case(op, "float64", True, seed=1)
    valid = None if lengths is None else torch.arange(STEPS)[None, :] < torch.tensor(lengths)[:, None]
    call = scan_call(op, options.get("activation", ""))
    d_final = torch.from_numpy(np.random.default_rng(2).normal(size=(BATCH, HIDDEN)))
    results = {}
    for plain in (False, True):
        leaves = [t.requires_grad_(True) for t in as_torch(arrays) if t is not None]
        with fused.plain_path() if plain else torch.enable_grad():
            h, final = call(*leaves, valid)
            assert fused.last_path(op) == ("plain" if plain else "cpu-kernel")
        grads = torch.autograd.grad([h, final], leaves, [torch.from_numpy(cotangent), d_final])
        results[plain] = [h, final, *grads]
    tol = tolerance("float64", steps=STEPS, kind="gradient")
    for kernel, plain in zip(results[False], results[True], strict=True):
        torch.testing.assert_close(kernel, plain, rtol=tol.rtol, atol=tol.atol)
    if lengths is not None:  # the final state of a zero-length row is its initial state, exactly
        assert torch.equal(results[False][1][1], torch.from_numpy(arrays[2])[1])  # type: ignore[index]


def test_the_final_state_is_the_state_at_each_rows_last_valid_step() -> None:
    arrays, _ = make_case("linear_recurrence", "float64", True)
    a, b, h0 = (torch.from_numpy(x) for x in arrays if x is not None)
    lengths = [6, 0, 3]
    valid = torch.arange(STEPS)[None, :] < torch.tensor(lengths)[:, None]
    h, final = linear_scan(a, b, h0, valid)
    assert torch.equal(final[0], h[0, 5])
    assert torch.equal(final[1], h0[1])
    assert torch.equal(final[2], h[2, 2])
    assert not h[2, 3:].any()
    assert not h[1].any()


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join([v[0], *v[1].values()]))
def test_the_kernels_never_modify_their_inputs(variant: tuple[str, dict[str, Any]]) -> None:
    op, options = variant
    arrays, cotangent = make_case(op, "float32", True)
    tensors = as_torch(arrays)
    before = [t.clone() for t in tensors if t is not None]
    ct = torch.from_numpy(cotangent)
    getattr(B, op)(*tensors, **options, lengths=np.array([6, 0, 2]), reverse=True)
    B.vjp(op, {"h": ct}, *tensors, **options, lengths=np.array([6, 0, 2]))
    assert all(torch.equal(t, s) for t, s in zip((t for t in tensors if t is not None), before, strict=True))
    assert torch.equal(ct, torch.from_numpy(cotangent))


def test_an_empty_time_axis_gives_an_empty_result_and_the_initial_state() -> None:
    a = torch.zeros((2, 0, 3), dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    h, final = linear_scan(a, a, h0, None)
    assert h.shape == (2, 0, 3)
    assert torch.equal(final, h0)
    (d_h0,) = torch.autograd.grad(final.sum(), [h0])
    assert torch.equal(d_h0, torch.ones_like(h0))


def test_the_plain_path_is_forced_by_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    arrays, _ = make_case("indrnn_recurrence", "float32", False)
    monkeypatch.setenv(fused.PLAIN_ENV, "1")
    B.indrnn_recurrence(*as_torch(arrays))
    assert fused.last_path("indrnn_recurrence") == "plain"
    monkeypatch.setenv(fused.PLAIN_ENV, "0")
    B.indrnn_recurrence(*as_torch(arrays))
    assert fused.last_path("indrnn_recurrence") == "cpu-kernel"


def test_asking_for_the_interpreter_without_triton_interpret_is_an_error_that_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    arrays, _ = make_case("linear_recurrence", "float32", False)
    monkeypatch.setenv(TRITON_ENV, "interpret")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(BackendError, match=r"linear_recurrence \[backend 'torch'\].*TRITON_INTERPRET=1"):
        B.linear_recurrence(*as_torch(arrays))


def test_the_fast_paths_name_the_recurrence_kernels() -> None:
    paths = fused.fast_paths_available()
    assert "linear_recurrence" in paths["cpu-kernel"]
    assert "indrnn_recurrence" in paths["cpu-kernel"]
    if importlib.util.find_spec("triton") is not None:
        assert TRITON_ENV in paths["triton"]


def test_vmap_of_grad_through_the_kernel_matches_the_plain_path() -> None:
    arrays, _ = make_case("indrnn_recurrence", "float64", True)
    pre, u, h0 = (torch.from_numpy(x) for x in arrays if x is not None)
    stacked = torch.stack([pre, 2.0 * pre])
    valid = torch.arange(STEPS)[None, :] < torch.tensor([6, 0, 3])[:, None]

    def loss(p: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        h, final = indrnn_scan(p, w, h0, "tanh", valid)
        return (h * h).sum() + final.sum()

    transform = torch.func.vmap(torch.func.grad(loss, argnums=(0, 1)), in_dims=(0, None))
    kernel = transform(stacked, u)
    with fused.plain_path():
        plain = transform(stacked, u)
    tol = tolerance("float64", steps=STEPS, kind="gradient")
    for k, p in zip(kernel, plain, strict=True):
        torch.testing.assert_close(k, p, rtol=tol.rtol, atol=tol.atol)


def check_scan_in_half(op: str, options: dict[str, Any]) -> None:
    """float16 straight into the scan (no upcast by the public op): the path computes in float32 and rounds."""
    arrays, _ = make_case(op, "float16", True)
    lengths = [6, 0, 4]
    valid = torch.arange(STEPS)[None, :] < torch.tensor(lengths)[:, None]
    h, _ = scan_call(op, options.get("activation", ""))(*as_torch(arrays), valid)
    assert h.dtype == torch.float16
    expected = getattr(REFERENCE, op)(*arrays, **options, lengths=np.array(lengths))
    assert_close(h, expected, "float16", "value", f"{op} float16 h")


# -- the two-level (chunked) scan of the CPU kernel ------------------------------------------

#: (steps, chunk length, lengths): whole chunks only, a partial last chunk, a single whole chunk and
#: a partial one, rows of length 0 and rows ending mid-chunk, on a chunk boundary and on the last step.
CHUNK_LAYOUTS = [
    (12, 3, None),
    (7, 2, [7, 0, 3]),
    (9, 4, [5, 9, 0]),
    (13, 3, [13, 6, 1]),
    (50, 4, [50, 0, 13]),
]


@pytest.fixture
def chunked_runs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The chunk length of every run of the two-level scan within the test (recorded, then run as usual)."""
    runs: list[int] = []
    chunked = recurrence_loops._chunked_scan

    def recording(*args: Any) -> None:
        runs.append(args[-1])
        chunked(*args)

    monkeypatch.setattr(recurrence_loops, "_chunked_scan", recording)
    return runs


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join([v[0], *v[1].values()]))
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", CHUNK_LAYOUTS, ids=lambda c: f"T{c[0]}-C{c[1]}-{c[2]}")
def test_the_two_level_scan_matches_the_reference_in_values_and_gradients(
    variant: tuple[str, dict[str, Any]], reverse: bool, dtype: str, case: tuple[Any, ...], chunked_runs: list[int]
) -> None:
    steps, chunk, lengths = case
    with recurrence_loops.forced_chunk_length(chunk):
        check_against_reference(*variant, dtype, (lengths, True, reverse), steps=steps)
    # Every scan ran in chunks: linear_recurrence's forward and both backwards (IndRNN's forward is per step).
    assert chunked_runs
    assert set(chunked_runs) == {chunk}
    assert fused.last_path(variant[0]) == "cpu-kernel"


@pytest.mark.parametrize(("steps", "chunk"), [(5, 8), (1, 2), (3, 2)])
def test_scans_shorter_than_two_chunks_run_one_op_per_step_and_match_the_reference(
    steps: int, chunk: int, chunked_runs: list[int]
) -> None:
    with recurrence_loops.forced_chunk_length(chunk):
        check_against_reference("linear_recurrence", {}, "float64", ([steps, 0, 1], True, True), steps=steps)
    assert chunked_runs == []


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_a_long_float32_scan_in_chunks_stays_within_the_tolerance_of_the_reference(
    reverse: bool, chunked_runs: list[int]
) -> None:
    # Multipliers near 1 keep a long memory, so every carry between chunks matters to the result.
    steps = 2000
    layout = ([steps, 1237, 0], True, reverse)
    check_against_reference("linear_recurrence", {}, "float32", layout, steps=steps, a_range=(0.95, 1.0))
    expected = recurrence_loops.chunk_length(steps, BATCH * HIDDEN)
    assert expected > 1
    assert chunked_runs
    assert set(chunked_runs) == {expected}


def test_the_two_level_scan_keeps_final_states_and_padding_exact(chunked_runs: list[int]) -> None:
    steps, lengths = 50, [50, 0, 13]
    arrays, cotangent = make_case("linear_recurrence", "float32", True, steps=steps)
    a, b, h0 = (torch.from_numpy(x).requires_grad_(True) for x in arrays if x is not None)
    valid = torch.arange(steps)[None, :] < torch.tensor(lengths)[:, None]
    with recurrence_loops.forced_chunk_length(4):
        h, final = linear_scan(a, b, h0, valid)
        d_final = torch.ones_like(final)
        da, db, dh0 = torch.autograd.grad([h, final], [a, b, h0], [torch.from_numpy(cotangent), d_final])
    assert chunked_runs == [4, 4]
    assert torch.equal(final[0], h[0, 49])
    assert torch.equal(final[1], h0[1])  # a zero-length row: frozen through every chunk
    assert torch.equal(final[2], h[2, 12])  # ends mid-chunk
    assert not h[1].any()
    assert not h[2, 13:].any()
    assert not da[1].any()
    assert not db[1].any()
    assert not da[2, 13:].any()
    assert not db[2, 13:].any()
    assert torch.equal(dh0[1], d_final[1])  # the final state's cotangent passes through untouched


def test_the_two_level_scan_reads_inputs_of_any_strides() -> None:
    arrays, _ = make_case("linear_recurrence", "float64", True, steps=20)
    a, b, h0 = (x for x in arrays if x is not None)
    # Time-major and H-major copies, viewed back as (batch, time, H): neither is contiguous.
    a_t = torch.from_numpy(np.ascontiguousarray(a.transpose(1, 0, 2))).transpose(0, 1)
    b_t = torch.from_numpy(np.ascontiguousarray(b.transpose(0, 2, 1))).transpose(1, 2)
    assert not a_t.is_contiguous()
    assert not b_t.is_contiguous()
    with recurrence_loops.forced_chunk_length(3):
        h = B.linear_recurrence(a_t, b_t, torch.from_numpy(h0), lengths=np.array([20, 7, 0]))
    expected = REFERENCE.linear_recurrence(a, b, h0, lengths=np.array([20, 7, 0]))
    assert_close(h, expected, "float64", "value", "strided h", steps=20)


def test_the_chunk_length_is_near_the_root_of_half_the_steps_where_dispatch_dominates() -> None:
    few = recurrence_loops.CHUNKED_MAX_COLUMNS
    long = max(2000, recurrence_loops.CHUNKED_MIN_STEPS)
    assert abs(recurrence_loops.chunk_length(long, few) - (long / 2) ** 0.5) <= 0.5
    assert recurrence_loops.chunk_length(long, few + 1) == 0  # wide steps: the per-step loop is as fast
    assert recurrence_loops.chunk_length(recurrence_loops.CHUNKED_MIN_STEPS - 1, 1) == 0  # too short to gain


def test_a_forced_chunk_length_applies_within_its_block_only(chunked_runs: list[int]) -> None:
    a = torch.rand(1, 10, 2, dtype=torch.float64)
    with recurrence_loops.forced_chunk_length(2):
        with recurrence_loops.forced_chunk_length(0):
            linear_scan(a, a, a[:, 0], None)
        assert chunked_runs == []
        linear_scan(a, a, a[:, 0], None)
        assert chunked_runs == [2]
    linear_scan(a, a, a[:, 0], None)  # 10 steps: the rule runs one op per step
    assert chunked_runs == [2]


#: Run in a fresh interpreter with TRITON_INTERPRET=1: every variant, dtype and layout through the
#: public ops on CPU tensors, routed to the Triton kernels; the path and the results are checked there.
TRITON_SCRIPT = """
import itertools
import sys

sys.path.insert(0, {tests!r})
import test_torch_recurrence_kernels as t

for variant, dtype, layout in itertools.product(t.VARIANTS, ("float32", "float64"), t.LAYOUTS):
    t.check_against_reference(variant[0], variant[1], dtype, layout)
    assert t.fused.last_path(variant[0]) == "triton", t.fused.last_path(variant[0])
for variant in t.VARIANTS:
    t.check_scan_in_half(*variant)
    assert t.fused.last_path(variant[0]) == "triton", t.fused.last_path(variant[0])
print("triton kernels checked")
"""


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed (not importable)")
def test_the_triton_kernels_match_the_reference_under_the_interpreter() -> None:
    env = {**os.environ, "TRITON_INTERPRET": "1", TRITON_ENV: "interpret"}
    env.pop(fused.PLAIN_ENV, None)
    script = textwrap.dedent(TRITON_SCRIPT).format(tests=os.path.dirname(__file__))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "triton kernels checked" in done.stdout
