"""The examples' command line and setup, shared by every example.

Every example takes ``--backend torch|jax|tensorflow``, ``--quick``, ``--out DIR``,
``--seed N``, ``--threads N`` and ``--resume``, and options whose default depends on
``--quick`` (:meth:`ExampleParser.add_sized`) or on the training recipe
(:meth:`ExampleParser.add_recipes`, :meth:`ExampleParser.add_setting`: ``--recipe short``,
a run of minutes, or ``--recipe paper``, the original authors' settings; a flag given
overrides the recipe). :meth:`ExampleParser.setup` parses them, limits the frameworks'
threads, creates the output folder and seeds the random streams;
:meth:`Example.train_each` trains each model in turn, writing its learning curve
(``<out>/<example>_<model>.csv``) and its checkpoint (``<out>/<example>_<model>.ckpt``)::

    parser = ExampleParser(__doc__ or "", "my_example")
    parser.add_recipes({"short": "minutes", "paper": "the paper's"})
    parser.add_setting("--lr", float, {"short": 1e-3, "paper": 1e-4}, "Adam's step size")
    parser.add_sized("--steps", 1000, 30, "training updates per model")
    parser.add_training_options()
    ex = parser.setup()
    for spec, trainer, history in ex.train_each(specs, draw, evaluate, ex.args.steps, 20, "mse"):
        ...

With ``--resume``, a model whose checkpoint has reached ``--steps`` is not trained
again (its final state and curve are read back for the report), and one stopped
before goes on from its last checkpoint to the result an unstopped run gives.
``--models NAME,...`` trains only the models named, so that the models of one
example can train in separate processes; a later run with ``--resume`` reports them all.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from models import Batch, ModelSpec, Trainer, limit_threads, make_trainer
from training import History, load_checkpoint, train

__all__ = ["BACKENDS", "DEFAULT_OUT", "Derived", "Example", "ExampleParser", "model_slug"]

BACKENDS = ("torch", "jax", "tensorflow")
#: Where the plots go without ``--out``.
DEFAULT_OUT = Path(tempfile.gettempdir()) / "rnnspec-examples"
#: Held-out data are drawn from ``seed + TEST_SEED_OFFSET``, apart from the training batches.
TEST_SEED_OFFSET = 10_000


#: What ``--quick`` prints first: its curves and figures are not results.
QUICK_NOTE = (
    "--quick: a tiny run that only shows the example works end to end. At this size the models learn "
    "nothing: flat curves, chance-level errors and 100% state updates are expected. Drop --quick for a run "
    "that learns."
)


@dataclass(frozen=True)
class Derived:
    """A recipe's value computed from the other options (a flag given still overrides it).

    Parameters
    ----------
    describe
        How ``--help`` states it, such as ``"1.6e-3 x batch / 2048"``.
    value
        Computes it from the parsed options (every non-derived option resolved).
    """

    describe: str
    value: Callable[[argparse.Namespace], Any]


@dataclass(frozen=True)
class _Setting:
    """An option whose default depends on the recipe and on ``--quick`` (:meth:`ExampleParser.add_setting`)."""

    flag: str
    values: Mapping[str, Any]
    quick: Any
    zero_is_default: bool


def model_slug(name: str) -> str:
    """A model's name as it appears in file names: lower case, runs of other characters than letters, digits,
    ``.`` and ``-`` made one ``_`` (``"Skip GRU"`` -> ``"skip_gru"``, ``"ACT tau=1e-3"`` -> ``"act_tau_1e-3"``)."""
    return re.sub(r"[^a-z0-9.\-]+", "_", name.lower()).strip("_")


@dataclass(frozen=True)
class Example:
    """An example's parsed options and what it set up from them.

    Parameters
    ----------
    args
        The parsed options, sized and recipe options resolved.
    out
        The output folder, created.
    rng
        A stream seeded with ``--seed`` (each model's batches come from a stream of
        its own seeded so, :meth:`train_each`).
    test_rng
        The stream of the held-out data (seeded with ``--seed`` + 10000).
    name
        The example's name, the first part of its files' names.
    sources
        For each recipe or sized option, where its value came from: ``"flag"``,
        ``"--quick"`` or ``"recipe"``.
    """

    args: argparse.Namespace
    out: Path
    rng: np.random.Generator
    test_rng: np.random.Generator
    name: str = "example"
    sources: Mapping[str, str] = field(default_factory=dict)

    @property
    def backend(self) -> str:
        """The framework that trains (``--backend``)."""
        backend: str = self.args.backend
        return backend

    @property
    def quick(self) -> bool:
        """Whether this is the tiny run (``--quick``)."""
        return bool(self.args.quick)

    @property
    def recipe(self) -> str:
        """The training recipe (``--recipe``), ``"short"`` for an example without recipes."""
        return str(getattr(self.args, "recipe", "short"))

    def settings(self) -> str:
        """The recipe's settings as resolved, one ``--flag value`` each, marked where a flag or ``--quick`` set it."""
        parts = []
        for dest, source in self.sources.items():
            mark = "" if source == "recipe" else f" ({source})"
            parts.append(f"--{dest.replace('_', '-')} {getattr(self.args, dest)}{mark}")
        return f"recipe {self.recipe}: " + ", ".join(parts)

    def files(self, spec: ModelSpec) -> tuple[Path, Path]:
        """Where the learning curve (CSV) and the checkpoint of ``spec`` go."""
        stem = self.out / f"{self.name}_{model_slug(spec.name)}"
        return stem.with_suffix(".csv"), stem.with_suffix(".ckpt")

    def selected(self, specs: Sequence[ModelSpec]) -> list[ModelSpec]:
        """The specs that ``--models`` names (every spec without it); exits naming the models for an unknown name."""
        names = getattr(self.args, "models", None)
        if not names:
            return list(specs)
        wanted = [n.strip() for n in names.split(",") if n.strip()]
        by_slug = {model_slug(s.name): s for s in specs}
        unknown = [n for n in wanted if model_slug(n) not in by_slug]
        if unknown:
            known = ", ".join(repr(s.name) for s in specs)
            raise SystemExit(
                f"{self.name}: --models: {', '.join(map(repr, unknown))} not among this run's models {known}"
            )
        chosen = {model_slug(n) for n in wanted}
        return [s for s in specs if model_slug(s.name) in chosen]

    def train_each(
        self,
        specs: Sequence[ModelSpec],
        draw: Callable[[np.random.Generator], Batch],
        evaluate: Callable[[Trainer], float | Mapping[str, float]],
        steps: int,
        evaluations: int,
        metric: str,
        data: Mapping[str, Any] | None = None,
    ) -> Iterator[tuple[ModelSpec, Trainer, History]]:
        """Build and train each of ``specs`` (those ``--models`` names) in turn with the chosen framework.

        Each model trains on its own stream of batches ``draw(rng)``, ``rng`` seeded with
        ``--seed``: every model sees the same batches, whether the models train in one
        process or in several (``--models``). Its learning curve goes to a CSV as it
        trains, its checkpoint every ``--checkpoint-every`` updates and at the end
        (:meth:`files`); with ``--resume`` a model goes on from its checkpoint.

        Parameters
        ----------
        specs
            The models, trained in this order.
        draw
            Draws a training batch from a stream: ``(x, y)``, or ``(x, y, extras)`` with the arrays that come
            with ``x`` (the rows' lengths, per-step timestamps: :func:`models.model_inputs`).
        evaluate
            The held-out measures: ``metric`` alone (a float) or by name, ``metric`` among them
            (the others go to the CSV too).
        steps
            Training updates per model.
        evaluations
            Held-out evaluations over the run (4 with ``--quick``), besides the first.
        metric
            The name of the main held-out measure.
        data
            What defines the training data beside ``--seed`` (task sizes, batch size):
            a checkpoint is resumed only by a run of the same data, spec, backend and seed.

        Yields
        ------
        tuple
            The spec, its trained trainer and its :class:`training.History`.
        """
        eval_every = max(1, steps // (4 if self.quick else evaluations))
        checkpoint_every = int(getattr(self.args, "checkpoint_every", 0) or 0)

        def measures(trainer: Trainer) -> Mapping[str, float]:
            value = evaluate(trainer)
            return value if isinstance(value, Mapping) else {metric: float(value)}

        for spec in self.selected(specs):
            csv_path, checkpoint_path = self.files(spec)
            config = {
                "example": self.name,
                "backend": self.backend,
                "seed": self.args.seed,
                "spec": spec.config(),
                "data": dict(data or {}),
            }
            trainer = make_trainer(self.backend, spec, self.args.seed)
            rng = np.random.default_rng(self.args.seed)
            history = None
            if self.args.resume and checkpoint_path.exists():
                try:
                    saved = load_checkpoint(checkpoint_path, config)
                except ValueError as err:
                    raise SystemExit(f"{self.name}: --resume: {err}") from err
                trainer.load_state(saved["trainer"])
                rng.bit_generator.state = saved["rng"]
                history = saved["history"]
                done = trainer.updates
                state = "finished" if done >= steps else f"resumed at update {done} of {steps}"
                print(f"{spec.name}: {state} ({checkpoint_path})")
            history = train(
                trainer,
                draw,
                steps,
                rng,
                measures,
                eval_every,
                metric,
                history=history,
                csv_path=csv_path,
                checkpoint_path=checkpoint_path,
                checkpoint_every=checkpoint_every,
                config=config,
            )
            yield spec, trainer, history


class ExampleParser(argparse.ArgumentParser):
    """The options every example takes: ``--backend``, ``--quick``, ``--out``, ``--seed``, ``--threads``,
    ``--resume``.

    Parameters
    ----------
    description
        The example's docstring, shown by ``--help`` as it is written.
    name
        The example's name, the first part of its files' names (the script's name if None).
    """

    def __init__(self, description: str, name: str | None = None) -> None:
        super().__init__(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
        self.example_name = name or Path(sys.argv[0]).stem or "example"
        self._settings: dict[str, _Setting] = {}
        self._recipes: dict[str, str] = {}
        self._sized_full: dict[str, int] = {}
        self.add_argument("--backend", choices=BACKENDS, default="torch", help="the framework that trains (torch)")
        self.add_argument("--quick", action="store_true", help="a tiny run that only shows the example works")
        self.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"where the plots go ({DEFAULT_OUT})")
        self.add_argument("--seed", type=int, default=0, help="seed of the data and of the initial weights (0)")
        self.add_argument(
            "--threads", type=int, default=1, help="CPU threads per framework (1: best on a busy machine)"
        )
        self.add_argument(
            "--resume",
            action="store_true",
            help="go on from the checkpoints in --out: a finished model is read back, not trained again",
        )

    def add_recipes(self, recipes: Mapping[str, str]) -> None:
        """``--recipe NAME``, one of ``recipes`` (name: what it is), the first the default."""
        self._recipes = dict(recipes)
        described = "; ".join(f"{name}: {text}" for name, text in recipes.items())
        self.add_argument("--recipe", choices=list(recipes), default=next(iter(recipes)), help=f"{described}")

    def add_training_options(self, checkpoint_every: int = 500, quick_checkpoint_every: int = 10) -> None:
        """``--checkpoint-every N`` and ``--models NAME,...`` (:meth:`Example.train_each`)."""
        self.add_sized(
            "--checkpoint-every",
            checkpoint_every,
            quick_checkpoint_every,
            "updates between checkpoints, besides one at the end",
        )
        self.add_argument(
            "--models",
            help="train only these models, comma-separated names as the report prints them (every model)",
        )

    def add_setting(
        self,
        flag: str,
        type: Callable[[str], Any],
        values: Mapping[str, Any] | Any,
        help: str,
        quick: Any = None,
        note: str = "",
        choices: Sequence[str] | None = None,
    ) -> None:
        """An option defaulting to the recipe's value, or to ``quick`` with ``--quick`` (unless None).

        ``values`` maps each recipe to its value (a :class:`Derived` to compute it from
        the other options), or is one value for every recipe; ``choices`` limits the values
        a flag may give. The help reads
        ``"{help} ({values}{note}; {quick} with --quick)"``.
        """
        by_recipe = dict(values) if isinstance(values, Mapping) else {}
        if not by_recipe:
            by_recipe = {name: values for name in self._recipes} or {"short": values}
        shown = {_describe(v) for v in by_recipe.values()}
        text = shown.pop() if len(shown) == 1 else ", ".join(f"{r} {_describe(v)}" for r, v in by_recipe.items())
        text += note + (f"; {_describe(quick)} with --quick" if quick is not None else "")
        action = self.add_argument(flag, type=type, default=None, choices=choices, help=f"{help} ({text})")
        self._settings[action.dest] = _Setting(flag, by_recipe, quick, zero_is_default=False)

    def add_sized(self, flag: str, full: int, quick: int, help: str, note: str = "") -> None:
        """An integer option defaulting to ``full``, or ``quick`` with ``--quick``.

        Its help reads ``"{help} ({full}{note}; {quick} with --quick)"``; :meth:`setup`
        puts the default in place of an option not given (or given as 0).
        """
        action = self.add_argument(flag, type=int, help=f"{help} ({full}{note}; {quick} with --quick)")
        self._settings[action.dest] = _Setting(flag, {}, quick, zero_is_default=True)
        self._sized_full[action.dest] = full

    def setup(self, argv: Sequence[str] | None = None) -> Example:
        """Parse ``argv`` (the command line), limit the threads, create the output folder, seed the streams."""
        args = self.parse_args(argv)
        limit_threads(args.threads)
        recipe = getattr(args, "recipe", "short")
        sources: dict[str, str] = {}
        derived: list[tuple[str, Derived]] = []
        for dest, setting in self._settings.items():
            given = getattr(args, dest)
            if given is not None and not (setting.zero_is_default and given == 0):
                sources[dest] = "flag"
                continue
            if args.quick and setting.quick is not None:
                setattr(args, dest, setting.quick)
                sources[dest] = "--quick"
                continue
            sources[dest] = "recipe"
            value = self._sized_full[dest] if setting.zero_is_default else setting.values[recipe]
            if isinstance(value, Derived):
                derived.append((dest, value))
            else:
                setattr(args, dest, value)
        for dest, rule in derived:
            setattr(args, dest, rule.value(args))
        args.out.mkdir(parents=True, exist_ok=True)
        if args.quick:
            print(QUICK_NOTE)
        return Example(
            args=args,
            out=args.out,
            rng=np.random.default_rng(args.seed),
            test_rng=np.random.default_rng(args.seed + TEST_SEED_OFFSET),
            name=self.example_name,
            sources=sources,
        )


def _describe(value: Any) -> str:
    if isinstance(value, Derived):
        return value.describe
    if value is None:
        return "none"
    return f"{value:g}" if isinstance(value, float) else str(value)
