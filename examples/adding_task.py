"""Skip RNN's adding task (Campos et al. 2018): GRU against Skip GRU, or LSTM against Skip LSTM.

Each sequence has T=50 steps of two features, a value drawn from U(-0.5, 0.5)
and a marker; the first marker falls in the first 10% of the sequence, the
second in the last half, and the target is the sum of the two marked values.
The Skip model pays the budget loss (lambda per state update, eq. 8) and learns
which steps it needs. The task counts as solved when the held-out MSE is 100x
below the variance of the target. Trained with the chosen framework's own
rnnspec layers and optimiser.

    python examples/adding_task.py --backend torch [--cell lstm] [--quick] [--out DIR] [--seed N]

Departures from the paper, to fit about 10 minutes on two CPU cores: Adam's
step is 1e-3 (the paper: 1e-4), batches hold 128 sequences (the paper: 256) and
training is far shorter.
"""

from __future__ import annotations

import numpy as np
import plots
from cli import ExampleParser
from models import ModelSpec, Trainer
from tasks import AddingTask, mse, solved_threshold
from training import History, format_table


def main() -> None:
    parser = ExampleParser(__doc__ or "")
    parser.add_argument("--cell", choices=("gru", "lstm"), default="gru", help="the base cell (gru)")
    parser.add_argument("--budget", type=float, default=1e-5, help="lambda, the cost of one update (1e-5)")
    parser.add_sized("--steps", 1000, 30, "training updates per model")
    parser.add_argument("--length", type=int, default=50, help="T, the sequence length (50)")
    parser.add_sized("--hidden", 110, 16, "units")
    parser.add_sized("--batch", 128, 32, "batch size", note=", the paper 256")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam's step size (1e-3)")
    ex = parser.setup()
    args = ex.args
    steps, hidden, batch = args.steps, args.hidden, args.batch

    task = AddingTask(args.length)
    x_test, y_test = task.batch(ex.test_rng, 256 if ex.quick else 1000)
    threshold = solved_threshold(task.target_variance())
    cell = args.cell
    skip_name = f"Skip {cell.upper()}"
    specs = [
        ModelSpec(cell.upper(), cell, 2, hidden, learning_rate=args.lr),
        ModelSpec(
            skip_name,
            f"skip_{cell}",
            2,
            hidden,
            options={"trainable_initial_state": True},
            budget_weight=args.budget,
            learning_rate=args.lr,
        ),
    ]
    print(
        f"adding task: T={task.length}, {hidden} units, batch {batch}, {steps} updates, lambda={args.budget:g}, "
        f"backend {args.backend}; solved when held-out MSE < {threshold:.2e}"
    )

    histories: list[History] = []
    rows = []
    gates = {}

    def evaluate(trainer: Trainer) -> float:
        return mse(trainer.predict(x_test)["output"], y_test)

    for spec, trainer, history in ex.train_each(specs, lambda r: task.batch(r, batch), evaluate, steps, 20, "mse"):
        histories.append(history)
        result = trainer.predict(x_test)
        gate = result.get("update_gate", np.ones(x_test.shape[:2], np.float32))
        gates[spec.name] = gate
        error = mse(result["output"], y_test)
        rows.append(
            [
                spec.name,
                f"{error:.2e}",
                "yes" if error < threshold else "no",
                f"{100 * gate.mean():.1f}%",
                f"{spec.parameter_count()}",
                f"{history.seconds:.0f} s",
            ]
        )

    print()
    print(format_table(["model", "held-out MSE", "solved", "updates", "params", "time"], rows))
    print(
        f"(solved: MSE < {threshold:.2e}, the target's variance / 100; paper, lambda=1e-5: Skip GRU solves "
        "with 50.7% of updates, Skip LSTM with 53.9%)"
    )

    fig, axes = plots.plt.subplots(5, 1, figsize=(9, 10), gridspec_kw={"height_ratios": [3, 1, 1, 1, 1]})
    plots.learning_curves(axes[0], histories, "held-out MSE", threshold)
    axes[0].set_title(f"adding task, T={task.length} ({args.backend})")
    for k, ax in enumerate(axes[1:]):
        plots.update_patterns(ax, {n: g[k] for n, g in gates.items()}, x_test[k, :, 1], f"sequence {k}")
    axes[-1].set_xlabel("step (red: the two marked steps; dark: the state was updated)")
    path = plots.save(fig, ex.out / f"adding_task_{cell}.png")
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
