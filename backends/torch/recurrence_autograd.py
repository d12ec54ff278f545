"""The elementwise recurrences as autograd Functions with hand-written forward and backward passes.

Each recurrence is a pair of ``torch.autograd.Function``: the forward one
(``(h, final)`` from the inputs) and its backward, itself a Function, so that
both have a vmap rule and the backward can run under ``torch.func`` transforms
(``vmap``, ``grad``, ``vjp``, ``jacrev``). A second derivative is not provided:
asking for one raises.

The arithmetic comes from an engine: ``"native"`` (the C kernels of
``backends/common/kernels/recurrences.c``, through :class:`NativeEngine`),
``"cpu-kernel"`` (:mod:`.recurrence_loops`) or ``"triton"``
(:mod:`.triton_recurrences`, imported only when used). The vmap rule folds the
vmapped axis into the batch axis, since every ``(batch, unit)`` column is an
independent recurrence; the native engine never runs under a transform (the
caller, :func:`.recurrences.kernel_path`, picks it only outside them), so its
buffers are always plain tensors.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch

from rnnspec.backends.common import native

from . import recurrence_loops, workspace

__all__ = [
    "NATIVE_DTYPES",
    "Engine",
    "IndrnnScan",
    "LinearScan",
    "NativeEngine",
    "cotangent_rows",
    "cotangent_strides",
    "indrnn_scan_kernel",
    "linear_scan_kernel",
    "native_engine",
    "native_function",
    "native_indrnn_backward",
    "native_indrnn_forward",
    "row_lengths",
]

#: Where the arithmetic runs.
Engine = Literal["native", "cpu-kernel", "triton"]

#: The dtypes of the native kernels, with their symbols' suffixes.
NATIVE_DTYPES = {torch.float32: "_f32", torch.float64: "_f64"}


def _engine(name: Engine) -> Any:
    if name == "triton":
        return importlib.import_module(f"{__package__}.triton_recurrences")
    if name == "native":
        return native_engine()
    return recurrence_loops


# -- the native engine ---------------------------------------------------------------------------


def native_function(name: str, dtype: torch.dtype, signature: str) -> Any:
    """The kernel ``rs_<name>`` of the ``recurrences`` library for ``dtype`` (float32 or float64).

    Raises
    ------
    RuntimeError
        When the library is unavailable: the callers choose the native path only when it is.
    """
    library = native.library("recurrences")
    if library is None:
        raise RuntimeError(f"the native recurrences are unavailable: {native.unavailable('recurrences')}")
    return library.function(f"rs_{name}{NATIVE_DTYPES[dtype]}", signature)


def _dense(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``x`` as a contiguous ``dtype`` buffer for a kernel (``x`` itself when it is one: kernels never write inputs)."""
    return x.to(dtype).contiguous()


def row_lengths(valid: torch.Tensor | None) -> torch.Tensor | None:
    """Each row's number of valid steps (int64) from the prefix mask ``valid``; None when every step is valid."""
    return None if valid is None else valid.sum(dim=1, dtype=torch.int64)


def address(x: torch.Tensor | None) -> int:
    """A kernel argument's address: 0 (NULL) for None."""
    return 0 if x is None else int(x.data_ptr())


def cotangent_strides(dh: torch.Tensor | None, dtype: torch.dtype) -> tuple[torch.Tensor | None, int, int, int]:
    """An output cotangent ``(batch, time, H)`` as the linear and IndRNN kernels read it: the tensor, its row strides
    ``(sb, st)`` and ``sh``, 1 for contiguous columns or 0 for broadcast ones (a sum's cotangent); copied only when
    neither. None stays None (a zero cotangent)."""
    if dh is None:
        return None, 0, 0, 0
    dh = dh.to(dtype)
    if dh.shape[2] > 1 and dh.stride(2) not in (0, 1):
        dh = dh.contiguous()
    return dh, dh.stride(0), dh.stride(1), 0 if dh.shape[2] > 1 and dh.stride(2) == 0 else 1


def cotangent_rows(dh: torch.Tensor | None, like: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """An output cotangent ``(batch, time, H)`` with contiguous rows of ``H`` (QRNN's kernel): the tensor and its row
    strides ``(sb, st)``.

    A broadcast axis stays broadcast (stride 0), whatever else is copied: a sum's cotangent becomes
    one row read at every step. None (a zero cotangent) is one row of zeros. ``like`` gives the dtype
    and ``H``.
    """
    hidden = like.shape[2]
    if dh is None:
        return like.new_zeros((hidden,)), 0, 0
    dh = dh.to(like.dtype)
    if hidden == 1 or dh.stride(2) == 1:
        return dh, dh.stride(0), dh.stride(1)
    # The distinct values only: index 0 along the broadcast axes, then contiguous.
    compact = dh[tuple(slice(0, 1) if dh.stride(k) == 0 else slice(None) for k in range(2))].contiguous()
    return compact, compact.stride(0) if dh.stride(0) else 0, compact.stride(1) if dh.stride(1) else 0


class NativeEngine:
    """The recurrences' arithmetic in the C kernels of ``backends/common/kernels/recurrences.c``.

    Each method is one kernel call over the whole ``(batch, time, H)`` buffers (rows in
    parallel, time outside, a row's contiguous columns vectorised inside), with the
    contract of :mod:`.recurrence_loops`' function of the same name. Inputs are made
    contiguous in their dtype (float32 or float64) and outputs are fresh; the output
    cotangent is read in place through its strides where its columns are contiguous or
    broadcast. IndRNN's ``du`` is summed over each row's steps in double precision.
    """

    def linear_forward(
        self, a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor, valid: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """As :func:`.recurrence_loops.linear_forward`."""
        dtype = a.dtype
        a, b, h0 = _dense(a, dtype), _dense(b, dtype), _dense(h0, dtype)
        lengths = row_lengths(valid)
        h, final = torch.empty_like(a), torch.empty_like(h0)
        run = native_function("linear_forward", dtype, "ppppppiii")
        run(address(a), address(b), address(h0), address(lengths), address(h), address(final), *a.shape)
        return h, final

    def linear_backward(
        self,
        a: torch.Tensor,
        h0: torch.Tensor,
        h: torch.Tensor,
        valid: torch.Tensor | None,
        dh: torch.Tensor | None,
        dfinal: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """As :func:`.recurrence_loops.linear_backward`."""
        dtype = a.dtype
        a, h0, h = _dense(a, dtype), _dense(h0, dtype), _dense(h, dtype)
        dfinal = None if dfinal is None else _dense(dfinal, dtype)
        d, sb, st, sh = cotangent_strides(dh, dtype)
        lengths = row_lengths(valid)
        da, db, dh0 = torch.empty_like(a), torch.empty_like(a), torch.empty_like(h0)
        run = native_function("linear_backward", dtype, "pppppiiippppiii")
        run(
            *(address(x) for x in (a, h0, h, lengths, d)),
            sb,
            st,
            sh,
            *(address(x) for x in (dfinal, da, db, dh0)),
            *a.shape,
        )
        return da, db, dh0

    def indrnn_forward(
        self, pre: torch.Tensor, u: torch.Tensor, h0: torch.Tensor, activation: str, valid: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """As :func:`.recurrence_loops.indrnn_forward`."""
        return native_indrnn_forward(pre, None, u, h0, activation, row_lengths(valid))

    def indrnn_backward(
        self,
        u: torch.Tensor,
        h0: torch.Tensor,
        h: torch.Tensor,
        activation: str,
        valid: torch.Tensor | None,
        dh: torch.Tensor | None,
        dfinal: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """As :func:`.recurrence_loops.indrnn_backward`: ``dpre``, ``du`` per row ``(batch, H)`` and ``dh0``."""
        dpre, du, _, dh0 = native_indrnn_backward(u, h0, h, activation, row_lengths(valid), dh, dfinal)
        return dpre, du, dh0


def native_indrnn_forward(
    pre: torch.Tensor,
    bias: torch.Tensor | None,
    u: torch.Tensor,
    h0: torch.Tensor,
    activation: str,
    lengths: torch.Tensor | None,
    *,
    in_place: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``h_t = act((pre_t + bias) + u h_{t-1})`` in one kernel call: ``h`` (0 past each length) and the final state.

    ``bias`` ``(H,)`` (None: none) is added in the kernel (indrnn's layer passes its projection
    without it); ``lengths`` are each row's valid steps (None: all). ``in_place``: ``h`` is
    written over ``pre``, which must then be the caller's own contiguous buffer of the dtype.
    """
    dtype = pre.dtype
    if in_place:
        assert pre.is_contiguous(), "an in-place kernel call needs a contiguous buffer"
    pre, u, h0 = _dense(pre, dtype), _dense(u, dtype), _dense(h0, dtype)
    bias = pre.new_zeros(pre.shape[2]) if bias is None else _dense(bias, dtype)
    h, final = pre if in_place else workspace.empty(pre.shape, dtype), torch.empty_like(h0)
    run = native_function("indrnn_forward", dtype, "pppippippiii")
    act = _ACTIVATION_CODES[activation]
    run(
        0 if in_place else address(pre),
        *(address(x) for x in (bias, u)),
        u.ndim - 1,
        *(address(x) for x in (h0, lengths)),
        act,
        *(address(x) for x in (h, final)),
        *pre.shape,
    )
    return h, final


def native_indrnn_backward(
    u: torch.Tensor,
    h0: torch.Tensor,
    h: torch.Tensor,
    activation: str,
    lengths: torch.Tensor | None,
    dh: torch.Tensor | None,
    dfinal: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The cotangents of :func:`native_indrnn_forward` in one kernel call: ``dpre``, ``du`` per row ``(batch, H)``,
    ``dbias`` and ``dh0``, from those of ``h`` and the final state (None: zero); the sums in double."""
    dtype = h.dtype
    u, h0, h = _dense(u, dtype), _dense(h0, dtype), _dense(h, dtype)
    dfinal = None if dfinal is None else _dense(dfinal, dtype)
    d, sb, st, sh = cotangent_strides(dh, dtype)
    batch, _, hidden = h.shape
    dpre, du, dbias, dh0 = (
        workspace.empty(h.shape, dtype),
        h.new_empty((batch, hidden)),
        h.new_empty(hidden),
        torch.empty_like(h0),
    )
    acc = torch.empty(((batch + 1) * hidden,), dtype=torch.float64)
    run = native_function("indrnn_backward", dtype, "pipppipiiippppppiii")
    act = _ACTIVATION_CODES[activation]
    run(
        address(u),
        u.ndim - 1,
        *(address(x) for x in (h0, h, lengths)),
        act,
        address(d),
        sb,
        st,
        sh,
        *(address(x) for x in (dfinal, dpre, du, dbias, dh0, acc)),
        *h.shape,
    )
    return dpre, du, dbias, dh0


#: IndRNN's activations as the kernels number them.
_ACTIVATION_CODES = {"relu": 0, "tanh": 1}

_NATIVE_ENGINE = NativeEngine()


def native_engine() -> NativeEngine:
    """The native engine (stateless: the library is loaded by :func:`native_function` on first use)."""
    return _NATIVE_ENGINE


def _fold(x: torch.Tensor | None, dim: int | None, size: int, batch_leading: bool = True) -> torch.Tensor | None:
    """``x`` with the vmapped axis ``dim`` (None: absent) of ``size`` merged into its leading batch axis."""
    if x is None or (dim is None and not batch_leading):
        return x  # absent, or a (H,) u shared by every row of every vmapped slice
    x = x.unsqueeze(0).expand(size, *x.shape) if dim is None else x.movedim(dim, 0)
    return x.reshape(size * x.shape[1], *x.shape[2:])


def _unfold(x: torch.Tensor | None, size: int) -> torch.Tensor | None:
    return None if x is None else x.reshape(size, x.shape[0] // size, *x.shape[1:])


def _empty_steps(h0: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """No step to run (no time step, or no column): zero outputs and a copy of the initial state."""
    return torch.zeros_like(like, memory_format=torch.contiguous_format), h0.clone(
        memory_format=torch.contiguous_format
    )


def _runs(x: torch.Tensor) -> bool:
    return x.shape[1] > 0 and x.numel() > 0


_NO_SECOND_DERIVATIVE = (
    "the torch backend's elementwise recurrences have no second derivative on their kernel paths; "
    "use rnnspec.backends.torch.fused.plain_path() (or RNNSPEC_TORCH_PLAIN=1) for higher-order gradients"
)


def _applied(fn: type[torch.autograd.Function]) -> Callable[..., Any]:
    """``fn.apply``, typed (torch leaves it untyped)."""
    apply: Callable[..., Any] = fn.apply
    return apply


def _vmap_outputs(outputs: Sequence[torch.Tensor | None], size: int) -> tuple[Any, tuple[int | None, ...]]:
    unfolded = tuple(_unfold(o, size) for o in outputs)
    return unfolded, tuple(None if o is None else 0 for o in unfolded)


class LinearScan(torch.autograd.Function):
    """``h_t = a_t h_{t-1} + b_t`` over ``(batch, time, H)`` from ``h0``: ``(h, final)``.

    ``valid`` is the ``(batch, time)`` prefix mask of each row's length, or None.
    """

    @staticmethod
    def forward(
        a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor, valid: torch.Tensor | None, engine: Engine
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not _runs(a):
            return _empty_steps(h0, a)
        h, final = _engine(engine).linear_forward(a, b, h0, valid)
        return h, final

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        a, _, h0, valid, engine = inputs
        ctx.save_for_backward(a, h0, output[0], valid)
        ctx.engine = engine
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx: Any, dh: torch.Tensor | None, dfinal: torch.Tensor | None) -> tuple[Any, ...]:
        a, h0, h, valid = ctx.saved_tensors
        da, db, dh0 = _applied(LinearScanBackward)(a, h0, h, valid, dh, dfinal, ctx.engine)
        return da, db, dh0, None, None

    @staticmethod
    def vmap(info: Any, in_dims: tuple[Any, ...], a: Any, b: Any, h0: Any, valid: Any, engine: Engine) -> Any:
        n = info.batch_size
        args = [_fold(x, d, n) for x, d in zip((a, b, h0, valid), in_dims[:4], strict=True)]
        return _vmap_outputs(_applied(LinearScan)(*args, engine), n)


class LinearScanBackward(torch.autograd.Function):
    """The cotangents ``(da, db, dh0)`` of :class:`LinearScan` from those of ``h`` and ``final`` (None: zero)."""

    @staticmethod
    def forward(
        a: torch.Tensor,
        h0: torch.Tensor,
        h: torch.Tensor,
        valid: torch.Tensor | None,
        dh: torch.Tensor | None,
        dfinal: torch.Tensor | None,
        engine: Engine,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not _runs(a) or (dh is None and dfinal is None):
            return (
                torch.zeros_like(a),
                torch.zeros_like(a),
                h0.new_zeros(h0.shape) if dfinal is None else dfinal.clone(),
            )
        da, db, dh0 = _engine(engine).linear_backward(a, h0, h, valid, dh, dfinal)
        return da, db, dh0

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        pass

    @staticmethod
    def backward(ctx: Any, *grads: Any) -> Any:
        raise NotImplementedError(_NO_SECOND_DERIVATIVE)

    @staticmethod
    def vmap(info: Any, in_dims: tuple[Any, ...], *args: Any) -> Any:
        n = info.batch_size
        folded = [_fold(x, d, n) for x, d in zip(args[:6], in_dims[:6], strict=True)]
        return _vmap_outputs(_applied(LinearScanBackward)(*folded, args[6]), n)


class IndrnnScan(torch.autograd.Function):
    """``h_t = act(pre_t + u h_{t-1})`` over ``(batch, time, H)`` from ``h0``: ``(h, final)``.

    ``u`` is ``(H,)``, or ``(batch, H)`` for a ``u`` per row (as the vmap rule makes it).
    """

    @staticmethod
    def forward(
        pre: torch.Tensor,
        u: torch.Tensor,
        h0: torch.Tensor,
        activation: str,
        valid: torch.Tensor | None,
        engine: Engine,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not _runs(pre):
            return _empty_steps(h0, pre)
        h, final = _engine(engine).indrnn_forward(pre, u, h0, activation, valid)
        return h, final

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        _, u, h0, activation, valid, engine = inputs
        ctx.save_for_backward(u, h0, output[0], valid)
        ctx.activation, ctx.engine = activation, engine
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx: Any, dh: torch.Tensor | None, dfinal: torch.Tensor | None) -> tuple[Any, ...]:
        u, h0, h, valid = ctx.saved_tensors
        dpre, du_rows, dh0 = _applied(IndrnnScanBackward)(u, h0, h, ctx.activation, valid, dh, dfinal, ctx.engine)
        du = du_rows.sum(dim=0) if u.ndim == 1 else du_rows
        return dpre, du, dh0, None, None, None

    @staticmethod
    def vmap(
        info: Any, in_dims: tuple[Any, ...], pre: Any, u: Any, h0: Any, activation: str, valid: Any, engine: Engine
    ) -> Any:
        n = info.batch_size
        u_folded = _fold_u(u, in_dims[1], n, _batch_size(pre, in_dims[0]))
        args = (_fold(pre, in_dims[0], n), u_folded, _fold(h0, in_dims[2], n), activation)
        return _vmap_outputs(_applied(IndrnnScan)(*args, _fold(valid, in_dims[4], n), engine), n)


class IndrnnScanBackward(torch.autograd.Function):
    """The cotangents ``(dpre, du per row, dh0)`` of :class:`IndrnnScan` from those of ``h`` and ``final``."""

    @staticmethod
    def forward(
        u: torch.Tensor,
        h0: torch.Tensor,
        h: torch.Tensor,
        activation: str,
        valid: torch.Tensor | None,
        dh: torch.Tensor | None,
        dfinal: torch.Tensor | None,
        engine: Engine,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not _runs(h) or (dh is None and dfinal is None):
            dh0 = h0.new_zeros(h0.shape) if dfinal is None else dfinal.clone()
            return torch.zeros_like(h), h.new_zeros((h.shape[0], h.shape[2])), dh0
        dpre, du, dh0 = _engine(engine).indrnn_backward(u, h0, h, activation, valid, dh, dfinal)
        return dpre, du, dh0

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        pass

    @staticmethod
    def backward(ctx: Any, *grads: Any) -> Any:
        raise NotImplementedError(_NO_SECOND_DERIVATIVE)

    @staticmethod
    def vmap(info: Any, in_dims: tuple[Any, ...], *args: Any) -> Any:
        n = info.batch_size
        u, h0, h, activation, valid, dh, dfinal, engine = args
        batch = _batch_size(h, in_dims[2])
        folded = (
            _fold_u(u, in_dims[0], n, batch),
            _fold(h0, in_dims[1], n),
            _fold(h, in_dims[2], n),
            activation,
            _fold(valid, in_dims[4], n),
            _fold(dh, in_dims[5], n),
            _fold(dfinal, in_dims[6], n),
            engine,
        )
        return _vmap_outputs(_applied(IndrnnScanBackward)(*folded), n)


def _batch_size(x: torch.Tensor, dim: int | None) -> int:
    """The batch size of a ``(batch, ...)`` argument that may carry a vmapped axis at ``dim``."""
    return x.shape[1 if dim == 0 else 0] if dim is not None else x.shape[0]


def _fold_u(u: torch.Tensor, dim: int | None, size: int, batch: int) -> torch.Tensor:
    """``u`` for the folded batch: unchanged when shared by every row, else one row of ``u`` per folded row."""
    if dim is None:
        return u if u.ndim == 1 else _fold(u, None, size)  # type: ignore[return-value]
    u = u.movedim(dim, 0)
    if u.ndim == 2:  # (vmapped, H): every row of a vmapped slice shares its u
        u = u[:, None, :].expand(size, batch, u.shape[1])
    return u.reshape(size * batch, u.shape[2])


def linear_scan_kernel(
    a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor, valid: torch.Tensor | None, engine: Engine
) -> tuple[torch.Tensor, torch.Tensor]:
    """:class:`LinearScan` applied: ``(h, final)``."""
    h, final = _applied(LinearScan)(a, b, h0, valid, engine)
    return h, final


def indrnn_scan_kernel(
    pre: torch.Tensor, u: torch.Tensor, h0: torch.Tensor, activation: str, valid: torch.Tensor | None, engine: Engine
) -> tuple[torch.Tensor, torch.Tensor]:
    """:class:`IndrnnScan` applied: ``(h, final)``."""
    h, final = _applied(IndrnnScan)(pre, u, h0, activation, valid, engine)
    return h, final
