"""Forward runs of every op in float64, keeping what the reverse mode needs.

:func:`start` turns validated, normalised arguments into a run, of the kind
the op's record says by its result type; a run gives the op's result (rounded
to the input dtype) and its reverse mode. The layer of each sequence op comes
from :func:`.layers.layer_factory` and the cell of each primitive from
:func:`.layers.primitive_cell`; everything else (sizes, initial state,
per-step inputs) is read off the op's record.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from rnnspec.ops import OPS, OpSpec, OptionSpec
from rnnspec.results import ACTResult, SequenceResult, SkipResult
from rnnspec.shapes import evaluate, solve

from .act import ACTRun
from .activations import Array
from .cotangents import cotangent, read_sequence_cotangents
from .layers import layer_factory, primitive_cell
from .precision import round_to
from .skip import SkipRun
from .stack import ScanLayer, full_lengths, reverse_valid, run_stack, run_stack_vjp

__all__ = ["PrimitiveRun", "SequenceRun", "start"]

_SEQUENCE_ARGS = ("x", "params", "lengths", "initial_state", "reverse")


def _f64(a: Any) -> Array:
    return np.asarray(a, dtype=np.float64)


class SequenceRun:
    """A run of a sequence op whose layers stack independently (rnn, lstm, gru, indrnn, qrnn)."""

    def __init__(self, op: str, args: Mapping[str, Any]) -> None:
        spec = OPS[op]
        x = args["x"]
        batch, time, input_size = x.shape
        self.op = op
        self.dtype = x.dtype
        self.reverse = args["reverse"]
        self.lengths = full_lengths(args["lengths"], batch, time)
        options = {o.name: args[o.name] for o in spec.value_options}
        self.params = [{k: _f64(v) for k, v in p.items()} for p in args["params"]]
        self.layers = []
        initial = []
        masks = []
        for k, p in enumerate(self.params):
            top = k == len(self.params) - 1
            inputs = {o.name: self._layer_array(args.get(o.name), k, o) for o in spec.array_options}
            masks.append(_input_mask(spec, inputs))
            self.layers.append(layer_factory(op)(p, options, inputs))
            dims = _layer_dims(op, p, options, input_size, top=top)
            input_size = dims["H"]
            if args["initial_state"] is None:
                entries = spec.layer_state(top=top, options=options)
                initial.append({s.name: np.zeros((batch, *(evaluate(e, dims) for e in s.shape))) for s in entries})
        if args["initial_state"] is not None:
            initial = [{k: _f64(v) for k, v in s.items()} for s in args["initial_state"]]
        self.outputs, self.state, self.tape = run_stack(
            self.layers, _f64(x), self.lengths, initial, self.reverse, masks
        )

    def _layer_array(self, arrays: Any, k: int, option: OptionSpec) -> Array | None:
        """Layer ``k``'s array option in float64 (one per boundary between layers: the boundary's below
        layer k, none for layer 0); one of one entry per step aligned with the reversed time axis the layer
        sees."""
        if arrays is None or (option.between_layers and k == 0):
            return None
        a = _f64(arrays[k - 1 if option.between_layers else k])
        if self.reverse and option.shape[:2] == ("B", "T"):
            a = reverse_valid(a, self.lengths)
        return a

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


def _input_mask(spec: OpSpec, inputs: Mapping[str, Array | None]) -> Array | None:
    """The product of a layer's between-layer masks (the dropout mask of the boundary below it), or None."""
    mask: Array | None = None
    for o in spec.array_options:
        m = inputs[o.name]
        if o.between_layers and m is not None:
            mask = m if mask is None else mask * m
    return mask


def _layer_dims(
    op: str, p: Mapping[str, Array], options: Mapping[str, Any], input_size: int, *, top: bool
) -> dict[str, int]:
    """A layer's sizes (``H``, and the op's own such as qrnn's ``K``), solved from its params' shapes
    against the record's layout."""
    spec = OPS[op]
    layout = spec.layer_params(top=top, options=options)
    pairs = [(e, n) for q in layout if q.name in p for e, n in zip(q.shape, p[q.name].shape, strict=True)]
    return solve(pairs, {**spec.fixed_dims(options), "I": input_size})


class PrimitiveRun:
    """A run of a primitive (``linear_recurrence``, ``indrnn_recurrence``): one layer of its cell, whose
    input is the per-step arguments side by side and whose params are the other required arguments."""

    def __init__(self, op: str, args: Mapping[str, Any]) -> None:
        spec = OPS[op]
        self.op = op
        self.per_step = spec.per_step
        first = args[self.per_step[0]]
        options = {o.name: args[o.name] for o in spec.value_options}
        cell = primitive_cell(op, options)
        self.params: dict[str, Array] = {
            p.name: _f64(args[p.name]) for p in spec.params if p.required and p.name not in self.per_step
        }
        x = np.concatenate([_f64(args[name]) for name in self.per_step], axis=2)
        self.dtype = first.dtype
        batch, time, hidden = first.shape
        # The optional argument is h_0 (zeros when None).
        (optional,) = (p.name for p in spec.params if not p.required)
        self.initial_name = optional
        initial = np.zeros((batch, hidden)) if args[optional] is None else _f64(args[optional])
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
        grads = dict(zip(self.per_step, np.split(d_x, len(self.per_step), axis=2), strict=True))
        grads.update({name: d_params[0][name] for name in self.params})
        grads[self.initial_name] = d_initial[0]["h"]
        return round_to(grads, self.dtype)  # type: ignore[no-any-return]


def start(op: str, args: Mapping[str, Any]) -> SequenceRun | PrimitiveRun | SkipRun | ACTRun:
    """Run ``op`` forward on validated, normalised arguments: the run its record's result type asks for."""
    result = OPS[op].result
    if result is None:
        return PrimitiveRun(op, args)
    if result is ACTResult:
        return ACTRun(op, args)
    if result is SkipResult:
        return SkipRun(op, args)
    return SequenceRun(op, args)
