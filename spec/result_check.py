"""The check of an op's result against the spec's structure and shapes.

:class:`~rnnspec.Backend` runs :func:`check_result` on what an implementation
returns, before the caller sees it, on every backend and in every mode: a
result of another type (``None``, a plain tuple), a state for another number of
layers or with other keys, or a field that is not an array of the backend or
has another shape raises :class:`~rnnspec.errors.SpecMismatchError` naming the
backend, the op, the field, what the spec expects and what came back. Values
are the conformance suite's business; a size unknown while tracing (a
TensorFlow graph) is not checked.

:func:`smoke_call` gives the small call of each op with which
``rnnspec.list_backends(check=True)`` (``rnnspec backends --check``) tries
every op of a loaded backend once.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from .errors import SpecMismatchError
from .implementation import Implementation
from .memo import Memo
from .ops import OPS, OpSpec
from .shapes import evaluate, solve
from .structure import type_name

__all__ = ["check_result", "smoke_call"]

#: How the messages name the sizes of a primitive's arrays.
_SIZE_WORDS = {"B": "batch", "T": "time"}

#: What the result of a sequence op must be, by op, shape of x, the layers' parameter shapes and options: working
#: it out costs more than a short sequence's kernel, and a model calls an op with the same shapes again and again.
#: This runs inside compiled models: a :class:`~rnnspec.memo.Memo`, which torch.compile traces through.
_PLANS: Memo[_Plan] = Memo(limit=4096)


def _known_shape(impl: Implementation, value: Any) -> tuple[int, ...] | None:
    try:
        return impl.shape(value)
    except (TypeError, ValueError):  # a size unknown while tracing (a TensorFlow graph): not checked
        return None


class _Check:
    """The check of one result: who returned it, for the messages."""

    def __init__(self, backend: str, op: str, impl: Implementation) -> None:
        self.backend = backend
        self.op = op
        self.impl = impl

    def mismatch(self, field: str, expected: str, actual: str) -> SpecMismatchError:
        return SpecMismatchError(
            f"backend {self.backend!r}: op {self.op!r} returned a result that breaks the spec: "
            f"{field}: expected {expected}, got {actual}"
        )

    def array(self, field: str, value: Any, want: tuple[int, ...] | None, sizes: str) -> None:
        shape = "" if want is None else f" of shape {want} {sizes}"
        if not self.impl.is_array(value):
            raise self.mismatch(field, f"a {self.impl.framework} array{shape}", type_name(value))
        got = _known_shape(self.impl, value)
        if want is not None and got is not None and got != want:
            raise self.mismatch(field, f"an array{shape}", f"shape {got}")


class _Plan(NamedTuple):
    """The shapes a sequence op's result must have; ``None`` where a size is not fixed by the call."""

    outputs: tuple[int, ...] | None
    #: For each layer: its state's keys, and each entry's name, shape and how the message names its sizes.
    state: tuple[tuple[list[str], tuple[tuple[str, tuple[int, ...] | None, str], ...]], ...]
    #: The shape of the other fields (batch, time).
    extras: tuple[int, int]


def _expected(shape: Sequence[str], dims: Mapping[str, int], leading: tuple[int, ...]) -> tuple[int, ...] | None:
    try:
        return (*leading, *(evaluate(e, dims) for e in shape))
    except KeyError:  # a size the parameters do not fix: the shape is not checked
        return None


def _plan(
    spec: OpSpec,
    x_shape: tuple[int, ...],
    layers: Sequence[Mapping[str, Any]],
    options: dict[str, Any],
    impl: Implementation,
) -> _Plan:
    """What the result of a validated call of ``spec`` must be."""
    shapes = tuple(tuple((name, impl.shape(array)) for name, array in layer.items()) for layer in layers)
    memo: Hashable = (spec.name, x_shape, shapes, tuple(options.items()))
    plan = _PLANS.get(memo)  # None also for an option value that is not hashable: worked out every time
    if plan is not None:
        return plan
    batch, time, input_size = x_shape[0], x_shape[1], x_shape[2]
    state = []
    dims: dict[str, int] = {}
    for k, layer_shapes in enumerate(shapes):
        top = k == len(shapes) - 1
        given = dict(layer_shapes)
        layout = spec.layer_params(top=top, options=options)
        pairs = [(e, n) for p in layout if p.name in given for e, n in zip(p.shape, given[p.name], strict=True)]
        dims = solve(pairs, {**spec.fixed_dims(options), "I": input_size})
        entries = spec.layer_state(top=top, options=options)
        state.append(
            (
                [s.name for s in entries],
                tuple((s.name, _expected(s.shape, dims, (batch,)), f"(batch, {', '.join(s.shape)})") for s in entries),
            )
        )
        input_size = dims.get("H", -1)
    plan = _Plan(_expected(("H",), dims, (batch, time)), tuple(state), (batch, time))
    return _PLANS.put(memo, plan)


def check_result(backend: str, op: str, arguments: Mapping[str, Any], result: Any, impl: Implementation) -> None:
    """Raise :class:`SpecMismatchError` if ``result`` breaks the structure or shapes the spec gives ``op``.

    Parameters
    ----------
    backend
        The backend's name, for the message.
    op
        The op's name.
    arguments
        The normalised arguments the implementation was called with (already validated).
    result
        What the implementation returned.
    impl
        The implementation, for its array adapters.
    """
    spec = OPS[op]
    check = _Check(backend, op, impl)
    cls = spec.result
    if cls is None:
        # The result is h, of the shape of the first array argument: (B, T, H).
        first = spec.params[0]
        want = _known_shape(impl, arguments[first.name])
        sizes = "(" + ", ".join(_SIZE_WORDS.get(e, e) for e in first.shape) + ")"
        check.array("result", result, want, sizes)
        return
    if not isinstance(result, cls):
        raise check.mismatch("result", f"a {cls.__name__} ({', '.join(cls._fields)})", type_name(result))
    options = {o.name: arguments.get(o.name, o.default) for o in spec.value_options}
    layers = arguments["params"]
    plan = _plan(spec, impl.shape(arguments["x"]), layers, options, impl)
    check.array("result.outputs", result.outputs, plan.outputs, "(batch, time, H)")
    state: Any = result.state  # typed as the spec says; what came back may be anything
    count = len(plan.state)
    expected = f"a sequence of {count} layer states (one per layer)"
    if not isinstance(state, Sequence) or isinstance(state, (str, bytes)):
        raise check.mismatch("result.state", expected, type_name(state))
    if len(state) != count:
        raise check.mismatch("result.state", expected, f"a sequence of length {len(state)}")
    for k, (entry, (names, entries)) in enumerate(zip(state, plan.state, strict=True)):
        where = f"result.state[{k}]"
        if not isinstance(entry, Mapping) or set(entry) != set(names):
            got = f"keys {sorted(entry, key=str)}" if isinstance(entry, Mapping) else type_name(entry)
            raise check.mismatch(where, f"a mapping with keys {names}", got)
        for name, want, sizes in entries:
            check.array(f"{where}[{name!r}]", entry[name], want, sizes)
    for field in spec.result_fields[2:]:
        check.array(f"result.{field}", getattr(result, field), plan.extras, "(batch, time)")


def smoke_call(op: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """A small valid call of ``op``, as NumPy float32 arrays: its positional arguments, and its keywords.

    Two layers where the op stacks them, sizes the init options fix at 2 (qrnn's
    window, so that its state ``x_prev`` is not empty), every option at its default;
    the keywords are the required array options (Phased LSTM's ``timestamps``: the
    step numbers), and nothing else.
    """
    from .init import init_params  # here: init imports nothing of the backends, but this module is imported early

    spec = OPS[op]
    rng = np.random.default_rng(0)
    if spec.kind == "primitive":
        dims = {"B": 2, "T": 3, "H": 4}
        arrays = tuple(
            rng.uniform(0.1, 0.9, size=[evaluate(e, dims) for e in p.shape]).astype(np.float32)
            for p in spec.params
            if p.required
        )
        return arrays, {}
    layers = min(2, spec.max_layers or 2)
    init_options: dict[str, Any] = {name: 2 for name in spec.init_sizes.values()}
    params = init_params(op, input_size=3, hidden_size=4, num_layers=layers, **init_options)
    x = rng.standard_normal((2, 3, 3)).astype(np.float32)
    dims = {"B": 2, "T": 3}
    keywords = {
        o.name: np.broadcast_to(np.arange(3, dtype=np.float32), [evaluate(e, dims) for e in o.shape]).copy()
        for o in spec.array_options
        if o.required
    }
    return (x, params), keywords
