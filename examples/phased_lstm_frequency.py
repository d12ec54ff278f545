"""Phased LSTM's frequency discrimination task (Neil, Pfeiffer and Liu 2016, task 1): Phased LSTM against LSTM.

Each sequence samples a sine wave ``sin(2 pi t / period - shift)`` over a window of
15 to 125 ms; the period is log-uniform in (1, 100) ms, or, for the first half of
each batch, uniform in the target band (5, 6) ms; the target is 1 when the period
lies in the band (about 52% of the sequences). Three sampling conditions
(``--condition``), each trained and tested on its own:

- ``high``: regular samples every 0.1 ms (``--high-resolution``), up to 1250 steps;
- ``low``: regular samples every 1 ms (``--low-resolution``), up to 125 steps, the
  paper's "standard" condition;
- ``async``: 15 to 124 sample times drawn uniformly over the window.

The Phased LSTM (110 units) reads the samples, and the sample times as its
``timestamps``; the LSTM of equal units reads the samples and the sample times
(in ms, unscaled) as a second input feature, as the authors' LSTM baseline does
in every condition. Each model is its layer and a linear readout of its output at the
last valid step, one logit, trained with the binary cross-entropy and Adam,
batches of 32 freshly drawn sequences. The Phased LSTM follows the authors'
``freq_task.py`` (dannyneil/public_plstm): peepholes, periods ``tau ~
exp(U(1, 3))`` ms (``period_range=(e, e^3)``), ``r_on = 0.05``, trained
(``tau``, ``s`` and ``r_on`` all learnt), leak 1e-3 in training and 0 at test
(``ModelSpec.eval_options``). The held-out accuracy of each condition is
measured on 500 sequences drawn once from ``--seed`` + 10000.

    python examples/phased_lstm_frequency.py --backend torch [--condition high|low|async|all]
        [--recipe short|paper] [--quick] [--out DIR] [--seed N] [--resume] [--checkpoint-every N]
        [--models NAME,...]

Two recipes (``--recipe``); a flag given overrides the recipe's value:

- ``short`` (the default): 800 updates per model, global-norm clipping at 1,
  20 evaluations; about 30 minutes for the three conditions on one thread
  (an update of the six models takes 1.3 to 1.7 s of CPU; the Phased LSTM at
  0.1 ms, 1250 steps, about 1 s of it). ``--condition`` or ``--models`` splits
  the run into processes, one per core, that a last run with ``--resume``
  reports together.
- ``paper``, the authors' ``a_freq_task.sh``: 70 epochs of 5000 sequences in
  batches of 32 (157 batches an epoch, 10990 updates), evaluated once an epoch,
  no global-norm clipping.

Departures from the authors' code, besides the one seed (they average five) and
no batch-normalised LSTM:

- their readout is a two-unit dense layer with a leaky ReLU and a softmax
  (categorical cross-entropy); here one logit and the binary cross-entropy;
- their cells' init is Lasagne's (weights and peepholes N(0, 0.1^2), input-gate
  bias -0.1), and the phase shift ``s`` is drawn from U(0, 100) ms; here the
  layers' init (``U(-1/sqrt(H), 1/sqrt(H))``, no bias offset) and ``s ~ U(0,
  tau)``: every phase of each unit's period, as theirs covers;
- their gate reads ``(t + s) mod tau`` and ``|tau|``, ``|r_on|``; rnnspec's
  reads ``(t - s) mod tau`` (the sign of ``s`` only) and ``tau``, ``r_on`` as
  they are (the report prints the smallest ``r_on`` learnt);
- Lasagne's ``grad_clipping=10``, an elementwise clip of the gates' gradient at
  every step, has no counterpart in rnnspec's layers; left out (``--clip``: a
  global-norm clip instead);
- they left-pad each batch to its longest sequence and mask the padding (the
  state is kept); here every batch is right-padded to the condition's longest
  possible sequence (fixed shapes for JAX's and TensorFlow's compiled steps),
  the layers run over the padding and the readout reads each row's last valid
  step, whose output is the row's own (the layers are causal): the same model;
- they validate on 500 fresh sequences after every epoch; here one held-out set.

The learning curve of each model goes to ``phased_lstm_frequency_<model>.csv``
in ``--out`` as it trains (update, mean training loss since the row before,
held-out accuracy, for the Phased LSTM the fraction of unit-steps whose gate is
open, seconds), its checkpoint to ``phased_lstm_frequency_<model>.ckpt``; the
plots to ``phased_lstm_frequency.png`` (accuracy per condition, learning curves)
and ``phased_lstm_frequency_openness.png`` (the openness ``k`` of the units over
one held-out sequence, leak 0).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from typing import Any

import numpy as np
import plots
from cli import TEST_SEED_OFFSET, Example, ExampleParser
from models import ModelSpec, Trainer
from tasks import FrequencyTask
from training import History, format_table

RECIPES = {
    "short": "about 30 minutes: 800 updates per model, clipping at 1",
    "paper": "the authors': 70 epochs of 5000 sequences (10990 updates per model), no clipping",
}
#: The sampling conditions, in the order they train and plot.
CONDITIONS = ("high", "low", "async")
#: How each condition is described.
CONDITION_TEXT = {"high": "regular, high resolution", "low": "regular, low resolution", "async": "asynchronous"}
#: The paper's Phased LSTM: its periods tau ~ exp(U(1, 3)) ms, its open ratio.
PERIOD_RANGE = (math.e, math.e**3)
RATIO_ON = 0.05
#: Held-out sequences run through the model at once (their memory grows with the 1250 steps of ``high``).
EVAL_CHUNK = 100


def build_parser() -> ExampleParser:
    """The example's options and recipes."""
    parser = ExampleParser(__doc__ or "", "phased_lstm_frequency")
    parser.add_recipes(RECIPES)
    parser.add_argument(
        "--condition", choices=(*CONDITIONS, "all"), default="all", help="the sampling condition(s) to train (all)"
    )
    parser.add_setting("--steps", int, {"short": 800, "paper": 10_990}, "training updates per model", quick=8)
    parser.add_setting("--hidden", int, 110, "units of each model", quick=8)
    parser.add_setting("--batch", int, 32, "batch size", quick=8)
    parser.add_setting("--lr", float, 1e-3, "Adam's step size")
    parser.add_setting("--clip", float, {"short": 1.0, "paper": 0.0}, "global gradient-norm clip, 0: none")
    parser.add_setting("--leak", float, 1e-3, "the Phased LSTM's leak in training (0 at test)")
    parser.add_setting("--high-resolution", float, 0.1, "ms between the samples of the high condition")
    parser.add_setting("--low-resolution", float, 1.0, "ms between the samples of the low condition")
    parser.add_setting("--max-duration", float, 125.0, "the longest window, ms (the shortest is 15 ms)", quick=20.0)
    parser.add_setting("--test-size", int, 500, "held-out sequences per condition", quick=32)
    parser.add_setting("--evaluations", int, {"short": 20, "paper": 70}, "held-out evaluations over the run")
    parser.add_training_options(checkpoint_every=100, quick_checkpoint_every=3)
    return parser


def make_task(args: argparse.Namespace, condition: str) -> FrequencyTask:
    """The task of one sampling condition."""
    resolution = {"high": args.high_resolution, "low": args.low_resolution, "async": None}[condition]
    if args.max_duration < 15.0:
        raise SystemExit(f"phased_lstm_frequency: --max-duration must be at least 15 ms, got {args.max_duration}")
    return FrequencyTask(resolution, duration_range=(15.0, args.max_duration))


def model_specs(args: argparse.Namespace, condition: str) -> list[ModelSpec]:
    """The Phased LSTM and the LSTM of one condition."""
    common: dict[str, Any] = {"loss": "bce", "learning_rate": args.lr, "clip_norm": args.clip or None}
    phased = ModelSpec(
        f"Phased LSTM ({condition})",
        "phased_lstm",
        1,
        args.hidden,
        options={
            "peepholes": True,
            "leak": args.leak,
            "period_range": PERIOD_RANGE,
            "ratio_on": RATIO_ON,
        },  # r_on trained: the layers' default trainable_ratio_on=True
        eval_options={"leak": 0.0},
        **common,
    )
    lstm = ModelSpec(f"LSTM ({condition})", "lstm", 2, args.hidden, input_extras=("timestamps",), **common)
    return [phased, lstm]


def openness(timestamps: np.ndarray, params: dict[str, np.ndarray], leak: float = 0.0) -> np.ndarray:
    """The time gate ``k`` (..., H) of each unit at each of ``timestamps`` (...), as spec/ops/phased_lstm.md defines
    it: ``phi = ((t - s) mod tau) / tau``; ``2 phi / r_on`` rising, ``2 - 2 phi / r_on`` falling, ``leak * phi``
    closed."""
    t = np.asarray(timestamps, np.float64)[..., None]
    tau, s, r_on = (np.asarray(params[k], np.float64) for k in ("tau", "s", "r_on"))
    shifted = t - s
    phase = (shifted - tau * np.floor(shifted / tau)) / tau
    rising = 2.0 * phase / r_on
    k: np.ndarray = np.where(phase < r_on / 2, rising, np.where(phase < r_on, 2.0 - rising, leak * phase))
    return k


def open_fraction(params: dict[str, np.ndarray], timestamps: np.ndarray, lengths: np.ndarray) -> float:
    """The fraction of (unit, valid step) pairs whose gate is open (``k > 0`` at leak 0): the state updates made."""
    times = timestamps[np.arange(timestamps.shape[1])[None, :] < lengths[:, None]]
    opened = sum(
        int(np.count_nonzero(openness(times[i : i + 20_000], params) > 0)) for i in range(0, times.size, 20_000)
    )
    return opened / (times.size * params["tau"].shape[0])


def accuracy(trainer: Trainer, x: np.ndarray, y: np.ndarray, extras: dict[str, np.ndarray]) -> float:
    """The held-out accuracy: the logit's sign against the target, run in chunks of :data:`EVAL_CHUNK`."""
    right = 0
    for start in range(0, x.shape[0], EVAL_CHUNK):
        rows = slice(start, start + EVAL_CHUNK)
        logits = trainer.predict(x[rows], {k: v[rows] for k, v in extras.items()})["output"]
        right += int(np.sum((logits > 0) == (y[rows] > 0.5)))
    return right / x.shape[0]


def without_models(ex: Example) -> Example:
    """``ex`` with ``--models`` cleared: each condition's call trains its share of the models already chosen."""
    return dataclasses.replace(ex, args=argparse.Namespace(**{**vars(ex.args), "models": None}))


def _bars(ax: Any, results: dict[str, dict[str, float]], conditions: list[str], chance: dict[str, float]) -> None:
    """Held-out accuracy per condition, one bar per model, the majority class's share as a dashed line."""
    width = 0.38
    for i, model in enumerate(("Phased LSTM", "LSTM")):
        values = [results[c].get(model, np.nan) for c in conditions]
        bars = ax.bar(np.arange(len(conditions)) + (i - 0.5) * width, [100 * v for v in values], width, label=model)
        for bar, value in zip(bars, values, strict=True):
            if np.isfinite(value):
                ax.annotate(f"{100 * value:.1f}", (bar.get_x() + width / 2, 100 * value), ha="center", va="bottom")
    for j, c in enumerate(conditions):
        label = "majority class" if j == 0 else None
        ax.hlines(100 * chance[c], j - width, j + width, colors="k", linestyles="--", linewidth=1, label=label)
    ax.set_xticks(range(len(conditions)), [CONDITION_TEXT[c].replace(", ", ",\n") for c in conditions])
    ax.set_ylabel("held-out accuracy (%)")
    lowest = min([100 * v for c in conditions for v in results[c].values()], default=40.0)
    ax.set_ylim(min(40.0, 10 * math.floor(lowest / 10)), 105)
    ax.legend(loc="upper left", fontsize=8, ncols=3)
    ax.grid(True, axis="y", alpha=0.3)


def _curves(ax: Any, histories: list[History]) -> None:
    """Held-out accuracy against the update step: the bars' colour per model, a line style per condition."""
    styles = dict(zip(CONDITIONS, ("-", "--", ":"), strict=True))
    for history in histories:
        colour = "C0" if history.name.startswith("Phased") else "C1"
        style = next((styles[c] for c in CONDITIONS if history.name.endswith(f"({c})")), "-")
        values = [100 * v for v in history.eval_values]
        ax.plot(history.eval_steps, values, style, color=colour, marker=".", label=history.name)
    ax.set_xlabel("update step")
    ax.set_ylabel("held-out accuracy (%)")
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)


def _openness_panels(axes: Any, task: FrequencyTask, condition: str, params: dict[str, np.ndarray], row: Any) -> None:
    """One held-out sequence (top) and the openness of the units, sorted by period, over its window (bottom)."""
    n = int(row.lengths)
    times, wave = row.timestamps[:n], row.x[:n, 0]
    grid = np.linspace(times[0], times[-1], 1000)
    axes[0].plot(grid, np.sin(2 * np.pi / row.periods * grid - row.shifts), color="0.7", linewidth=1)
    axes[0].plot(times, wave, ".", markersize=2 if n > 100 else 5)
    label = "in the band" if row.y[0] > 0.5 else "outside the band"
    axes[0].set_title(f"{CONDITION_TEXT[condition]}: period {row.periods:.2f} ms ({label}), {n} samples", fontsize=9)
    axes[0].set_ylabel("x")
    order = np.argsort(params["tau"])
    k = openness(grid, params)[:, order]
    axes[1].pcolormesh(grid, np.arange(len(order)), k.T, cmap="Greys", vmin=0, vmax=1, shading="nearest")
    opened = 100 * float(np.mean(openness(times, params) > 0))
    axes[1].set_title(
        f"openness k of the {len(order)} units (sorted by period, leak 0): open at {opened:.1f}% of unit-samples; "
        f"tau {params['tau'].min():.2f}-{params['tau'].max():.1f} ms, r_on {params['r_on'].min():.3f}-"
        f"{params['r_on'].max():.3f}",
        fontsize=8,
    )
    axes[1].set_ylabel("unit")
    axes[1].set_xlabel("time (ms)")
    axes[0].set_xlim(axes[1].get_xlim())


def main(argv: list[str] | None = None) -> None:
    """Train and report (``argv``: the command line's arguments, ``sys.argv[1:]`` if None)."""
    ex = build_parser().setup(argv)
    args = ex.args
    conditions = list(CONDITIONS) if args.condition == "all" else [args.condition]
    every = [spec for c in conditions for spec in model_specs(args, c)]
    chosen = {spec.name for spec in ex.selected(every)}  # refuses an unknown --models name, naming the models
    trainer_ex = without_models(ex)
    print(
        f"frequency discrimination: band 5-6 ms, {args.hidden} units, batch {args.batch}, {args.steps} updates, "
        f"backend {args.backend}; conditions {', '.join(conditions)}"
    )
    print(ex.settings())

    results: dict[str, dict[str, float]] = {c: {} for c in conditions}
    chance: dict[str, float] = {}
    histories: list[History] = []
    rows = []
    shown: list[tuple[str, FrequencyTask, dict[str, np.ndarray], Any]] = []
    for condition in conditions:
        task = make_task(args, condition)
        # Each condition's held-out set from a stream of its own: the same whichever conditions run.
        test_rng = np.random.default_rng((args.seed + TEST_SEED_OFFSET, CONDITIONS.index(condition)))
        test = task.sample(test_rng, args.test_size)
        extras = {"timestamps": test.timestamps, "lengths": test.lengths}
        chance[condition] = max(float(test.y.mean()), 1 - float(test.y.mean()))
        specs = [s for s in model_specs(args, condition) if s.name in chosen]
        if not specs:
            continue
        print(f"\n{condition}: {CONDITION_TEXT[condition]}, up to {task.max_steps} steps")

        def evaluate(trainer: Trainer, x: np.ndarray = test.x, y: np.ndarray = test.y, e: Any = extras) -> Any:
            measures = {"accuracy": accuracy(trainer, x, y, e)}
            if trainer.spec.op == "phased_lstm":
                measures["open"] = open_fraction(trainer.layer_params()[0], e["timestamps"], e["lengths"])
            return measures

        data = {
            "condition": condition,
            "resolution": task.resolution,
            "duration_range": task.duration_range,
            "batch": args.batch,
        }
        draw = lambda r, t=task: t.batch(r, args.batch)  # noqa: E731
        trained = trainer_ex.train_each(specs, draw, evaluate, args.steps, args.evaluations, "accuracy", data)
        for spec, trainer, history in trained:
            histories.append(history)
            model = "Phased LSTM" if spec.op == "phased_lstm" else "LSTM"
            results[condition][model] = history.eval_values[-1]
            updates_used, r_on = "100%", "-"
            if spec.op == "phased_lstm":
                params = trainer.layer_params()[0]
                updates_used = f"{100 * history.rows[-1]['open']:.1f}%"
                r_on = f"{params['r_on'].min():.3f}-{params['r_on'].max():.3f}"
                shown.append((condition, task, params, test))
            rows.append(
                [
                    condition,
                    model,
                    f"{100 * history.eval_values[-1]:.1f}%",
                    f"{100 * max(history.eval_values):.1f}%",
                    updates_used,
                    r_on,
                    f"{spec.parameter_count()}",
                    f"{trainer.updates}",
                    f"{history.seconds:.0f} s",
                ]
            )

    print()
    header = ["condition", "model", "accuracy", "best", "gate open", "r_on", "params", "trained", "time"]
    print(format_table(header, rows))
    print(
        "(gate open: the fraction of unit-steps whose gate is open at test, leak 0; majority class: "
        + ", ".join(f"{c} {100 * chance[c]:.1f}%" for c in conditions)
        + ". Paper, Fig. 3b, after 70 epochs: Phased LSTM about 99% (1 ms), 99% (0.1 ms), 98% (async); "
        "LSTM about 89%, 52%, 69%, read off the authors' bar chart)"
    )

    trained_conditions = [c for c in conditions if results[c]]
    fig, axes = plots.plt.subplots(1, 2, figsize=(12, 4.5))
    _bars(axes[0], results, trained_conditions, chance)
    axes[0].set_title(f"frequency discrimination ({args.backend}, recipe {ex.recipe}, {args.steps} updates)")
    _curves(axes[1], histories)
    path = plots.save(fig, ex.out / "phased_lstm_frequency.png")
    print(f"plot: {path}")
    if shown:
        fig, axes = plots.plt.subplots(
            2 * len(shown), 1, figsize=(10, 3.2 * len(shown)), gridspec_kw={"height_ratios": [1, 2] * len(shown)}
        )
        for i, (condition, task, params, test) in enumerate(shown):
            first = test._replace(**{f: getattr(test, f)[0] for f in test._fields})
            _openness_panels(axes[2 * i : 2 * i + 2], task, condition, params, first)
        path = plots.save(fig, ex.out / "phased_lstm_frequency_openness.png")
        print(f"plot: {path}")


if __name__ == "__main__":
    main()
