"""The native training paths' kept buffers (``rnnspec.backends.torch.workspace``) are reused only when free.

A buffer handed out is reused only once nothing holds it: not the graph that saved it for the
backward pass, not the caller it was returned to, not a view. These tests hold each kind of
reference and check the next call gets other memory; release it and check the memory comes back;
and check that training through the kept buffers gives the values and gradients of plain
allocations, also with a retained graph differentiated after another forward has run.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import rnnspec  # noqa: E402
from rnnspec.backends.torch import fused, workspace  # noqa: E402

pytestmark = pytest.mark.skipif(workspace._IDLE is None, reason="this torch has no storage use count")

NATIVE = {"skip_gru": "native-training", "indrnn": "native"}
SHAPE = (64, 1024)  # 256 KiB of float32: above MIN_BYTES


@pytest.fixture(autouse=True)
def _empty_workspace() -> Iterator[None]:
    workspace.clear()
    yield
    workspace.clear()


def test_a_released_buffer_is_handed_out_again() -> None:
    first = workspace.empty(SHAPE, torch.float32)
    address = first.data_ptr()
    del first
    assert workspace.empty(SHAPE, torch.float32).data_ptr() == address


def test_a_buffer_still_held_by_its_caller_a_view_or_a_saved_graph_is_not_handed_out() -> None:
    held = workspace.empty(SHAPE, torch.float32)
    view_of = workspace.empty(SHAPE, torch.float32)
    view = view_of[1:]
    del view_of
    leaf = torch.ones(SHAPE[1], requires_grad=True)
    saved = workspace.empty(SHAPE, torch.float32)
    saved.fill_(1.0)
    product = (saved * leaf).sum()  # the graph saves the buffer for the backward pass
    saved_address = saved.data_ptr()
    del saved
    addresses = {held.data_ptr(), view.data_ptr() - view.storage_offset() * 4, saved_address}
    assert len(addresses) == 3
    # Every kept buffer of the shape is in use: the next one is fresh memory, not kept.
    fresh = workspace.empty(SHAPE, torch.float32)
    assert fresh.data_ptr() not in addresses
    product.backward()  # frees the saved buffer
    del product
    assert workspace.empty(SHAPE, torch.float32).data_ptr() == saved_address


def test_buffers_of_other_shapes_or_dtypes_are_not_mixed_and_small_ones_are_not_kept() -> None:
    a = workspace.empty(SHAPE, torch.float32)
    address = a.data_ptr()
    del a
    b = workspace.empty(SHAPE, torch.float64)
    c = workspace.empty((SHAPE[1], SHAPE[0]), torch.float32)
    assert address not in (b.data_ptr(), c.data_ptr())
    assert b.dtype == torch.float64
    assert tuple(c.shape) == (SHAPE[1], SHAPE[0])
    before = workspace.kept_bytes()
    workspace.empty((4, 4), torch.float32)
    assert workspace.kept_bytes() == before


def test_the_kept_bytes_stay_under_the_cap_and_clear_drops_them(monkeypatch: pytest.MonkeyPatch) -> None:
    size = SHAPE[0] * SHAPE[1] * 4
    monkeypatch.setattr(workspace, "MAX_BYTES", 3 * size)
    for rows in range(SHAPE[0], SHAPE[0] + 6):  # six shapes, released at once
        workspace.empty((rows, SHAPE[1]), torch.float32)
    assert 0 < workspace.kept_bytes() <= 3 * size + 6 * 4 * SHAPE[1]
    workspace.clear()
    assert workspace.kept_bytes() == 0


def test_the_linear_into_a_kept_buffer_equals_torch_linear_with_its_gradients() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8, 50, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(330, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(330, generator=gen, dtype=torch.float64, requires_grad=True)
    d = torch.randn(50, 8, 330, generator=gen, dtype=torch.float64).transpose(0, 1)  # time-major, as the loops give
    ours = torch.autograd.grad((workspace.linear(x, w, b) * d).sum(), (x, w, b), create_graph=True)
    theirs = torch.autograd.grad((torch.nn.functional.linear(x, w, b) * d).sum(), (x, w, b), create_graph=True)
    for a, e in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12)
    # Second order goes through the Function's differentiable backward.
    second = torch.autograd.grad(ours[0].square().sum(), w)[0]
    torch.testing.assert_close(second, torch.autograd.grad(theirs[0].square().sum(), w)[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("op", ["skip_gru", "indrnn"])
def test_training_through_kept_buffers_equals_plain_allocations_also_with_a_retained_graph(
    op: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = rnnspec.get_backend("torch")
    params = [
        {k: torch.tensor(v, dtype=torch.float32, requires_grad=True) for k, v in p.items()}
        for p in rnnspec.init_params(op, input_size=3, hidden_size=40, num_layers=2, seed=1)
    ]
    leaves = [v for p in params for v in p.values()]
    xs = [torch.tensor(np.random.default_rng(s).standard_normal((32, 40, 3)), dtype=torch.float32) for s in (2, 3)]

    def run(x: torch.Tensor) -> torch.Tensor:
        return getattr(backend, op)(x, params).outputs.square().mean()

    # Kept buffers: the first graph is kept, a second forward and backward run, then the first is differentiated.
    first = run(xs[0])
    assert fused.last_path(op) == NATIVE[op]  # the kept buffers are the native paths'
    kept_second = torch.autograd.grad(run(xs[1]), leaves)
    kept_first = torch.autograd.grad(first, leaves)
    again_first = torch.autograd.grad(run(xs[0]), leaves)
    monkeypatch.setattr(workspace, "_IDLE", None)  # plain torch.empty from here on
    plain_first = torch.autograd.grad(run(xs[0]), leaves)
    plain_second = torch.autograd.grad(run(xs[1]), leaves)
    for kept, plain in ((kept_first, plain_first), (kept_second, plain_second), (again_first, plain_first)):
        for a, e in zip(kept, plain, strict=True):
            assert torch.equal(a, e)
