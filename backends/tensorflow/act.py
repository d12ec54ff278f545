"""act: Adaptive Computation Time over one layer of a base cell (rnn, lstm, gru, indrnn).

As the reference (:mod:`rnnspec.reference.act`): at each input step the cell
runs on ``[x_t, flag]`` (flag 0 on the first inner step, 1 after) until the
halting units reach ``1 - epsilon`` or ``max_steps``::

    s^n = S(s^{n-1}, [x_t, flag_n]);  h^n = sigmoid(w_halt . h(s^n) + b_halt)
    N = min(max_steps, min{n : not (h^1 + ... + h^n < 1 - epsilon)});  R = 1 - (h^1 + ... + h^{N-1})
    s_t = sum_{n<N} h^n s^n + R s^N;  ponder_cost = N + R

A NaN halting unit passes the test "not below 1 - epsilon": its row halts there, with ``R`` NaN.

Rows halt independently: the inner loop stays batched, with a per-row mask of
the rows still pondering. The inner loop is a ``tf.while_loop`` bounded by the
static ``max_steps`` (``maximum_iterations``, which XLA needs) that also stops
once every row has halted, nested in the time loop of :mod:`.sequence`.
``N(t)`` is decided from values under ``tf.stop_gradient`` and carries no
gradient, while ``R(t) = 1 - sum_{n<N} h^n`` stays differentiable (the
remainder path); the weights sum to 1, also at the cap. The input projection
of ``x_t`` (without the flag column) is one matmul over every time step; the
flag adds ``w_ih[:, I]`` on later inner steps.

Executed eagerly, a ``tf.while_loop`` is a Python loop, and an eager call over
fewer steps than :data:`.graphs.GRAPH_MIN_STEPS` is not run as a graph: its
inner steps would each dispatch a few dozen ops from Python. So an eager call
runs :data:`EAGER_INNER_STEPS` inner steps eagerly and the rest of its
pondering in a compiled inner loop (:class:`_Eager`).

Recurrent dropout (``recurrent_mask``, one ``(batch, H)`` mask: act has one
layer): every inner step's recurrent product reads ``h * mask``; the compiled
inner loop takes the mask as an argument.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence

import tensorflow as tf
from tensorflow.python.eager import record  # TensorFlow's own test of whether a tape records an op

from rnnspec.backends.common.cells import cell_defaults
from rnnspec.backends.common.ops import SequenceCall
from rnnspec.backends.common.state import initial_states, layer_arrays
from rnnspec.results import ACTResult

from .cells import Cell, Params, linear, make_cell
from .graphs import EAGER_ENV
from .sequence import ARRAY_OPS, State, reverse_valid, scan

__all__ = ["run"]

#: An input step's inner loop carry: (n, s^{n-1}, the mean-field state so far, halted, the sum of
#: the halting units so far, N where a row has stopped, R where a row has stopped).
Carry = tuple[tf.Tensor, State, State, tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]

#: The inner steps an eager call runs eagerly, over all its input steps, before it hands the rest
#: of its pondering to a compiled loop (:class:`_Eager`).
EAGER_INNER_STEPS = 64

#: (cell, whether under XLA, the params' shapes) -> :func:`_pondered` as a ``tf.function``.
_COMPILED: dict[tuple[str, bool, tuple[tuple[str, tuple[int, ...]], ...]], Callable[..., Carry]] = {}
_COMPILED_LOCK = threading.Lock()


def _start(state: State, projected: tf.Tensor, keep: tf.Tensor | None) -> Carry:
    """Before an input step's first inner step; rows outside their length (``keep`` False) count as halted."""
    column = tf.zeros_like(projected[:, :1])  # (batch, 1)
    halted = tf.zeros_like(column, tf.bool) if keep is None else ~keep[:, None]
    zeros = {k: tf.zeros_like(v) for k, v in state.items()}
    return tf.constant(1), dict(state), zeros, halted, column, column[:, 0], column[:, 0]


def _pondered(
    cell: Cell,
    p: Params,
    projected: tf.Tensor,
    flag: tf.Tensor,
    threshold: float | tf.Tensor,
    max_steps: int | tf.Tensor,
    carry: Carry,
    limit: int | None,
) -> Carry:
    """The inner steps from ``carry`` until every row has halted or ``max_steps`` have run (at most ``limit``)."""
    dtype = projected.dtype

    def more(n: tf.Tensor, s: State, mean: State, halted: tf.Tensor, *_: tf.Tensor) -> tf.Tensor:
        return (n <= max_steps) & ~tf.reduce_all(halted)

    def body(
        n: tf.Tensor, s: State, mean: State, halted: tf.Tensor, total: tf.Tensor, steps: tf.Tensor, rem: tf.Tensor
    ) -> Carry:
        active = ~halted
        later = tf.cast(n > 1, dtype)  # the flag: 0 on the first inner step, 1 after
        s = cell.step(p, s, projected + later * flag)
        h = tf.sigmoid(linear(s["h"], p["w_halt"], p["b_halt"]))
        # "Not below", not ">=": a NaN halting unit stops its row (the spec's rule), with R NaN.
        reached = ~(tf.stop_gradient(total) + tf.stop_gradient(h) < threshold)
        stop = active & (reached | (n == max_steps))
        rest = tf.where(tf.math.is_nan(h), h, 1.0 - total)
        weight = tf.where(stop, rest, tf.where(active, h, tf.zeros_like(h)))
        mean = {k: mean[k] + weight * s[k] for k in mean}
        steps = tf.where(stop[:, 0], tf.cast(n, dtype), steps)
        rem = tf.where(stop[:, 0], rest[:, 0], rem)
        total = tf.where(active, total + h, total)
        return n + 1, s, mean, halted | stop, total, steps, rem

    final: Carry = tf.while_loop(more, body, carry, maximum_iterations=limit)
    return final


def _compiled(name: str, p: Params, xla: bool) -> Callable[..., Carry]:
    """:func:`_pondered` of the cell ``name`` as a ``tf.function``, one per cell, ``xla`` and parameter shapes.

    The cell reads its sizes off static shapes (gru's H), so a function holds them fixed: only the
    batch may vary within one (``reduce_retracing`` generalises it after a second batch size).
    """
    key = (name, xla, tuple((k, tuple(int(d) for d in v.shape)) for k, v in sorted(p.items())))
    with _COMPILED_LOCK:
        found = _COMPILED.get(key)
        if found is None:
            cell = make_cell(name, cell_defaults(name))

            def loop(
                p: Params,
                projected: tf.Tensor,
                flag: tf.Tensor,
                threshold: tf.Tensor,
                cap: tf.Tensor,
                carry: Carry,
                mask: tf.Tensor | None,
            ) -> Carry:
                masked = cell.with_recurrent_mask(mask)
                return _pondered(masked, p, projected, flag, threshold, cap, carry, None)

            found = _COMPILED[key] = tf.function(loop, reduce_retracing=True, jit_compile=xla)
        return found


class _Eager:
    """An eager call's pondering: eager inner steps while its budget lasts, then a compiled loop.

    Executed eagerly, a ``tf.while_loop`` is a Python loop that dispatches each inner step's few
    dozen ops one by one, milliseconds a step. A call that ponders little stays eager, and never
    pays for a trace (a fraction of a second); once it has run :data:`EAGER_INNER_STEPS` inner
    steps, every inner loop goes on in :func:`_compiled`'s function, from the carry the eager
    steps reached:

    - under XLA when no tape records the loop's inputs: one compiled loop, as fast as jax's;
    - otherwise as a plain graph, whose call the tape records and whose gradient TensorFlow
      derives (XLA cannot hand the while loop's gradient accumulators back to TensorFlow).
      TensorFlow's executor still runs each op of the step, some tens of microseconds a step.

    Measured on one shared core, gru with H = 8, batch 4 and units that never halt: 10,000 inner
    steps took 31 s eagerly and 0.8 s after; 600,000 take 2.7 s (jax's loop 1.1 s); under a tape,
    12,000 with their gradient took 60 s and 2.3 s after.
    """

    def __init__(self, name: str, epsilon: float, max_steps: int, dtype: tf.DType) -> None:
        self.name, self.left = name, EAGER_INNER_STEPS
        self.threshold = tf.constant(1.0 - epsilon, dtype)
        self.cap = tf.constant(max_steps, tf.int32)

    def ponder(
        self,
        cell: Cell,
        p: Params,
        projected: tf.Tensor,
        flag: tf.Tensor,
        max_steps: int,
        carry: Carry,
        mask: tf.Tensor | None = None,
    ) -> Carry:
        """:func:`_pondered` to the end, in eager steps as far as the budget allows, then compiled.

        ``cell`` is under ``mask``, the recurrent dropout mask (None: none), which the compiled loop takes too."""
        if self.left > 0:
            carry = _pondered(cell, p, projected, flag, self.threshold, max_steps, carry, min(self.left, max_steps))
            self.left -= int(carry[0]) - 1
        if int(carry[0]) > max_steps or bool(tf.reduce_all(carry[3])):
            return carry
        inputs = [*p.values(), projected, flag, *tf.nest.flatten(carry)]
        xla = not record.should_record_backprop(inputs)
        result: Carry = _compiled(self.name, p, xla)(p, projected, flag, self.threshold, self.cap, carry, mask)
        return result


def _ponder(
    cell: Cell,
    p: Params,
    state: State,
    projected: tf.Tensor,
    flag: tf.Tensor,
    keep: tf.Tensor | None,
    epsilon: float,
    max_steps: int,
    eager: _Eager | None,
    mask: tf.Tensor | None = None,
) -> tuple[State, tf.Tensor, tf.Tensor]:
    """One input step: the mean-field state, N(t) and R(t) of every row.

    Rows outside their length (``keep`` False) count as halted from the start:
    their values are discarded by the time loop. ``eager`` is None inside a
    graph (or with ``RNNSPEC_TF_EAGER`` set): the loop is the plain ``tf.while_loop``.
    ``mask``: the recurrent dropout mask (None: none).
    """
    carry = _start(state, projected, keep)
    masked = cell.with_recurrent_mask(mask)
    if eager is None:
        carry = _pondered(masked, p, projected, flag, 1.0 - epsilon, max_steps, carry, max_steps)
    else:
        carry = eager.ponder(masked, p, projected, flag, max_steps, carry, mask)
    return carry[2], carry[5], carry[6]


def run(call: SequenceCall) -> ACTResult:
    """ACT over one layer of ``cell`` (its own options at their defaults)."""
    x, params, options, reverse = call.x, call.params, call.options, call.reverse
    cell, epsilon, max_steps = options["cell"], options["epsilon"], options["max_steps"]
    features = int(x.shape[2])
    base = make_cell(cell, cell_defaults(cell))
    (p,) = params
    hidden = int(p["w_halt"].shape[1])
    norm = ARRAY_OPS.lengths(call.lengths, x)
    (state,) = initial_states("act", x, params, options, call.initial_state, ARRAY_OPS)
    inp = reverse_valid(x, norm) if reverse else x
    w_ih = p["w_ih"]
    projected = linear(inp, w_ih[:, :features], p["b_ih"])  # x_t's part, every step at once
    flag = w_ih[:, features]  # the flag column, added on inner steps n > 1
    mask = layer_arrays(call, norm, ARRAY_OPS)[0].get("recurrent_mask")  # act's one layer's, or None

    eager = None
    if tf.executing_eagerly() and os.environ.get(EAGER_ENV, "") in ("", "0"):
        eager = _Eager(cell, float(epsilon), int(max_steps), projected.dtype)

    def step(s: State, xs: Sequence[tf.Tensor], keep: tf.Tensor | None) -> tuple[State, list[tf.Tensor]]:
        new, steps, remainder = _ponder(base, p, s, xs[0], flag, keep, float(epsilon), int(max_steps), eager, mask)
        return new, [new["h"], steps, remainder]

    (out, ponder_steps, ponder_remainder), final = scan(step, [projected], state, norm.valid(), [(hidden,), (), ()])
    ponder_cost = ponder_steps + ponder_remainder
    if reverse:
        out, ponder_steps, ponder_remainder, ponder_cost = (
            reverse_valid(a, norm) for a in (out, ponder_steps, ponder_remainder, ponder_cost)
        )
    return ACTResult(out, (final,), ponder_steps, ponder_remainder, ponder_cost)
