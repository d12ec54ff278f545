"""Check "properties": metamorphic properties of the backend, on the backend alone.

Each property runs the backend twice (or more) on related calls and compares
the backend with itself within the value tolerance, so it holds a backend to
the spec's conventions even where the reference cannot tell what went wrong:

- chunked == whole: a sequence split at a drawn step and run in two calls, the
  state carried (for ``reverse=True`` the later chunk runs first and its state
  feeds the earlier one), equals the whole run;
- reverse == flipping each row's valid prefix, running forward and flipping back
  (with a clock held still along each row, so that flipped timestamps do not go back);
- the padding past each row's length is never read (changing it, or putting
  a NaN there, changes nothing) and its outputs are zero;
- rows are independent: each row run alone equals its row of the batch;
- skip ops with the gate forced open equal their base op;
- act's ponder fields are consistent;
- qrnn's pooling equals the backend's own ``linear_recurrence``.

Each property is its own test, so one failure does not hide the others; a
property that does not apply to an op skips with the reason.
"""

from __future__ import annotations

__all__: list[str] = []  # a test module: pytest collects it, nothing to import

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from rnnspec.backend import Backend
from rnnspec.ops import OPS, QRNN_GATES
from rnnspec.tree import tree_leaves, tree_map

from .assertions import assert_tree_close
from .cases import Case, CaseSpec
from .checks_common import SIZES, context, dtypes_of, flip_valid, full_lengths, needs_vjp, wide_margin
from .plugin import targeted_examples
from .strategies import draw_case
from .tolerances import Tolerance, tolerance

pytestmark = pytest.mark.rnnspec_check("properties")

#: The positions of a primitive's (batch, time, H) array arguments: its record's per-step arguments.
_PRIMITIVE_TIME_ARGS = {
    name: tuple(i for i, p in enumerate(spec.params) if p.name in spec.per_step)
    for name, spec in OPS.items()
    if spec.kind == "primitive"
}


# -- rewriting a case's call ------------------------------------------------------


def _primitive(case: Case) -> bool:
    return _primitive_op(case.spec.op)


def _primitive_op(op: str) -> bool:
    return OPS[op].kind == "primitive"


def _with(case: Case, *, args: dict[int, Any] | None = None, **kwargs: Any) -> Case:
    """A copy of ``case`` with some positional arguments and keywords replaced."""
    new_args = list(case.args)
    for i, value in (args or {}).items():
        new_args[i] = value
    return Case(case.spec, tuple(new_args), {**case.kwargs, **kwargs})


def _map_time(
    case: Case, fn: Callable[[np.ndarray], np.ndarray], mask_fn: Callable[[np.ndarray], np.ndarray] | None = None
) -> Case:
    """Apply ``fn`` to every (batch, time, ...) array of the call: x (a, b / pre), and ``mask_fn``
    (``fn`` by default) to the per-step array options of a set of values (qrnn's zoneout mask)."""
    if _primitive(case):
        return _with(case, args={i: fn(case.args[i]) for i in _PRIMITIVE_TIME_ARGS[case.spec.op]})
    spec = OPS[case.spec.op]
    changes: dict[str, Any] = {}
    for opt in spec.array_options:
        if opt.name in spec.per_step and case.kwargs.get(opt.name) is not None:
            changes[opt.name] = tree_map(mask_fn or fn if opt.values is not None else fn, case.kwargs[opt.name])
    return _with(case, args={0: fn(case.args[0])}, **changes)


def _still_clocks(case: Case) -> Case:
    """``case`` with every array option that may not decrease along time (Phased LSTM's timestamps) held at
    each row's first value: flipped, it is still valid."""
    changes: dict[str, Any] = {
        o.name: np.repeat(case.kwargs[o.name][:, :1], case.kwargs[o.name].shape[1], axis=1)
        for o in OPS[case.spec.op].array_options
        if o.nondecreasing and case.kwargs.get(o.name) is not None
    }
    return _with(case, **changes) if changes else case


def _initial(case: Case) -> Any:
    """The call's initial state: ``initial_state`` (sequence ops) or ``initial`` (primitives)."""
    return case.args[2] if _primitive(case) else case.kwargs.get("initial_state")


def _with_initial(case: Case, initial: Any) -> Case:
    return _with(case, args={2: initial}) if _primitive(case) else _with(case, initial_state=initial)


def _map_rows(case: Case, rows: slice) -> Case:
    """The call restricted to the batch rows ``rows``."""
    new = _map_time(case, lambda a: a[rows])
    spec = OPS[case.spec.op]
    per_row = {  # the array options over rows but not steps (a recurrent dropout mask)
        o.name: tree_map(lambda a: a[rows], case.kwargs[o.name])
        for o in spec.array_options
        if o.shape[:1] == ("B",) and o.name not in spec.per_step and case.kwargs.get(o.name) is not None
    }
    new = _with(new, **per_row) if per_row else new
    if case.kwargs.get("lengths") is not None:
        new = _with(new, lengths=np.asarray(case.kwargs["lengths"])[rows])
    return _with_initial(new, tree_map(lambda a: a[rows], _initial(case)))


# -- reading results ----------------------------------------------------------------


def _per_step(result: Any) -> dict[str, np.ndarray]:
    """The result's (batch, time, ...) fields by name: everything but the state."""
    if isinstance(result, np.ndarray):
        return {"h": result}
    return {name: value for name, value in result._asdict().items() if name != "state"}


def _final_state(case: Case, result: Any, lengths: np.ndarray) -> Any:
    """The state after the call: ``result.state``, or a primitive's h at each row's last valid step."""
    if not _primitive(case):
        return result.state
    batch, _, hidden = result.shape
    initial = _initial(case)
    carry = np.zeros((batch, hidden), dtype=result.dtype) if initial is None else np.array(initial)
    for r in range(batch):
        if lengths[r] > 0:
            carry[r] = result[r, 0] if case.kwargs["reverse"] else result[r, lengths[r] - 1]
    return carry


def _whole(case: Case, result: Any) -> dict[str, Any]:
    """What a property compares: every per-step field, and the final state."""
    return {**_per_step(result), "state": _final_state(case, result, full_lengths(case))}


def _value_tolerance(case: Case) -> Tolerance:
    return tolerance(case.spec.dtype, steps=case.spec.steps)


def _gradient_tolerance(case: Case) -> Tolerance:
    return tolerance(case.spec.dtype, steps=case.spec.steps, kind="gradient")


def _finite(result: Any) -> bool:
    return all(np.isfinite(np.asarray(leaf, dtype=np.float64)).all() for leaf in tree_leaves(result))


# -- the properties -----------------------------------------------------------------


@given(data=st.data())
def test_chunked_equals_whole(rnnspec_backend: Backend, op: str, data: st.DataObject) -> None:
    """Two chunks with the state carried equal one call (the chunked run of sequence.md)."""
    spec = draw_case(data, op, dtypes=dtypes_of(rnnspec_backend))
    case = spec.build()
    assume(wide_margin(case))
    whole = case.run(rnnspec_backend)
    # A state that overflows the dtype cannot be carried between calls.
    assume(_finite(whole))
    split = data.draw(st.integers(0, spec.time), label="split")
    lengths, reverse = full_lengths(case), spec.reverse
    given_lengths = case.kwargs.get("lengths") is not None

    def chunk(start: int, stop: int) -> tuple[Case, np.ndarray]:
        own = np.clip(lengths - start, 0, stop - start)
        part = _map_time(case, lambda a: a[:, start:stop])
        return _with(part, lengths=own if given_lengths else None), own

    first, second = chunk(0, split), chunk(split, spec.time)
    # Forward: the earlier chunk runs first; reverse: the later one, and its state feeds the earlier.
    (run_1, lengths_1), (run_2, lengths_2) = (second, first) if reverse else (first, second)
    out_1 = run_1.run(rnnspec_backend)
    carried = _final_state(run_1, out_1, lengths_1)
    run_2 = _with_initial(run_2, carried)
    out_2 = run_2.run(rnnspec_backend)
    early, late = (out_2, out_1) if reverse else (out_1, out_2)
    got = {
        **{name: np.concatenate([a, _per_step(late)[name]], axis=1) for name, a in _per_step(early).items()},
        "state": _final_state(run_2, out_2, lengths_2),
    }
    assert_tree_close(
        got,
        _whole(case, whole),
        _value_tolerance(case),
        context=f"chunked at step {split} of {spec.time}\n" + context(rnnspec_backend, case),
    )


@given(data=st.data())
def test_reverse_equals_flipped_forward(rnnspec_backend: Backend, op: str, data: st.DataObject) -> None:
    """reverse=True equals flipping each row's valid prefix, running forward and flipping back."""
    spec = draw_case(data, op, dtypes=dtypes_of(rnnspec_backend), reverse=True)
    case = _still_clocks(spec.build())
    assume(wide_margin(case))
    lengths = full_lengths(case)
    got = _whole(case, case.run(rnnspec_backend))
    # qrnn's zoneout mask is flipped with x: it stays aligned with the input it gates.
    forward = _with(_map_time(case, lambda a: flip_valid(a, lengths)), reverse=False)
    flipped = forward.run(rnnspec_backend)
    want = {name: flip_valid(a, lengths) for name, a in _per_step(flipped).items()}
    want["state"] = _final_state(forward, flipped, lengths)
    assert_tree_close(
        got,
        want,
        _value_tolerance(case),
        context="reverse=True vs reverse=False on each row's flipped valid prefix\n" + context(rnnspec_backend, case),
    )


@given(data=st.data())
def test_padding_is_never_read(rnnspec_backend: Backend, op: str, data: st.DataObject) -> None:
    """Changing x (and qrnn's mask) past each row's length changes nothing; padded outputs are zero."""
    spec = draw_case(data, op, dtypes=dtypes_of(rnnspec_backend), has_lengths=True)
    case = spec.build()
    lengths = full_lengths(case)
    assume(bool((lengths < spec.time).any()))
    rng = np.random.default_rng(spec.seed + 2)

    def pad_of(a: np.ndarray) -> np.ndarray:
        return (np.arange(a.shape[1])[None, :] >= lengths[:, None]).reshape(a.shape[:2] + (1,) * (a.ndim - 2))

    def repad(a: np.ndarray) -> np.ndarray:
        return np.where(pad_of(a), 3.0 * rng.standard_normal(a.shape) + 1.0, a).astype(a.dtype)

    def flip_mask(a: np.ndarray) -> np.ndarray:  # a zoneout mask stays in [0, 1]
        return np.where(pad_of(a), 1.0 - a, a).astype(a.dtype)

    changed = _map_time(case, repad, flip_mask)
    where = "padding past each row's length changed\n" + context(rnnspec_backend, case)
    base = case.run(rnnspec_backend)
    other = changed.run(rnnspec_backend)
    padded = np.arange(spec.time)[None, :] >= lengths[:, None]
    for label, result in (("original", base), ("changed", other)):
        for name, a in _per_step(result).items():
            leak = np.asarray(a)[padded]
            assert not leak.any(), f"{label} padding: {name} is not zero past the row's length: {leak}\n{where}"
    assert_tree_close(_whole(changed, other), _whole(case, base), _value_tolerance(case), context=where)


def _poisoned_padding_case(op: str, data: st.DataObject) -> tuple[CaseSpec, CaseSpec]:
    """A drawn case with padding, and the same case with a NaN or an infinity in one padded step."""
    row = data.draw(st.integers(0, SIZES["batch"] - 1), label="row")
    lengths = data.draw(st.lists(st.integers(0, SIZES["time"]), min_size=SIZES["batch"], max_size=SIZES["batch"]))
    lengths[row] = data.draw(st.integers(0, SIZES["time"] - 1), label="length of the row")
    spec = draw_case(data, op, dtypes=("float32",), **SIZES, lengths=tuple(lengths), has_lengths=True)
    step = data.draw(st.integers(lengths[row], SIZES["time"] - 1), label="step")
    features = SIZES["hidden_size"] if _primitive_op(op) else SIZES["input_size"]
    unit = data.draw(st.integers(0, features - 1), label="feature")
    poison = data.draw(st.sampled_from(("nan", "inf", "-inf")), label="poison")
    return spec, spec.with_(nan_at=(row, step, unit), poison=poison)


@given(data=st.data())
def test_a_nan_in_the_padding_changes_nothing(rnnspec_backend: Backend, op: str, data: st.DataObject) -> None:
    """A NaN or an infinity past a row's length is never read: the result equals the call without it."""
    spec, poisoned = _poisoned_padding_case(op, data)
    clean, nan = spec.build(), poisoned.build()
    where = "the same call without the NaN: " + repr(spec) + "\n" + context(rnnspec_backend, nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NumPy's invalid-value warnings, should the NaN be read
        got = nan.run(rnnspec_backend)
    assert_tree_close(got, clean.run(rnnspec_backend), _value_tolerance(clean), context=where)


# Targeted: each drawn call compiles again on jit backends, and a few cases cover the three poisons.
@settings(max_examples=targeted_examples())
@given(data=st.data())
def test_a_nan_in_the_padding_reaches_no_gradient(rnnspec_backend: Backend, op: str, data: st.DataObject) -> None:
    """A NaN or an infinity past a row's length reaches no cotangent: the reverse mode equals the call's
    without it, and the cotangent of the padded steps of the input is zero."""
    needs_vjp(rnnspec_backend)
    spec, poisoned = _poisoned_padding_case(op, data)
    clean, nan = spec.build(), poisoned.build()
    cotangents = clean.cotangents(clean.run(rnnspec_backend), spec.seed + 1)
    where = "the same call without the NaN: " + repr(spec) + "\n" + context(rnnspec_backend, nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        got = nan.vjp(rnnspec_backend, cotangents)
    assert_tree_close(got, clean.vjp(rnnspec_backend, cotangents), _gradient_tolerance(clean), context=where)


@given(data=st.data())
def test_rows_are_independent(rnnspec_backend: Backend, op: str, data: st.DataObject) -> None:
    """Each row run alone equals its row of the batched call."""
    batch = data.draw(st.integers(2, 3), label="batch")
    spec = draw_case(data, op, dtypes=dtypes_of(rnnspec_backend), batch=batch)
    case = spec.build()
    assume(wide_margin(case))
    batched = _whole(case, case.run(rnnspec_backend))
    alone = []
    for r in range(batch):
        row = _map_rows(case, slice(r, r + 1))
        alone.append(_whole(row, row.run(rnnspec_backend)))
    assert_tree_close(
        _stack_rows(alone),
        batched,
        _value_tolerance(case),
        context="each row run alone\n" + context(rnnspec_backend, case),
    )


def _stack_rows(rows: list[Any]) -> Any:
    """Concatenate results of single rows along the batch axis, leaf by leaf."""
    first = rows[0]
    if isinstance(first, dict):
        return {k: _stack_rows([r[k] for r in rows]) for k in first}
    if isinstance(first, (tuple, list)):
        return type(first)(_stack_rows([r[i] for r in rows]) for i in range(len(first)))
    return np.concatenate(rows, axis=0)


@given(data=st.data())
def test_skip_with_open_gate_equals_base_op(rnnspec_backend: Backend, op: str, data: st.DataObject) -> None:
    """skip_<base> with the gate forced open (b_gate = +50) equals <base>, and updates at every step."""
    base_op = OPS[op].base
    if base_op is None or OPS[op].hints.decision != "skip_gate":
        pytest.skip("the open-gate identity applies to skip_rnn, skip_lstm and skip_gru only")
    if base_op not in rnnspec_backend.ops:
        pytest.skip(f"backend {rnnspec_backend.name!r} does not implement {base_op!r}, the base op of {op!r}")
    spec = draw_case(data, op, dtypes=dtypes_of(rnnspec_backend))
    case = spec.build()
    x, params = case.args
    names = tuple(s.name for s in OPS[base_op].state)
    # b_gate = +50 opens the gate; w_gate = 0 keeps it open whatever the candidate (a relu
    # candidate grows without bound, and w_gate . g alone could close it).
    params = [dict(p) for p in params]
    params[-1]["w_gate"] = np.zeros_like(params[-1]["w_gate"])
    params[-1]["b_gate"] = np.full_like(params[-1]["b_gate"], 50.0)
    initial = case.kwargs.get("initial_state")
    if initial is None:
        # The skip op starts from its trainable h0 / c0; the base op gets them as its initial state.
        base_initial = tuple(
            {n: np.broadcast_to(p[f"{n}0"], (spec.batch, p[f"{n}0"].shape[0])).copy() for n in names} for p in params
        )
    else:
        # The drawn gate state may skip the first step: start it open (u~_1 = 1).
        initial = tuple(dict(s) for s in initial)
        initial[-1]["update_prob"] = np.ones_like(initial[-1]["update_prob"])
        initial[-1]["cum_update_prob"] = np.zeros_like(initial[-1]["cum_update_prob"])
        base_initial = tuple({n: s[n] for n in names} for s in initial)
    skip_case = _with(case, args={1: params}, initial_state=initial)
    gate_names = {"w_gate", "b_gate", "h0", "c0"}
    base_params = [{k: v for k, v in p.items() if k not in gate_names} for p in params]
    base_case = Case(spec.with_(op=base_op), (x, base_params), {**case.kwargs, "initial_state": base_initial})
    got = skip_case.run(rnnspec_backend)
    want = base_case.run(rnnspec_backend)
    where = f"skip op with the gate forced open vs {base_op}\n" + context(rnnspec_backend, case)
    tol = _value_tolerance(case)
    got_state = tuple({n: s[n] for n in names} for s in got.state)
    assert_tree_close(
        {"outputs": got.outputs, "state": got_state}, {"outputs": want.outputs, "state": want.state}, tol, context=where
    )
    valid = (np.arange(spec.time)[None, :] < full_lengths(case)[:, None]).astype(np.float64)
    assert_tree_close(
        {"update_gate": got.update_gate, "update_prob": got.update_prob},
        {"update_gate": valid, "update_prob": valid},
        tol,
        context=where,
        check_dtype=False,
    )
    assert np.array_equal(np.asarray(got.update_gate, dtype=np.float64), valid), (
        f"update_gate should be exactly 1 on valid steps and 0 past them: {got.update_gate}\n{where}"
    )
    top = got.state[-1]
    assert_tree_close(
        {"update_prob": top["update_prob"], "cum_update_prob": top["cum_update_prob"]},
        {"update_prob": np.ones((spec.batch, 1)), "cum_update_prob": np.zeros((spec.batch, 1))},
        tol,
        context=where,
        check_dtype=False,
    )


@given(data=st.data())
def test_act_ponder_fields(rnnspec_backend: Backend, op: str, data: st.DataObject) -> None:
    """1 <= N(t) <= max_steps (an integer), epsilon < R(t) <= 1, cost = N + R; all zero past lengths."""
    if OPS[op].hints.decision != "halting":
        pytest.skip("the ponder fields belong to act only")
    spec = draw_case(data, op, dtypes=dtypes_of(rnnspec_backend))
    case = spec.build()
    options = dict(spec.options)
    result = case.run(rnnspec_backend)
    steps, remainder, cost = (
        np.asarray(a, dtype=np.float64) for a in (result.ponder_steps, result.ponder_remainder, result.ponder_cost)
    )
    valid = np.arange(spec.time)[None, :] < full_lengths(case)[:, None]
    tol = _value_tolerance(case)
    where = f"ponder_steps {steps}, ponder_remainder {remainder}, ponder_cost {cost}\n" + context(rnnspec_backend, case)
    n, r = steps[valid], remainder[valid]
    assert np.array_equal(n, np.round(n)), f"ponder_steps is not an integer on a valid step\n{where}"
    assert ((n >= 1) & (n <= options["max_steps"])).all(), f"ponder_steps outside [1, max_steps]\n{where}"
    # R = 1 - (sum of the halting units before the stop), and that sum stayed below 1 - epsilon.
    assert ((r > 0) & (r <= 1)).all(), f"ponder_remainder outside (0, 1]\n{where}"
    assert (r >= options["epsilon"] * (1 - tol.rtol) - tol.atol).all(), f"ponder_remainder below epsilon\n{where}"
    for name, a in (("ponder_steps", steps), ("ponder_remainder", remainder), ("ponder_cost", cost)):
        assert not a[~valid].any(), f"{name} is not zero past the row's length\n{where}"
    assert_tree_close(cost, steps + remainder, tol, context="ponder_cost vs ponder_steps + ponder_remainder\n" + where)


def _qrnn_gates(case: Case) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """The gates of a one-layer qrnn call in float64, aligned with x, and the final x_prev.

    The convolution runs in processing order (each row's valid prefix flipped
    for ``reverse``) over ``[x_prev, x]``, ``x_prev`` the initial state's or zeros.
    """
    x, params = case.args
    (p,) = params
    lengths = full_lengths(case)
    w, b = (np.asarray(p[k], dtype=np.float64) for k in ("w", "b"))
    window = w.shape[2]
    xs = np.asarray(x, dtype=np.float64)
    if case.kwargs["reverse"]:
        xs = flip_valid(xs, lengths)
    initial = case.kwargs.get("initial_state")
    if initial is None:
        x_prev = np.zeros((xs.shape[0], window - 1, xs.shape[2]))
    else:
        x_prev = np.asarray(initial[0]["x_prev"], dtype=np.float64)
    padded = np.concatenate([x_prev, xs], axis=1)
    time = xs.shape[1]
    pre = b + sum(padded[:, k : k + time] @ w[:, :, k].T for k in range(window))
    names = QRNN_GATES[case.kwargs["mode"]]
    raw = dict(zip(names, np.split(pre, len(names), axis=2), strict=True))
    gates = {"z": np.tanh(raw["z"]), **{g: 1.0 / (1.0 + np.exp(-raw[g])) for g in names if g != "z"}}
    if case.kwargs["reverse"]:
        gates = {k: flip_valid(v, lengths) for k, v in gates.items()}
    index = lengths[:, None] + np.arange(window - 1)[None, :]
    last_inputs = np.take_along_axis(padded, index[:, :, None], axis=1)
    return gates, x_prev, last_inputs


@given(data=st.data())
def test_qrnn_pooling_is_linear_recurrence(rnnspec_backend: Backend, op: str, data: st.DataObject) -> None:
    """qrnn's c equals the backend's linear_recurrence over the gates computed in NumPy; h = o * c."""
    if op != "qrnn":
        pytest.skip("the pooling identity applies to qrnn only")
    if "linear_recurrence" not in rnnspec_backend.ops:
        pytest.skip(f"backend {rnnspec_backend.name!r} does not implement linear_recurrence")
    spec = draw_case(data, op, dtypes=dtypes_of(rnnspec_backend), num_layers=1)
    case = spec.build()
    mode = case.kwargs["mode"]
    gates, _, last_inputs = _qrnn_gates(case)
    f = gates["f"]
    mask = case.kwargs.get("zoneout_mask")
    if mask is not None:
        m = np.asarray(mask, dtype=np.float64)  # aligned with x in either direction
        f = np.where(m == 1, 1.0, f + (1.0 - f) * m)
    addend = gates["i"] * gates["z"] if mode == "ifo" else (1.0 - f) * gates["z"]
    initial = case.kwargs.get("initial_state")
    c0 = None if initial is None else initial[0]["c"]
    cast = case.args[0].dtype
    pool = Case(
        spec.with_(op="linear_recurrence"),
        (f.astype(cast), addend.astype(cast), c0),
        {"lengths": case.kwargs.get("lengths"), "reverse": case.kwargs["reverse"]},
    )
    c = pool.run(rnnspec_backend)
    got = case.run(rnnspec_backend)
    c64 = np.asarray(c, dtype=np.float64)
    h = c64 if mode == "f" else gates["o"] * c64
    lengths = full_lengths(case)
    valid = (np.arange(spec.time)[None, :] < lengths[:, None])[:, :, None]
    want = {
        "outputs": np.where(valid, h, 0.0),
        "state": ({"c": _final_state(pool, c, lengths), "x_prev": last_inputs},),
    }
    assert_tree_close(
        {"outputs": got.outputs, "state": got.state},
        want,
        _value_tolerance(case),
        context=f"qrnn (mode {mode}) vs linear_recurrence over its gates\n" + context(rnnspec_backend, case),
        check_dtype=False,
    )
