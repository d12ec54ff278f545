"""The NumPy reference of ``phased_lstm`` (Neil et al. 2016) is exact.

Its forward equals an independent implementation written here (a plain loop over rows, steps and
units in float64, Python's floor ``%``), for stacks, variable lengths, both directions, initial
states, peepholes and leaks. Every VJP equals central finite differences on cases whose phases stay
away from the gate's breakpoints, tau, s and r_on included; at the breakpoints (phi = 0, r_on / 2,
r_on) the gradients are the one-sided derivatives of the branch the spec selects, and differ from
the other side's. The timestamps receive no cotangent. The forward keeps the paper's and TF1's
semantics: a gate of 1 is the LSTM, a closed gate without leak keeps the state, zero peepholes are
no peepholes, the init draws the periods, shifts and ratio as stated. Chunked runs equal whole
runs, padding is never read, and bad timestamps are refused naming the op and the argument.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from helpers import (
    EPS,
    FD_RTOL,
    SEQUENCE_SHAPES,
    TORCH_RTOL,
    assert_relative_close,
    assert_trees_close,
    assert_trees_equal,
    deep_copy,
    full_lengths,
    numerical_sequence_vjp,
    shape_id,
    sigmoid,
    step_order,
)

import rnnspec
import rnnspec.reference as reference
from rnnspec.errors import DtypeError, OptionError, ParameterError, ShapeError, UnknownArgumentError

B, T, I, H = 3, 5, 2, 3  # noqa: E741
#: The breakpoints of the gate's phase, besides the wrap at 1.
KINKS = ("0", "r_on/2", "r_on")


# -- the independent implementation -------------------------------------------------------------


def loop_gate(t: float, tau: float, s: float, r_on: float, leak: float) -> float:
    """The openness of one unit at time ``t``: Python's ``%`` on floats is the floor modulo."""
    phi = ((t - s) % tau) / tau
    if phi < r_on / 2:
        return 2 * phi / r_on
    if phi < r_on:
        return 2 - 2 * phi / r_on
    return leak * phi


def loop_layer(
    x: np.ndarray, p: dict[str, np.ndarray], times: np.ndarray, h0: np.ndarray, c0: np.ndarray, **kw: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One layer, row by row and step by step (the row's valid prefix backwards when ``reverse``)."""
    lengths, reverse, leak, peepholes = kw["lengths"], kw["reverse"], kw["leak"], kw["peepholes"]
    batch, time, _ = x.shape
    hidden = p["w_hh"].shape[1]
    out = np.zeros((batch, time, hidden))
    h_final, c_final = np.array(h0, dtype=np.float64), np.array(c0, dtype=np.float64)
    peep = p["w_peephole"] if peepholes else np.zeros(3 * hidden)
    for b in range(batch):
        h, c = h_final[b].copy(), c_final[b].copy()
        for t in step_order(int(lengths[b]), reverse):
            a = p["w_ih"] @ x[b, t] + p["b_ih"] + p["w_hh"] @ h + p["b_hh"]
            h_new, c_new = np.zeros(hidden), np.zeros(hidden)
            for j in range(hidden):
                i = sigmoid(a[j] + peep[j] * c[j])
                f = sigmoid(a[hidden + j] + peep[hidden + j] * c[j])
                c_cand = f * c[j] + i * np.tanh(a[2 * hidden + j])
                h_cand = sigmoid(a[3 * hidden + j] + peep[2 * hidden + j] * c_cand) * np.tanh(c_cand)
                k = loop_gate(float(times[b, t]), p["tau"][j], p["s"][j], p["r_on"][j], leak)
                c_new[j] = k * c_cand + (1 - k) * c[j]
                h_new[j] = k * h_cand + (1 - k) * h[j]
            h, c = h_new, c_new
            out[b, t] = h
        h_final[b], c_final[b] = h, c
    return out, h_final, c_final


def loop_phased_lstm(call: dict[str, Any]) -> dict[str, Any]:
    """The op by :func:`loop_layer`, layer after layer: every layer reads the same timestamps."""
    kw = dict(call)
    x, params = kw.pop("x"), kw.pop("params")
    batch, time, _ = x.shape
    hidden = params[0]["w_hh"].shape[1]
    lengths = full_lengths(kw.get("lengths"), batch, time)
    initial = kw.get("initial_state") or [{"h": np.zeros((batch, hidden)), "c": np.zeros((batch, hidden))}] * len(
        params
    )
    options = {
        "lengths": lengths,
        "reverse": kw.get("reverse", False),
        "leak": kw.get("leak", 1e-3),
        "peepholes": kw.get("peepholes", False),
    }
    inp, state = np.asarray(x, dtype=np.float64), []
    for p, s in zip(params, initial, strict=True):
        inp, h, c = loop_layer(inp, p, kw["timestamps"], s["h"], s["c"], **options)
        state.append({"h": h, "c": c})
    return {"outputs": inp, "state": state}


def as_tree(result: Any) -> dict[str, Any]:
    return {"outputs": result.outputs, "state": [dict(s) for s in result.state]}


# -- cases --------------------------------------------------------------------------------------


def draw_params(
    rng: np.random.Generator, layers: int, *, peepholes: bool, input_size: int = I, hidden: int = H
) -> list[dict[str, np.ndarray]]:
    """Params whose periods (1 to 3) are short next to the timestamps' span, so that every branch is visited."""
    params = rnnspec.init_params(
        "phased_lstm",
        input_size=input_size,
        hidden_size=hidden,
        num_layers=layers,
        seed=int(rng.integers(2**31)),
        dtype="float64",
        peepholes=peepholes,
        period_range=(1.0, 3.0),
    )
    for p in params:
        p["r_on"] = rng.uniform(0.3, 0.7, hidden)
        if peepholes:
            p["w_peephole"] = rng.uniform(-1.0, 1.0, 3 * hidden)
    return params


def draw_timestamps(rng: np.random.Generator, batch: int = B, time: int = T) -> np.ndarray:
    """Irregular increasing timestamps, with a tie at step 2 of every row."""
    gaps = rng.uniform(0.2, 1.5, (batch, time))
    gaps[:, 2] = 0.0
    return rng.uniform(-3.0, 3.0, (batch, 1)) + np.cumsum(gaps, axis=1)


def draw_state(rng: np.random.Generator, layers: int, batch: int = B) -> list[dict[str, np.ndarray]]:
    return [{"h": rng.uniform(-0.8, 0.8, (batch, H)), "c": rng.uniform(-1.5, 1.5, (batch, H))} for _ in range(layers)]


def phases(timestamps: np.ndarray, p: dict[str, np.ndarray]) -> np.ndarray:
    """Each unit's phase at each step, ``(batch, time, H)``."""
    return ((timestamps[:, :, None] - p["s"]) % p["tau"]) / p["tau"]


def kink_distance(timestamps: np.ndarray, params: list[dict[str, np.ndarray]], lengths: np.ndarray) -> float:
    """How far the valid steps' phases lie from every breakpoint (0 and 1, r_on / 2, r_on)."""
    valid = np.arange(timestamps.shape[1])[None, :] < lengths[:, None]
    nearest = np.inf
    for p in params:
        phi = phases(timestamps, p)[valid]
        for edge in (0.0, 1.0, p["r_on"] / 2, p["r_on"]):
            nearest = min(nearest, float(np.min(np.abs(phi - edge), initial=np.inf)))
    return nearest


OPTIONS = [
    pytest.param({"peepholes": False, "leak": 1e-3}, id="plain"),
    pytest.param({"peepholes": True, "leak": 1e-3}, id="peepholes"),
    pytest.param({"peepholes": True, "leak": 0.2}, id="peepholes-leak0.2"),
    pytest.param({"peepholes": False, "leak": 0.0}, id="no-leak"),
]


def shape_cases() -> list[Any]:
    return [
        pytest.param(layers, lengths, with_state, reverse, id=shape_id(layers, lengths, with_state, reverse))
        for layers, lengths, with_state, reverse in SEQUENCE_SHAPES
    ]


def make_call(seed: int, layers: int, lengths: Any, with_state: bool, options: dict[str, Any]) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    return {
        "x": rng.standard_normal((B, T, I)),
        "params": draw_params(rng, layers, peepholes=options["peepholes"]),
        "timestamps": draw_timestamps(rng),
        "lengths": None if lengths is None else np.asarray(lengths),
        "initial_state": draw_state(rng, layers) if with_state else None,
        **options,
    }


def run(call: dict[str, Any], **changes: Any) -> Any:
    kw = {**call, **changes}
    return reference.phased_lstm(kw.pop("x"), kw.pop("params"), **kw)


# -- forward --------------------------------------------------------------------------------------


@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize(("layers", "lengths", "with_state", "reverse"), shape_cases())
def test_the_forward_equals_a_plain_loop_over_rows_steps_and_units(
    layers: int, lengths: Any, with_state: bool, reverse: bool, options: dict[str, Any]
) -> None:
    call = make_call(1, layers, lengths, with_state, options)
    got = run(call, reverse=reverse)
    want = loop_phased_lstm({**call, "reverse": reverse})
    assert_trees_close(as_tree(got), want, TORCH_RTOL, "phased_lstm vs the loop")


def test_the_forward_visits_every_branch_of_the_gate() -> None:
    """The cases of the loop comparison open, half-open and close the gates (the comparison means something)."""
    call = make_call(1, 2, None, False, {"peepholes": False, "leak": 1e-3})
    phi = np.concatenate([phases(call["timestamps"], p).ravel() for p in call["params"]])
    r_on = np.concatenate([np.broadcast_to(p["r_on"], (B, T, H)).ravel() for p in call["params"]])
    assert (phi < r_on / 2).any()
    assert ((phi >= r_on / 2) & (phi < r_on)).any()
    assert (phi >= r_on).any()


def test_a_gate_of_one_at_every_step_is_the_lstm() -> None:
    """At phi = r_on / 2 the gate is exactly 1: the Phased LSTM without peepholes is the LSTM."""
    rng = np.random.default_rng(2)
    params = draw_params(rng, 2, peepholes=False)
    for p in params:
        p["tau"], p["s"], p["r_on"] = np.full(H, 2.0), np.full(H, 0.5), np.full(H, 0.25)
    cycles = rng.integers(-3, 4, (B, T)).cumsum(axis=1).astype(np.float64)
    timestamps = 0.5 + 2.0 * (cycles + 0.125)  # phi = 0.125 = r_on / 2 at every step, exactly
    assert np.all(phases(timestamps, params[0]) == 0.125)
    x, state = rng.standard_normal((B, T, I)), draw_state(rng, 2)
    lengths = np.array([5, 2, 0])
    got = reference.phased_lstm(x, params, timestamps=np.sort(timestamps), initial_state=state, lengths=lengths)
    lstm_params = [{k: p[k] for k in ("w_ih", "w_hh", "b_ih", "b_hh")} for p in params]
    want = reference.lstm(x, lstm_params, initial_state=state, lengths=lengths)
    assert_trees_close(as_tree(got), as_tree(want), TORCH_RTOL, "gate 1 vs lstm")


@pytest.mark.parametrize("peepholes", [False, True])
def test_a_closed_gate_without_leak_keeps_the_state(peepholes: bool) -> None:
    """leak = 0 (the paper's inference) with every phase in the closed part: nothing changes, h_t = h_0."""
    rng = np.random.default_rng(3)
    params = draw_params(rng, 1, peepholes=peepholes)
    params[0]["tau"], params[0]["s"], params[0]["r_on"] = np.full(H, 4.0), np.zeros(H), np.full(H, 0.25)
    timestamps = np.sort(rng.uniform(1.5, 3.9, (B, T)), axis=1)  # phi in [0.375, 0.975): closed
    x, state = rng.standard_normal((B, T, I)), draw_state(rng, 1)
    closed = reference.phased_lstm(x, params, timestamps=timestamps, initial_state=state, leak=0.0, peepholes=peepholes)
    assert_trees_equal(closed.outputs, np.broadcast_to(state[0]["h"][:, None], (B, T, H)), "outputs")
    assert_trees_equal(dict(closed.state[0]), state[0], "final state")
    leaky = reference.phased_lstm(x, params, timestamps=timestamps, initial_state=state, leak=0.1, peepholes=peepholes)
    assert not np.allclose(leaky.outputs, closed.outputs)  # TF1's training leak lets the state move


def test_zero_peephole_weights_are_no_peepholes_and_others_are_not() -> None:
    call = make_call(4, 2, [5, 3, 0], True, {"peepholes": True, "leak": 1e-3})
    zeroed = deep_copy(call["params"])
    for p in zeroed:
        p["w_peephole"] = np.zeros_like(p["w_peephole"])
    plain = [{k: v for k, v in p.items() if k != "w_peephole"} for p in zeroed]
    with_zero = run(call, params=zeroed)
    without = run(call, params=plain, peepholes=False)
    assert_trees_close(as_tree(with_zero), as_tree(without), TORCH_RTOL, "zero peepholes")
    assert not np.allclose(run(call).outputs, with_zero.outputs)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("split", [0, 2, 5])
def test_a_chunked_run_equals_the_whole_run(split: int, reverse: bool) -> None:
    """The state of one chunk, with the next chunk's timestamps, continues the sequence exactly
    (reversed: the later chunk runs first)."""
    call = make_call(5, 2, None, True, {"peepholes": True, "leak": 0.05})
    whole = run(call, reverse=reverse)
    parts = [slice(0, split), slice(split, T)]
    state, outputs = call["initial_state"], [np.empty(0)] * 2
    for n in (1, 0) if reverse else (0, 1):
        part = parts[n]
        chunk = run(
            call, x=call["x"][:, part], timestamps=call["timestamps"][:, part], initial_state=state, reverse=reverse
        )
        state, outputs[n] = chunk.state, chunk.outputs
    chunked = np.concatenate(outputs, axis=1)
    assert_trees_close(
        {"outputs": chunked, "state": [dict(s) for s in state]}, as_tree(whole), TORCH_RTOL, "chunked vs whole"
    )


def test_padding_is_never_read_not_even_timestamps_that_go_back_or_are_nan() -> None:
    call = make_call(6, 2, [5, 2, 0], True, {"peepholes": False, "leak": 1e-3})
    base = run(call, reverse=True)
    x, timestamps = call["x"].copy(), call["timestamps"].copy()
    x[1, 2:], x[2] = np.nan, 7.0
    timestamps[1, 2:] = [np.nan, -100.0, np.inf]
    timestamps[2] = [5.0, 4.0, 3.0, 2.0, 1.0]
    padded = run(call, x=x, timestamps=timestamps, reverse=True)
    assert_trees_equal(as_tree(padded), as_tree(base), "padding changed")
    assert np.all(base.outputs[1, 2:] == 0)
    assert np.all(base.outputs[2] == 0)
    grads = reference.vjp(
        "phased_lstm",
        {"outputs": np.ones_like(base.outputs)},
        x,
        call["params"],
        **{**{k: v for k, v in call.items() if k not in ("x", "params")}, "timestamps": timestamps},
    )
    assert all(np.all(np.isfinite(g)) for p in grads["params"] for g in p.values())


def test_a_nan_timestamp_in_a_valid_step_reaches_that_rows_values_only() -> None:
    call = make_call(7, 1, None, False, {"peepholes": False, "leak": 1e-3})
    timestamps = call["timestamps"].copy()
    timestamps[0, 3] = np.nan
    got = run(call, timestamps=timestamps)
    assert np.all(np.isnan(got.outputs[0, 3:]))
    assert np.all(np.isfinite(got.outputs[0, :3]))
    assert np.all(np.isfinite(got.outputs[1:]))


# -- reverse mode ---------------------------------------------------------------------------------


@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize(("layers", "lengths", "with_state", "reverse"), shape_cases())
def test_every_vjp_equals_central_differences_away_from_the_kinks(
    layers: int, lengths: Any, with_state: bool, reverse: bool, options: dict[str, Any]
) -> None:
    """x, every parameter (tau, s, r_on, the peepholes) and the initial state; the phases stay at least
    1e-4 from any breakpoint, ten times what a step of the differences moves them (|t - s| / tau^2 * EPS
    < 1e-5), so no difference crosses one."""
    call = make_call(8, layers, lengths, True, {**options, "reverse": reverse})
    call["lengths"] = None if lengths is None else np.asarray(lengths)
    timestamps = call["timestamps"]
    assert kink_distance(timestamps, call["params"], full_lengths(call["lengths"], B, T)) > 100 * EPS
    rest = {k: v for k, v in call.items() if k not in ("x", "params", "initial_state")}
    result = run(call)
    rng = np.random.default_rng(9)
    cotangents = {
        "outputs": rng.standard_normal(result.outputs.shape),
        "state": [{k: rng.standard_normal(v.shape) for k, v in s.items()} for s in result.state],
    }
    if not with_state:  # the cotangent of the final state only
        cotangents["outputs"] = np.zeros_like(cotangents["outputs"])
    got = reference.vjp(
        "phased_lstm", cotangents, call["x"], call["params"], initial_state=call["initial_state"], **rest
    )
    assert sorted(got) == ["initial_state", "params", "x"]  # none for the timestamps: they are data

    def forward(x: np.ndarray, params: list[dict[str, np.ndarray]], state: list[dict[str, np.ndarray]]) -> Any:
        return reference.phased_lstm(x, params, initial_state=state, **rest)

    want = numerical_sequence_vjp(forward, call["x"], call["params"], call["initial_state"], cotangents)
    assert_trees_close({k: got[k] for k in want}, want, FD_RTOL, "vjp vs central differences")


def one_sided(loss: Callable[[], float], array: np.ndarray, index: int, direction: float, step: float = EPS) -> float:
    """d loss / d array[index] from one side (second order): steps ``direction * step`` and twice that."""
    original = array[index]
    values = []
    for n in (0, 1, 2):
        array[index] = original + n * direction * step
        values.append(loss())
    array[index] = original
    return float(direction * (-3 * values[0] + 4 * values[1] - values[2]) / (2 * step))


@pytest.mark.parametrize("peepholes", [False, True])
@pytest.mark.parametrize("kink", KINKS)
def test_at_a_breakpoint_the_gradient_is_the_selected_branchs_one_sided_derivative(kink: str, peepholes: bool) -> None:
    """One unit with its phase exactly on 0, r_on / 2 or r_on (dyadic values: exact). The comparisons select
    the branch above the breakpoint (rising at 0, falling at r_on / 2, closed at r_on): the gradients of tau,
    s and r_on are the derivatives from the side where phi grows (s down, tau down as t - s > 0, r_on down),
    and differ from the other side's, which the convention does not take."""
    rng = np.random.default_rng(10)
    params = draw_params(rng, 1, peepholes=peepholes, hidden=1)
    p = params[0]
    p["tau"], p["s"], p["r_on"] = np.array([2.0]), np.array([0.5]), np.array([0.25])
    phase = {"0": 0.0, "r_on/2": 0.125, "r_on": 0.25}[kink]
    timestamps = np.array([[0.5 + 2.0 * (1 + phase), 0.5 + 2.0 * (3 + phase)]])  # t - s > 0, phi exact
    assert np.all(phases(timestamps, p) == phase)
    x, state = rng.standard_normal((1, 2, I)), [{"h": np.array([[0.6]]), "c": np.array([[-1.2]])}]
    kw = {"timestamps": timestamps, "peepholes": peepholes, "leak": 0.3, "initial_state": state}
    result = reference.phased_lstm(x, params, **kw)
    cotangents = {"outputs": np.array([[[0.7], [-1.1]]]), "state": [{"h": np.array([[0.4]]), "c": np.array([[0.9]])}]}
    grads = reference.vjp("phased_lstm", cotangents, x, params, **kw)["params"][0]

    def loss() -> float:
        out = reference.phased_lstm(x, params, **kw)
        return float(np.sum(cotangents["outputs"] * out.outputs)) + sum(
            float(np.sum(cotangents["state"][0][n] * out.state[0][n])) for n in ("h", "c")
        )

    assert np.isfinite(float(np.sum(result.outputs)))
    for name in ("s", "tau", "r_on"):
        selected = one_sided(loss, p[name], 0, -1.0)
        other = one_sided(loss, p[name], 0, +1.0)
        assert_relative_close(grads[name], [selected], FD_RTOL, f"{name} at phi = {kink}")
        if not (kink == "0" and name == "r_on"):  # at phi = 0 the branch does not follow r_on
            assert abs(selected - other) > 1e-3, f"{name}: no kink at phi = {kink}"


# -- initialisation -------------------------------------------------------------------------------


def test_init_draws_log_uniform_periods_shifts_within_the_period_and_the_open_ratio() -> None:
    params = rnnspec.init_params("phased_lstm", input_size=2, hidden_size=4000, num_layers=2, seed=3, dtype="float64")
    for p in params:
        tau, s = p["tau"], p["s"]
        assert tau.min() >= 1.0
        assert tau.max() <= 1000.0
        assert np.all((s >= 0) & (s < tau))
        assert abs(np.mean(np.log(tau)) - np.log(1000.0) / 2) < 0.1  # log tau ~ U(0, log 1000)
        assert abs(np.mean(s / tau) - 0.5) < 0.02  # s / tau ~ U(0, 1)
        assert np.all(p["r_on"] == 0.05)
        assert np.abs(p["w_hh"]).max() <= 1 / np.sqrt(4000)
    assert not np.array_equal(params[0]["tau"], params[1]["tau"])
    other = rnnspec.init_params(
        "phased_lstm", input_size=2, hidden_size=8, seed=3, period_range=(2.0, 4.0), ratio_on=0.1, peepholes=True
    )
    assert other[0]["tau"].min() >= 2.0
    assert other[0]["tau"].max() <= 4.0
    assert np.all(other[0]["r_on"] == np.float32(0.1))
    assert list(other[0]) == ["w_ih", "w_hh", "b_ih", "b_hh", "w_peephole", "tau", "s", "r_on"]


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("period_range", (0.0, 10.0)),
        ("period_range", (5.0, 2.0)),
        ("period_range", 3.0),
        ("ratio_on", 0.0),
        ("ratio_on", 1.5),
        ("ratio_on", True),
    ],
)
def test_bad_init_options_are_refused_naming_the_option(option: str, value: Any) -> None:
    with pytest.raises(OptionError, match=option):
        rnnspec.init_params("phased_lstm", input_size=2, hidden_size=3, **{option: value})


# -- bad calls ------------------------------------------------------------------------------------


def test_timestamps_that_go_back_in_a_valid_step_are_refused_naming_the_row_and_step() -> None:
    call = make_call(11, 1, [5, 4, 2], False, {"peepholes": False, "leak": 1e-3})
    timestamps = call["timestamps"].copy()
    timestamps[1, 3] = timestamps[1, 2] - 0.5
    with pytest.raises(OptionError) as err:
        run(call, timestamps=timestamps)
    message = str(err.value)
    assert "phased_lstm" in message
    assert "timestamps" in message
    assert "row 1" in message
    assert "step 3" in message
    timestamps[1, 3] = timestamps[1, 2]  # a tie is no decrease
    timestamps[2, 3] = timestamps[2, 1] - 10.0  # a decrease in the padding is not read
    run(call, timestamps=timestamps)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda t: t[:, :-1], ShapeError),
        (lambda t: t[:, :, None], ShapeError),
        (lambda t: t[:-1], ShapeError),
        (lambda t: np.round(t * 8).astype(np.int64), DtypeError),
        (lambda t: t.astype(np.float32), DtypeError),
        (lambda t: t.tolist(), ShapeError),
        (lambda t: None, DtypeError),
    ],
    ids=["short-time", "rank-3", "short-batch", "integer", "float32-with-float64-x", "a-list", "None"],
)
def test_misshapen_or_non_float_timestamps_are_refused_naming_the_argument(
    change: Callable[[np.ndarray], Any], error: type[Exception]
) -> None:
    call = make_call(12, 1, None, False, {"peepholes": False, "leak": 1e-3})
    with pytest.raises(error, match="timestamps"):
        run(call, timestamps=change(call["timestamps"]))


def test_timestamps_left_out_are_refused_naming_the_argument() -> None:
    call = make_call(13, 1, None, False, {"peepholes": False, "leak": 1e-3})
    del call["timestamps"]
    with pytest.raises(UnknownArgumentError, match="timestamps"):
        run(call)


def test_the_params_follow_the_peepholes_option() -> None:
    call = make_call(14, 2, None, False, {"peepholes": True, "leak": 1e-3})
    with pytest.raises(ParameterError, match="w_peephole"):
        run(call, peepholes=False)
    without = [{k: v for k, v in p.items() if k != "w_peephole"} for p in call["params"]]
    with pytest.raises(ParameterError, match="w_peephole"):
        run(call, params=without)


@pytest.mark.parametrize("leak", [-0.1, 1.5, True, "0.001", None, float("nan")])
def test_a_leak_outside_0_to_1_is_refused(leak: Any) -> None:
    call = make_call(15, 1, None, False, {"peepholes": False, "leak": 1e-3})
    with pytest.raises(OptionError, match="leak"):
        run(call, leak=leak)
