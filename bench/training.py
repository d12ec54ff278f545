"""The training section: one optimiser update of each paper task's model, per framework backend.

An update is what a training loop repeats: the model's forward pass, the task's loss, the
backward pass and one Adam step. Each task's model (:class:`.framework.Net`: the recurrent
stack at the paper's size and a linear readout of its last output) is updated, side by side in
one process on the same batch (:func:`.timing.alternate`), by

- rnnspec: the backend's layer (``rnnspec.backends.torch.nn``, ``.jax.nnx``,
  ``.tensorflow.keras``) trained as the framework's users train a module
  (:meth:`.framework.Framework.model`: ``torch.optim.Adam``; ``nnx.Optimizer`` under
  ``nnx.jit``; Keras' Adam in a ``tf.function``, graph mode: see the TensorFlow adapter's ``model``);
- the framework's own layer of the same size, where it has one (``torch.nn.GRU``/``RNN``,
  Flax's ``nnx.RNN`` over ``GRUCell``/``SimpleCell``, Keras' ``GRU``/``SimpleRNN``), trained the
  same way;
- the original algorithm as a plain per-step loop in the framework (:mod:`.ports`; QRNN's is
  Salesforce's ``ForgetMult`` loop), eagerly with the framework's autodiff, then the framework's
  Adam step (:meth:`.framework.Framework.adam`), holding the same weights as rnnspec's layer;
- the floor (:func:`.ports.update_floor`): the stack's matmuls alone, forward and backward,
  and one fused multiply-add over its activations each way.

Rows give rnnspec's time over each of the three (``ratio``); the notes give the baselines' own
distance from the floor. The tasks (sizes in :mod:`.sizes`; the originals' recipes in the
examples' docs): Skip RNN's adding task (skip_gru, 1 x 110, B=256, T=50), IndRNN's adding
problem (2 x 128 relu, B=50, T=1000), ACT's parity (act over a tanh rnn cell, 128 units, B=128,
8 bits, one step, binary cross-entropy) and a QRNN layer (fo, window 2, B=16, T=1024, H=256),
the last also forward only. Only the task loss is minimised: no budget or ponder cost, no
clipping, no IndRNN constraint, which add a few elementwise ops to every contender alike.
Targets are printed as met or missed, never asserted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

import rnnspec

from . import ports
from .framework import Framework, Net, task_loss
from .rows import Row, compare
from .sizes import Sizes, Task
from .timing import Timing, alternate

__all__ = [
    "FORWARD",
    "UPDATE",
    "Case",
    "Timer",
    "cases",
    "floor_layers",
    "floor_text",
    "indrnn_adding",
    "native_name",
    "noise",
    "parity",
    "run_case",
    "skip_adding",
    "training",
]

#: Times named callables: ``(calls, repeats) -> {name: Timing}`` (:func:`.timing.alternate`).
Timer = Callable[[Mapping[str, Callable[[], object]], int], dict[str, Timing]]

UPDATE, FORWARD = "update", "forward"
#: ACT's halting threshold and step cap (the parity example's).
EPSILON, MAX_STEPS = 0.01, 100
#: The framework's own layer, by backend and torch's name for it.
NATIVE_NAMES = {
    "torch": {"GRU": "torch.nn.GRU", "LSTM": "torch.nn.LSTM", "RNN": "torch.nn.RNN"},
    "jax": {"GRU": "nnx.RNN(GRUCell)", "LSTM": "nnx.RNN(LSTMCell)", "RNN": "nnx.RNN(SimpleCell)"},
    "tensorflow": {"GRU": "keras GRU", "LSTM": "keras LSTM", "RNN": "keras SimpleRNN"},
}
PORT, FLOOR = "Python loop", "floor"

Data = Callable[[np.random.Generator, Task], tuple[np.ndarray, np.ndarray]]
Port = Callable[[Framework, Any, Any], Any]


def _adding(
    rng: np.random.Generator, task: Task, low: float, high: float, first: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """An adding-problem batch: values from U(low, high) and two markers, the first in ``first`` (fractions of
    T), the second in the last half; the target is the sum of the marked values."""
    batch, steps = task.batch, task.steps
    values = rng.uniform(low, high, (batch, steps))
    start, stop = int(first[0] * steps), max(int(first[0] * steps) + 1, int(first[1] * steps))
    a = rng.integers(start, stop, batch)
    b = rng.integers(max(steps // 2, stop), steps, batch)
    markers = np.zeros((batch, steps))
    rows = np.arange(batch)
    markers[rows, a] = markers[rows, b] = 1.0
    x = np.stack([values, markers], axis=-1).astype(np.float32)
    return x, (values[rows, a] + values[rows, b])[:, None].astype(np.float32)


def skip_adding(rng: np.random.Generator, task: Task) -> tuple[np.ndarray, np.ndarray]:
    """Skip RNN's adding task: values U(-0.5, 0.5), the first marker in the first 10% of the steps."""
    return _adding(rng, task, -0.5, 0.5, (0.0, 0.1))


def indrnn_adding(rng: np.random.Generator, task: Task) -> tuple[np.ndarray, np.ndarray]:
    """IndRNN's adding problem: values U(0, 1), one marker in each half."""
    return _adding(rng, task, 0.0, 1.0, (0.0, 0.5))


def parity(rng: np.random.Generator, task: Task) -> tuple[np.ndarray, np.ndarray]:
    """ACT's parity: 1 to ``features`` entries of -1 or 1 at random places, the rest 0; target 1 for an odd
    number of ones. One step per sequence (``task.steps`` copies of it)."""
    bits = task.features
    count = rng.integers(1, bits + 1, task.batch)
    keep = np.argsort(rng.random((task.batch, bits)), axis=1) < count[:, None]
    x = np.where(keep, rng.choice(np.array([-1.0, 1.0]), (task.batch, bits)), 0.0)
    y = (np.sum(x == 1.0, axis=1) % 2)[:, None]
    return np.repeat(x[:, None], task.steps, axis=1).astype(np.float32), y.astype(np.float32)


def noise(rng: np.random.Generator, task: Task) -> tuple[np.ndarray, np.ndarray]:
    """Standard normal inputs and targets (the QRNN layer has no paper task here)."""
    x = rng.standard_normal((task.batch, task.steps, task.features)).astype(np.float32)
    return x, rng.standard_normal((task.batch, 1)).astype(np.float32)


@dataclass(frozen=True)
class Case:
    """One task of the section: its model, data, Python-loop port, modes and targets.

    ``native_target``, ``port_target`` and ``floor_target`` bound rnnspec's time over the
    framework's own layer, the port and the floor (None: no target).
    """

    name: str
    task: Task
    net: Net
    data: Data
    port: Port
    modes: tuple[str, ...] = (UPDATE,)
    native_target: float | None = None
    port_target: float | None = None
    floor_target: float | None = None
    port_name: str = PORT


def cases(sizes: Sizes) -> list[Case]:
    """The section's tasks at ``sizes``."""
    skip, ind, act, qrnn = sizes.skip_adding, sizes.indrnn_adding, sizes.act_parity, sizes.qrnn_layer
    return [
        Case(
            "skip_gru adding task",
            skip,
            Net("skip_gru", skip.features, skip.hidden, native="GRU"),
            skip_adding,
            lambda fw, x, p: ports.skip_cell(fw, x, p, "gru"),
            native_target=1.10,
        ),
        Case(
            "indrnn adding problem",
            ind,
            Net(
                "indrnn",
                ind.features,
                ind.hidden,
                ind.layers,
                options=(("seq_len", ind.steps), ("last_layer_init", True)),
                native="RNN",
                activation="relu",
            ),
            indrnn_adding,
            ports.indrnn,
            floor_target=1.20,
        ),
        Case(
            "act parity",
            act,
            Net(
                "act",
                act.features,
                act.hidden,
                options=(("cell", "rnn"), ("max_steps", MAX_STEPS)),
                native="RNN",
                loss="bce",
            ),
            parity,
            lambda fw, x, p: ports.act(fw, x, p, EPSILON, MAX_STEPS, cell="rnn"),
        ),
        Case(
            "qrnn fo window 2",
            qrnn,
            Net("qrnn", qrnn.features, qrnn.hidden, options=(("mode", "fo"), ("window", 2))),
            noise,
            ports.qrnn,
            modes=(FORWARD, UPDATE),
            port_target=0.70,
            port_name="Salesforce loop",
        ),
    ]


def native_name(backend: str, native: str) -> str:
    """The framework's own layer as the rows name it (``torch.nn.GRU``, ``nnx.RNN(GRUCell)``, ``keras GRU``)."""
    return NATIVE_NAMES[backend][native]


def floor_layers(net: Net, inner: int) -> list[ports.FloorLayer]:
    """The floor's view of ``net``'s stack: each layer's input features (window K times the input for
    qrnn, one more for act's flag), units, gate blocks and ``inner`` sequential recurrent matmuls."""
    gates = {"skip_gru": 3, "skip_lstm": 4, "act": 1, "indrnn": 1, "qrnn": 3}[net.op]
    options = net.kwargs
    first = net.features * int(options.get("window", 1)) + (1 if net.op == "act" else 0)
    return [
        ports.FloorLayer(first if k == 0 else net.hidden * int(options.get("window", 1)), net.hidden, gates, inner)
        for k in range(net.layers)
    ]


def _inner_and_note(fw: Framework, case: Case, x: Any, params: Any) -> tuple[int, str]:
    """The recurrent matmuls a batched implementation takes, and the row's note on the op's adaptive work."""
    net, steps = case.net, case.task.steps
    if net.op.startswith("skip_"):
        result = getattr(fw.backend, net.op)(x, params)
        rate = float(np.mean(fw.backend.to_numpy(result.update_gate)))
        return steps, f"update rate {rate:.2f} (at init)"
    if net.op == "act":
        result = fw.backend.act(x, params, **net.kwargs)
        ponder = np.asarray(fw.backend.to_numpy(result.ponder_steps))
        inner = int(ponder.max(axis=0).sum())
        return inner, f"mean ponder {ponder.mean():.2f}, {inner} inner steps (at init)"
    return 0, ""


def floor_text(net: Net, inner: int, training: bool) -> str:
    """What the floor of ``net`` times, for the floor row's note."""
    matmuls = f"{inner} recurrent steps' matmuls" if inner else "no recurrent matmul"
    return (
        f"floor: {net.layers} layer(s), input projection and {matmuls}{', forward and backward' if training else ''}"
        f", {2 if training else 1} FMA pass(es) over the activations"
    )


def _rows(
    fw: Framework,
    case: Case,
    mode: str,
    timings: dict[str, Timing],
    names: Sequence[str],
    note: str,
    floor_note: str,
) -> list[Row]:
    """rnnspec against the framework's layer (if any), the port and the floor; the notes give each baseline's
    distance from the floor (the floor row's, what the floor times)."""
    ours, shape = f"rnnspec {case.net.op}", case.task.text()
    floor_ms = timings[FLOOR].median_ms

    def at_floor(name: str) -> str:
        return f"{name} at {timings[name].median_ms / floor_ms:.2f}x the floor"

    rows = []
    for base in names:
        bound = {case.port_name: case.port_target, FLOOR: case.floor_target}.get(base, case.native_target)
        words = {FLOOR: "the floor", case.port_name: f"the {case.port_name}"}.get(base, base)
        row = compare(
            "training",
            fw.name,
            case.name,
            shape,
            mode,
            (ours, base),
            timings,
            at_most=bound,
            target=f"<= {bound:.2f}x {words}" if bound is not None else "",
        )
        row["note"] = "; ".join(n for n in (floor_note if base == FLOOR else at_floor(base), note) if n)
        rows.append(row)
    return rows


def run_case(fw: Framework, case: Case, repeats: int, timer: Timer = alternate) -> list[Row]:
    """Time ``case``'s update (and forward pass, where asked) by every contender; its rows.

    ``timer`` times the contenders (:func:`.timing.alternate`; :mod:`.page_faults` passes its own).
    """
    net, task = case.net, case.task
    host = rnnspec.init_params(
        net.op, input_size=net.features, hidden_size=net.hidden, num_layers=net.layers, seed=0, **net.kwargs
    )
    x_host, y_host = case.data(np.random.default_rng(0), task)
    x, y = fw.tensor(x_host), fw.tensor(y_host)
    inner, note = _inner_and_note(fw, case, x, fw.params(host))
    floor = ports.update_floor_arrays(fw, task.batch, task.steps, floor_layers(net, inner))
    head = {
        "w": (np.random.default_rng(1).standard_normal((net.outputs, net.hidden)) / np.sqrt(net.hidden)).astype(
            np.float32
        ),
        "b": np.zeros(net.outputs, np.float32),
    }
    rows = []
    for mode in case.modes:
        update = mode == UPDATE
        port_params = {"rnn": fw.params(host), "head": fw.params([head])[0]}

        def readout(params: Any) -> Any:
            outputs = case.port(fw, x, params["rnn"])
            return fw.linear(outputs[:, -1], params["head"]["w"], params["head"]["b"])

        def loss(params: Any) -> Any:
            return task_loss(fw, readout(params), y, net.loss)

        calls = {f"rnnspec {net.op}": fw.model(net, x, y, training=update, host=host)}
        names = []
        if net.native is not None:
            names.append(native_name(fw.name, net.native))
            calls[names[-1]] = fw.model(net, x, y, training=update)
        names.append(case.port_name)
        if update:
            calls[case.port_name] = fw.adam(loss, port_params, net.learning_rate)
        else:
            calls[case.port_name] = fw.forward(readout, port_params)
        names.append(FLOOR)
        calls[FLOOR] = fw.forward(ports.update_floor, fw, floor, update)
        timings = timer(calls, repeats)
        rows.extend(_rows(fw, case, mode, timings, names, note, floor_text(net, inner, update)))
    return rows


def training(fw: Framework, sizes: Sizes) -> list[Row]:
    """One update (and QRNN's forward pass) of each paper task's model: rnnspec against the framework's own
    layer, the plain Python loop and the floor."""
    rows = []
    for case in cases(sizes):
        rows.extend(run_case(fw, case, sizes.repeats))
    return rows
