"""Check "inputs": no call modifies its inputs, and no result aliases them, on any backend, for any op.

The op's arguments (x, every parameter, lengths as NumPy or as the backend's
array, every initial state entry, qrnn's zoneout mask; a primitive's arrays)
and, for the reverse mode, the cotangents are copied to NumPy before the call
and compared with what they hold after it, exactly (dtype, shape, every bit
of every value, NaN included). The containers too: the same keys in the same
order, holding the very same array objects. The forward call and, where the
backend declares ``vjp``, ``Backend.vjp`` are checked. Lengths are distinct and
unsorted, so a backend that sorts the caller's ``lengths`` in place is seen.

No result aliases an input, where the framework's arrays can be written in
place (NumPy, torch): no leaf of the result (or of the gradients) is an input
object (an argument's array or, for ``Backend.vjp``, a cotangent), and filling
every leaf of the result changes no input. jax's and TensorFlow's arrays are
immutable, so a result may be an input there. A call over zero steps, whose state
is its initial state's values, is drawn too: it must return new arrays.

Shapes are fixed (only the time, options, dtype and the optional arguments are
drawn): jax compiles once per shape, and this check needs no variety of sizes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rnnspec.backend import Backend

from .assertions import flatten
from .checks_common import context, dtypes_of
from .frameworks import in_place_writer
from .strategies import draw_case

__all__: list[str] = []  # a test module: pytest collects it, nothing to import

pytestmark = pytest.mark.rnnspec_check("inputs")

#: The sizes of every case of this check (one compiled program per option set and time on jax).
SIZES: dict[str, Any] = {"batch": 4, "input_size": 3, "hidden_size": 2, "scale": 1.0}
#: The times drawn: none (the result's state is the initial state's values), and a few steps.
TIMES = (0, 5)
#: What the results are filled with, to see whether an input shares their memory.
SENTINEL = 7.0


@st.composite
def unsorted_lengths(draw: st.DrawFn, batch: int, time: int) -> tuple[int, ...]:
    """``batch`` distinct lengths in neither increasing nor decreasing order (all 0 when ``time`` is 0)."""
    if time == 0:
        return (0,) * batch
    values = draw(st.permutations(range(time + 1)))[:batch]
    if values in (sorted(values), sorted(values, reverse=True)):
        values[0], values[1] = values[1], values[0]  # now neither
    return tuple(values)


#: ``{path: (id, type, value)}`` of a tree's leaves.
Snapshot = dict[str, tuple[int, type, Any]]


def snapshot(backend: Backend, tree: Any) -> Snapshot:
    """``{path: (id, type, value)}``: each leaf's identity, and its values as a NumPy copy."""
    out = {}
    for path, leaf in flatten(tree).items():
        value = np.array(leaf) if isinstance(leaf, np.ndarray) else leaf
        if backend.implementation.is_array(leaf):
            value = np.array(backend.to_numpy(leaf))
        out[path] = (id(leaf), type(leaf), value)
    return out


def changes(before: Snapshot, after: Snapshot) -> list[str]:
    """What differs between two snapshots: replaced leaves, other dtypes, shapes or bits."""
    if list(after) != list(before):
        return [f"the containers changed: {list(before)} became {list(after)}"]
    found = []
    for path, (ident, kind, value) in before.items():
        ident_after, kind_after, value_after = after[path]
        if (ident_after, kind_after) != (ident, kind):
            found.append(f"{path}: replaced by another object")
        elif not isinstance(value, np.ndarray):
            if not (value_after is value or value_after == value):
                found.append(f"{path}: {value!r} became {value_after!r}")
        elif (value_after.dtype, value_after.shape) != (value.dtype, value.shape):
            found.append(f"{path}: {value.dtype}{value.shape} became {value_after.dtype}{value_after.shape}")
        elif value.tobytes() != value_after.tobytes():
            found.append(f"{path}: values changed, {value.ravel()[:6]} became {value_after.ravel()[:6]}")
    return found


def assert_unchanged(before: Snapshot, after: Snapshot, what: str, where: str) -> None:
    """Every leaf is the same object, of the same type, with the same dtype, shape and bits."""
    found = changes(before, after)
    assert not found, f"{what}: " + "; ".join(found) + "\n" + where


def assert_no_alias(backend: Backend, result: Any, inputs: Any, what: str, where: str) -> None:
    """Where the framework's arrays can be written in place: no leaf of ``result`` is a leaf of
    ``inputs``, and filling every array of ``result`` leaves ``inputs`` as they were. (Immutable
    arrays, jax's and TensorFlow's, may be returned as they came: nothing can tell them apart.)"""
    write = in_place_writer(backend)
    if write is None:
        return
    ids = {id(leaf): path for path, leaf in flatten(inputs).items() if backend.implementation.is_array(leaf)}
    shared = [f"{path} is {ids[id(leaf)]}" for path, leaf in flatten(result).items() if id(leaf) in ids]
    assert not shared, f"{what} returned input objects: " + "; ".join(shared) + "\n" + where
    before = snapshot(backend, inputs)
    for leaf in flatten(result).values():
        if backend.implementation.is_array(leaf):
            write(leaf, SENTINEL)
    found = changes(before, snapshot(backend, inputs))
    assert not found, f"{what} returned arrays sharing memory with its inputs: " + "; ".join(found) + "\n" + where


@given(data=st.data())
def test_no_call_modifies_its_inputs_forward_or_backward(
    rnnspec_backend: Backend, op: str, data: st.DataObject
) -> None:
    """x, params, lengths, initial state, mask and cotangents hold the same objects and bits after the call."""
    backend = rnnspec_backend
    time = data.draw(st.sampled_from(TIMES), label="time")
    lengths = data.draw(unsorted_lengths(SIZES["batch"], time), label="lengths")
    has_lengths = data.draw(st.booleans(), label="has_lengths")
    fields = {**SIZES, "time": time, "lengths": lengths if has_lengths else None, "has_lengths": has_lengths}
    spec = draw_case(data, op, dtypes=dtypes_of(backend), **fields)
    case = spec.build()
    args, kwargs = case.call_args(backend)
    if kwargs.get("lengths") is not None and data.draw(st.booleans(), label="lengths as the backend's array"):
        kwargs["lengths"] = backend.from_numpy(kwargs["lengths"])
    where = context(backend, case)
    before = snapshot(backend, (args, kwargs))
    result = getattr(backend, op)(*args, **kwargs)
    assert_unchanged(before, snapshot(backend, (args, kwargs)), "the forward call modified its arguments", where)
    cotangents = backend.from_numpy(case.cotangents(backend.to_numpy(result), seed=spec.seed + 1))
    assert_no_alias(backend, result, (args, kwargs), "the forward call", where)
    if "vjp" not in backend.implementation.capabilities:
        return
    cotangents_before = snapshot(backend, cotangents)
    grads = backend.vjp(op, cotangents, *args, **kwargs)
    assert_unchanged(before, snapshot(backend, (args, kwargs)), "Backend.vjp modified the call's arguments", where)
    assert_unchanged(cotangents_before, snapshot(backend, cotangents), "Backend.vjp modified the cotangents", where)
    assert_no_alias(backend, grads, (args, kwargs, cotangents), "Backend.vjp", where)
