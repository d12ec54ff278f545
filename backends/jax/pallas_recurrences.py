"""Pallas kernels for the elementwise recurrences, with their reverse mode.

Two recurrences over ``(batch, time, H)`` arrays, each independent per
column (batch row, unit):

.. math::

    h_t = a_t \\odot h_{t-1} + b_t \\qquad \\text{(linear\\_recurrence)}

    h_t = \\mathrm{act}(\\mathit{pre}_t + u \\odot h_{t-1}) \\qquad \\text{(indrnn\\_recurrence)}

One kernel program owns a block of columns (one batch row, ``block`` units)
and loops over time with the state in registers, as the QRNN and IndRNN
authors' CUDA kernels do: the work is memory-bound, so each value is read
and written once. Past a row's valid steps (``valid[r, t]`` False) the state
is frozen and the output is 0; ``final`` is the state after the last valid
step (``h0`` for a row with none).

The reverse mode is a second kernel running the same loop backwards, wired in
with :func:`jax.custom_vjp`. For the linear recurrence, with ``c`` the
cotangent carried into step ``t`` (``dL/dfinal`` at the start):

.. math::

    g_t = \\frac{\\partial L}{\\partial h_t} + c, \\quad
    \\frac{\\partial L}{\\partial a_t} = g_t h_{t-1}, \\quad
    \\frac{\\partial L}{\\partial b_t} = g_t, \\quad
    c \\leftarrow a_t g_t

and for IndRNN :math:`g_t = (\\partial L / \\partial h_t + c)\\,\\mathrm{act}'(z_t)`,
:math:`\\partial L / \\partial \\mathit{pre}_t = g_t`,
:math:`\\partial L / \\partial u \\mathrel{+}= g_t h_{t-1}`, :math:`c \\leftarrow u g_t`.
Masked steps get no gradient and pass ``c`` through unchanged; ``dL/dh0`` is
the last ``c``. ``act'`` is read off the saved state (``h_t > 0`` for relu,
``1 - h_t^2`` for tanh), so ``pre`` is not kept for the backward pass.

Half-precision inputs are computed in float32 (the state, the carried
cotangent and IndRNN's ``du`` sums), and rounded once on store.

The kernels use Triton's masked loads (:mod:`jax.experimental.pallas.triton`)
for a partial last block of units, so they compile for GPUs; on any platform
``interpret=True`` runs them with Pallas' interpreter (slow; for tests).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plt

from rnnspec.errors import DtypeError, OptionError, ShapeError

__all__ = ["MAX_BLOCK", "indrnn_scan_pallas", "linear_scan_pallas"]

#: The largest number of units one kernel program owns (one value per thread at 4 warps).
MAX_BLOCK = 128
_BACKEND = "jax"
_ACTIVATIONS = ("relu", "tanh")

#: How an array is laid out relative to the grid (batch row ``i``, block of units ``j``).
Kind = Literal["seq", "row", "unit", "mask"]


@dataclass(frozen=True)
class _Plan:
    """The static shape of one call: sizes, block, dtypes and the mode of the kernels."""

    batch: int
    time: int
    hidden: int
    block: int
    dtype: Any
    masked: bool
    interpret: bool
    activation: str = ""

    @property
    def compute(self) -> Any:
        """float32 for half inputs, the input dtype otherwise."""
        return jnp.promote_types(self.dtype, jnp.float32)

    @property
    def ragged(self) -> bool:
        """Whether the last block of units runs past ``hidden`` (its loads and stores are masked)."""
        return self.hidden % self.block != 0


# -- the pallas_call around a kernel -------------------------------------------------------


def _spec(kind: Kind, plan: _Plan) -> Any:
    if kind == "seq":
        return pl.BlockSpec((pl.squeezed, plan.time, plan.block), lambda i, j: (i, 0, j))
    if kind == "row":
        return pl.BlockSpec((pl.squeezed, plan.block), lambda i, j: (i, j))
    if kind == "unit":
        return pl.BlockSpec((plan.block,), lambda i, j: (j,))
    return pl.BlockSpec((pl.squeezed, plan.time), lambda i, j: (i, 0))


def _shape(kind: Kind, plan: _Plan) -> tuple[int, ...]:
    return {
        "seq": (plan.batch, plan.time, plan.hidden),
        "row": (plan.batch, plan.hidden),
        "unit": (plan.hidden,),
        "mask": (plan.batch, plan.time),
    }[kind]


def _run(
    kernel: Callable[..., None],
    plan: _Plan,
    inputs: Sequence[tuple[Kind, jax.Array]],
    outputs: Sequence[tuple[Kind, Any]],
) -> tuple[jax.Array, ...]:
    """Run ``kernel`` on a grid of (batch rows, blocks of units); ``outputs`` are (kind, dtype) pairs."""
    call = pl.pallas_call(
        kernel,
        out_shape=tuple(
            jax.ShapeDtypeStruct(_shape(kind, plan), dtype)  # type: ignore[no-untyped-call,unused-ignore]
            for kind, dtype in outputs
        ),
        grid=(plan.batch, pl.cdiv(plan.hidden, plan.block)),
        in_specs=[_spec(kind, plan) for kind, _ in inputs],
        out_specs=tuple(_spec(kind, plan) for kind, _ in outputs),
        compiler_params=plt.CompilerParams(num_warps=max(1, min(4, plan.block // 32)), num_stages=1),
        interpret=plan.interpret,
        name="rnnspec_" + kernel.__name__,
    )
    return tuple(call(*(array for _, array in inputs)))


class _Columns:
    """Loads and stores of one program's block of units, masked when the block runs past ``hidden``."""

    def __init__(self, plan: _Plan) -> None:
        self.plan = plan
        units = pl.program_id(1) * plan.block + jnp.arange(plan.block)
        self.mask = units < plan.hidden if plan.ragged else None

    def load(self, ref: Any) -> jax.Array:
        """The block as the compute dtype (zeros past ``hidden``)."""
        if self.mask is None:
            return ref[...].astype(self.plan.compute)  # type: ignore[no-any-return,unused-ignore]
        return plt.load(ref, mask=self.mask, other=jnp.zeros((), ref.dtype)).astype(self.plan.compute)

    def store(self, ref: Any, value: jax.Array) -> None:
        """Round ``value`` to the ref's dtype and store it (nothing past ``hidden``)."""
        value = value.astype(ref.dtype)
        if self.mask is None:
            ref[...] = value
        else:
            plt.store(ref, value, mask=self.mask)


def _keep(plan: _Plan, valid_ref: Any, t: jax.Array) -> jax.Array:
    """Whether step ``t`` of this program's row is valid (always, without a mask)."""
    if valid_ref is None:
        return jnp.asarray(True)
    keep: jax.Array = valid_ref[t] != 0
    return keep


def _previous(cols: _Columns, states_ref: Any, h0: jax.Array, t: jax.Array) -> jax.Array:
    """The state before step ``t``: ``states[t - 1]``, or ``h0`` at ``t = 0``."""
    earlier = cols.load(states_ref.at[jnp.maximum(t - 1, 0)])
    return jnp.where(t > 0, earlier, h0)


def _split(refs: Sequence[Any], plan: _Plan, n_in: int) -> tuple[list[Any], Any, list[Any]]:
    """(array inputs, valid ref or None, outputs) of a kernel whose mask input comes last when masked."""
    count = n_in + int(plan.masked)
    inputs = list(refs[:n_in])
    valid_ref = refs[n_in] if plan.masked else None
    return inputs, valid_ref, list(refs[count:])


# -- linear_recurrence ---------------------------------------------------------------------


def _linear_forward_kernel(plan: _Plan, save_states: bool) -> Callable[..., None]:
    def linear_forward(*refs: Any) -> None:
        (a_ref, b_ref, h0_ref), valid_ref, outs = _split(refs, plan, 3)
        h_ref, final_ref = outs[0], outs[1]
        states_ref = outs[2] if save_states else None
        cols = _Columns(plan)

        def step(t: jax.Array, state: jax.Array) -> jax.Array:
            keep = _keep(plan, valid_ref, t)
            new = jnp.where(keep, cols.load(a_ref.at[t]) * state + cols.load(b_ref.at[t]), state)
            cols.store(h_ref.at[t], jnp.where(keep, new, 0))
            if states_ref is not None:
                cols.store(states_ref.at[t], new)
            return new

        cols.store(final_ref, jax.lax.fori_loop(0, plan.time, step, cols.load(h0_ref)))

    return linear_forward


def _linear_backward_kernel(plan: _Plan) -> Callable[..., None]:
    def linear_backward(*refs: Any) -> None:
        (a_ref, states_ref, h0_ref, dh_ref, dfinal_ref), valid_ref, outs = _split(refs, plan, 5)
        da_ref, db_ref, dh0_ref = outs
        cols = _Columns(plan)
        h0 = cols.load(h0_ref)

        def step(i: jax.Array, carry: jax.Array) -> jax.Array:
            t = plan.time - 1 - i
            keep = _keep(plan, valid_ref, t)
            g = cols.load(dh_ref.at[t]) + carry
            cols.store(da_ref.at[t], jnp.where(keep, g * _previous(cols, states_ref, h0, t), 0))
            cols.store(db_ref.at[t], jnp.where(keep, g, 0))
            return jnp.where(keep, cols.load(a_ref.at[t]) * g, carry)

        cols.store(dh0_ref, jax.lax.fori_loop(0, plan.time, step, cols.load(dfinal_ref)))

    return linear_backward


def _linear_forward(
    plan: _Plan, a: jax.Array, b: jax.Array, h0: jax.Array, valid: jax.Array | None, save_states: bool
) -> tuple[jax.Array, ...]:
    inputs: list[tuple[Kind, jax.Array]] = [("seq", a), ("seq", b), ("row", h0)]
    outputs: list[tuple[Kind, Any]] = [("seq", plan.dtype), ("row", plan.dtype)]
    if valid is not None:
        inputs.append(("mask", valid))
    if save_states:
        outputs.append(("seq", plan.dtype))
    return _run(_linear_forward_kernel(plan, save_states), plan, inputs, outputs)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _linear(
    plan: _Plan, a: jax.Array, b: jax.Array, h0: jax.Array, valid: jax.Array | None
) -> tuple[jax.Array, jax.Array]:
    h, final = _linear_forward(plan, a, b, h0, valid, save_states=False)
    return h, final


def _linear_fwd(
    plan: _Plan, a: jax.Array, b: jax.Array, h0: jax.Array, valid: jax.Array | None
) -> tuple[tuple[jax.Array, jax.Array], tuple[Any, ...]]:
    # The carried states differ from h only at masked steps (frozen there, h is 0): without a mask h is enough.
    out = _linear_forward(plan, a, b, h0, valid, save_states=valid is not None)
    states = out[2] if valid is not None else out[0]
    return (out[0], out[1]), (a, states, h0, valid)


def _linear_bwd(
    plan: _Plan, residuals: tuple[Any, ...], cotangents: tuple[jax.Array, jax.Array]
) -> tuple[jax.Array, jax.Array, jax.Array, None]:
    a, states, h0, valid = residuals
    dh, dfinal = cotangents
    inputs: list[tuple[Kind, jax.Array]] = [("seq", a), ("seq", states), ("row", h0), ("seq", dh), ("row", dfinal)]
    if valid is not None:
        inputs.append(("mask", valid))
    outputs: list[tuple[Kind, Any]] = [("seq", plan.dtype), ("seq", plan.dtype), ("row", plan.dtype)]
    da, db, dh0 = _run(_linear_backward_kernel(plan), plan, inputs, outputs)
    return da, db, dh0, None


_linear.defvjp(_linear_fwd, _linear_bwd)


# -- indrnn_recurrence ---------------------------------------------------------------------


def _activate(activation: str, z: jax.Array) -> jax.Array:
    return jnp.maximum(z, 0) if activation == "relu" else jnp.tanh(z)


def _derivative(activation: str, h: jax.Array) -> jax.Array:
    """act'(z) from h = act(z): relu' = [h > 0] (relu'(0) = 0), tanh' = 1 - h^2."""
    return (h > 0).astype(h.dtype) if activation == "relu" else 1 - h * h


def _indrnn_forward_kernel(plan: _Plan, save_states: bool) -> Callable[..., None]:
    def indrnn_forward(*refs: Any) -> None:
        (pre_ref, u_ref, h0_ref), valid_ref, outs = _split(refs, plan, 3)
        h_ref, final_ref = outs[0], outs[1]
        states_ref = outs[2] if save_states else None
        cols = _Columns(plan)
        u = cols.load(u_ref)

        def step(t: jax.Array, state: jax.Array) -> jax.Array:
            keep = _keep(plan, valid_ref, t)
            new = jnp.where(keep, _activate(plan.activation, cols.load(pre_ref.at[t]) + u * state), state)
            cols.store(h_ref.at[t], jnp.where(keep, new, 0))
            if states_ref is not None:
                cols.store(states_ref.at[t], new)
            return new

        cols.store(final_ref, jax.lax.fori_loop(0, plan.time, step, cols.load(h0_ref)))

    return indrnn_forward


def _indrnn_backward_kernel(plan: _Plan) -> Callable[..., None]:
    def indrnn_backward(*refs: Any) -> None:
        (u_ref, states_ref, h0_ref, dh_ref, dfinal_ref), valid_ref, outs = _split(refs, plan, 5)
        dpre_ref, du_ref, dh0_ref = outs
        cols = _Columns(plan)
        u, h0 = cols.load(u_ref), cols.load(h0_ref)

        def step(i: jax.Array, carries: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
            carry, du = carries
            t = plan.time - 1 - i
            keep = _keep(plan, valid_ref, t)
            g = (cols.load(dh_ref.at[t]) + carry) * _derivative(plan.activation, cols.load(states_ref.at[t]))
            g = jnp.where(keep, g, 0)
            cols.store(dpre_ref.at[t], g)
            du = du + g * _previous(cols, states_ref, h0, t)
            return jnp.where(keep, u * g, carry), du

        start = (cols.load(dfinal_ref), jnp.zeros((plan.block,), plan.compute))
        carry, du = jax.lax.fori_loop(0, plan.time, step, start)
        cols.store(dh0_ref, carry)
        cols.store(du_ref, du)

    return indrnn_backward


def _indrnn_forward(
    plan: _Plan, pre: jax.Array, u: jax.Array, h0: jax.Array, valid: jax.Array | None, save_states: bool
) -> tuple[jax.Array, ...]:
    inputs: list[tuple[Kind, jax.Array]] = [("seq", pre), ("unit", u), ("row", h0)]
    outputs: list[tuple[Kind, Any]] = [("seq", plan.dtype), ("row", plan.dtype)]
    if valid is not None:
        inputs.append(("mask", valid))
    if save_states:
        outputs.append(("seq", plan.dtype))
    return _run(_indrnn_forward_kernel(plan, save_states), plan, inputs, outputs)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _indrnn(
    plan: _Plan, pre: jax.Array, u: jax.Array, h0: jax.Array, valid: jax.Array | None
) -> tuple[jax.Array, jax.Array]:
    h, final = _indrnn_forward(plan, pre, u, h0, valid, save_states=False)
    return h, final


def _indrnn_fwd(
    plan: _Plan, pre: jax.Array, u: jax.Array, h0: jax.Array, valid: jax.Array | None
) -> tuple[tuple[jax.Array, jax.Array], tuple[Any, ...]]:
    out = _indrnn_forward(plan, pre, u, h0, valid, save_states=valid is not None)
    states = out[2] if valid is not None else out[0]
    return (out[0], out[1]), (u, states, h0, valid)


def _indrnn_bwd(
    plan: _Plan, residuals: tuple[Any, ...], cotangents: tuple[jax.Array, jax.Array]
) -> tuple[jax.Array, jax.Array, jax.Array, None]:
    u, states, h0, valid = residuals
    dh, dfinal = cotangents
    inputs: list[tuple[Kind, jax.Array]] = [("unit", u), ("seq", states), ("row", h0), ("seq", dh), ("row", dfinal)]
    if valid is not None:
        inputs.append(("mask", valid))
    # du is summed per (row, unit) in the kernel, over rows here: no atomics, and float32 sums for half inputs.
    outputs: list[tuple[Kind, Any]] = [("seq", plan.dtype), ("row", plan.compute), ("row", plan.dtype)]
    dpre, du_rows, dh0 = _run(_indrnn_backward_kernel(plan), plan, inputs, outputs)
    return dpre, jnp.sum(du_rows, axis=0).astype(u.dtype), dh0, None


_indrnn.defvjp(_indrnn_fwd, _indrnn_bwd)


# -- the public entry points ---------------------------------------------------------------


def _plan(
    op: str,
    arrays: Sequence[tuple[str, Any]],
    h0: Any,
    valid: Any,
    interpret: bool,
    block_size: int | None,
    activation: str | None = None,
) -> tuple[_Plan, jax.Array, jax.Array | None]:
    """Check a call's shapes and dtypes; its plan, ``h0`` (zeros for None) and the mask as int32 (or None)."""
    name, first = arrays[0]
    if getattr(first, "ndim", None) != 3:
        raise ShapeError(
            op, name, "a (batch, time, H) array", f"shape {getattr(first, 'shape', type(first))}", backend=_BACKEND
        )
    batch, time, hidden = first.shape
    dtype = jnp.dtype(first.dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise DtypeError(op, name, "a floating dtype", str(dtype), backend=_BACKEND)
    expected_shapes = {"b": first.shape, "u": (hidden,)}
    for other_name, other in arrays[1:]:
        if tuple(other.shape) != expected_shapes[other_name]:
            expected = f"shape {expected_shapes[other_name]}"
            raise ShapeError(op, other_name, expected, f"shape {tuple(other.shape)}", backend=_BACKEND)
        if jnp.dtype(other.dtype) != dtype:
            raise DtypeError(op, other_name, f"dtype {dtype} (that of {name})", str(other.dtype), backend=_BACKEND)
    if h0 is None:
        h0 = jnp.zeros((batch, hidden), dtype)
    elif tuple(h0.shape) != (batch, hidden) or jnp.dtype(h0.dtype) != dtype:
        expected = f"shape {(batch, hidden)} and dtype {dtype}"
        raise ShapeError(op, "h0", expected, f"shape {tuple(h0.shape)}, dtype {h0.dtype}", backend=_BACKEND)
    mask = None
    if valid is not None:
        if tuple(valid.shape) != (batch, time):
            expected = f"a (batch, time) = {(batch, time)} boolean array"
            raise ShapeError(op, "valid", expected, f"shape {tuple(valid.shape)}", backend=_BACKEND)
        mask = jnp.asarray(valid).astype(jnp.int32)  # a plain word per step for the kernels' scalar loads
    if activation is not None and activation not in _ACTIVATIONS:
        raise OptionError(op, "activation", "'relu' or 'tanh'", repr(activation), backend=_BACKEND)
    block = _block(op, hidden, block_size)
    plan = _Plan(batch, time, hidden, block, dtype, mask is not None, bool(interpret), activation or "")
    return plan, h0, mask


def _block(op: str, hidden: int, block_size: int | None) -> int:
    """Units per kernel program: ``block_size``, or H rounded up to a power of two, at most :data:`MAX_BLOCK`."""
    if block_size is None:
        return min(MAX_BLOCK, int(pl.next_power_of_2(max(hidden, 1))))
    power_of_two = isinstance(block_size, int) and block_size >= 1 and block_size & (block_size - 1) == 0
    if isinstance(block_size, bool) or not power_of_two:
        expected = "a power of two (units per kernel program)"
        raise OptionError(op, "block_size", expected, repr(block_size), backend=_BACKEND)
    return block_size


def _empty(plan: _Plan, h0: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The result of a call with no step or no column: no kernel to launch."""
    return jnp.zeros((plan.batch, plan.time, plan.hidden), plan.dtype), h0 + 0


def linear_scan_pallas(
    a: jax.Array,
    b: jax.Array,
    h0: jax.Array | None,
    valid: jax.Array | None,
    *,
    interpret: bool = False,
    block_size: int | None = None,
) -> tuple[jax.Array, jax.Array]:
    """``h_t = a_t * h_{t-1} + b_t`` over ``(batch, time, H)`` by a Pallas kernel, differentiable.

    Parameters
    ----------
    a, b
        ``(batch, time, H)`` multipliers and addends, one floating dtype.
    h0
        ``(batch, H)`` initial state, the dtype of ``a``; None for zeros.
    valid
        ``(batch, time)`` booleans, or None (every step valid). At a step that
        is not valid the state is frozen and ``h`` is 0.
    interpret
        Run the kernels with Pallas' interpreter (any platform, slow).
    block_size
        Units per kernel program, a power of two (default: H rounded up to a
        power of two, at most :data:`MAX_BLOCK`).

    Returns
    -------
    h, final
        ``h`` ``(batch, time, H)``, 0 at steps that are not valid; ``final``
        ``(batch, H)``, the state after each row's last valid step (``h0`` for
        a row with none). Both in the dtype of ``a``; ``jax.grad`` runs the
        reverse kernel.

    Raises
    ------
    rnnspec.errors.ShapeError, rnnspec.errors.DtypeError, rnnspec.errors.OptionError
        Naming the argument, what was expected and what was given.
    """
    plan, h0, mask = _plan("linear_recurrence", [("a", a), ("b", b)], h0, valid, interpret, block_size)
    if 0 in (plan.batch, plan.time, plan.hidden):
        return _empty(plan, h0)
    h, final = _linear(plan, a, b, h0, mask)
    return h, final


def indrnn_scan_pallas(
    pre: jax.Array,
    u: jax.Array,
    h0: jax.Array | None,
    valid: jax.Array | None,
    activation: str,
    *,
    interpret: bool = False,
    block_size: int | None = None,
) -> tuple[jax.Array, jax.Array]:
    """``h_t = act(pre_t + u * h_{t-1})`` over ``(batch, time, H)`` by a Pallas kernel, differentiable.

    Parameters
    ----------
    pre
        ``(batch, time, H)`` pre-activations ``W x_t + b``, a floating dtype.
    u
        ``(H,)`` recurrent weight of each unit, the dtype of ``pre``.
    h0
        ``(batch, H)`` initial state, the dtype of ``pre``; None for zeros.
    valid
        ``(batch, time)`` booleans, or None (every step valid). At a step that
        is not valid the state is frozen and ``h`` is 0.
    activation
        ``"relu"`` (``relu'(0) = 0``) or ``"tanh"``.
    interpret, block_size
        As for :func:`linear_scan_pallas`.

    Returns
    -------
    h, final
        As for :func:`linear_scan_pallas`.

    Raises
    ------
    rnnspec.errors.ShapeError, rnnspec.errors.DtypeError, rnnspec.errors.OptionError
        Naming the argument, what was expected and what was given.
    """
    arrays = [("pre", pre), ("u", u)]
    plan, h0, mask = _plan("indrnn_recurrence", arrays, h0, valid, interpret, block_size, activation)
    if 0 in (plan.batch, plan.time, plan.hidden):
        return _empty(plan, h0)
    h, final = _indrnn(plan, pre, u, h0, mask)
    return h, final
