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
about as many parameters.

    python examples/indrnn_adding.py --backend torch [--quick] [--out DIR] [--seed N] [--length T]

Departures from the paper, to fit about 10 minutes on two CPU cores: Adam's
step is 1e-3 (the authors: 2e-4) and training is far shorter.
"""

from __future__ import annotations

import plots
from cli import ExampleParser
from models import ModelSpec, Trainer
from tasks import AddingTask, mse, solved_threshold
from training import History, format_table

import rnnspec


def similar_lstm(name: str, input_size: int, parameters: int, learning_rate: float) -> ModelSpec:
    """The LSTM whose parameter count is the first to reach ``parameters``."""
    hidden = 1
    while True:
        spec = ModelSpec(name, "lstm", input_size, hidden, learning_rate=learning_rate)
        if spec.parameter_count() >= parameters:
            return spec
        hidden += 1


def main() -> None:
    parser = ExampleParser(__doc__ or "")
    parser.add_sized("--length", 1000, 100, "T, the sequence length")
    parser.add_sized("--steps", 300, 15, "training updates per model")
    parser.add_sized("--hidden", 128, 16, "IndRNN units per layer")
    parser.add_argument("--layers", type=int, default=2, help="IndRNN layers (2)")
    parser.add_argument("--batch", type=int, default=50, help="batch size (50, as the authors)")
    parser.add_argument("--mag", type=float, default=2.0, help="growth allowed over T steps: U = mag^(1/T) (2)")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam's step size (1e-3)")
    ex = parser.setup()
    args = ex.args
    length, steps, hidden = args.length, args.steps, args.hidden
    batch = 16 if ex.quick else args.batch

    task = AddingTask(length, low=0.0, high=1.0, first_marker=(0.0, 0.5), second_marker=(0.5, 1.0))
    x_test, y_test = task.batch(ex.test_rng, 128 if ex.quick else 500)
    bound = rnnspec.indrnn_bound(length, args.mag)
    indrnn = ModelSpec(
        "IndRNN",
        "indrnn",
        2,
        hidden,
        num_layers=args.layers,
        options={"seq_len": length, "mag": args.mag, "last_layer_init": True},
        learning_rate=args.lr,
        indrnn_bound=bound,
    )
    lstm = similar_lstm("LSTM", 2, indrnn.parameter_count(), args.lr)
    specs = [indrnn, lstm]
    print(
        f"adding problem: T={length}, batch {batch}, {steps} updates, backend {args.backend}; "
        f"IndRNN {args.layers}x{hidden} (|u| <= {bound:.6f}) vs LSTM {lstm.hidden_size}"
    )

    threshold = solved_threshold(task.target_variance())
    histories: list[History] = []
    rows = []

    def evaluate(trainer: Trainer) -> float:
        return mse(trainer.predict(x_test)["output"], y_test)

    for spec, _, history in ex.train_each(specs, lambda r: task.batch(r, batch), evaluate, steps, 15, "mse"):
        histories.append(history)
        error = history.eval_values[-1]
        rows.append(
            [
                spec.name,
                f"{spec.parameter_count()}",
                f"{error:.2e}",
                "yes" if error < threshold else "no",
                f"{history.seconds:.0f} s",
            ]
        )

    print()
    print(format_table(["model", "params", "held-out MSE", "solved", "time"], rows))
    print(f"(predicting the mean: MSE {task.target_variance():.3f}; solved: MSE < {threshold:.1e})")

    fig, ax = plots.plt.subplots(figsize=(7, 4.5))
    plots.learning_curves(ax, histories, "held-out MSE", threshold)
    ax.axhline(task.target_variance(), color="grey", linestyle=":", linewidth=1, label="predicting the mean")
    ax.legend()
    ax.set_title(f"adding problem, T={length} ({args.backend})")
    path = plots.save(fig, ex.out / "indrnn_adding.png")
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
