"""Shared helpers of the tests that prove the NumPy reference of indrnn, qrnn and their primitives exact,
and of the tests of the torch backend's recurrence kernels against it.

Everything here is written independently of ``rnnspec.reference``: random cases, central
finite differences, the scalar loss ``<cotangents, result>`` whose gradient is a VJP, and
torch implementations (per-step loops; QRNN gates from ``torch.nn.functional.conv1d``).
The last section builds the small cases of ``linear_recurrence`` and ``indrnn_recurrence``
that the torch backend's kernel tests run through every path (``test_torch_recurrence_kernels``,
``test_torch_native_recurrences``) and compares them with the reference.

The torch loops realise ``reverse=True`` differently from the reference: they walk time
from the last step to the first and skip each row's padding (its state stays frozen there),
and QRNN's window then looks ahead (``x_t ... x_{t+K-1}``; past the row's length it reads the
carried inputs ``x_prev``, most recent first). The reference instead reverses each row's
valid prefix and runs forward.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from helpers import (
    FD_RTOL,
    TORCH_RTOL,
    assert_trees_close,
    assert_trees_equal,
    full_lengths,
    grad_of,
    leaf,
    numerical_sequence_vjp,
    step_order,
    valid_steps,
)

import rnnspec
from rnnspec.conformance.tolerances import tolerance

#: The NumPy reference through the public backend interface.
B = rnnspec.get_backend("numpy")
#: The torch backend, whose recurrence kernels the last section's checks call.
TORCH = rnnspec.get_backend("torch")

#: Gate blocks per QRNN pooling mode, in row order of w and b.
QRNN_GATES = {"f": ("z", "f"), "fo": ("z", "f", "o"), "ifo": ("z", "f", "i", "o")}


# -- comparisons ------------------------------------------------------------------


def fill_leaves(tree: Any, value: float) -> None:
    """Overwrite every array leaf of ``tree`` in place (to prove results do not alias inputs)."""
    if isinstance(tree, Mapping):
        for leaf in tree.values():
            fill_leaves(leaf, value)
    elif isinstance(tree, (list, tuple)):
        for leaf in tree:
            fill_leaves(leaf, value)
    elif isinstance(tree, np.ndarray):
        tree[...] = value


# -- lengths and time order ---------------------------------------------------------


def flip_valid_prefix(a: np.ndarray, lengths: Any) -> np.ndarray:
    """Each row's first ``lengths[b]`` steps in reverse order; padding untouched. Built row by row."""
    out = np.array(a, copy=True)
    for b, n in enumerate(full_lengths(lengths, a.shape[0], a.shape[1])):
        out[b, :n] = a[b, :n][::-1]
    return out


class SequenceCase(Protocol):
    """What the checks below read of a test's case of a sequence op (indrnn, qrnn)."""

    x: np.ndarray
    params: list[dict[str, np.ndarray]]
    lengths: np.ndarray | None

    @property
    def shape(self) -> tuple[int, int, int]: ...  # (batch, time, hidden)

    def state_or_zeros(self) -> list[dict[str, np.ndarray]]: ...

    def run(self, **overrides: Any) -> Any: ...

    def vjp(self, cotangents: dict[str, Any]) -> dict[str, Any]: ...


def uniform_state(rng: np.random.Generator, shapes: Sequence[Mapping[str, tuple[int, ...]]]) -> list[dict[str, Any]]:
    """A random initial state, entries uniform in [-1, 1]: one dict per layer, entries of the given shapes."""
    return [{k: rng.uniform(-1.0, 1.0, shape) for k, shape in s.items()} for s in shapes]


def cotangents_for(case: SequenceCase, seed: int) -> dict[str, Any]:
    """Random cotangents of the outputs (padding included: its gradient must vanish) and of every
    state entry of every layer."""
    rng = np.random.default_rng(seed)
    batch, time, hidden = case.shape
    return {
        "outputs": rng.normal(size=(batch, time, hidden)),
        "state": [{k: rng.normal(size=v.shape) for k, v in s.items()} for s in case.state_or_zeros()],
    }


# -- random parameters -------------------------------------------------------------


def indrnn_params(
    rng: np.random.Generator, input_size: int, hidden: int, layers: int, u_scale: float = 1.0
) -> list[dict[str, np.ndarray]]:
    """float64 indrnn params, one dict per layer: w_ih (H, I), b_ih (H,), u (H,)."""
    out = []
    for k in range(layers):
        cols = input_size if k == 0 else hidden
        out.append(
            {
                "w_ih": rng.uniform(-1.0, 1.0, (hidden, cols)),
                "b_ih": rng.uniform(-0.5, 0.5, (hidden,)),
                "u": rng.uniform(-u_scale, u_scale, (hidden,)),
            }
        )
    return out


def qrnn_params(
    rng: np.random.Generator, mode: str, input_size: int, hidden: int, window: int, layers: int
) -> list[dict[str, np.ndarray]]:
    """float64 qrnn params, one dict per layer: w (G*H, I, K), b (G*H,)."""
    rows = len(QRNN_GATES[mode]) * hidden
    out = []
    for k in range(layers):
        cols = input_size if k == 0 else hidden
        out.append({"w": rng.uniform(-1.0, 1.0, (rows, cols, window)), "b": rng.uniform(-1.0, 1.0, (rows,))})
    return out


def random_mask(rng: np.random.Generator, shape: tuple[int, ...], p_one: float = 0.3) -> np.ndarray:
    """A float64 {0, 1} zoneout mask with ones at probability ``p_one``."""
    return (rng.uniform(size=shape) < p_one).astype(np.float64)


# -- scalar loops in plain Python floats ------------------------------------------------


def scalar_indrnn_layer(
    x: np.ndarray,
    p: Mapping[str, np.ndarray],
    h0: np.ndarray,
    lengths: np.ndarray,
    activation: str,
    reverse: bool,
    preactivations: list[float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One indrnn layer computed one (row, unit) at a time with Python floats.

    Returns outputs (batch, time, H) and the final h (batch, H); records every valid
    pre-activation into ``preactivations`` when given.
    """
    batch, time, inputs = x.shape
    hidden = p["u"].shape[0]
    act = (lambda a: a if a > 0.0 else 0.0) if activation == "relu" else math.tanh
    out = np.zeros((batch, time, hidden))
    final = np.zeros((batch, hidden))
    for b in range(batch):
        n = int(lengths[b])
        order = step_order(n, reverse)
        for j in range(hidden):
            w = [float(v) for v in p["w_ih"][j]]
            bias, u = float(p["b_ih"][j]), float(p["u"][j])
            h = float(h0[b, j])
            for t in order:
                a = bias + u * h
                for i in range(inputs):
                    a += w[i] * float(x[b, t, i])
                if preactivations is not None:
                    preactivations.append(a)
                h = act(a)
                out[b, t, j] = h
            final[b, j] = h
    return out, final


def scalar_indrnn(
    x: np.ndarray,
    params: Sequence[Mapping[str, np.ndarray]],
    initial: Sequence[np.ndarray],
    lengths: np.ndarray,
    activation: str,
    reverse: bool,
    preactivations: list[float] | None = None,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """A stack of :func:`scalar_indrnn_layer`, each layer reading the outputs of the one below."""
    inp, finals = x, []
    for p, h0 in zip(params, initial, strict=True):
        inp, final = scalar_indrnn_layer(inp, p, h0, lengths, activation, reverse, preactivations)
        finals.append(final)
    return inp, finals


# -- torch implementations ------------------------------------------------------------


def torch_elementwise_scan(
    step: Callable[[int, torch.Tensor], torch.Tensor],
    h0: torch.Tensor,
    lengths: np.ndarray,
    time: int,
    reverse: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``h = step(t, h)`` over the valid steps of every row (backwards when ``reverse``).

    Past a row's length the state is frozen and the output is zero. Returns the
    outputs (batch, time, H) and the final state.
    """
    batch = h0.shape[0]
    valid = torch.from_numpy(valid_steps(lengths, batch, time))
    h = h0
    outs: list[torch.Tensor | None] = [None] * time
    for t in step_order(time, reverse):
        new = step(t, h)
        keep = valid[:, t, None]
        h = torch.where(keep, new, h)
        outs[t] = torch.where(keep, new, torch.zeros_like(new))
    if time == 0:
        return torch.zeros(batch, 0, h0.shape[1], dtype=h0.dtype), h
    return torch.stack([o for o in outs if o is not None], dim=1), h


def _torch_act(activation: str) -> Callable[[torch.Tensor], torch.Tensor]:
    return torch.relu if activation == "relu" else torch.tanh


def torch_linear_recurrence(
    a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor, lengths: np.ndarray, reverse: bool
) -> torch.Tensor:
    """``h_t = a_t h_{t-1} + b_t``; the outputs h (batch, time, H)."""
    out, _ = torch_elementwise_scan(lambda t, h: a[:, t] * h + b[:, t], h0, lengths, a.shape[1], reverse)
    return out


def torch_indrnn_recurrence(
    pre: torch.Tensor, u: torch.Tensor, h0: torch.Tensor, activation: str, lengths: np.ndarray, reverse: bool
) -> torch.Tensor:
    """``h_t = act(pre_t + u h_{t-1})``; the outputs h (batch, time, H)."""
    act = _torch_act(activation)
    out, _ = torch_elementwise_scan(lambda t, h: act(pre[:, t] + u * h), h0, lengths, pre.shape[1], reverse)
    return out


def torch_indrnn(
    x: torch.Tensor,
    params: Sequence[Mapping[str, torch.Tensor]],
    initial: Sequence[torch.Tensor],
    activation: str,
    lengths: np.ndarray,
    reverse: bool,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A stack of IndRNN layers, ``h_t = act(W x_t + b + u h_{t-1})``; outputs and final h per layer."""
    act = _torch_act(activation)
    inp, finals = x, []
    for p, h0 in zip(params, initial, strict=True):
        pre = inp @ p["w_ih"].T + p["b_ih"]
        u = p["u"]
        inp, final = torch_elementwise_scan(
            lambda t, h, pre=pre, u=u: act(pre[:, t] + u * h), h0, lengths, x.shape[1], reverse
        )
        finals.append(final)
    return inp, finals


def torch_qrnn_gates(
    inp: torch.Tensor,
    p: Mapping[str, torch.Tensor],
    x_prev: torch.Tensor,
    mode: str,
    lengths: np.ndarray,
    reverse: bool,
) -> dict[str, torch.Tensor]:
    """Pre-activation gate blocks (batch, time, H) from ``conv1d``.

    ``x_prev`` (batch, K-1, I) holds the K-1 inputs that precede the first step in processing
    order, oldest first. Forward: causal window with ``x_prev`` as left context. Reverse: the
    window looks ahead over the row's valid steps and, past the row's length L, reads the
    inputs processed before x_{L-1}: position L + j holds ``x_prev[K-2-j]`` (the most recent
    first, i.e. ``x_prev`` flipped), the rest of the row is zero, and the kernel is flipped
    along its window axis (the tap on x_t is the last one, w[..., K-1]).
    """
    batch, time, inputs = inp.shape
    if reverse:
        rows = []
        for b in range(batch):
            n = int(lengths[b])
            tail = torch.zeros(time - n, inputs, dtype=inp.dtype)
            rows.append(torch.cat([inp[b, :n], x_prev[b].flip(0), tail], dim=0))  # (time + K - 1, I)
        ahead = torch.stack(rows, dim=0).transpose(1, 2)
        conv = F.conv1d(ahead, p["w"].flip(-1), p["b"])
    else:
        conv = F.conv1d(torch.cat([x_prev, inp], dim=1).transpose(1, 2), p["w"], p["b"])
    blocks = conv.transpose(1, 2).chunk(len(QRNN_GATES[mode]), dim=2)
    return dict(zip(QRNN_GATES[mode], blocks, strict=True))


def torch_qrnn_last_inputs(inp: torch.Tensor, x_prev: torch.Tensor, lengths: np.ndarray, reverse: bool) -> torch.Tensor:
    """The final ``x_prev``: per row, the last K-1 entries of the sequence of inputs the layer has
    seen in processing order, ``x_prev`` (oldest first) followed by the row's valid inputs
    (``x_0 ... x_{L-1}``, or ``x_{L-1} ... x_0`` when ``reverse``)."""
    keep = x_prev.shape[1]
    rows = []
    for b in range(inp.shape[0]):
        valid = inp[b, : int(lengths[b])]
        seen = torch.cat([x_prev[b], valid.flip(0) if reverse else valid], dim=0)
        rows.append(seen[seen.shape[0] - keep :])
    return torch.stack(rows, dim=0)


def torch_qrnn(
    x: torch.Tensor,
    params: Sequence[Mapping[str, torch.Tensor]],
    initial: Sequence[Mapping[str, torch.Tensor]],
    mode: str,
    masks: Sequence[np.ndarray | None],
    lengths: np.ndarray,
    reverse: bool,
) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """A stack of QRNN layers; outputs and the final ``{"c", "x_prev"}`` per layer.

    ``initial[k]`` is layer k's ``{"c": (B, H), "x_prev": (B, K-1, I)}``; ``masks[k]`` its zoneout mask or None.
    """
    inp, finals = x, []
    for p, state, mask in zip(params, initial, masks, strict=True):
        c0, x_prev = state["c"], state["x_prev"]
        gates = torch_qrnn_gates(inp, p, x_prev, mode, lengths, reverse)
        z = torch.tanh(gates["z"])
        f = torch.sigmoid(gates["f"])
        if mask is not None:  # zoneout, written as 1 - (1 - f)(1 - m): the reference's f + (1 - f) m otherwise
            f = 1 - (1 - f) * (1 - torch.from_numpy(mask))
        add = torch.sigmoid(gates["i"]) * z if mode == "ifo" else (1 - f) * z
        c, final = torch_elementwise_scan(
            lambda t, c, f=f, add=add: f[:, t] * c + add[:, t], c0, lengths, x.shape[1], reverse
        )
        finals.append({"c": final, "x_prev": torch_qrnn_last_inputs(inp, x_prev, lengths, reverse)})
        inp = c if mode == "f" else torch.sigmoid(gates["o"]) * c
    return inp, finals


def torch_state_vjp(
    run: Callable[..., tuple[torch.Tensor, list[dict[str, torch.Tensor]]]],
    x: np.ndarray,
    params: Sequence[Mapping[str, np.ndarray]],
    initial: Sequence[Mapping[str, np.ndarray]],
    cotangents: Mapping[str, Any],
    **kwargs: Any,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The forward result and autograd's gradient of ``<cotangents, result>`` for a sequence op whose
    per-layer state is a mapping of arrays: ``run(x, params, initial, **kwargs)`` returns the outputs
    and one state mapping per layer, with the keys of ``initial``.

    Returns ``({"outputs", "state"}, {"x", "params", "initial_state"})`` in rnnspec's structures.
    """
    tx = leaf(x)
    tparams = [{k: leaf(v) for k, v in p.items()} for p in params]
    tinit = [{k: leaf(v) for k, v in s.items()} for s in initial]
    out, finals = run(tx, tparams, tinit, **kwargs)
    loss = (out * torch.from_numpy(cotangents["outputs"])).sum()
    for final, cot in zip(finals, cotangents["state"], strict=True):
        assert sorted(final) == sorted(cot), f"state keys {sorted(final)} != cotangent keys {sorted(cot)}"
        for name, value in final.items():
            loss = loss + (value * torch.from_numpy(cot[name])).sum()
    loss.backward()
    forward = {
        "outputs": out.detach().numpy(),
        "state": [{k: v.detach().numpy() for k, v in f.items()} for f in finals],
    }
    grads = {
        "x": grad_of(tx),
        "params": [{k: grad_of(v) for k, v in p.items()} for p in tparams],
        "initial_state": [{k: grad_of(v) for k, v in s.items()} for s in tinit],
    }
    return forward, grads


def torch_sequence_vjp(
    run: Callable[..., tuple[torch.Tensor, list[torch.Tensor]]],
    x: np.ndarray,
    params: Sequence[Mapping[str, np.ndarray]],
    initial: Sequence[np.ndarray],
    state_name: str,
    cotangents: Mapping[str, Any],
    **kwargs: Any,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """:func:`torch_state_vjp` for a one-state sequence op: ``run`` takes and returns that state as bare
    tensors, named ``state_name`` in rnnspec's structures."""

    def named(
        tx: torch.Tensor, tparams: Any, tinit: Sequence[Mapping[str, torch.Tensor]], **kw: Any
    ) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
        out, finals = run(tx, tparams, [s[state_name] for s in tinit], **kw)
        return out, [{state_name: f} for f in finals]

    return torch_state_vjp(named, x, params, [{state_name: s} for s in initial], cotangents, **kwargs)


def result_tree(result: Any) -> dict[str, Any]:
    """A SequenceResult as ``{"outputs", "state": [per-layer dicts]}`` for tree comparisons."""
    return {"outputs": result.outputs, "state": [dict(s) for s in result.state]}


# -- the checks both ops' tests make -----------------------------------------------------


def assert_vjp_matches_central_differences(case: SequenceCase, cotangents: dict[str, Any]) -> tuple[Any, Any]:
    """The case's VJP equals central differences of its forward within FD_RTOL, the loss depends on x,
    and padding receives no gradient. Returns ``(vjp, central differences)`` for further checks."""
    grads = case.vjp(cotangents)
    numeric = numerical_sequence_vjp(
        lambda x, p, s: case.run(x=x, params=p, initial_state=s), case.x, case.params, case.state_or_zeros(), cotangents
    )
    assert sorted(grads) == ["initial_state", "params", "x"]
    assert_trees_close(grads["x"], numeric["x"], FD_RTOL, "d x")
    assert_trees_close(list(grads["params"]), numeric["params"], FD_RTOL, "d params")
    assert_trees_close(list(grads["initial_state"]), numeric["initial_state"], FD_RTOL, "d initial_state")
    assert np.max(np.abs(numeric["x"])) > 1e-3, "the check is vacuous if the loss does not depend on x"
    batch, time, _ = case.shape
    assert np.all(grads["x"][~valid_steps(case.lengths, batch, time)] == 0.0), "padding receives no gradient"
    return grads, numeric


def assert_forward_and_vjp_match_torch(
    case: SequenceCase, cotangents: dict[str, Any], forward: Mapping[str, Any], grads: Mapping[str, Any]
) -> None:
    """The case's result and VJP equal torch's ``forward`` and ``grads`` (:func:`torch_state_vjp`) within TORCH_RTOL."""
    assert_trees_close(result_tree(case.run()), forward, TORCH_RTOL, "forward")
    ours = case.vjp(cotangents)
    assert_trees_close(
        {"x": ours["x"], "params": list(ours["params"]), "initial_state": list(ours["initial_state"])},
        grads,
        TORCH_RTOL,
        "vjp",
    )


def assert_missing_cotangents_count_as_zero(case: SequenceCase, cotangents: dict[str, Any]) -> None:
    """A VJP without the state's (outputs') cotangents equals the VJP with zeros there, and the state's reach x."""
    zero_state = [{k: np.zeros_like(v) for k, v in s.items()} for s in cotangents["state"]]
    only_outputs = case.vjp({"outputs": cotangents["outputs"]})
    assert_trees_equal(only_outputs, case.vjp({"outputs": cotangents["outputs"], "state": zero_state}), "outputs")
    only_state = case.vjp({"state": cotangents["state"]})
    explicit = case.vjp({"outputs": np.zeros_like(cotangents["outputs"]), "state": cotangents["state"]})
    assert_trees_equal(only_state, explicit, "state only")
    assert np.any(only_state["x"] != 0.0)


# -- the torch backend's recurrence kernels against the reference -------------------------------------

#: (batch, time, H) of the kernel tests' cases.
KERNEL_BATCH, KERNEL_STEPS, KERNEL_HIDDEN = 3, 6, 5
#: (lengths, initial state given, reverse): full rows, a zero-length row, all rows empty.
KERNEL_LAYOUTS = [
    (None, False, False),
    ([6, 0, 3], True, False),
    ([2, 6, 0], True, True),
    (None, True, True),
    ([0, 0, 0], True, False),
]
#: (op, options): the recurrences and their activations.
KERNEL_VARIANTS = [
    ("linear_recurrence", {}),
    ("indrnn_recurrence", {"activation": "relu"}),
    ("indrnn_recurrence", {"activation": "tanh"}),
]


def kernel_variant_id(variant: tuple[str, dict[str, Any]]) -> str:
    """``op-activation`` (a test id)."""
    return "-".join([variant[0], *variant[1].values()])


def kernel_case(
    op: str,
    dtype: str,
    initial: bool,
    seed: int = 0,
    steps: int = KERNEL_STEPS,
    a_range: tuple[float, float] = (-1.0, 1.0),
) -> tuple[list[np.ndarray | None], np.ndarray]:
    """The op's arrays (``a, b, initial`` or ``pre, u, initial``) and a cotangent of ``h``, in ``dtype``.

    ``a`` (linear_recurrence) is drawn uniformly from ``a_range``.
    """
    rng = np.random.default_rng(seed)
    shape = (KERNEL_BATCH, steps, KERNEL_HIDDEN)
    first = rng.uniform(*a_range, shape) if op == "linear_recurrence" else rng.normal(size=shape)
    second = rng.normal(size=shape) if op == "linear_recurrence" else rng.uniform(-1.0, 1.0, (KERNEL_HIDDEN,))
    h0 = rng.normal(size=(KERNEL_BATCH, KERNEL_HIDDEN)) if initial else None
    arrays = [x if x is None else x.astype(dtype) for x in (first, second, h0)]
    return arrays, rng.normal(size=shape).astype(dtype)


def as_tensors(arrays: Sequence[np.ndarray | None]) -> list[torch.Tensor | None]:
    """Each array as a torch tensor of its own memory (None stays None)."""
    return [None if x is None else torch.from_numpy(np.array(x)) for x in arrays]


def assert_kernel_close(
    actual: torch.Tensor, expected: np.ndarray, dtype: str, kind: str, what: str, steps: int = KERNEL_STEPS
) -> None:
    """``actual`` within the conformance policy's tolerance of ``expected`` for ``dtype``, ``steps`` and ``kind``."""
    tol = tolerance(dtype, steps=steps, kind=kind)  # type: ignore[arg-type]
    got = actual.detach().float().numpy() if actual.dtype == torch.bfloat16 else actual.detach().numpy()
    np.testing.assert_allclose(got, expected, rtol=tol.rtol, atol=tol.atol, err_msg=what)


def check_kernel_against_reference(
    op: str,
    options: dict[str, Any],
    dtype: str,
    layout: tuple[Any, ...],
    steps: int = KERNEL_STEPS,
    a_range: tuple[float, float] = (-1.0, 1.0),
) -> None:
    """The torch backend's ``op`` (whichever path it takes) equals the reference's, values and every gradient."""
    lengths, initial, reverse = layout
    arrays, cotangent = kernel_case(op, dtype, initial, steps=steps, a_range=a_range)
    kwargs = {**options, "lengths": None if lengths is None else np.array(lengths), "reverse": reverse}
    h = getattr(TORCH, op)(*as_tensors(arrays), **kwargs)
    expected = getattr(B, op)(*arrays, **kwargs)
    assert h.dtype == torch.from_numpy(np.zeros(1, dtype=dtype)).dtype
    assert_kernel_close(h, expected, dtype, "value", f"{op} h", steps)
    grads = TORCH.vjp(op, {"h": torch.from_numpy(cotangent)}, *as_tensors(arrays), **kwargs)
    expected_grads = B.vjp(op, {"h": cotangent}, *arrays, **kwargs)
    assert sorted(grads) == sorted(expected_grads)
    for name, value in expected_grads.items():
        assert_kernel_close(grads[name], value, dtype, "gradient", f"{op} d{name}", steps)
