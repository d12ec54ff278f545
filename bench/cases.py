"""The suite's cases, written once for every framework backend through its :class:`.framework.Framework`.

Each section function times rnnspec's op and its baselines side by side
(:func:`.timing.alternate`) on the same inputs and returns :class:`.rows.Row` s.
rnnspec's calls run compiled where the framework compiles (``jax.jit``,
``tf.function(jit_compile=True)``) and eagerly in torch; the Python-loop ports run
eagerly everywhere, as their users run them. Adaptive ops are forced to a known amount
of work through their gate biases:

- skip_gru/skip_lstm: ``w_gate = 0`` and ``b_gate = logit(p)`` make ``du~ = p`` at every
  update, and from ``update_prob = 1`` the gate's ``u~`` grows by ``p`` until it reaches 0.5:
  p = 0.5 updates at every step, p = 0.3 at every 2nd, p = 0.13 at every 4th (the measured
  rate, from ``update_gate``, is in the row's note). Rows skip independently when the
  initial ``cum_update_prob`` of row ``b`` is ``(b mod k) p``: each row's updates are
  shifted by its phase.
- act: ``w_halt = 0`` and ``b_halt = logit(q)`` make every row halt after
  ``ceil((1 - epsilon) / q)`` inner steps: q = 0.995, 0.5, 0.25 give 1, 2 and 4.

QRNN's pooling is ``linear_recurrence(f, (1 - f) z)``: the linear_recurrence rows measure it
against a copy (the bandwidth ratio) and the log-space formulation; the qrnn rows time the whole
layer against the seed's layer (:mod:`.logspace`). The training section (:mod:`.training`) times
one optimiser update of each paper task's model. Targets are evaluated per row and summarised by
:mod:`.report`; none is asserted.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

import rnnspec

from . import logspace, ports, training
from .framework import Framework, load
from .rows import BEST_BACKEND, Row, compare, shape_text
from .sizes import Shape, Sizes
from .timing import alternate

__all__ = ["PORT_TARGETS", "SECTIONS", "act", "classic", "phased", "python_loops", "recurrences", "skip"]

#: The skip gate's du~ that gives each update rate (see the module docstring).
RATES = {1.0: 0.5, 0.5: 0.3, 0.25: 0.13}
#: act's halting unit at every inner step, by the ponder steps it gives with epsilon = 0.01.
PONDER = {1: 0.995, 2: 0.5, 4: 0.25}
EPSILON, MAX_STEPS = 0.01, 8
#: phased_lstm's open ratios timed at inference (leak 0): the paper's 0.05, and every unit open.
OPEN_RATIOS = (0.05, 1.0)
#: The torch backend's open-units path: r_on = 0.05 at most this fraction of r_on = 1's time (issue 23).
OPEN_UNITS_TARGET = 0.3
FWD, TRAIN = "forward", "forward+backward"
#: The lstm/gru target against torch.nn, by backend (the jax one under jax.jit).
CLASSIC_TARGET = {"torch": 1.10, "jax": 1.5}
#: The adaptive ops' target against their Python-loop ports, by mode: the ratio bound and its words.
#: Forward: 3x faster (issue 8). Forward+backward: 2x faster, what issue 21 asks of training.
PORT_TARGETS = {
    FWD: (1.0 / 3.0, ">= 3x faster (ratio <= 0.33x)"),
    TRAIN: (0.5, "<= 0.50x the Python-loop port"),
}


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def _inputs(fw: Framework, shape: Shape, features: int | None = None, seed: int = 0) -> tuple[np.ndarray, Any]:
    batch, steps, hidden = shape
    host = np.random.default_rng(seed).standard_normal((batch, steps, features or hidden)).astype(np.float32)
    return host, fw.tensor(host)


#: The functions of :func:`_run`, one per backend, op and options, so that compilations are reused.
_RUNS: dict[tuple[str, str, tuple[tuple[str, Any], ...]], Callable[..., Any]] = {}


def _run(fw: Framework, op: str, **options: Any) -> Callable[..., Any]:
    """``fn(x, params, initial_state=None)``: the outputs of the backend's ``op`` (the same function each time)."""
    key = (fw.name, op, tuple(sorted(options.items())))
    if key not in _RUNS:
        method = getattr(fw.backend, op)
        _RUNS[key] = lambda x, params, state=None: method(x, params, initial_state=state, **options).outputs
    return _RUNS[key]


def _timed(fw: Framework, fn: Callable[[Any, Any], Any], x: Any, params: Any, mode: str, compile: bool) -> Any:
    if mode == FWD:
        return fw.forward(fn, x, params, compile=compile)
    return fw.train(fn, x, params, compile=compile)


def _modes(sizes: Sizes) -> tuple[str, ...]:
    return (FWD, TRAIN) if sizes.training else (FWD,)


def _compiles(fw: Framework) -> bool:
    return fw.name != "torch"


def _torch_nn(fw: Framework, op: str, host: list[dict[str, np.ndarray]], x: np.ndarray, mode: str) -> Any:
    """torch.nn.LSTM/GRU on the same weights and inputs, timed by a torch adapter (in any backend's process)."""
    from rnnspec.convert import to_torch

    torch_fw = fw if fw.name == "torch" else load("torch", fw.device)
    module = to_torch(host, op).to(torch_fw.device)
    params = list(module.parameters())
    return _timed(torch_fw, lambda x, p: module(x)[0], torch_fw.tensor(x), params, mode, False)


def _keras(fw: Framework, op: str, host: list[dict[str, np.ndarray]], x: Any, mode: str) -> Any:
    """keras.layers.LSTM/GRU on the same weights and inputs, under tf.function(jit_compile=True)."""
    from rnnspec.convert import to_keras

    (layer,) = to_keras(host, op)
    layer(x)  # builds it
    return _timed(fw, lambda x, p: layer(x), x, layer.trainable_variables, mode, True)


def _graph_mode(fw: Framework, op: str, host: list[dict[str, np.ndarray]], x: Any, mode: str) -> dict[str, Any]:
    """rnnspec's op and keras.layers.LSTM/GRU each in a plain ``tf.function`` (graph mode, no XLA).

    How Keras users run a layer in a custom loop; the ``classic`` rows' other pair compares both under XLA.
    """
    import tensorflow as tf

    from rnnspec.convert import to_keras

    (layer,) = to_keras(host, op)
    layer(x)  # builds it
    ours, keras_graph = tf.function(_run(fw, op)), tf.function(layer.__call__)
    return {
        f"rnnspec {op} (tf.function)": _timed(fw, ours, x, fw.params(host), mode, False),
        # The layer's variables are the graph's captures, differentiated as the tf.Variables that Keras 3 wraps.
        f"keras {op.upper()} (tf.function)": _timed(
            fw, lambda x, p: keras_graph(x), x, [v.value for v in layer.trainable_variables], mode, False
        ),
    }


#: TensorFlow's lstm/gru in a plain tf.function against keras.layers' (issue 21): forward at most as long.
GRAPH_MODE_TARGET = 1.0


def classic(fw: Framework, sizes: Sizes) -> list[Row]:
    """lstm and gru against torch.nn.LSTM/GRU (and keras' layers in the tensorflow backend)."""
    rows = []
    for op in ("lstm", "gru"):
        for shape in sizes.classic:
            host = rnnspec.init_params(op, input_size=shape[2], hidden_size=shape[2], seed=0)
            x_host, x = _inputs(fw, shape)
            params = fw.params(host)
            for mode in (FWD, TRAIN):
                calls = {f"rnnspec {op}": _timed(fw, _run(fw, op), x, params, mode, _compiles(fw))}
                baselines = []
                if fw.name == "tensorflow":
                    baselines.append(f"keras {op.upper()}")
                    calls[baselines[-1]] = _keras(fw, op, host, x, mode)
                    graph = _graph_mode(fw, op, host, x, mode)
                    calls.update(graph)
                    pair = (f"rnnspec {op} (tf.function)", f"keras {op.upper()} (tf.function)")
                else:
                    baselines.append(f"torch.nn.{op.upper()}")
                    calls[baselines[-1]] = _torch_nn(fw, op, host, x_host, mode)
                timings = alternate(calls, sizes.repeats)
                for base in baselines:
                    bound = CLASSIC_TARGET.get(fw.name) if base.startswith("torch") else None
                    rows.append(
                        compare(
                            "lstm/gru",
                            fw.name,
                            op,
                            shape_text(*shape),
                            mode,
                            (f"rnnspec {op}", base),
                            timings,
                            at_most=bound,
                            target=f"<= {bound:.2f}x torch.nn" if bound else "",
                        )
                    )
                if fw.name == "tensorflow":
                    bound = GRAPH_MODE_TARGET if mode == FWD else None
                    rows.append(
                        compare(
                            "lstm/gru",
                            fw.name,
                            op,
                            shape_text(*shape),
                            mode,
                            pair,
                            timings,
                            at_most=bound,
                            target=f"<= {GRAPH_MODE_TARGET:.2f}x keras in tf.function" if bound else "",
                        )
                    )
    return rows


def _skip_layer(fw: Framework, host: dict[str, np.ndarray], du: float) -> Any:
    forced = dict(host, w_gate=np.zeros_like(host["w_gate"]), b_gate=np.array([_logit(du)], np.float32))
    return fw.params([forced])


def _staggered(fw: Framework, batch: int, hidden: int, op: str, rate: float, du: float) -> Any:
    """An initial state whose rows update at shifted steps (phase ``b mod k`` of an update every ``k`` steps)."""
    phase = (np.arange(batch) % round(1.0 / rate)).astype(np.float32)[:, None]
    state = {
        "h": np.zeros((batch, hidden), np.float32),
        "update_prob": np.full((batch, 1), du, np.float32),
        "cum_update_prob": phase * np.float32(du),
    }
    if op == "skip_lstm":
        state["c"] = np.zeros((batch, hidden), np.float32)
    return [{k: fw.tensor(v) for k, v in state.items()}]


def skip(fw: Framework, sizes: Sizes) -> list[Row]:
    """skip_gru/skip_lstm against the same backend's gru/lstm at forced update rates, and against rate 1."""
    rows: list[Row] = []
    compiled = _compiles(fw)
    for op in sizes.skip_ops:
        base = op.removeprefix("skip_")
        shape = sizes.skip_single
        hidden = shape[2]
        host = rnnspec.init_params(op, input_size=hidden, hidden_size=hidden, seed=0)[0]
        base_params = fw.params([{k: v for k, v in host.items() if not k.endswith("_gate")}])
        _, x = _inputs(fw, shape)
        layers = {rate: _skip_layer(fw, host, du) for rate, du in RATES.items()}
        measured = {
            rate: float(np.mean(fw.backend.to_numpy(getattr(fw.backend, op)(x, p).update_gate)))
            for rate, p in layers.items()
        }
        for mode in _modes(sizes):
            calls = {base: _timed(fw, _run(fw, base), x, base_params, mode, compiled)}
            for rate, p in layers.items():
                calls[f"{op} rate {rate:g}"] = _timed(fw, _run(fw, op), x, p, mode, compiled)
            timings = alternate(calls, sizes.repeats)
            kind = "inference" if mode == FWD else "training"
            for rate in RATES:
                name = f"{op} rate {rate:g}"
                note = f"measured update rate {measured[rate]:.3f}"
                rows.append(compare("skip", fw.name, op, shape_text(*shape), kind, (name, base), timings, note=note))
                if rate < 1.0:
                    bound = 0.5 if (op == "skip_gru" and rate == 0.25 and mode == FWD) else None
                    rows.append(
                        compare(
                            "skip",
                            fw.name,
                            op,
                            shape_text(*shape),
                            kind,
                            (name, f"{op} rate 1"),
                            timings,
                            at_most=bound,
                            note=note,
                        )
                    )
    rows.extend(_skip_staggered(fw, sizes))
    return rows


def _skip_staggered(fw: Framework, sizes: Sizes) -> list[Row]:
    """skip_gru inference at a larger batch, rows skipping independently: the saving should grow as the rate falls."""
    op, shape = "skip_gru", sizes.skip_batch
    batch, _, hidden = shape
    host = rnnspec.init_params(op, input_size=hidden, hidden_size=hidden, seed=0)[0]
    _, x = _inputs(fw, shape)
    calls = {}
    for rate, du in RATES.items():
        params, state = _skip_layer(fw, host, du), _staggered(fw, batch, hidden, op, rate, du)
        calls[f"{op} rate {rate:g}"] = fw.forward(_run(fw, op), x, params, state, compile=_compiles(fw))
    timings = alternate(calls, sizes.repeats)
    ratio = {rate: timings[f"{op} rate {rate:g}"].median_ms / timings[f"{op} rate 1"].median_ms for rate in RATES}
    grows = ratio[0.25] < ratio[0.5] < 1.0
    rows = []
    for rate in (0.5, 0.25):
        row = compare(
            "skip",
            fw.name,
            op,
            shape_text(*shape),
            "inference, rows staggered",
            (f"{op} rate {rate:g}", f"{op} rate 1"),
            timings,
        )
        if rate == 0.25:
            row["target"], row["met"] = "saving grows as the rate falls (0.25 < 0.5 < 1)", grows
        rows.append(row)
    return rows


def act(fw: Framework, sizes: Sizes) -> list[Row]:
    """act (gru cell) at mean ponder 1, 2, 4 against the gru; inference time should follow the ponder steps."""
    shape = sizes.act
    hidden = shape[2]
    compiled = _compiles(fw)
    host = rnnspec.init_params("act", input_size=hidden, hidden_size=hidden, cell="gru", seed=0)[0]
    base_params = fw.params(rnnspec.init_params("gru", input_size=hidden, hidden_size=hidden, seed=0))
    _, x = _inputs(fw, shape)
    run = _run(fw, "act", cell="gru", epsilon=EPSILON, max_steps=MAX_STEPS)
    levels = {}
    for level, q in PONDER.items():
        forced = dict(host, w_halt=np.zeros_like(host["w_halt"]), b_halt=np.array([_logit(q)], np.float32))
        levels[level] = fw.params([forced])
    measured = {
        level: float(
            np.mean(
                fw.backend.to_numpy(fw.backend.act(x, p, cell="gru", epsilon=EPSILON, max_steps=MAX_STEPS).ponder_steps)
            )
        )
        for level, p in levels.items()
    }
    rows = []
    for mode in _modes(sizes):
        calls = {"gru": _timed(fw, _run(fw, "gru"), x, base_params, mode, compiled)}
        for level, p in levels.items():
            calls[f"act ponder {level}"] = _timed(fw, run, x, p, mode, compiled)
        timings = alternate(calls, sizes.repeats)
        kind = "inference" if mode == FWD else "training"
        for level in PONDER:
            name, note = f"act ponder {level}", f"measured mean ponder {measured[level]:.2f}"
            rows.append(compare("act", fw.name, "act", shape_text(*shape), kind, (name, "gru"), timings, note=note))
            if level > 1 and mode == FWD:
                row = compare("act", fw.name, "act", shape_text(*shape), kind, (name, "act ponder 1"), timings)
                row["target"] = f"proportional: {0.5 * level:g}x to {1.5 * level:g}x"
                row["met"] = 0.5 * level <= row["ratio"] <= 1.5 * level
                row["note"] = note
                rows.append(row)
    return rows


def _open_fraction(params: dict[str, np.ndarray], timestamps: np.ndarray) -> float:
    """The fraction of (row, step, unit) entries whose time gate is open (k != 0 with leak 0)."""
    shifted = timestamps[:, :, None].astype(np.float64) - params["s"]
    phase = np.mod(shifted, params["tau"]) / params["tau"]
    return float(np.mean(phase < params["r_on"]))


def phased(fw: Framework, sizes: Sizes) -> list[Row]:
    """phased_lstm at inference (leak 0, as the paper evaluates) with the paper's open ratio against every unit
    open (r_on = 1) and the same backend's lstm, under regular timestamps shared by the rows and asynchronous
    ones drawn per row."""
    shape = sizes.phased
    batch, steps, hidden = shape
    compiled = _compiles(fw)
    _, x = _inputs(fw, shape)
    base = fw.params(rnnspec.init_params("lstm", input_size=hidden, hidden_size=hidden, seed=0))
    clocks = {
        "regular": np.broadcast_to(np.arange(steps, dtype=np.float32), (batch, steps)).copy(),
        "asynchronous": np.cumsum(np.random.default_rng(1).uniform(0.5, 1.5, (batch, steps)), axis=1).astype(
            np.float32
        ),
    }
    hosts = {
        r_on: rnnspec.init_params("phased_lstm", input_size=hidden, hidden_size=hidden, seed=0, ratio_on=r_on)
        for r_on in OPEN_RATIOS
    }
    rows = []
    for clock, stamps in clocks.items():
        timestamps = fw.tensor(stamps)

        def run(x: Any, params: Any, timestamps: Any = timestamps) -> Any:
            return fw.backend.phased_lstm(x, params, timestamps=timestamps, leak=0.0).outputs

        calls = {"lstm": fw.forward(_run(fw, "lstm"), x, base, compile=compiled)}
        for r_on, host in hosts.items():
            calls[f"phased_lstm r_on {r_on:g}"] = fw.forward(run, x, fw.params(host), compile=compiled)
        timings = alternate(calls, sizes.repeats)
        mode = f"inference, {clock} timestamps"
        notes = {r_on: f"open fraction {_open_fraction(host[0], stamps):.3f}" for r_on, host in hosts.items()}
        sparse, dense = (f"phased_lstm r_on {r_on:g}" for r_on in OPEN_RATIOS)
        bound = OPEN_UNITS_TARGET if fw.name == "torch" else None

        # r_on 0.05 against every unit open (the target), then each against the lstm.
        pairs = [((sparse, dense), OPEN_RATIOS[0], bound)]
        pairs += [((f"phased_lstm r_on {r_on:g}", "lstm"), r_on, None) for r_on in OPEN_RATIOS]
        for names, r_on, at_most in pairs:
            row = compare("phased", fw.name, "phased_lstm", shape_text(*shape), mode, names, timings, at_most=at_most)
            row["note"] = notes[r_on]
            rows.append(row)
    return rows


def recurrences(fw: Framework, sizes: Sizes) -> list[Row]:
    """linear_recurrence and qrnn pooling against a copy and the log-space formulation."""
    rows = []
    compiled = _compiles(fw)
    shape = sizes.linear
    rng = np.random.default_rng(0)
    a = fw.tensor(rng.uniform(0.5, 1.0, shape).astype(np.float32))
    b = fw.tensor(rng.uniform(0.1, 1.0, shape).astype(np.float32))

    def ours(a: Any, b: Any) -> Any:
        return fw.backend.linear_recurrence(a, b)

    def logs(a: Any, b: Any) -> Any:
        return logspace.linear_recurrence(fw, a, b)

    for mode in _modes(sizes):
        calls = {
            "rnnspec linear_recurrence": _timed(fw, ours, a, b, mode, compiled),
            "log-space": _timed(fw, logs, a, b, mode, compiled),
            "copy": fw.copy(a),
        }
        timings = alternate(calls, sizes.repeats)
        names = ("rnnspec linear_recurrence", "copy")
        row = compare("recurrences", fw.name, "linear_recurrence", shape_text(*shape), mode, names, timings)
        if mode == FWD:
            # Bytes moved: a, b in and h out (3N) against the copy's one in, one out (2N).
            fraction = 1.5 / row["ratio"]
            row["target"], row["met"] = f">= 50% of copy bandwidth {BEST_BACKEND} (ratio <= 3.00x)", fraction >= 0.5
            row["note"] = f"{100 * fraction:.0f}% of copy bandwidth"
        rows.append(row)
        names = ("rnnspec linear_recurrence", "log-space")
        rows.append(
            compare("recurrences", fw.name, "linear_recurrence", shape_text(*shape), mode, names, timings, at_most=1.0)
        )
    shape = sizes.qrnn
    host = rnnspec.init_params("qrnn", input_size=shape[2], hidden_size=shape[2], seed=0, mode="fo", window=1)
    params = fw.params(host)
    _, x = _inputs(fw, shape)
    for mode in _modes(sizes):
        calls = {
            "rnnspec qrnn": _timed(fw, _run(fw, "qrnn", mode="fo"), x, params, mode, compiled),
            "log-space qrnn": _timed(fw, lambda x, p: logspace.qrnn_fo(fw, x, p), x, params, mode, compiled),
        }
        timings = alternate(calls, sizes.repeats)
        names = ("rnnspec qrnn", "log-space qrnn")
        rows.append(compare("recurrences", fw.name, "qrnn fo", shape_text(*shape), mode, names, timings, at_most=1.0))
    return rows


#: Gate blocks G of the cell each adaptive op's port runs (act's is a gru).
_PORT_GATES = {"skip_gru": 3, "skip_lstm": 4, "act": 3}


def _inner_steps(fw: Framework, op: str, x: Any, params: Any) -> int:
    """The recurrent steps a batched implementation takes: T for Skip RNN; for ACT, the sum over
    time of the most inner steps any row takes (the port's inner loop runs until every row halts)."""
    steps = int(x.shape[1])
    if op != "act":
        return steps
    result = fw.backend.act(x, params, cell="gru", epsilon=EPSILON, max_steps=MAX_STEPS)
    return int(np.asarray(fw.backend.to_numpy(result.ponder_steps)).max(axis=0).sum())


def _floor_rows(fw: Framework, op: str, shape: Shape, mode: str, timings: dict[str, Any], inner: int) -> list[Row]:
    """rnnspec and the port against the matmul floor: port / floor is the best ratio any implementation reaches."""
    rows = []
    for name in (f"rnnspec {op}", "Python loop"):
        row = compare("python loop", fw.name, op, shape_text(*shape), mode, (name, "matmul floor"), timings)
        row["note"] = f"floor: {inner} recurrent steps' matmuls only (ports.matmul_floor)"
        if name == "Python loop":
            # The best any implementation can do is the floor: port / floor bounds its speed-up over the port.
            bound = PORT_TARGETS[mode][0]
            verdict = "reachable" if row["ratio"] >= 1.0 / bound else "UNREACHABLE on this machine"
            row["note"] += f"; best reachable speed-up {row['ratio']:.2f}x: {1.0 / bound:.0f}x {verdict}"
        rows.append(row)
    return rows


def python_loops(fw: Framework, sizes: Sizes) -> list[Row]:
    """indrnn and the adaptive ops (default initialisation) against their plain Python-loop ports.

    Each adaptive op is timed beside the matmul floor of its shape (:func:`.ports.matmul_floor`):
    rows ``Python loop / matmul floor`` give the best speed-up over the port that any
    implementation could reach on the machine (under the target's 3x forward, 2x forward+backward
    of :data:`PORT_TARGETS`: out of reach), rows ``rnnspec / matmul floor`` how far rnnspec is from it.
    """
    shape = sizes.port
    batch, steps, hidden = shape
    compiled = _compiles(fw)
    _, x = _inputs(fw, shape)
    contenders: list[tuple[str, dict[str, Any], Callable[[Any, Any], Any], Callable[[Any, Any], Any]]] = [
        ("indrnn", {}, _run(fw, "indrnn"), lambda x, p: ports.indrnn(fw, x, p)),
        ("skip_gru", {}, _run(fw, "skip_gru"), lambda x, p: ports.skip_cell(fw, x, p, "gru")),
        ("skip_lstm", {}, _run(fw, "skip_lstm"), lambda x, p: ports.skip_cell(fw, x, p, "lstm")),
        (
            "act",
            {"cell": "gru"},
            _run(fw, "act", cell="gru", epsilon=EPSILON, max_steps=MAX_STEPS),
            lambda x, p: ports.act(fw, x, p, EPSILON, MAX_STEPS),
        ),
    ]
    rows = []
    for op, init, ours, port in contenders:
        if op.startswith("skip_") and op not in sizes.skip_ops:
            continue
        params = fw.params(rnnspec.init_params(op, input_size=hidden, hidden_size=hidden, seed=0, **init))
        inner = _inner_steps(fw, op, x, params)
        floor = None
        if op in _PORT_GATES:
            features = hidden + (1 if op == "act" else 0)  # act's cell reads [x_t, flag]
            floor = ports.floor_arrays(fw, batch, steps, features, hidden, _PORT_GATES[op], inner)
        for mode in _modes(sizes):
            calls = {f"rnnspec {op}": _timed(fw, ours, x, params, mode, compiled)}
            calls["Python loop"] = _timed(fw, port, x, params, mode, False)
            if floor is not None:
                calls["matmul floor"] = fw.forward(ports.matmul_floor, fw, floor, mode == TRAIN)
            timings = alternate(calls, sizes.repeats)
            bound, words = (None, "") if op == "indrnn" else PORT_TARGETS[mode]
            row = compare(
                "python loop",
                fw.name,
                op,
                shape_text(*shape),
                mode,
                (f"rnnspec {op}", "Python loop"),
                timings,
                at_most=bound,
                target=words,
            )
            rows.append(row)
            if floor is not None:
                rows.extend(_floor_rows(fw, op, shape, mode, timings, inner))
    return rows


#: Every section, in the order of the table.
SECTIONS: dict[str, Callable[[Framework, Sizes], list[Row]]] = {
    "classic": classic,
    "skip": skip,
    "act": act,
    "phased": phased,
    "recurrences": recurrences,
    "python_loops": python_loops,
    "training": training.training,
}
