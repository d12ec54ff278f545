"""ACT's parity task (Graves 2016): an RNN with Adaptive Computation Time against a plain RNN.

Each example is a single input vector whose first entries, a random number
from 1 to ``--bits`` of them at random positions, are -1 or 1 and the rest 0;
the target is 1 when the number of ones is odd. With one input step, a plain
RNN is a one-hidden-layer network; ACT lets the same cell take several steps
on the input ("ponder") and pays tau per step (the ponder cost N + R). The
report gives the held-out error rate and the mean ponder time; the plot shows
both against the difficulty (the number of non-zero bits).

    python examples/parity_act.py --backend torch [--quick] [--out DIR] [--seed N]

Departures from the paper, to fit about 10 minutes on two CPU cores: 8 bits
(the paper: 64), Adam with step 1e-3 and far fewer updates (5000 of 128
examples); tau 1e-3 is within the paper's sweep.
"""

from __future__ import annotations

import numpy as np
import plots
from cli import ExampleParser
from models import ModelSpec, Trainer
from tasks import ParityTask
from training import History, format_table


def errors(trainer: Trainer, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """1 where the model's prediction (logit > 0) is wrong, per example."""
    logits = trainer.predict(x)["output"]
    return ((logits > 0).astype(np.float32) != y).astype(np.float32)[:, 0]


def main() -> None:
    parser = ExampleParser(__doc__ or "")
    parser.add_sized("--bits", 8, 6, "size of the input vector", note=", the paper 64")
    parser.add_argument("--tau", type=float, default=1e-3, help="time penalty of the ponder cost (1e-3)")
    parser.add_sized("--steps", 5000, 20, "training updates per model")
    parser.add_sized("--hidden", 128, 16, "units", note=", as the paper")
    parser.add_argument("--batch", type=int, default=128, help="batch size (128)")
    parser.add_argument("--max-steps", type=int, default=100, help="ACT's cap M on the steps per input (100)")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam's step size (1e-3)")
    ex = parser.setup()
    args = ex.args
    bits, steps, hidden = args.bits, args.steps, args.hidden
    batch = 32 if ex.quick else args.batch

    task = ParityTask(bits)
    x_test, y_test, difficulty = task.batch(ex.test_rng, 256 if ex.quick else 2000)
    act_options = {"cell": "rnn", "max_steps": args.max_steps}
    specs = [
        ModelSpec("RNN", "rnn", bits, hidden, loss="bce", learning_rate=args.lr),
        ModelSpec(
            "ACT-RNN",
            "act",
            bits,
            hidden,
            options=act_options,
            loss="bce",
            ponder_weight=args.tau,
            learning_rate=args.lr,
        ),
    ]
    print(f"parity: {bits} bits, {hidden} units, batch {batch}, {steps} updates, tau={args.tau:g}, {args.backend}")

    histories: list[History] = []
    wrong: dict[str, np.ndarray] = {}
    ponder: dict[str, np.ndarray] = {}
    rows = []

    def evaluate(trainer: Trainer) -> float:
        return float(errors(trainer, x_test, y_test).mean())

    for spec, trainer, history in ex.train_each(
        specs, lambda r: task.batch(r, batch)[:2], evaluate, steps, 20, "error"
    ):
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
                f"{history.seconds:.0f} s",
            ]
        )

    print()
    print(format_table(["model", "error", "ponder N+R", "steps N", "time"], rows))
    print("(random guessing: 50% error; the plot shows error and ponder time against the number of non-zero bits)")

    fig, axes = plots.plt.subplots(1, 3, figsize=(14, 4))
    plots.learning_curves(axes[0], histories, "held-out error rate")
    axes[0].set_yscale("linear")
    axes[0].set_title(f"parity, {bits} bits ({args.backend})")
    plots.parity_difficulty(axes[1:], difficulty, wrong, ponder)
    path = plots.save(fig, ex.out / "parity_act.png")
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
