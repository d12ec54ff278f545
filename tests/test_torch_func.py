"""The PyTorch backend under torch.func: grad, vjp and jacrev equal autograd; vmap equals a loop, or says why not.

Every op is torch code, so the function transforms differentiate it as autograd does. Under vmap the
ops run on the plain path (the fused kernels have no batching rule); act, whose halting decides on
the host, and batched lengths are refused with an rnnspec error that says what to do instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import rnnspec  # noqa: E402
from rnnspec.backends.torch.functorch import UnsupportedTransformError  # noqa: E402
from rnnspec.conformance.tolerances import tolerance  # noqa: E402
from rnnspec.errors import CallError  # noqa: E402
from rnnspec.tree import tree_leaves  # noqa: E402

B = rnnspec.get_backend("torch")
BATCH, T, I, H, VMAPPED = 2, 3, 3, 4, 3  # noqa: E741
MAX_STEPS = 3
LENGTHS = np.array([T, 1])

#: op -> (its options, how many layers): the sequence ops.
SEQUENCE: dict[str, tuple[dict[str, Any], int]] = {
    "rnn": ({}, 2),
    "lstm": ({}, 2),
    "gru": ({}, 1),
    "skip_rnn": ({}, 1),
    "skip_lstm": ({}, 1),
    "skip_gru": ({}, 2),
    "act": ({"max_steps": MAX_STEPS}, 1),
    "indrnn": ({}, 1),
    "qrnn": ({"mode": "ifo"}, 1),
}
PRIMITIVES = ("linear_recurrence", "indrnn_recurrence")
VMAPPABLE = [op for op in (*SEQUENCE, *PRIMITIVES) if op != "act"]


def _params(op: str) -> Any:
    options, layers = SEQUENCE[op]
    arrays = rnnspec.init_params(op, input_size=I, hidden_size=H, num_layers=layers, seed=1, dtype="float64", **options)
    return B.from_numpy(arrays)


def op_of_x(op: str, **kwargs: Any) -> tuple[Callable[[Any], Any], Any]:
    """``op`` as a function of one array (x, or the array the primitive's arguments derive from), and that array."""
    g = torch.Generator().manual_seed(2)
    if op in SEQUENCE:
        params = _params(op)
        options = SEQUENCE[op][0]
        x = torch.randn(BATCH, T, I, generator=g, dtype=torch.float64)
        return (lambda x: getattr(B, op)(x, params, **options, **kwargs)), x
    x = torch.randn(BATCH, T, H, generator=g, dtype=torch.float64)
    if op == "linear_recurrence":
        return (lambda x: B.linear_recurrence(torch.sigmoid(x), x, **kwargs)), x
    u = torch.rand(H, generator=g, dtype=torch.float64)
    return (lambda x: B.indrnn_recurrence(x, u, **kwargs)), x


def steps_of(op: str) -> int:
    """The longest path of cell applications, for the tolerance."""
    if op not in SEQUENCE:
        return T
    layers = SEQUENCE[op][1]
    return T * layers * (MAX_STEPS if op == "act" else 1)


def outputs(result: Any) -> Any:
    """The per-step outputs of a result (a primitive's result is its ``h``)."""
    return result if torch.is_tensor(result) else result.outputs


def scalar_loss(f: Callable[[Any], Any]) -> Callable[[Any], Any]:
    weights = torch.linspace(-1.0, 1.0, BATCH * T * H, dtype=torch.float64).reshape(BATCH, T, H)
    return lambda x: (outputs(f(x)) * weights).sum()


def assert_trees_close(got: Any, want: Any, op: str, kind: str = "value") -> None:
    tol = tolerance("float64", steps=steps_of(op), kind="gradient" if kind == "gradient" else "value")
    got_leaves, want_leaves = tree_leaves(got), tree_leaves(want)
    assert len(got_leaves) == len(want_leaves)
    for a, b in zip(got_leaves, want_leaves, strict=True):
        torch.testing.assert_close(a, b, rtol=tol.rtol, atol=tol.atol)


# -- grad, vjp, jacrev -------------------------------------------------------------


@pytest.mark.parametrize("op", [*SEQUENCE, *PRIMITIVES])
def test_torch_func_grad_of_a_loss_through_the_op_equals_autograd(op: str) -> None:
    f, x = op_of_x(op, lengths=LENGTHS, reverse=True)
    loss = scalar_loss(f)
    got = torch.func.grad(loss)(x)
    leaf = x.clone().requires_grad_()
    (want,) = torch.autograd.grad(loss(leaf), leaf)
    assert_trees_close(got, want, op, "gradient")
    assert bool(want.abs().sum() > 0), "a gradient of zero would compare equal to anything"


@pytest.mark.parametrize("op", ["gru", "skip_lstm", "linear_recurrence"])
def test_torch_func_vjp_with_respect_to_x_and_params_equals_autograd(op: str) -> None:
    f, x = op_of_x(op)
    if op in SEQUENCE:
        params = _params(op)

        def of_both(x: Any, params: Any) -> Any:
            return outputs(getattr(B, op)(x, params, **SEQUENCE[op][0]))

        primals: tuple[Any, ...] = (x, params)
    else:

        def of_both(x: Any) -> Any:
            return outputs(f(x))

        primals = (x,)
    out, pullback = torch.func.vjp(of_both, *primals)
    cotangent = torch.randn(out.shape, generator=torch.Generator().manual_seed(3), dtype=out.dtype)
    got = pullback(cotangent)
    leaves = [t.clone().requires_grad_() for t in tree_leaves(primals)]
    rebuilt = rnnspec.tree.tree_map(lambda _: leaves.pop(0), primals)
    want_leaves = tree_leaves(rebuilt)
    want = torch.autograd.grad(of_both(*rebuilt), want_leaves, cotangent)
    assert_trees_close(tree_leaves(got), list(want), op, "gradient")


@pytest.mark.parametrize("op", ["lstm", "skip_gru", "act", "indrnn_recurrence"])
def test_torch_func_jacrev_equals_the_autograd_jacobian(op: str) -> None:
    f, x = op_of_x(op, lengths=LENGTHS)
    got = torch.func.jacrev(lambda x: outputs(f(x)))(x)
    want = torch.autograd.functional.jacobian(lambda x: outputs(f(x)), x)
    assert got.shape == (BATCH, T, H, *x.shape)
    assert_trees_close(got, want, op, "gradient")


# -- vmap ----------------------------------------------------------------------------


def _stacked(op: str) -> tuple[Callable[[Any], Any], Any]:
    f, x = op_of_x(op)
    xs = torch.stack([x * (1.0 + 0.5 * k) for k in range(VMAPPED)])  # a leading axis of distinct inputs
    return f, xs


@pytest.mark.parametrize("op", VMAPPABLE)
@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
def test_vmap_over_a_leading_axis_of_x_equals_a_loop_over_it(op: str, with_lengths: bool) -> None:
    """The whole result (outputs, final state, the extra fields) of each slice, lengths shared by the slices."""
    kwargs = {"lengths": LENGTHS, "reverse": True} if with_lengths else {}
    f, xs = _stacked(op)
    g, _ = op_of_x(op, **kwargs) if with_lengths else (f, None)
    got = torch.func.vmap(g)(xs)
    loop = [g(x) for x in xs]
    want_leaves = [torch.stack(parts) for parts in zip(*(tree_leaves(r) for r in loop), strict=True)]
    assert type(got) is type(loop[0])
    assert_trees_close(tree_leaves(got), want_leaves, op)


def test_vmap_of_grad_gives_per_example_gradients_of_the_params() -> None:
    """The ensembling/per-sample pattern: vmap over examples of grad with respect to the params of gru."""
    params = _params("gru")
    _, xs = _stacked("gru")

    def loss(p: Any, x: Any) -> Any:
        return B.gru(x, p).outputs.square().sum()

    got = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0))(params, xs)
    for k, x in enumerate(xs):
        leaves = [{name: v.clone().requires_grad_() for name, v in layer.items()} for layer in params]
        want = torch.autograd.grad(loss(leaves, x), tree_leaves(leaves))
        assert_trees_close([g[k] for g in tree_leaves(got)], list(want), "gru", "gradient")


def test_vmap_of_act_is_refused_naming_the_op_the_argument_the_backend_and_what_to_do() -> None:
    f, xs = _stacked("act")
    with pytest.raises(UnsupportedTransformError) as caught:
        torch.func.vmap(f)(xs)
    err = caught.value
    assert isinstance(err, CallError)
    assert isinstance(err, NotImplementedError)
    assert (err.op, err.argument, err.backend) == ("act", "x", "torch")
    message = str(err)
    assert message.startswith("act [backend 'torch']: argument x: expected a tensor not batched by torch.func.vmap")
    assert "fold the vmapped axis into the batch axis" in message
    assert "got a tensor batched by torch.func.vmap" in message


def test_act_over_the_folded_axis_equals_a_loop_as_the_error_suggests() -> None:
    """What the refusal suggests works: the vmapped axis folded into the batch axis."""
    f, xs = _stacked("act")
    folded = f(xs.reshape(-1, *xs.shape[2:]))
    loop = torch.cat([outputs(f(x)) for x in xs])
    assert_trees_close(folded.outputs, loop, "act")


@pytest.mark.parametrize("op", ["gru", "linear_recurrence"])
def test_vmap_over_lengths_is_refused_naming_lengths(op: str) -> None:
    _, xs = _stacked(op)
    lengths = torch.tensor([[T, 1]] * VMAPPED)

    def with_lengths(x: Any, n: Any) -> Any:
        if op == "gru":
            return B.gru(x, _params("gru"), lengths=n)
        return B.linear_recurrence(torch.sigmoid(x), x, lengths=n)

    with pytest.raises(UnsupportedTransformError, match=rf"^{op} \[backend 'torch'\]: argument lengths: expected") as e:
        torch.func.vmap(with_lengths)(xs, lengths)
    assert "got lengths batched by torch.func.vmap" in str(e.value)
    shared = torch.func.vmap(with_lengths, in_dims=(0, None))(xs, lengths[0])  # what the message asks for
    loop = torch.stack([outputs(with_lengths(x, lengths[0])) for x in xs])
    assert_trees_close(outputs(shared), loop, op)
