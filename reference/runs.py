"""Forward runs of every op in float64, keeping what the reverse mode needs.

:func:`start` turns validated, normalised arguments into a run; a run gives
the op's result (rounded to the input dtype) and its reverse mode. The layers
of each sequence op come from :data:`LAYERS`; the primitives are one-layer
runs of their cell.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from rnnspec.ops import OPS
from rnnspec.results import SequenceResult
from rnnspec.shapes import evaluate

from .act import ACTRun
from .activations import Array
from .cells import GRUCell, LSTMCell, RNNCell
from .cotangents import cotangent, read_sequence_cotangents
from .independent import IndRNNCell, IndRNNRecurrenceCell, LinearCell
from .precision import round_to
from .qrnn import QRNNLayer
from .skip import SkipRun
from .stack import Layer, ScanLayer, full_lengths, reverse_valid, run_stack, run_stack_vjp

__all__ = ["PrimitiveRun", "SequenceRun", "start"]

_SEQUENCE_ARGS = ("x", "params", "lengths", "initial_state", "reverse")


def _f64(a: Any) -> Array:
    return np.asarray(a, dtype=np.float64)


# op -> build the layer k from (float64 params, options, lengths, reverse)
LayerFactory = Callable[[int, Mapping[str, Array], Mapping[str, Any], np.ndarray, bool], Layer]


def _qrnn_layer(k: int, p: Mapping[str, Array], options: Mapping[str, Any], lengths: np.ndarray, rev: bool) -> Layer:
    masks = options["zoneout_mask"]
    mask = None if masks is None else _f64(masks[k])
    if mask is not None and rev:
        mask = reverse_valid(mask, lengths)  # align with the reversed time axis the layer sees
    return QRNNLayer(p, options["mode"], mask)


LAYERS: dict[str, LayerFactory] = {
    "rnn": lambda k, p, o, n, r: ScanLayer(RNNCell(activation=o["activation"]), p),
    "lstm": lambda k, p, o, n, r: ScanLayer(LSTMCell(), p),
    "gru": lambda k, p, o, n, r: ScanLayer(GRUCell(reset_after=o["reset_after"]), p),
    "indrnn": lambda k, p, o, n, r: ScanLayer(IndRNNCell(activation=o["activation"]), p),
    "qrnn": _qrnn_layer,
}


class SequenceRun:
    """A run of a sequence op (rnn, lstm, gru, indrnn, qrnn)."""

    def __init__(self, op: str, args: Mapping[str, Any]) -> None:
        x = args["x"]
        batch, time, _ = x.shape
        self.op = op
        self.dtype = x.dtype
        self.reverse = args["reverse"]
        self.lengths = full_lengths(args["lengths"], batch, time)
        options = {k: v for k, v in args.items() if k not in _SEQUENCE_ARGS}
        self.params = [{k: _f64(v) for k, v in p.items()} for p in args["params"]]
        self.layers = [LAYERS[op](k, p, options, self.lengths, self.reverse) for k, p in enumerate(self.params)]
        if args["initial_state"] is None:
            initial = []
            for p in self.params:
                dims = _layer_dims(p, options)
                initial.append(
                    {s.name: np.zeros((batch, *(evaluate(e, dims) for e in s.shape))) for s in OPS[op].state}
                )
        else:
            initial = [{k: _f64(v) for k, v in s.items()} for s in args["initial_state"]]
        self.outputs, self.state, self.tape = run_stack(self.layers, _f64(x), self.lengths, initial, self.reverse)

    def result(self) -> SequenceResult:
        """The result, rounded to the input dtype."""
        return SequenceResult(round_to(self.outputs, self.dtype), round_to(self.state, self.dtype))

    def vjp(self, cotangents: Mapping[str, Any]) -> dict[str, Any]:
        """Cotangents of x, params (one mapping per layer) and the initial state,
        given those of the result fields."""
        ct = read_sequence_cotangents(self.op, cotangents, ("outputs", "state"), self.outputs, self.state)
        d_outputs, d_state = ct["outputs"], ct["state"]
        d_x, d_params, d_initial = run_stack_vjp(self.layers, self.tape, self.reverse, d_outputs, d_state)
        grads: Any = round_to(d_params, self.dtype)
        return {
            "x": round_to(d_x, self.dtype),
            "params": grads,
            "initial_state": round_to(tuple(d_initial), self.dtype),
        }


def _layer_dims(p: Mapping[str, Array], options: Mapping[str, Any]) -> dict[str, int]:
    """A layer's sizes read off its params: H, and for qrnn I and K."""
    if "w_hh" in p:
        return {"H": int(p["w_hh"].shape[1])}
    if "u" in p:
        return {"H": int(p["u"].shape[0])}
    blocks, inputs, window = p["w"].shape
    return {"H": blocks // OPS["qrnn"].fixed_dims(options)["G"], "I": inputs, "K": window}


class PrimitiveRun:
    """A run of ``linear_recurrence`` or ``indrnn_recurrence``: one layer of a cell."""

    def __init__(self, op: str, args: Mapping[str, Any]) -> None:
        self.op = op
        first = args["a"] if op == "linear_recurrence" else args["pre"]
        if op == "linear_recurrence":
            cell: Any = LinearCell()
            self.params: dict[str, Array] = {}
            x = np.concatenate([_f64(args["a"]), _f64(args["b"])], axis=2)
        else:
            cell = IndRNNRecurrenceCell(activation=args["activation"])
            self.params = {"u": _f64(args["u"])}
            x = _f64(args["pre"])
        self.dtype = first.dtype
        batch, time, hidden = first.shape
        initial = np.zeros((batch, hidden)) if args["initial"] is None else _f64(args["initial"])
        self.reverse = args["reverse"]
        self.layer = ScanLayer(cell, self.params)
        lengths = full_lengths(args["lengths"], batch, time)
        self.h, _, self.tape = run_stack([self.layer], x, lengths, [{"h": initial}], self.reverse)

    def result(self) -> Array:
        h: Array = round_to(self.h, self.dtype)
        return h

    def vjp(self, cotangents: Mapping[str, Any]) -> dict[str, Any]:
        """Cotangents of the array arguments, given ``{"h": d_h}`` (checked by the ``Backend``)."""
        d_h = np.zeros_like(self.h)
        if cotangents.get("h") is not None:
            d_h = cotangent(self.op, "cotangents['h']", cotangents["h"], self.h.shape)
        zero = {"h": np.zeros((self.h.shape[0], self.h.shape[2]))}  # also when time is 0
        d_x, d_params, d_initial = run_stack_vjp([self.layer], self.tape, self.reverse, d_h, [zero])
        if self.op == "linear_recurrence":
            d_a, d_b = np.split(d_x, 2, axis=2)
            grads = {"a": d_a, "b": d_b}
        else:
            grads = {"pre": d_x, "u": d_params[0]["u"]}
        grads["initial"] = d_initial[0]["h"]
        return round_to(grads, self.dtype)  # type: ignore[no-any-return]


def start(op: str, args: Mapping[str, Any]) -> SequenceRun | PrimitiveRun | SkipRun | ACTRun:
    """Run ``op`` forward on validated, normalised arguments."""
    if OPS[op].kind == "primitive":
        return PrimitiveRun(op, args)
    if op == "act":
        return ACTRun(op, args)
    if op.startswith("skip_"):
        return SkipRun(op, args)
    return SequenceRun(op, args)
