"""Skip RNN's adding task (Campos et al. 2018): GRU against Skip GRU, or LSTM against Skip LSTM.

Each sequence has T=50 steps of two features, a value drawn from U(-0.5, 0.5)
and a marker; the first marker falls in the first 10% of the sequence, the
second in the last half, and the target is the sum of the two marked values.
The Skip model pays the budget loss (lambda per state update, eq. 8) and learns
which steps it needs. The task counts as solved when the held-out MSE is 100x
below the variance of the target. Trained with the chosen framework's own
rnnspec layers and optimiser.

    python examples/adding_task.py --backend torch [--recipe short|paper] [--cell lstm] [--quick]
        [--out DIR] [--seed N] [--resume] [--checkpoint-every N] [--models NAME,...]

Two recipes (``--recipe``); a flag given overrides the recipe's value:

- ``short`` (the default), about 10 minutes on two CPU cores: 110 units, Adam
  1e-3, batches of 128, 1000 updates, global-norm clipping at 1, the MSE as
  the task loss, lambda 1e-5, the layers' default init (U(-1/sqrt(H),
  1/sqrt(H)), GRU reset after the matmul) and the Skip model's trainable
  initial state starting at 0.
- ``paper``, the authors' TF1 code (imatge-upc/skiprnn-2017-tfm): 110 units,
  Adam 1e-4, batches of 256, global-norm clipping at 1, the task loss
  ``tf.nn.l2_loss(y - out) / batch`` = 0.5 x MSE (``--loss half_mse``),
  lambda 1e-5, TF1's cell init for both models (``--init tf1``: glorot-uniform
  on the joint (I+H, G*H) kernel, GRU gate biases 1, LSTM forget bias +1),
  TF1's GRU, which resets before the matmul (``--reset before``), and the Skip
  model's trainable initial state drawn from N(0, 1) (``--initial-state-std
  1``); the baseline starts from a zero state. The authors train until stopped
  by hand and state no update count; this recipe stops after 10000 updates
  (about 20 to 50 minutes per model on one thread, ``--steps`` for more, and
  ``--resume --steps N`` goes on from a finished run).

Left out from the paper: the authors' validation every 300 updates on 15
batches (here: 1000 held-out sequences every 1/50th of the run), and their
rounding of the update gate (half to even; rnnspec binarises ``u~ >= 0.5``).

The learning curve of each model goes to ``adding_task_<model>.csv`` in
``--out`` as it trains (update, mean training loss since the row before,
held-out MSE, fraction of state updates used, seconds), its checkpoint to
``adding_task_<model>.ckpt``; the plot to ``adding_task_<cell>.png``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import plots
from cli import ExampleParser
from models import ModelSpec, Trainer
from tasks import AddingTask, mse, solved_threshold
from training import History, format_table

RECIPES = {
    "short": "about 10 minutes: Adam 1e-3, batch 128, 1000 updates, MSE, the layers' init",
    "paper": "the authors' TF1 code: Adam 1e-4, batch 256, 0.5 x MSE, TF1 init, N(0,1) initial state, 10000 updates",
}
#: The values of ``--loss`` (half_mse: 0.5 x MSE), ``--init`` and ``--reset``.
LOSSES = ("mse", "half_mse")
INITS = ("default", "tf1")
RESETS = ("after", "before")


def build_parser() -> ExampleParser:
    """The example's options and recipes."""
    parser = ExampleParser(__doc__ or "", "adding_task")
    parser.add_recipes(RECIPES)
    parser.add_argument("--cell", choices=("gru", "lstm"), default="gru", help="the base cell (gru)")
    parser.add_setting("--budget", float, 1e-5, "lambda, the cost of one update")
    parser.add_setting("--steps", int, {"short": 1000, "paper": 10_000}, "training updates per model", quick=30)
    parser.add_setting("--length", int, 50, "T, the sequence length")
    parser.add_setting("--hidden", int, 110, "units", quick=16)
    parser.add_setting("--batch", int, {"short": 128, "paper": 256}, "batch size", quick=32)
    parser.add_setting("--lr", float, {"short": 1e-3, "paper": 1e-4}, "Adam's step size")
    parser.add_setting("--clip", float, 1.0, "the global gradient norm is clipped to this, 0: no clipping")
    parser.add_setting("--loss", str, {"short": "mse", "paper": "half_mse"}, "task loss", choices=LOSSES)
    parser.add_setting(
        "--init", str, {"short": "default", "paper": "tf1"}, "cell init, the layers' or TF1's", choices=INITS
    )
    parser.add_setting(
        "--reset", str, {"short": "after", "paper": "before"}, "where the GRU applies its reset gate", choices=RESETS
    )
    parser.add_setting(
        "--initial-state-std",
        float,
        {"short": 0.0, "paper": 1.0},
        "std of the Skip model's trainable initial state at the start (0: zeros)",
    )
    parser.add_setting("--evaluations", int, {"short": 20, "paper": 50}, "held-out evaluations over the run")
    parser.add_training_options()
    return parser


def model_specs(args: Any) -> list[ModelSpec]:
    """The baseline and the Skip model the options describe."""
    cell = args.cell
    options: dict[str, Any] = {}
    if args.init == "tf1":
        options["init_style"] = "tf1"
    if cell == "gru" and args.reset == "before":
        options["reset_after"] = False
    skip_options = {**options, "trainable_initial_state": True}
    if args.initial_state_std:
        skip_options["initial_state_std"] = args.initial_state_std
    common = {"loss": args.loss, "learning_rate": args.lr, "clip_norm": args.clip or None}
    return [
        ModelSpec(cell.upper(), cell, 2, args.hidden, options=options, **common),
        ModelSpec(
            f"Skip {cell.upper()}",
            f"skip_{cell}",
            2,
            args.hidden,
            options=skip_options,
            budget_weight=args.budget,
            **common,
        ),
    ]


def main(argv: list[str] | None = None) -> None:
    """Train and report (``argv``: the command line's arguments, ``sys.argv[1:]`` if None)."""
    ex = build_parser().setup(argv)
    args = ex.args
    steps, batch = args.steps, args.batch

    task = AddingTask(args.length)
    x_test, y_test = task.batch(ex.test_rng, 256 if ex.quick else 1000)
    threshold = solved_threshold(task.target_variance())
    specs = model_specs(args)
    print(
        f"adding task: T={task.length}, {args.hidden} units, batch {batch}, {steps} updates, lambda={args.budget:g}, "
        f"backend {args.backend}; solved when held-out MSE < {threshold:.2e}"
    )
    print(ex.settings())

    histories: list[History] = []
    rows = []
    gates = {}

    def evaluate(trainer: Trainer) -> dict[str, float]:
        result = trainer.predict(x_test)
        gate = result.get("update_gate")
        used = 1.0 if gate is None else float(gate.mean())
        return {"mse": mse(result["output"], y_test), "updates_used": used}

    data = {"length": task.length, "batch": batch}
    trained = ex.train_each(specs, lambda r: task.batch(r, batch), evaluate, steps, args.evaluations, "mse", data)
    for spec, trainer, history in trained:
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
                f"{trainer.updates}",
                f"{history.seconds:.0f} s",
            ]
        )

    print()
    print(format_table(["model", "held-out MSE", "solved", "updates used", "params", "trained", "time"], rows))
    print(
        f"(solved: MSE < {threshold:.2e}, the target's variance / 100; paper, lambda=1e-5: Skip GRU solves "
        "with 50.7% of updates, Skip LSTM with 53.9%)"
    )

    fig, axes = plots.plt.subplots(5, 1, figsize=(9, 10), gridspec_kw={"height_ratios": [3, 1, 1, 1, 1]})
    plots.learning_curves(axes[0], histories, "held-out MSE", threshold)
    axes[0].set_title(f"adding task, T={task.length} ({args.backend}, recipe {ex.recipe})")
    for k, ax in enumerate(axes[1:]):
        plots.update_patterns(ax, {n: g[k] for n, g in gates.items()}, x_test[k, :, 1], f"sequence {k}")
    axes[-1].set_xlabel("step (red: the two marked steps; dark: the state was updated)")
    path = plots.save(fig, ex.out / f"adding_task_{args.cell}.png")
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
