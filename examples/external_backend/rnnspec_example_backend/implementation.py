"""The example backend's implementation: two primitives of the spec in vectorised NumPy.

It is written from the spec pages alone (``spec/ops/linear_recurrence.md`` and
``spec/ops/indrnn_recurrence.md``), not from the reference, and computes in the
dtype of its inputs (float32 or float64), as a framework backend would:

- ``linear_recurrence`` runs as a parallel (Hillis-Steele) scan of the affine
  maps ``h -> a_t * h + b_t``: ``ceil(log2 T)`` vectorised rounds instead of a
  time loop, which the spec allows because the composition of such maps is
  associative. Its reverse mode is the same scan run the other way.
- ``indrnn_recurrence`` is not associative (the activation is applied at every
  step), so it loops over time, vectorised over the batch and the units.

Variable lengths and ``reverse`` are handled once for both ops: each row's
valid prefix is put in processing order (reversed in place when
``reverse=True``), the recurrence runs forward with the padding at the end of
every row, and the same permutation (its own inverse) puts the results back.
Past a row's length the state is frozen and ``h`` is returned as 0.

The :class:`~rnnspec.Backend` has validated every argument before a method here
runs, so nothing is validated again, except the cotangents of :meth:`vjp`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import numpy as np

from rnnspec.errors import ShapeError, UnknownArgumentError
from rnnspec.implementation import Implementation

__all__ = ["ExampleImplementation"]

Array = np.ndarray


class ExampleImplementation(Implementation):
    """``linear_recurrence`` and ``indrnn_recurrence``, forward and reverse mode."""

    ops: ClassVar[tuple[str, ...]] = ("indrnn_recurrence", "linear_recurrence")
    dtypes: ClassVar[tuple[str, ...]] = ("float32", "float64")
    framework: ClassVar[str] = "numpy"
    capabilities: ClassVar[frozenset[str]] = frozenset({"vjp"})
    #: Checks of the conformance suite this backend is known to fail, as ``"check:op"``
    #: (shell-style patterns allowed) mapped to a mandatory reason; the suite runs them as
    #: strict xfails and reports entries that match nothing. For example:
    #:
    #:     {"gradients:indrnn_recurrence": "relu'(0) is taken as 1 here, the spec says 0"}
    expected_failures: ClassVar[Mapping[str, str]] = {}

    def framework_version(self) -> str:
        return np.__version__

    # -- array adapters -----------------------------------------------------------

    def is_array(self, value: Any) -> bool:
        return isinstance(value, np.ndarray)

    def asarray(self, value: np.ndarray) -> Array:
        return np.array(value)  # a copy: results never alias the caller's arrays

    def asnumpy(self, value: Any) -> Array:
        return np.array(value)

    # -- the ops: the spec's signatures exactly (checked when the backend loads) --

    def linear_recurrence(
        self,
        a: Any,
        b: Any,
        initial: Any = None,
        *,
        lengths: Any = None,
        reverse: bool = False,
        checkpoint_every: int | None = None,
    ) -> Array:
        # checkpoint_every trades memory for time in a framework's reverse mode; this backend's
        # hand-written reverse mode recomputes the forward from the inputs, so it has nothing to trade.
        order = _Order(a.shape, lengths, reverse)
        h0 = _initial(initial, a)
        h = _linear_forward(order.apply(a), order.apply(b), h0, order.valid)
        return order.apply(np.where(order.valid, h, 0))

    def indrnn_recurrence(
        self,
        pre: Any,
        u: Any,
        initial: Any = None,
        *,
        activation: str = "relu",
        lengths: Any = None,
        reverse: bool = False,
        checkpoint_every: int | None = None,
    ) -> Array:
        order = _Order(pre.shape, lengths, reverse)
        out, _, _ = _indrnn_forward(order.apply(pre), u, _initial(initial, pre), order.valid, activation)
        return order.apply(out)

    # -- reverse mode -------------------------------------------------------------

    def vjp(self, op: str, arguments: dict[str, Any], cotangents: Mapping[str, Any]) -> dict[str, Any]:
        """Cotangents of the op's array arguments, given ``{"h": d_h}`` (absent: zero)."""
        if op == "linear_recurrence":
            return _linear_vjp(cotangents, **arguments)
        if op == "indrnn_recurrence":
            return _indrnn_vjp(cotangents, **arguments)
        raise NotImplementedError(f"the example backend has no reverse mode of {op!r}")


# -- lengths and direction ---------------------------------------------------------


class _Order:
    """Processing order of every row: its valid prefix first, reversed in place if ``reverse``."""

    def __init__(self, shape: tuple[int, ...], lengths: Any, reverse: bool) -> None:
        batch, time = shape[0], shape[1]
        n = np.full(batch, time) if lengths is None else np.asarray(lengths).astype(np.int64)
        t = np.arange(time)[None, :]
        self.lengths = n
        self.valid = (t < n[:, None])[..., None]  # (B, T, 1), the same in either order
        self.reverse = reverse
        self.flip_index = np.where(t < n[:, None], n[:, None] - 1 - t, t)[..., None]

    def flip(self, x: Array) -> Array:
        """Reverse every row's valid prefix in place; the padding stays. Its own inverse."""
        return np.take_along_axis(x, self.flip_index, axis=1)

    def apply(self, x: Array) -> Array:
        """Into processing order, or back."""
        return self.flip(x) if self.reverse else x


def _initial(initial: Any, first: Array) -> Array:
    batch, _, hidden = first.shape
    return np.zeros((batch, hidden), dtype=first.dtype) if initial is None else np.asarray(initial)


def _cotangent(op: str, cotangents: Mapping[str, Any], like: Array) -> Array:
    """The cotangent of ``h``, checked, in ``like``'s shape and dtype (zeros when absent)."""
    if not isinstance(cotangents, Mapping):
        raise ShapeError(op, "cotangents", "a mapping {'h': array}", type(cotangents).__name__)
    for key in cotangents:
        if key != "h":
            raise UnknownArgumentError(op, "cotangents", "keys among ['h']", f"a key {key!r}")
    value = cotangents.get("h")
    if value is None:
        return np.zeros_like(like)
    d_h = np.asarray(value, dtype=like.dtype)
    if d_h.shape != like.shape:
        raise ShapeError(op, "cotangents['h']", f"shape {like.shape}", f"shape {d_h.shape}")
    return d_h


# -- linear_recurrence: a parallel scan ----------------------------------------------


def _affine_scan(a: Array, b: Array) -> tuple[Array, Array]:
    """Inclusive scan over time of the maps ``h -> a_t * h + b_t``.

    Returns ``(A, B)`` with ``h_t = A_t * h_0 + B_t``. Applying step 1 then
    step 2 is ``(a1 * a2, a2 * b1 + b2)``; Hillis-Steele combines every entry
    with the one ``shift`` steps earlier, doubling ``shift`` each round.
    """
    acc_a, acc_b = a.copy(), b.copy()
    shift, time = 1, a.shape[1]
    while shift < time:
        earlier_a, earlier_b = acc_a[:, :-shift], acc_b[:, :-shift]
        later_a, later_b = acc_a[:, shift:], acc_b[:, shift:]
        new_a, new_b = acc_a.copy(), acc_b.copy()
        new_a[:, shift:] = earlier_a * later_a
        new_b[:, shift:] = later_a * earlier_b + later_b
        acc_a, acc_b = new_a, new_b
        shift *= 2
    return acc_a, acc_b


def _linear_forward(a: Array, b: Array, h0: Array, valid: Array) -> Array:
    """``h`` in processing order; at padded steps the frozen state (identity steps ``(1, 0)``)."""
    acc_a, acc_b = _affine_scan(np.where(valid, a, 1), np.where(valid, b, 0))
    h: Array = acc_a * h0[:, None, :] + acc_b
    return h


def _linear_vjp(
    cotangents: Mapping[str, Any],
    *,
    a: Any,
    b: Any,
    initial: Any,
    lengths: Any,
    reverse: bool,
    checkpoint_every: int | None = None,
) -> dict[str, Array]:
    order = _Order(a.shape, lengths, reverse)
    valid, n = order.valid, order.lengths
    a_p, h0 = order.apply(a), _initial(initial, a)
    h = _linear_forward(a_p, order.apply(b), h0, valid)
    d_h = np.where(valid, order.apply(_cotangent("linear_recurrence", cotangents, a)), 0)
    # g_t = d_h_t + a_{t+1} * g_{t+1}: the same recurrence, backwards over each valid prefix.
    a_next = np.zeros_like(a_p)
    a_next[:, :-1] = a_p[:, 1:]
    a_next = np.where(np.arange(a_p.shape[1])[None, :, None] + 1 < n[:, None, None], a_next, 0)
    _, g = _affine_scan(order.flip(a_next), order.flip(d_h))
    g = np.where(valid, order.flip(g), 0)
    h_prev = np.concatenate([h0[:, None, :], h[:, :-1]], axis=1)
    d_a = np.where(valid, g * h_prev, 0)
    d_initial = np.where(n[:, None] > 0, a_p[:, 0] * g[:, 0], 0) if a_p.shape[1] else np.zeros_like(h0)
    return {"a": order.apply(d_a), "b": order.apply(g), "initial": d_initial}


# -- indrnn_recurrence: a time loop, vectorised over batch and units -------------------------

_ACTIVATIONS: dict[str, tuple[Callable[[Array], Array], Callable[[Array, Array], Array]]] = {
    # name: (act, act' from the pre-activation z and act(z)); relu'(0) = 0 as the spec says
    "relu": (lambda z: np.maximum(z, 0), lambda z, y: (z > 0).astype(z.dtype)),
    "tanh": (np.tanh, lambda z, y: 1 - y * y),
}


def _indrnn_forward(pre: Array, u: Array, h0: Array, valid: Array, activation: str) -> tuple[Array, Array, Array]:
    """In processing order: ``h`` (0 past a row's length), the pre-activations ``z`` and ``h_{t-1}``."""
    act, _ = _ACTIVATIONS[activation]
    out, z, h_prev = np.zeros_like(pre), np.zeros_like(pre), np.zeros_like(pre)
    h = h0
    for t in range(pre.shape[1]):
        keep = valid[:, t]
        h_prev[:, t] = h
        z[:, t] = pre[:, t] + u * h
        new = act(z[:, t])
        h = np.where(keep, new, h)
        out[:, t] = np.where(keep, new, 0)
    return out, z, h_prev


def _indrnn_vjp(
    cotangents: Mapping[str, Any],
    *,
    pre: Any,
    u: Any,
    initial: Any,
    activation: str,
    lengths: Any,
    reverse: bool,
    checkpoint_every: int | None = None,
) -> dict[str, Array]:
    order = _Order(pre.shape, lengths, reverse)
    valid = order.valid
    out, z, h_prev = _indrnn_forward(order.apply(pre), u, _initial(initial, pre), valid, activation)
    d_h = np.where(valid, order.apply(_cotangent("indrnn_recurrence", cotangents, pre)), 0)
    _, act_grad = _ACTIVATIONS[activation]
    d_pre = np.zeros_like(out)
    d_u = np.zeros_like(u)
    carry = np.zeros((pre.shape[0], pre.shape[2]), dtype=pre.dtype)  # the cotangent of the carried h
    for t in reversed(range(out.shape[1])):
        keep = valid[:, t]
        g = np.where(keep, (d_h[:, t] + carry) * act_grad(z[:, t], out[:, t]), 0)
        carry = np.where(keep, g * u, carry)  # the frozen state passes its cotangent through
        d_pre[:, t] = g
        d_u += (g * h_prev[:, t]).sum(axis=0)
    return {"pre": order.apply(d_pre), "u": d_u, "initial": carry}
