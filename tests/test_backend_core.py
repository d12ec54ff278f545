"""The framework-free backend core (``rnnspec.backends.common``), on NumPy arrays.

The core is what every framework backend shares, driven by the op records: the
op table, the split of a call's options, layer sizes through the shape solver,
start states, the stack of layers, each layer's array options and the
primitives' driver. Here it runs on a NumPy :class:`ArrayOps` and is compared
with the reference, so a bug in it shows up without any framework installed.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rnnspec
from rnnspec.backends.common import state as core
from rnnspec.backends.common.arrays import ArrayOps
from rnnspec.backends.common.ops import SequenceCall, sequence_function
from rnnspec.ops import OPS
from rnnspec.reference import reverse_valid

ROOT = Path(__file__).resolve().parents[1]
FRAMEWORKS = ("torch", "jax", "tensorflow")
REFERENCE = rnnspec.get_backend("numpy")


class _Lengths:
    """Normalised lengths as the core sees them: ``valid()`` and ``values``."""

    def __init__(self, lengths: Any, batch: int, time: int) -> None:
        self.values = np.full(batch, time) if lengths is None else np.asarray(lengths, dtype=np.int64)
        self.time = time

    def valid(self) -> np.ndarray:
        return np.arange(self.time)[None, :] < self.values[:, None]


def _reverse(a: np.ndarray, lengths: _Lengths) -> np.ndarray:
    return np.asarray(reverse_valid(a, lengths.values))


NUMPY_OPS = ArrayOps(
    is_array=lambda value: isinstance(value, np.ndarray),
    lengths=lambda lengths, x: _Lengths(lengths, x.shape[0], x.shape[1]),
    filled=lambda x, tail, value: np.full((x.shape[0], *tail), value, x.dtype),
    broadcast=lambda x, p, tail: np.broadcast_to(p, (x.shape[0], *tail)),
    reverse_valid=_reverse,
    clip_lengths=lambda lengths, start, width: np.clip(lengths - start, 0, width),
    concat=lambda pieces: np.concatenate(pieces, axis=1),
    final_state=lambda h, lengths, carry, reverse: h[:, 0] if reverse else h[:, -1],
)


def _defined_names(path: Path) -> set[str]:
    """The names a module binds at its top level (functions and assignments), read without importing it."""
    names: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("op", list(OPS))
def test_every_record_names_a_module_of_each_framework_with_the_function_the_core_calls(
    framework: str, op: str
) -> None:
    spec = OPS[op]
    path = ROOT / "backends" / framework / f"{spec.module_name}.py"
    assert path.exists(), f"{op}'s record names module {spec.module_name!r}, which {framework} lacks"
    wanted = op if spec.kind == "primitive" else "run"
    assert wanted in _defined_names(path), f"{path.relative_to(ROOT)} defines no {wanted!r} for {op}"


def test_the_op_function_splits_the_value_and_array_options_as_the_record_declares() -> None:
    calls: list[SequenceCall] = []
    fn = sequence_function(OPS["qrnn"], calls.append)
    fn(x="x", params=["p"], lengths=None, initial_state=None, reverse=True, mode="ifo", zoneout_mask="m")
    (call,) = calls
    assert call.op == "qrnn"
    assert (call.x, call.params, call.reverse) == ("x", ["p"], True)
    assert dict(call.options) == {"mode": "ifo"}
    assert dict(call.arrays) == {"zoneout_mask": "m", "dropout_mask": None}


def test_an_array_option_left_out_reaches_the_op_as_none() -> None:
    calls: list[SequenceCall] = []
    sequence_function(OPS["qrnn"], calls.append)(
        x=0, params=[], lengths=None, initial_state=None, reverse=False, mode="f"
    )
    assert dict(calls[0].arrays) == {"zoneout_mask": None, "dropout_mask": None}


def test_the_op_function_refuses_a_keyword_its_record_does_not_declare() -> None:
    fn = sequence_function(OPS["lstm"], lambda call: call)
    with pytest.raises(TypeError, match="activation"):
        fn(x=0, params=[], lengths=None, initial_state=None, reverse=False, activation="tanh")


@pytest.mark.parametrize("op", [op for op, spec in OPS.items() if spec.kind == "sequence"])
def test_layer_sizes_are_read_off_the_params_by_the_shape_solver(op: str) -> None:
    extra = {"window": 3} if op == "qrnn" else {}
    layers = 1 if OPS[op].max_layers == 1 else 2
    params = rnnspec.init_params(op, input_size=4, hidden_size=6, num_layers=layers, seed=0, **extra)
    for k, p in enumerate(params):
        dims = core.layer_dims(op, p, {}, top=k == len(params) - 1)
        assert dims["H"] == 6
        assert dims["I"] == (4 if k == 0 else 6)
        if op == "qrnn":
            assert dims["K"] == 3


@pytest.mark.parametrize("op", ["lstm", "skip_lstm", "qrnn", "act"])
def test_the_start_state_is_the_references(op: str) -> None:
    """Zeros, Skip RNN's update_prob of one and a learnt h0/c0, in the shapes of the record's state."""
    extra = {"window": 3} if op == "qrnn" else {"trainable_initial_state": True} if op == "skip_lstm" else {}
    layers = 1 if OPS[op].max_layers == 1 else 2
    params = rnnspec.init_params(op, input_size=4, hidden_size=5, num_layers=layers, seed=1, dtype="float64", **extra)
    if op == "skip_lstm":
        params = [{**p, "h0": p["h0"] + 0.5, "c0": p["c0"] - 0.25} for p in params]
    x = np.zeros((3, 0, 4))  # no step: the final state is the start state
    options = {o.name: o.default for o in OPS[op].value_options}
    got = core.start_state(op, x, params, options, NUMPY_OPS)
    want = getattr(REFERENCE, op)(x, params).state
    assert [sorted(s) for s in got] == [sorted(s) for s in want]
    for k, (mine, theirs) in enumerate(zip(got, want, strict=True)):
        for name in theirs:
            np.testing.assert_array_equal(mine[name], theirs[name], err_msg=f"layer {k} {name}")


def test_each_layer_gets_its_own_mask_reversed_with_its_steps() -> None:
    rng = np.random.default_rng(0)
    masks = [rng.integers(0, 2, (2, 5, 3)).astype(np.float64) for _ in range(2)]
    lengths = np.array([5, 2])
    call = SequenceCall(
        "qrnn", np.zeros((2, 5, 4)), [{}, {}], lengths, None, True, {"mode": "f"}, {"zoneout_mask": masks}
    )
    got = core.layer_arrays(call, _Lengths(lengths, 2, 5), NUMPY_OPS)
    for k in range(2):
        np.testing.assert_array_equal(got[k]["zoneout_mask"], np.asarray(reverse_valid(masks[k], lengths)))


def test_layers_get_none_for_an_array_option_the_caller_left_out() -> None:
    call = SequenceCall("qrnn", np.zeros((2, 5, 4)), [{}, {}], None, None, True, {"mode": "f"}, {"zoneout_mask": None})
    none = {"zoneout_mask": None, "dropout_mask": None}
    assert core.layer_arrays(call, _Lengths(None, 2, 5), NUMPY_OPS) == [none, none]


def _linear_scan(a: np.ndarray, b: np.ndarray, h0: np.ndarray, valid: np.ndarray | None) -> tuple[Any, Any]:
    h, out = h0, []
    for t in range(a.shape[1]):
        new = a[:, t] * h + b[:, t]
        keep = np.ones(len(h0), bool) if valid is None else valid[:, t]
        h = np.where(keep[:, None], new, h)
        out.append(np.where(keep[:, None], new, 0.0))
    return np.stack(out, 1), h


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("initial", [None, "given"])
def test_the_primitive_driver_over_a_plain_scan_is_the_reference(reverse: bool, initial: str | None) -> None:
    rng = np.random.default_rng(2)
    a, b = rng.uniform(0, 1, (3, 6, 4)), rng.standard_normal((3, 6, 4))
    h0 = rng.standard_normal((3, 4)) if initial else None
    lengths = np.array([6, 2, 0])
    fn = core.linear_recurrence(_linear_scan, NUMPY_OPS)
    got = fn(a=a, b=b, initial=h0, lengths=lengths, reverse=reverse)
    want = REFERENCE.linear_recurrence(a, b, h0, lengths=lengths, reverse=reverse)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_the_stack_runs_each_layer_on_the_outputs_of_the_one_below_and_reverses_around_it() -> None:
    seen: list[np.ndarray] = []

    def layer(inp: np.ndarray, state: dict[str, Any], lengths: Any) -> tuple[np.ndarray, dict[str, Any]]:
        seen.append(inp)
        return inp + 1.0, {"h": state["h"] + 1.0}

    x = np.arange(6, dtype=np.float64).reshape(1, 6, 1)
    lengths = _Lengths(np.array([4]), 1, 6)
    initial: list[Mapping[str, Any]] = [{"h": np.zeros((1, 1))}, {"h": np.ones((1, 1))}]
    outputs, finals = core.run_stack([layer, layer], x, lengths, initial, True, NUMPY_OPS)
    np.testing.assert_array_equal(seen[0][0, :, 0], [3, 2, 1, 0, 4, 5])  # the valid prefix reversed
    np.testing.assert_array_equal(seen[1], seen[0] + 1.0)
    np.testing.assert_array_equal(outputs, x + 2.0)  # reversed back
    assert [float(f["h"][0, 0]) for f in finals] == [1.0, 2.0]
