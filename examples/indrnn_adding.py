"""IndRNN on the adding problem with long sequences (Li et al. 2018), against an LSTM of similar size.

Each sequence has T steps (1000 by default) of two features, a value drawn
from U(0, 1) and a marker; one marker falls in the first half, the other in
the second, and the target is the sum of the two marked values (Le et al.'s
version, as the IndRNN paper uses it). Predicting the mean scores an MSE of
about 0.167, the target's variance.

The IndRNN follows the authors: two relu layers of 128 units, input weights
drawn from N(0, 0.001^2), recurrent weights u from U(0, U) with the bound
U = mag^(1/T) (mag 2), the last layer's u from U(1/U, U) so that it keeps
long-term memory, and u projected into [-U, U] after every update
(:func:`rnnspec.indrnn_constrain`). The LSTM has the hidden size that gives it
about as many parameters (64 units, where the paper's LSTM has 128), and is
trained the same way.

    python examples/indrnn_adding.py --backend torch [--recipe short|paper] [--quick] [--out DIR]
        [--seed N] [--length T] [--resume] [--checkpoint-every N] [--models NAME,...]

Two recipes (``--recipe``); a flag given overrides the recipe's value:

- ``short`` (the default), about 10 minutes on two CPU cores: Adam 1e-3,
  constant, batches of 50, 300 updates, global-norm clipping at 1.
- ``paper``, the authors' (Sunnydreamrain/IndRNN_Theano_Lasagne, and
  batzner/indrnn's batch of 50): Adam 2e-4 multiplied by 0.1 after every
  20000 updates (``--lr-decay-every``), batches of 50, no global-norm clipping,
  24000 updates (about an hour for the IndRNN and two for the LSTM on one
  thread; the paper's figure shows the IndRNN at T=1000 near 0 by about 20000
  updates, the authors stop below MSE 1e-6, after about 60000).

Left out from the authors' training: Lasagne's ``grad_clipping=10``, which
clips the gradient reaching the recurrent hidden state elementwise at every
step inside the recurrence (rnnspec's layers have no such option), and the
projection of u before each update rather than after (the same bound).

The learning curve of each model goes to ``indrnn_adding_<model>.csv`` in
``--out`` as it trains (update, mean training loss since the row before,
held-out MSE, seconds), its checkpoint to ``indrnn_adding_<model>.ckpt``; the
plot to ``indrnn_adding.png``.
"""

from __future__ import annotations

from typing import Any

import plots
from cli import ExampleParser
from models import ModelSpec, Trainer
from tasks import AddingTask, mse, solved_threshold
from training import History, format_table

import rnnspec

RECIPES = {
    "short": "about 10 minutes: Adam 1e-3, clipping at 1, 300 updates",
    "paper": "the authors': Adam 2e-4 x0.1 every 20000 updates, no clipping, 24000 updates",
}


def similar_lstm(name: str, input_size: int, parameters: int, **training: Any) -> ModelSpec:
    """The LSTM whose parameter count is the first to reach ``parameters``, trained with ``training``."""
    hidden = 1
    while True:
        spec = ModelSpec(name, "lstm", input_size, hidden, **training)
        if spec.parameter_count() >= parameters:
            return spec
        hidden += 1


def build_parser() -> ExampleParser:
    """The example's options and recipes."""
    parser = ExampleParser(__doc__ or "", "indrnn_adding")
    parser.add_recipes(RECIPES)
    parser.add_setting("--length", int, 1000, "T, the sequence length", quick=100)
    parser.add_setting("--steps", int, {"short": 300, "paper": 24_000}, "training updates per model", quick=15)
    parser.add_setting("--hidden", int, 128, "IndRNN units per layer", quick=16)
    parser.add_setting("--layers", int, 2, "IndRNN layers")
    parser.add_setting("--batch", int, 50, "batch size", quick=16)
    parser.add_setting("--mag", float, 2.0, "growth allowed over T steps: U = mag^(1/T)")
    parser.add_setting("--lr", float, {"short": 1e-3, "paper": 2e-4}, "Adam's step size at the start")
    parser.add_setting(
        "--lr-decay-every",
        int,
        {"short": 0, "paper": 20_000},
        "the step size is multiplied by --lr-decay-factor after every this many updates, 0: constant",
    )
    parser.add_setting("--lr-decay-factor", float, 0.1, "the step size's factor at each decay")
    parser.add_setting(
        "--clip", float, {"short": 1.0, "paper": 0.0}, "the global gradient norm is clipped to this, 0: no clipping"
    )
    parser.add_setting("--evaluations", int, {"short": 15, "paper": 120}, "held-out evaluations over the run")
    parser.add_training_options()
    return parser


def main(argv: list[str] | None = None) -> None:
    """Train and report (``argv``: the command line's arguments, ``sys.argv[1:]`` if None)."""
    ex = build_parser().setup(argv)
    args = ex.args
    length, steps, hidden, batch = args.length, args.steps, args.hidden, args.batch

    task = AddingTask(length, low=0.0, high=1.0, first_marker=(0.0, 0.5), second_marker=(0.5, 1.0))
    x_test, y_test = task.batch(ex.test_rng, 128 if ex.quick else 500)
    bound = rnnspec.indrnn_bound(length, args.mag)
    training = {
        "learning_rate": args.lr,
        "lr_decay_every": args.lr_decay_every or None,
        "lr_decay_factor": args.lr_decay_factor,
        "clip_norm": args.clip or None,
    }
    indrnn = ModelSpec(
        "IndRNN",
        "indrnn",
        2,
        hidden,
        num_layers=args.layers,
        options={"seq_len": length, "mag": args.mag, "last_layer_init": True},
        indrnn_bound=bound,
        **training,
    )
    lstm = similar_lstm("LSTM", 2, indrnn.parameter_count(), **training)
    specs = [indrnn, lstm]
    print(
        f"adding problem: T={length}, batch {batch}, {steps} updates, backend {args.backend}; "
        f"IndRNN {args.layers}x{hidden} (|u| <= {bound:.6f}) vs LSTM {lstm.hidden_size}"
    )
    print(ex.settings())

    threshold = solved_threshold(task.target_variance())
    histories: list[History] = []
    rows = []

    def evaluate(trainer: Trainer) -> dict[str, float]:
        return {"mse": mse(trainer.predict(x_test)["output"], y_test), "learning_rate": trainer.learning_rate()}

    data = {"length": length, "batch": batch}
    trained = ex.train_each(specs, lambda r: task.batch(r, batch), evaluate, steps, args.evaluations, "mse", data)
    for spec, trainer, history in trained:
        histories.append(history)
        error = history.eval_values[-1]
        rows.append(
            [
                spec.name,
                f"{spec.parameter_count()}",
                f"{error:.2e}",
                f"{min(history.eval_values):.2e}",
                "yes" if error < threshold else "no",
                f"{trainer.updates}",
                f"{history.seconds:.0f} s",
            ]
        )

    print()
    print(format_table(["model", "params", "held-out MSE", "best", "solved", "trained", "time"], rows))
    print(f"(predicting the mean: MSE {task.target_variance():.3f}; solved: MSE < {threshold:.1e})")

    fig, ax = plots.plt.subplots(figsize=(7, 4.5))
    plots.learning_curves(ax, histories, "held-out MSE", threshold)
    ax.axhline(task.target_variance(), color="grey", linestyle=":", linewidth=1, label="predicting the mean")
    ax.legend()
    ax.set_title(f"adding problem, T={length} ({args.backend}, recipe {ex.recipe})")
    path = plots.save(fig, ex.out / "indrnn_adding.png")
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
