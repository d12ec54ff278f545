"""The elementwise recurrences' forward and backward as hand-written loops of in-place torch ops (the CPU kernel).

This is the ``"cpu-kernel"`` engine: the fallback of the native C kernels
(:class:`.recurrence_autograd.NativeEngine`), which take float32 and float64 CPU
tensors in eager mode whenever their library builds. It runs half precision (in
float32), calls under ``torch.func`` transforms and ``torch.compile``, and
everything on a machine without a C compiler or with ``RNNSPEC_NATIVE=0``. Its
two-level scan and the thresholds below (:data:`CHUNKED_MAX_COLUMNS`,
:data:`CHUNKED_MIN_STEPS`) concern this engine only: the native kernels loop over
time inside one call, with no per-step dispatch to amortise.

Each step is one fused op writing into a preallocated output, so a step costs a
single pass over its ``(batch, H)`` slice and autograd records nothing. Slices
are taken along axis 1 of ``(batch, time, H)`` buffers: each row of a slice is
contiguous, and no transposed copy of the inputs is made.

Lengths are handled exactly through the identity step: past a row's length the
multiplier is 1 and the addend 0, so the carried state is frozen, and outputs
there are set to 0 afterwards. ``valid`` is the ``(batch, time)`` mask of the
steps within each row's length (a prefix of every row), None when all are.

The backward of both recurrences is one reverse linear recurrence,
:func:`reverse_linear`:

.. math::

    s_t = e_t + m_{t+1} s_{t+1}, \\qquad s_{T-1} = e_{T-1} + \\bar g

where ``e`` is the output cotangent (0 past a row's length), ``g-bar`` the final
state's cotangent and ``m`` the step's derivative ``dh_t / dh_{t-1}`` (1 past a
row's length): ``a_t`` for ``linear_recurrence``, ``act'(z_t) u`` for
``indrnn_recurrence``. The initial state's cotangent is ``m_0 s_0``.

The linear scans (``linear_recurrence``'s forward, both backwards) run through
:func:`scan_into`: when a step's slice is small, the per-step loop costs the
dispatch of ``T`` ops rather than memory traffic, and a two-level scan in chunks
of about :math:`\\sqrt{T / 2}` steps runs about :math:`2 \\sqrt{2 T}` ops instead
(:func:`chunk_length` decides). IndRNN's forward is not linear and stays per step.

The scans read the ``(batch, time, H)`` buffers in place rather than in a
time-major working layout, which was measured and not adopted
(``bench/torch_recurrences.py --layout --threads 1 --repeats 7``, float32,
process CPU time, ``batch * H`` = 1024 to 65536, T = 64 to 2000, forward and
reverse). Copying the inputs to a contiguous ``(time, batch * H)`` makes each
step's slice contiguous, but the transposing passes cost more than that saves
(a step's rows of ``H`` are already contiguous): the best time-major variant
(scanned per step or in chunks, the output left as a transposed view, not
copied back) took 1.1x to 7.4x the time of these scans without lengths and
0.97x to 1.4x with lengths, where the transposition rides on the identity-step
pass; copying the output back costs more again.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch

__all__ = [
    "CHUNKED_MAX_COLUMNS",
    "CHUNKED_MIN_STEPS",
    "chunk_length",
    "forced_chunk_length",
    "indrnn_backward",
    "indrnn_forward",
    "linear_backward",
    "linear_forward",
    "reverse_linear",
    "scan_into",
]

#: Above this many columns (``batch * H``) a step's op costs about as much as its dispatch, and
#: the per-step loop is as fast as the two-level scan (see :func:`chunk_length`).
CHUNKED_MAX_COLUMNS = 2048

#: Below this many steps the two-level scan's fixed ops (views, product, carries) outweigh the
#: steps it saves: measured even at 32 to 48 steps (``batch * H = 256``), 1.2x to 1.7x faster at 64.
CHUNKED_MIN_STEPS = 48

#: The chunk length set by :func:`forced_chunk_length`, None when the rule decides.
_forced_chunk: int | None = None


@contextlib.contextmanager
def forced_chunk_length(chunk: int) -> Iterator[None]:
    """Within the block, every scan of this module uses chunks of ``chunk`` steps (0 or 1: one op per step).

    For tests and benchmarks: it sets a process-wide value (not thread-local), restored on exit.
    """
    global _forced_chunk
    saved, _forced_chunk = _forced_chunk, chunk
    try:
        yield
    finally:
        _forced_chunk = saved


def _identity_where_invalid(x: torch.Tensor, valid: torch.Tensor | None, identity: float) -> torch.Tensor:
    """``x`` with ``identity`` at the steps past each row's length (``x`` itself when every step is valid)."""
    return x if valid is None else torch.where(valid[:, :, None], x, identity)


def _zero_invalid_(out: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Set ``out`` (a buffer of this module's own) to 0 past each row's length, in place."""
    if valid is not None:
        out.masked_fill_(~valid[:, :, None], 0.0)
    return out


def _previous(h: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """``h_{t-1}`` for every step: ``h0`` at step 0, then ``h`` shifted by one step."""
    return torch.cat([h0[:, None].to(h.dtype), h[:, :-1]], dim=1)


def chunk_length(steps: int, columns: int) -> int:
    """The chunk length of the two-level scan over ``steps`` steps of ``columns`` columns; 0 for the per-step loop.

    Parameters
    ----------
    steps : int
        The length of the scan (time steps).
    columns : int
        The independent recurrences run side by side, ``batch * H``.

    Returns
    -------
    int
        ``C``, about :math:`\\sqrt{T / 2}`, when the per-step loop is bound by the cost of
        dispatching its ``T`` ops: at most :data:`CHUNKED_MAX_COLUMNS` columns and at
        least :data:`CHUNKED_MIN_STEPS` steps; else 0.

    Notes
    -----
    The two-level scan runs ``2 C + T / C`` ops (two passes over the ``C`` positions
    of a chunk, one sequential pass over the ``T / C`` chunk ends): least at
    :math:`C = \\sqrt{T / 2}`. It also reads the inputs twice, each op touching
    short rows spread through memory, so once a step's ``(batch, H)`` slice is
    large enough for its op to cost more than its dispatch, the per-step loop,
    which reads them once, is as fast or faster. Measured on one thread
    (``bench/torch_recurrences.py --sweep``, T = 512 and 2000, float32): the
    two-level scan is 5x to 12x faster at ``batch * H = 64`` to 256, 2x to 3.7x at
    1024, 1.4x to 1.8x at 2048, but 0.7x to 1.0x at 4096 and 0.5x at 16384. The
    optimum of ``C`` is flat between :math:`\\sqrt{T / 2}` and :math:`\\sqrt{T}`.
    With more threads the two-level scan's ops, ``T / C`` times larger than a
    step's, are the ones torch splits: the threshold is then conservative.
    """
    if columns > CHUNKED_MAX_COLUMNS or steps < CHUNKED_MIN_STEPS:
        return 0
    return round(math.sqrt(steps / 2))


def _sequential_scan(
    out: torch.Tensor, mult: torch.Tensor, add: torch.Tensor, init: torch.Tensor, reverse: bool
) -> None:
    """The scan of :func:`scan_into`, one op per step."""
    outs, mults, adds = out.unbind(1), mult.unbind(1), add.unbind(1)
    prev = init
    for t in range(len(outs) - 1, -1, -1) if reverse else range(len(outs)):
        torch.addcmul(adds[t], mults[t], prev, out=outs[t])
        prev = outs[t]


def _chunked_scan(
    out: torch.Tensor, mult: torch.Tensor, add: torch.Tensor, init: torch.Tensor, reverse: bool, chunk: int
) -> None:
    """The scan of :func:`scan_into` in chunks of ``chunk`` steps (at least one whole chunk)."""
    batch, steps, hidden = add.shape
    full, rest = divmod(steps, chunk)
    # The whole chunks, and the partial one where the scan ends (forward: the last steps;
    # reverse: the first), so that it is the last to receive its carry.
    whole = slice(rest, steps) if reverse else slice(0, full * chunk)
    part = slice(0, rest) if reverse else slice(full * chunk, steps)
    order = range(chunk - 1, -1, -1) if reverse else range(chunk)
    # Position j of every whole chunk at once, (batch, full, H): one op per position runs them all.
    # Splitting the time axis is a view whatever the strides: nothing is copied.
    chunked = [x[:, whole].view(batch, full, chunk, hidden) for x in (mult, add, out)]
    mults, adds, outs = (x.unbind(2) for x in chunked)

    # (1) Each whole chunk scanned from 0: only its exit value is kept (a small buffer), with the
    # product of its multipliers. Nothing is divided by a product: that fails when some are ~0.
    first, *others = order
    local = adds[first].clone(memory_format=torch.contiguous_format)
    for j in others:
        torch.addcmul(adds[j], mults[j], local, out=local)
    span = chunked[0].prod(dim=2)

    # (2) The carries into the chunks, in scan order: carry_next = span * carry + local.
    carry = add.new_empty((batch, full + 1, hidden))
    carries, spans, locals_ = carry.unbind(1), span.unbind(1), local.unbind(1)
    if reverse:
        carries[full].copy_(init)
        for c in range(full - 1, -1, -1):
            torch.addcmul(locals_[c], spans[c], carries[c + 1], out=carries[c])
        into_whole, into_part = carry[:, 1:], carries[0]
    else:
        carries[0].copy_(init)
        for c in range(full):
            torch.addcmul(locals_[c], spans[c], carries[c], out=carries[c + 1])
        into_whole, into_part = carry[:, :full], carries[full]

    # (3) Every chunk scanned again from its carry, written in place: within a chunk the
    # arithmetic is the per-step loop's, only the carries were summed in another order.
    # The partial chunk's steps ride along with the first positions.
    part_mults, part_adds, part_outs = mult[:, part].unbind(1), add[:, part].unbind(1), out[:, part].unbind(1)
    part_order = range(rest - 1, -1, -1) if reverse else range(rest)
    prev, prev_part = into_whole, into_part
    for i, j in enumerate(order):
        torch.addcmul(adds[j], mults[j], prev, out=outs[j])
        prev = outs[j]
        if i < rest:
            p = part_order[i]
            torch.addcmul(part_adds[p], part_mults[p], prev_part, out=part_outs[p])
            prev_part = part_outs[p]


def scan_into(
    out: torch.Tensor,
    mult: torch.Tensor,
    add: torch.Tensor,
    init: torch.Tensor,
    *,
    reverse: bool = False,
    chunk: int | None = None,
) -> None:
    """The linear scan of ``mult`` and ``add`` from ``init``, written into ``out``.

    .. math::

        \\text{forward:}\\quad o_t = m_t o_{t-1} + x_t,\\; o_{-1} = c; \\qquad
        \\text{reverse:}\\quad o_t = m_t o_{t+1} + x_t,\\; o_{L} = c

    Parameters
    ----------
    out, mult, add : torch.Tensor
        ``(batch, L, H)`` with ``L >= 1``, any strides; ``out`` (written) shares no memory with the others.
    init : torch.Tensor
        ``(batch, H)``: the carry ``c`` into the first step of the scan.
    reverse : bool
        Run from the last step to the first.
    chunk : int or None
        The chunk length ``C`` of the two-level scan, 0 or 1 for one op per step;
        None: the length set by :func:`forced_chunk_length`, else :func:`chunk_length`.

    Notes
    -----
    The two-level scan splits the steps into chunks of ``C`` and composes the
    steps of each: chunk ``k`` maps a carry ``c`` to :math:`P_k c + S_k`, with
    :math:`P_k = \\prod_{t \\in k} m_t` and :math:`S_k` the chunk scanned from
    ``c = 0``. It runs (1) every chunk's :math:`S_k` (one op per position, over
    all chunks) and :math:`P_k` (one product); (2) the carries, one op per
    chunk, :math:`c_{k+1} = P_k c_k + S_k`; (3) every chunk again from its
    carry, one op per position, writing ``o``. About :math:`2 C + L / C` ops
    instead of ``L``. Identity steps (``m = 1``, ``x = 0``) stay exact: a chunk
    of them has :math:`P_k = 1`, :math:`S_k = 0`.
    """
    steps = add.shape[1]
    if chunk is None:
        chunk = chunk_length(steps, add.shape[0] * add.shape[2]) if _forced_chunk is None else _forced_chunk
    if chunk > 1 and steps >= 2 * chunk:
        _chunked_scan(out, mult, add, init, reverse, chunk)
    else:
        _sequential_scan(out, mult, add, init, reverse)


def reverse_linear(
    mult: torch.Tensor, add: torch.Tensor, carry: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``s_t = add_t + mult_{t+1} s_{t+1}`` from ``s_{T-1} = add_{T-1} + carry``; ``s`` and ``mult_0 s_0``.

    All of ``(batch, time, H)``; ``carry`` is ``(batch, H)`` or None (zero). Time must be at least 1.
    """
    s = torch.empty(add.shape, dtype=add.dtype, device=add.device)
    last = add.shape[1] - 1
    if carry is None:
        s[:, last].copy_(add[:, last])
    else:
        torch.add(add[:, last], carry, out=s[:, last])
    if last > 0:
        # Step t's multiplier is mult_{t+1}: the scan of the first T-1 steps reads mult shifted by one.
        scan_into(s[:, :last], mult[:, 1:], add[:, :last], s[:, last], reverse=True)
    return s, mult[:, 0] * s[:, 0]


def linear_forward(
    a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor, valid: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``h_t = a_t h_{t-1} + b_t`` over ``(batch, time, H)`` from ``h0``; ``h`` (0 past each length), final state."""
    a_eff = _identity_where_invalid(a, valid, 1.0)
    b_eff = _identity_where_invalid(b, valid, 0.0)
    h = torch.empty(a.shape, dtype=a.dtype, device=a.device)
    scan_into(h, a_eff, b_eff, h0)
    final = h[:, -1].clone()  # the frozen state at the last step is each row's state at its last valid step
    return _zero_invalid_(h, valid), final


def linear_backward(
    a: torch.Tensor,
    h0: torch.Tensor,
    h: torch.Tensor,
    valid: torch.Tensor | None,
    dh: torch.Tensor | None,
    dfinal: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cotangents of ``a``, ``b`` and ``h0`` from those of ``h`` and the final state (None: zero).

    ``g_t = dh_t + a_{t+1} g_{t+1}``, ``da_t = g_t h_{t-1}``, ``db_t = g_t``,
    ``dh0 = a_1 g_1`` over the valid steps; nothing reaches the steps past a row's length.
    """
    add = torch.zeros_like(a) if dh is None else _identity_where_invalid(dh, valid, 0.0)
    g, dh0 = reverse_linear(_identity_where_invalid(a, valid, 1.0), add, dfinal)
    da = _zero_invalid_(g * _previous(h, h0), valid)
    db = _zero_invalid_(g, valid)
    return da, db, dh0


def _activate_(x: torch.Tensor, activation: str) -> None:
    if activation == "relu":
        x.relu_()
    else:
        x.tanh_()


def indrnn_forward(
    pre: torch.Tensor, u: torch.Tensor, h0: torch.Tensor, activation: str, valid: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``h_t = act(pre_t + u h_{t-1})`` from ``h0``; ``u`` is ``(H,)`` or per row ``(batch, H)``.

    Returns ``h`` (0 past each row's length) and the final state.
    """
    # The nonlinearity rules out the identity-step trick: steps where some row is past its
    # length keep those rows' state with one more op (found on the host once, not per step).
    # Read before the buffer is made: under torch.compile the host read breaks the graph, and
    # inductor misorders the writes into a buffer allocated before such a break (wrong final states).
    partial = [False] * pre.shape[1] if valid is None else (~valid.all(dim=0)).tolist()
    h = torch.empty(pre.shape, dtype=pre.dtype, device=pre.device)
    steps, pres = h.unbind(1), pre.unbind(1)
    keeps = () if valid is None else valid[:, :, None].unbind(1)
    prev = h0
    for t in range(len(steps)):
        torch.addcmul(pres[t], u, prev, out=steps[t])
        _activate_(steps[t], activation)
        if partial[t]:
            torch.where(keeps[t], steps[t], prev, out=steps[t])
        prev = steps[t]
    final = prev.clone()
    return _zero_invalid_(h, valid), final


def _derivative(h: torch.Tensor, activation: str) -> torch.Tensor:
    """``act'(z_t)`` from the outputs ``h_t = act(z_t)``: ``h > 0`` for relu (relu'(0) = 0), ``1 - h^2`` for tanh."""
    if activation == "relu":
        return (h > 0).to(h.dtype)
    return 1.0 - h * h


def indrnn_backward(
    u: torch.Tensor,
    h0: torch.Tensor,
    h: torch.Tensor,
    activation: str,
    valid: torch.Tensor | None,
    dh: torch.Tensor | None,
    dfinal: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cotangents of ``pre``, ``u`` (per row, ``(batch, H)``: the caller sums) and ``h0``.

    With ``s_t = dh_t + carry_t`` (the output's cotangent plus what step t+1 sends back),
    ``g_t = s_t act'(z_t)`` and ``carry_{t-1} = g_t u``: ``s`` is the reverse linear
    recurrence of multipliers ``act'(z_t) u``; ``dpre_t = g_t``, ``du = sum_t g_t h_{t-1}``.
    """
    deriv = _derivative(h, activation)
    add = torch.zeros_like(h) if dh is None else _identity_where_invalid(dh, valid, 0.0)
    s, dh0 = reverse_linear(_identity_where_invalid(deriv * u[..., None, :], valid, 1.0), add, dfinal)
    dpre = _zero_invalid_(s.mul_(deriv), valid)
    du = (dpre * _previous(h, h0)).sum(dim=1)
    return dpre, du, dh0
