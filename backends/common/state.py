"""Layer sizes, start states and the stack of layers, for every sequence op of every framework.

Everything here reads the op's record: a layer's sizes come from its params
through the spec's shape solver (:func:`rnnspec.shapes.solve`), its state
entries and their shapes from :meth:`~rnnspec.ops.OpSpec.layer_state`. The
framework's arrays are made through its :class:`~.arrays.ArrayOps`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rnnspec.memo import Memo
from rnnspec.ops import OPS
from rnnspec.results import SequenceResult
from rnnspec.shapes import evaluate, solve

from .arrays import ArrayOps
from .ops import SequenceCall

__all__ = [
    "LayerFn",
    "Scan",
    "between_layer_masks",
    "indrnn_layer",
    "indrnn_recurrence",
    "initial_states",
    "layer_arrays",
    "layer_dims",
    "linear_recurrence",
    "masked_input",
    "run_layers",
    "run_recurrence",
    "run_stack",
    "start_state",
]

#: One layer of a stack: (its input, its initial state, the lengths) -> (its outputs, its final state).
LayerFn = Callable[[Any, dict[str, Any], Any], tuple[Any, dict[str, Any]]]


#: Sizes solved by op, layer, shapes and value options: a model calls an op with the same shapes again
#: and again (the spec's validation keeps its own the same way).
_DIMS: Memo[dict[str, int]] = Memo(limit=4096)


def layer_dims(op: str, p: Mapping[str, Any], options: Mapping[str, Any], *, top: bool = True) -> dict[str, int]:
    """A layer's sizes (``H``, ``I``, ``K``, ...) read off its params' static shapes by the shape solver."""
    spec = OPS[op]
    shapes = tuple((name, tuple(int(d) for d in p[name].shape)) for name in p)
    values = tuple((o.name, options.get(o.name)) for o in spec.value_options)
    key = (op, top, shapes, values)
    dims = _DIMS.get(key)
    if dims is None:
        found = dict(shapes)
        pairs = [
            (expr, size)
            for param in spec.layer_params(top=top, options=options)
            if param.name in found
            for expr, size in zip(param.shape, found[param.name], strict=True)
        ]
        dims = _DIMS.put(key, solve(pairs, spec.fixed_dims(options)))
    return dict(dims)


def start_state(
    op: str, x: Any, params: Sequence[Mapping[str, Any]], options: Mapping[str, Any], ops: ArrayOps
) -> tuple[dict[str, Any], ...]:
    """The state a sequence op starts from when the caller passes none: each entry's ``start`` of its
    record (zero; Skip RNN's ``update_prob`` one), or the learnt ``h0``/``c0`` when the params hold them
    (``<entry>0``).

    Built from the params, so the framework's autodiff reaches ``h0``/``c0`` through it.
    """
    spec = OPS[op]
    states = []
    for k, p in enumerate(params):
        top = k == len(params) - 1
        dims = layer_dims(op, p, options, top=top)
        layer = {}
        for entry in spec.layer_state(top=top, options=options):
            tail = tuple(evaluate(e, dims) for e in entry.shape)
            if f"{entry.name}0" in p:
                layer[entry.name] = ops.broadcast(x, p[f"{entry.name}0"], tail)
            else:
                layer[entry.name] = ops.filled(x, tail, entry.start)
        states.append(layer)
    return tuple(states)


def initial_states(
    op: str,
    x: Any,
    params: Sequence[Mapping[str, Any]],
    options: Mapping[str, Any],
    initial_state: Sequence[Mapping[str, Any]] | None,
    ops: ArrayOps,
) -> tuple[dict[str, Any], ...]:
    """The caller's initial state, one dict per layer, or the op's :func:`start_state` when it is None."""
    if initial_state is None:
        return start_state(op, x, params, options, ops)
    return tuple({k: ops.carried(v) for k, v in s.items()} for s in initial_state)


def run_stack(
    layers: Sequence[LayerFn],
    x: Any,
    lengths: Any,
    initial: Sequence[Mapping[str, Any]],
    reverse: bool,
    ops: ArrayOps,
) -> tuple[Any, tuple[dict[str, Any], ...]]:
    """Run the layers bottom to top, each reading the outputs of the one below.

    ``reverse=True`` reverses each row's valid prefix before the first layer and
    the outputs back after the last, as the reference does.
    """
    inp = ops.reverse_valid(x, lengths) if reverse else x
    finals = []
    for layer, state in zip(layers, initial, strict=True):  # over layers, not time
        inp, final = layer(inp, dict(state), lengths)
        finals.append(final)
    outputs = ops.reverse_valid(inp, lengths) if reverse else inp
    return outputs, tuple(finals)


def layer_arrays(call: SequenceCall, lengths: Any, ops: ArrayOps) -> list[dict[str, Any]]:
    """Each layer's array options (qrnn's ``zoneout_mask``, Phased LSTM's ``timestamps``): layer k's of the
    sequence of one per layer that the :class:`~rnnspec.Backend` hands (for an option that is not
    ``per_layer``, the same array for every layer), or the one array an unvalidated call passes; with each
    row's valid prefix reversed for ``reverse=True`` when it holds one entry per step, so that it lines up
    with the time axis the layer sees. An option of one array per boundary between layers (``dropout_mask``)
    gives layer k > 0 the array of the boundary below it, and layer 0 None. None where the caller gave none."""
    per_step = OPS[call.op].per_step
    arrays: list[dict[str, Any]] = [{} for _ in call.params]
    for option in OPS[call.op].array_options:
        value = call.arrays.get(option.name)
        for k, layer in enumerate(arrays):
            if option.between_layers and k == 0:
                layer[option.name] = None
                continue
            below = k - 1 if option.between_layers else k
            mine = value[below] if isinstance(value, (list, tuple)) else value
            if mine is not None and call.reverse and option.name in per_step:
                mine = ops.reverse_valid(ops.carried(mine), lengths)
            layer[option.name] = mine
    return arrays


def run_layers(
    call: SequenceCall, make_layer: Callable[[Mapping[str, Any], dict[str, Any]], LayerFn], ops: ArrayOps
) -> SequenceResult:
    """A stacked sequence op whose layers run one after another (rnn, lstm, gru, indrnn, qrnn):
    ``make_layer(params[k], arrays[k])`` is layer k's function, given its params and its array options
    (:func:`layer_arrays`); the result is the top layer's outputs and every layer's final state."""
    lengths = ops.lengths(call.lengths, call.x)
    options = {**call.options, **call.arrays}
    initial = initial_states(call.op, call.x, call.params, options, call.initial_state, ops)
    arrays = layer_arrays(call, lengths, ops)
    between = between_layer_masks(call.op)
    layers = [masked_input(make_layer(p, a), [a[n] for n in between]) for p, a in zip(call.params, arrays, strict=True)]
    outputs, state = run_stack(layers, call.x, lengths, initial, call.reverse, ops)
    return SequenceResult(outputs, state)


def between_layer_masks(op: str) -> tuple[str, ...]:
    """The array options of ``op`` that multiply the input of each layer above the first (``dropout_mask``)."""
    return tuple(o.name for o in OPS[op].array_options if o.between_layers)


def masked_input(layer: LayerFn, masks: Sequence[Any]) -> LayerFn:
    """``layer`` reading its input times every mask given (None: not given), as the between-layer dropout
    masks ask (:func:`layer_arrays` gives them aligned with the time axis the layer sees)."""
    given = [m for m in masks if m is not None]
    if not given:
        return layer

    def run(inp: Any, state: dict[str, Any], lengths: Any) -> tuple[Any, dict[str, Any]]:
        for mask in given:
            inp = inp * mask
        return layer(inp, state, lengths)

    return run


def run_recurrence(
    scan: Callable[..., tuple[Any, Any]],
    inputs: Sequence[Any],
    initial: Any,
    lengths: Any,
    reverse: bool,
    ops: ArrayOps,
) -> Any:
    """A primitive recurrence (``linear_recurrence``, ``indrnn_recurrence``): ``scan(*inputs, h0, valid)``
    over the per-step ``inputs`` (``(batch, time, H)``), from ``initial`` (None: zeros), returning ``h``.

    ``reverse=True`` runs each row's valid prefix backwards, as the sequence ops do.
    """
    first = inputs[0]
    norm = ops.lengths(lengths, first)
    h0 = ops.filled(first, (int(first.shape[2]),), 0.0) if initial is None else ops.carried(initial)
    steps = [ops.reverse_valid(a, norm) for a in inputs] if reverse else list(inputs)
    h, _ = scan(*steps, h0, norm.valid())
    return ops.reverse_valid(h, norm) if reverse else h


#: A framework's scan of a primitive: ``(*per-step inputs, h0, valid) -> (h, final h)``.
Scan = Callable[..., tuple[Any, Any]]


def linear_recurrence(scan: Scan, ops: ArrayOps) -> Callable[..., Any]:
    """The op function of ``linear_recurrence`` (``h_t = a_t * h_{t-1} + b_t``) over a framework's
    ``scan(a, b, h0, valid)``."""

    def linear_recurrence(*, a: Any, b: Any, initial: Any, lengths: Any, reverse: bool) -> Any:
        return run_recurrence(scan, [a, b], initial, lengths, reverse, ops)

    return linear_recurrence


def indrnn_recurrence(scan: Scan, ops: ArrayOps) -> Callable[..., Any]:
    """The op function of ``indrnn_recurrence`` (``h_t = act(pre_t + u * h_{t-1})``) over a framework's
    ``scan(pre, u, h0, activation, valid)``."""

    def indrnn_recurrence(*, pre: Any, u: Any, initial: Any, activation: str, lengths: Any, reverse: bool) -> Any:
        def scan_pre(steps: Any, h0: Any, valid: Any) -> tuple[Any, Any]:
            return scan(steps, u, h0, activation, valid)

        return run_recurrence(scan_pre, [pre], initial, lengths, reverse, ops)

    return indrnn_recurrence


def indrnn_layer(p: Mapping[str, Any], activation: str, linear: Callable[[Any, Any, Any], Any], scan: Scan) -> LayerFn:
    """One layer of indrnn: its input projection over every step at once (the framework's ``linear``), then
    the elementwise recurrence over time (the framework's ``scan(pre, u, h0, activation, valid)``)."""

    def run(inp: Any, state: dict[str, Any], lengths: Any) -> tuple[Any, dict[str, Any]]:
        pre = linear(inp, p["w_ih"], p["b_ih"])
        h, final = scan(pre, p["u"], state["h"], activation, lengths.valid())
        return h, {"h": final}

    return run
