"""Plain Python-loop ports of the adaptive cells and of indrnn: what users run today.

Each port steps a cell in a Python loop over time, one framework call per op, the way the
seeds' implementations run (a module stepping ``nn.GRUCell`` and its gate at every step;
ACT's inner loop over ponder steps until every row halts; QRNN's pooling as Salesforce's
``ForgetMult`` runs it on the CPU). They compute the spec's forward pass with the default
options (no lengths, no initial state), in the framework's eager mode, with the framework's
own autodiff for the backward pass: the yardstick of the "faster than the Python-loop port"
targets. The rnn, gru and lstm steps are the adapter's (``torch.rnn_tanh_cell``/``gru_cell``/
``lstm_cell`` in torch, as ``nn.RNNCell``, ``nn.GRUCell`` and ``nn.LSTMCell`` run them).

:func:`matmul_floor` is the other end: the matmuls of a one-layer op alone, which no
implementation avoids; port time over floor time is the best speed-up any implementation
of the op could reach over the port on that machine. :func:`update_floor` adds one
elementwise pass over the activations, forward and backward, for a whole stack: the floor
of an optimiser update (:mod:`.training`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from .framework import Framework

__all__ = [
    "FloorLayer",
    "Params",
    "act",
    "floor_arrays",
    "indrnn",
    "matmul_floor",
    "qrnn",
    "skip_cell",
    "update_floor",
    "update_floor_arrays",
]

Params = Sequence[Mapping[str, Any]]


def _binarize(fw: Framework, u: Any) -> Any:
    # 1 where u >= 0.5, with the straight-through gradient of the Skip RNN authors' code.
    hard = fw.to_float(u >= 0.5)
    return u + fw.stop_gradient(hard - u)


def skip_cell(fw: Framework, x: Any, params: Params, cell: str) -> Any:
    """``skip_gru`` (``cell="gru"``) or ``skip_lstm`` (``cell="lstm"``): the outputs ``(B, T, H)``."""
    (p,) = params
    batch, steps = x.shape[0], x.shape[1]
    size = p["w_hh"].shape[1]
    h = c = fw.zeros((batch, size))
    prob, cum = fw.zeros((batch, 1)) + 1.0, fw.zeros((batch, 1))
    outputs = []
    for t in range(steps):
        u_tilde = cum + fw.minimum(prob, 1.0 - cum)
        u = _binarize(fw, u_tilde)
        if cell == "lstm":
            cand_h, cand_c = fw.lstm_cell(x[:, t], h, c, p)
            gate_in = cand_c
            c = u * cand_c + (1.0 - u) * c
        else:
            cand_h = gate_in = fw.gru_cell(x[:, t], h, p)
        du = fw.sigmoid(fw.linear(gate_in, p["w_gate"], p["b_gate"]))
        h = u * cand_h + (1.0 - u) * h
        prob = u * du + (1.0 - u) * prob
        cum = (1.0 - u) * u_tilde
        outputs.append(h)
    return fw.stack(outputs, 1)


def act(fw: Framework, x: Any, params: Params, epsilon: float, max_steps: int, cell: str = "gru") -> Any:
    """``act`` over a gru cell (or ``cell="rnn"``, tanh): the outputs ``(B, T, H)``; the inner loop stops
    once every row has halted."""
    (p,) = params
    step = fw.rnn_cell if cell == "rnn" else fw.gru_cell
    batch, steps = x.shape[0], x.shape[1]
    size = p["w_hh"].shape[1]
    h = fw.zeros((batch, size))
    flags = (fw.zeros((batch, 1)), fw.zeros((batch, 1)) + 1.0)
    outputs = []
    for t in range(steps):
        total, mean = fw.zeros((batch, 1)), fw.zeros((batch, size))
        halted = fw.zeros((batch, 1)) > 0.0
        s = h
        for n in range(1, max_steps + 1):
            if fw.all(halted):
                break
            s = step(fw.concat([x[:, t], flags[n > 1]], 1), s, p)
            unit = fw.sigmoid(fw.linear(s, p["w_halt"], p["b_halt"]))
            active = ~halted
            stop = active & ((total + unit >= 1.0 - epsilon) | (n == max_steps))
            weight = fw.where(stop, 1.0 - total, fw.where(active, unit, 0.0 * unit))
            mean = mean + weight * s
            total = fw.where(active, total + unit, total)
            halted = halted | stop
        h = mean
        outputs.append(h)
    return fw.stack(outputs, 1)


def indrnn(fw: Framework, x: Any, params: Params) -> Any:
    """``indrnn`` with relu, layer by layer: the input projection in one call, then a per-step loop
    ``relu(pre_t + u h)``."""
    for p in params:
        pre = fw.linear(x, p["w_ih"], p["b_ih"])
        h = fw.zeros((x.shape[0], p["u"].shape[0]))
        outputs = []
        for t in range(x.shape[1]):
            h = fw.relu(pre[:, t] + p["u"] * h)
            outputs.append(h)
        x = fw.stack(outputs, 1)
    return x


def qrnn(fw: Framework, x: Any, params: Params) -> Any:
    """``qrnn`` with fo-pooling (any window K), layer by layer, as Salesforce's ``QRNNLayer`` runs it on the CPU.

    Time-major ``(T, B, .)``: one linear projection of each step's window ``[x_{t-K+1}, ..., x_t]``
    (zeros before the first step), tanh/sigmoid on its blocks z, f, o, then ``ForgetMult``'s loop
    ``c_t = F_t z_t + (1 - F_t) c_{t-1}`` over the steps and ``h = o c``. Salesforce's ``F`` is the
    spec's ``1 - f`` (its ``c_t = f c_{t-1} + (1 - f) z``): one elementwise op turns one into the other.
    """
    for p in params:
        w = p["w"]
        window, size = int(w.shape[2]), int(p["b"].shape[0]) // 3
        seq = fw.swap01(x)
        steps, batch = int(seq.shape[0]), int(seq.shape[1])
        if window > 1:
            seq = fw.concat([fw.zeros((window - 1, batch, int(seq.shape[2]))), seq], 0)
        source = fw.concat([seq[k : k + steps] for k in range(window)], 2)  # oldest input first
        gates = fw.linear(source, fw.concat([w[:, :, k] for k in range(window)], 1), p["b"])
        z = fw.tanh(gates[..., :size])
        forget = 1.0 - fw.sigmoid(gates[..., size : 2 * size])
        o = fw.sigmoid(gates[..., 2 * size :])
        fz = forget * z
        c, pooled = None, []
        for t in range(steps):  # ForgetMult (CPUForgetMult)
            c = fz[t] if c is None else fz[t] + (1.0 - forget[t]) * c
            pooled.append(c)
        x = fw.swap01(o * fw.stack(pooled, 0))
    return x


def floor_arrays(
    fw: Framework, batch: int, steps: int, features: int, hidden: int, gates: int, inner: int
) -> dict[str, Any]:
    """Inputs of :func:`matmul_floor` for one layer: their shapes are the op's, their values random.

    ``gates`` is G (3 for gru, 4 for lstm), ``inner`` the recurrent steps taken (``steps`` for
    Skip RNN, the sum over time of the most inner steps any row takes for ACT).
    """
    rng = np.random.default_rng(0)

    def draw(*shape: int) -> Any:
        return fw.tensor((0.1 * rng.standard_normal(shape)).astype(np.float32))

    wide = gates * hidden
    return {
        "x": draw(batch * steps, features),
        "x_t": draw(features, batch * steps),
        "w_ih": draw(wide, features),
        "w_ih_t": draw(features, wide),
        "w_hh": draw(wide, hidden),
        "w_hh_t": draw(hidden, wide),
        "h": draw(batch, hidden),
        "d": draw(batch, wide),
        "d_all": draw(batch * steps, wide),
        "d_all_t": draw(wide, batch * steps),
        "d_inner_t": draw(wide, batch * inner),
        "h_inner_t": draw(hidden, batch * inner),
        "inner": inner,
    }


def matmul_floor(fw: Framework, arrays: Mapping[str, Any], training: bool) -> Any:
    """The matmuls any implementation of a one-layer recurrent op must run, and nothing else.

    Forward: the input projection of every step at once (``(B T, I) @ (I, G H)``) and the
    ``inner`` sequential recurrent products ``(B, H) @ (H, G H)``, one per recurrent step.
    With ``training``, the backward's too: ``inner`` sequential ``(B, G H) @ (G H, H)``
    (the cotangent of the previous state) and, once over all steps, ``dW_hh``
    ``(G H, B inner) @ (B inner, H)``, ``dW_ih`` ``(G H, B T) @ (B T, I)`` and ``dx``
    ``(B T, G H) @ (G H, I)``. The elementwise gate arithmetic, the skip gate's and ACT's
    halting unit's ``(B, H) @ (H, 1)`` products are left out: a lower bound on any
    implementation's time, in the framework's eager mode.
    """
    out = fw.matmul_t(arrays["x"], arrays["w_ih"])
    for _ in range(arrays["inner"]):
        out = fw.matmul_t(arrays["h"], arrays["w_hh"])
    if training:
        for _ in range(arrays["inner"]):
            out = fw.matmul_t(arrays["d"], arrays["w_hh_t"])
        if arrays["inner"]:  # no recurrent weight matrix (indrnn, qrnn): no dW_hh
            out = fw.matmul_t(arrays["d_inner_t"], arrays["h_inner_t"])
        out = fw.matmul_t(arrays["d_all_t"], arrays["x_t"])
        out = fw.matmul_t(arrays["d_all"], arrays["w_ih_t"])
    return out


class FloorLayer(NamedTuple):
    """One layer of a stack, as its floor sees it: input features, units, gate blocks G and the sequential
    recurrent matmuls it takes (0 for indrnn and qrnn, whose recurrence is elementwise)."""

    features: int
    hidden: int
    gates: int
    inner: int


def update_floor_arrays(fw: Framework, batch: int, steps: int, layers: Sequence[FloorLayer]) -> list[dict[str, Any]]:
    """Inputs of :func:`update_floor`: each layer's :func:`floor_arrays` and its activations.

    The activations are ``(B max(T, inner), G H)``: the gate values of every step (of every inner
    step for ACT).
    """
    rng = np.random.default_rng(1)
    stack = []
    for layer in layers:
        arrays = floor_arrays(fw, batch, steps, *layer)
        size = (batch * max(steps, layer.inner), layer.gates * layer.hidden)
        arrays["activations"] = fw.tensor((0.1 * rng.standard_normal(size)).astype(np.float32))
        stack.append(arrays)
    return stack


def update_floor(fw: Framework, layers: Sequence[Mapping[str, Any]], training: bool) -> Any:
    """The floor of a stack's forward pass, or with ``training`` of its update (forward and backward).

    For each layer, :func:`matmul_floor` and one elementwise pass over its activations, a fused
    multiply-add (:meth:`.Framework.fma`) over an array of their size, once forward and once more
    backward. The readout, the loss, the optimiser's step and every other elementwise op are left
    out: a lower bound on any implementation's time, in the framework's eager mode.
    """
    out = None
    for arrays in layers:
        out = matmul_floor(fw, arrays, training)
        a = arrays["activations"]
        for _ in range(2 if training else 1):
            out = fw.fma(a, a, a)
    return out
