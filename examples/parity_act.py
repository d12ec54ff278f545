"""ACT's parity task (Graves 2016): RNNs with Adaptive Computation Time against a plain RNN.

Each example is a single input vector whose first entries, a random number
from 1 to ``--bits`` of them at random positions, are -1 or 1 and the rest 0;
the target is 1 when the number of ones is odd (Graves' form of the task;
zphang's reproduction sets a prefix of 1 to bits-1 entries instead). With one
input step, a plain RNN is a one-hidden-layer network; ACT lets the same cell
take several steps on the input ("ponder") and pays tau per step (the ponder
cost N + R). One ACT model is trained per tau of ``--taus``, beside the plain
RNN. The report gives each model's held-out error rate and mean ponder time,
and both against the difficulty (the number of non-zero bits); the plot shows
the learning curves and the same against the difficulty.

    python examples/parity_act.py --backend torch [--recipe short|paper] [--taus 1e-4,1e-3] [--quick]
        [--out DIR] [--seed N] [--resume] [--checkpoint-every N] [--models NAME,...]

Two recipes (``--recipe``); a flag given overrides the recipe's value:

- ``short`` (the default), about 10 minutes on two CPU cores: 8 bits, 128
  tanh units, batches of 128, Adam 1e-3, global-norm clipping at 1, 5000
  updates, tau 1e-3.
- ``paper``, Graves' setup as zphang/adaptive-computation-time-pytorch
  trains it: 128 tanh units, Adam 1.6e-3 on batches of 2048 (Graves: 1e-4 on
  batches of 128 in each of 16 workers; a ``--batch`` given scales the step
  size linearly, 1.6e-3 x batch / 2048, so that the step per example seen
  stays the original's, unless ``--lr`` is given too), no clipping, 50000
  updates, tau swept over 1e-4, 1e-3 and 1e-2, epsilon 0.01, at most 100
  ponder steps. One departure: 16 bits (the paper: 64, ``--bits 64``), a
  smaller problem, likelier to be learnt within the run (how many updates 64
  bits needs here is untested). On one thread an update of the plain RNN takes
  about 10 ms and ACT's about 8 ms more per ponder step, so a model trains in
  10 to 60 minutes, as its ponder time grows.

The learning curve of each model goes to ``parity_act_<model>.csv`` in
``--out`` as it trains (update, mean training loss since the row before,
held-out error rate, mean ponder time N + R and steps N, seconds), its
checkpoint to ``parity_act_<model>.ckpt``; the plot to ``parity_act.png``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import plots
from cli import Derived, ExampleParser
from models import ModelSpec, Trainer
from tasks import ParityTask
from training import History, format_table

RECIPES = {
    "short": "about 10 minutes: 8 bits, batch 128, Adam 1e-3, clipping at 1, 5000 updates, tau 1e-3",
    "paper": "Graves/zphang: batch 2048, Adam 1.6e-3 x batch / 2048, no clipping, 50000 updates, "
    "taus 1e-4,1e-3,1e-2; 16 bits (the paper 64)",
}
#: zphang's step size, for batches of this many examples (Graves' 1e-4 x 16 workers of 128).
PAPER_LR, PAPER_BATCH = 1.6e-3, 2048


def errors(trainer: Trainer, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """1 where the model's prediction (logit > 0) is wrong, per example."""
    logits = trainer.predict(x)["output"]
    return ((logits > 0).astype(np.float32) != y).astype(np.float32)[:, 0]


def build_parser() -> ExampleParser:
    """The example's options and recipes."""
    parser = ExampleParser(__doc__ or "", "parity_act")
    parser.add_recipes(RECIPES)
    parser.add_setting(
        "--bits", int, {"short": 8, "paper": 16}, "size of the input vector", quick=6, note=", the paper 64"
    )
    parser.add_setting(
        "--taus", str, {"short": "1e-3", "paper": "1e-4,1e-3,1e-2"}, "time penalties, one ACT model each"
    )
    parser.add_setting("--steps", int, {"short": 5000, "paper": 50_000}, "training updates per model", quick=20)
    parser.add_setting("--hidden", int, 128, "units", quick=16, note=", as the paper")
    parser.add_setting("--batch", int, {"short": 128, "paper": PAPER_BATCH}, "batch size", quick=32)
    parser.add_setting(
        "--lr",
        float,
        {"short": 1e-3, "paper": Derived("1.6e-3 x batch / 2048", lambda a: PAPER_LR * a.batch / PAPER_BATCH)},
        "Adam's step size",
    )
    parser.add_setting(
        "--clip", float, {"short": 1.0, "paper": 0.0}, "the global gradient norm is clipped to this, 0: no clipping"
    )
    parser.add_setting("--max-steps", int, 100, "ACT's cap M on the steps per input")
    parser.add_setting("--epsilon", float, 0.01, "ACT's halting threshold is 1 - epsilon")
    parser.add_setting("--evaluations", int, {"short": 20, "paper": 100}, "held-out evaluations over the run")
    parser.add_training_options()
    return parser


def parse_taus(text: str) -> list[str]:
    """The taus of ``--taus`` as written (the models' names use them), each checked to be a number >= 0."""
    taus = [t.strip() for t in text.split(",") if t.strip()]
    for tau in taus:
        try:
            ok = float(tau) >= 0
        except ValueError:
            ok = False
        if not ok:
            raise SystemExit(f"parity_act: --taus expects numbers >= 0 separated by commas, got {tau!r} in {text!r}")
    if not taus:
        raise SystemExit(f"parity_act: --taus expects at least one tau, got {text!r}")
    return taus


def model_specs(args: Any) -> list[ModelSpec]:
    """The plain RNN and one ACT-RNN per tau."""
    common: dict[str, Any] = {"loss": "bce", "learning_rate": args.lr, "clip_norm": args.clip or None}
    act_options = {"cell": "rnn", "max_steps": args.max_steps, "epsilon": args.epsilon}
    return [
        ModelSpec("RNN", "rnn", args.bits, args.hidden, **common),
        *(
            ModelSpec(
                f"ACT tau={tau}", "act", args.bits, args.hidden, options=act_options, ponder_weight=float(tau), **common
            )
            for tau in parse_taus(args.taus)
        ),
    ]


def difficulty_table(difficulty: np.ndarray, wrong: dict[str, np.ndarray], ponder: dict[str, np.ndarray]) -> str:
    """Error rate and mean ponder time per model against the number of non-zero bits (in at most 8 bands)."""
    levels = np.unique(difficulty)
    bands = np.array_split(levels, min(8, len(levels)))
    header = ["non-zero bits", *(f"{name} error / ponder" for name in wrong)]
    rows = []
    for band in bands:
        rows_in = np.isin(difficulty, band)
        label = f"{band[0]}" if len(band) == 1 else f"{band[0]}-{band[-1]}"
        cells = [f"{100 * wrong[n][rows_in].mean():.1f}% / {ponder[n][rows_in].mean():.2f}" for n in wrong]
        rows.append([label, *cells])
    return format_table(header, rows)


def main(argv: list[str] | None = None) -> None:
    """Train and report (``argv``: the command line's arguments, ``sys.argv[1:]`` if None)."""
    ex = build_parser().setup(argv)
    args = ex.args
    bits, steps, batch = args.bits, args.steps, args.batch

    task = ParityTask(bits)
    x_test, y_test, difficulty = task.batch(ex.test_rng, 256 if ex.quick else 2000)
    specs = model_specs(args)
    print(
        f"parity: {bits} bits, {args.hidden} units, batch {batch}, {steps} updates, taus {args.taus}, "
        f"backend {args.backend}"
    )
    print(ex.settings())

    histories: list[History] = []
    wrong: dict[str, np.ndarray] = {}
    ponder: dict[str, np.ndarray] = {}
    rows = []

    def evaluate(trainer: Trainer) -> dict[str, float]:
        result = trainer.predict(x_test)
        wrong_now = ((result["output"] > 0).astype(np.float32) != y_test).astype(np.float32)
        cost = result.get("ponder_cost", np.ones((len(x_test), 1), np.float32))
        taken = result.get("ponder_steps", np.ones((len(x_test), 1)))
        return {"error": float(wrong_now.mean()), "ponder": float(cost.mean()), "ponder_steps": float(taken.mean())}

    data = {"bits": bits, "batch": batch}
    draw = lambda r: task.batch(r, batch)[:2]  # noqa: E731
    for spec, trainer, history in ex.train_each(specs, draw, evaluate, steps, args.evaluations, "error", data):
        histories.append(history)
        result = trainer.predict(x_test)
        wrong[spec.name] = errors(trainer, x_test, y_test)
        ponder[spec.name] = result.get("ponder_cost", np.ones((len(x_test), 1), np.float32))[:, 0]
        steps_taken = result.get("ponder_steps", np.ones((len(x_test), 1)))[:, 0]
        rows.append(
            [
                spec.name,
                f"{100 * wrong[spec.name].mean():.1f}%",
                f"{ponder[spec.name].mean():.2f}",
                f"{steps_taken.mean():.2f} (max {int(steps_taken.max())})",
                f"{trainer.updates}",
                f"{history.seconds:.0f} s",
            ]
        )

    print()
    print(format_table(["model", "error", "ponder N+R", "steps N", "trained", "time"], rows))
    print("(random guessing: 50% error)")
    if wrong:
        print()
        print(difficulty_table(difficulty, wrong, ponder))

    fig, axes = plots.plt.subplots(1, 3, figsize=(14, 4))
    plots.learning_curves(axes[0], histories, "held-out error rate")
    axes[0].set_yscale("linear")
    axes[0].set_title(f"parity, {bits} bits ({args.backend}, recipe {ex.recipe})")
    plots.parity_difficulty(axes[1:], difficulty, wrong, ponder)
    path = plots.save(fig, ex.out / "parity_act.png")
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
