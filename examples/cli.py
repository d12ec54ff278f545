"""The examples' command line and setup, shared by every example.

Every example takes ``--backend torch|jax|tensorflow``, ``--quick``, ``--out DIR``,
``--seed N`` and ``--threads N``, and options whose default depends on
``--quick`` (:meth:`ExampleParser.add_sized`). :meth:`ExampleParser.setup`
parses them, limits the frameworks' threads, creates the output folder and
seeds the random streams; :meth:`Example.train_each` trains each model in turn::

    parser = ExampleParser(__doc__ or "")
    parser.add_sized("--steps", 1000, 30, "training updates per model")
    ex = parser.setup()
    for spec, trainer, history in ex.train_each(specs, draw, evaluate, ex.args.steps, 20, "mse"):
        ...
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from models import ModelSpec, Trainer, limit_threads, make_trainer
from training import History, train

__all__ = ["BACKENDS", "DEFAULT_OUT", "Example", "ExampleParser"]

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
class Example:
    """An example's parsed options and what it set up from them.

    Parameters
    ----------
    args
        The parsed options, sized options resolved (see :meth:`ExampleParser.add_sized`).
    out
        The output folder, created.
    rng
        The stream of the training batches (seeded with ``--seed``).
    test_rng
        The stream of the held-out data (seeded with ``--seed`` + 10000).
    """

    args: argparse.Namespace
    out: Path
    rng: np.random.Generator
    test_rng: np.random.Generator

    @property
    def backend(self) -> str:
        """The framework that trains (``--backend``)."""
        backend: str = self.args.backend
        return backend

    @property
    def quick(self) -> bool:
        """Whether this is the tiny run (``--quick``)."""
        return bool(self.args.quick)

    def train_each(
        self,
        specs: Sequence[ModelSpec],
        draw: Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray]],
        evaluate: Callable[[Trainer], float],
        steps: int,
        evaluations: int,
        metric: str,
    ) -> Iterator[tuple[ModelSpec, Trainer, History]]:
        """Build and train each of ``specs`` in turn with the chosen framework.

        Parameters
        ----------
        specs
            The models, trained in this order on batches ``draw(self.rng)``.
        draw, evaluate, metric
            As :func:`training.train` takes them.
        steps
            Training updates per model.
        evaluations
            Held-out evaluations over the run (4 with ``--quick``), besides the first.

        Yields
        ------
        tuple
            The spec, its trained trainer and its :class:`training.History`.
        """
        eval_every = max(1, steps // (4 if self.quick else evaluations))
        for spec in specs:
            trainer = make_trainer(self.backend, spec, self.args.seed)
            history = train(trainer, draw, steps, self.rng, evaluate, eval_every=eval_every, metric=metric)
            yield spec, trainer, history


class ExampleParser(argparse.ArgumentParser):
    """The options every example takes: ``--backend``, ``--quick``, ``--out``, ``--seed``, ``--threads``.

    Parameters
    ----------
    description
        The example's docstring, shown by ``--help`` as it is written.
    """

    def __init__(self, description: str) -> None:
        super().__init__(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
        self._sized: dict[str, tuple[int, int]] = {}
        self.add_argument("--backend", choices=BACKENDS, default="torch", help="the framework that trains (torch)")
        self.add_argument("--quick", action="store_true", help="a tiny run that only shows the example works")
        self.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"where the plots go ({DEFAULT_OUT})")
        self.add_argument("--seed", type=int, default=0, help="seed of the data and of the initial weights (0)")
        self.add_argument(
            "--threads", type=int, default=1, help="CPU threads per framework (1: best on a busy machine)"
        )

    def add_sized(self, flag: str, full: int, quick: int, help: str, note: str = "") -> None:
        """An integer option defaulting to ``full``, or ``quick`` with ``--quick``.

        Its help reads ``"{help} ({full}{note}; {quick} with --quick)"``; :meth:`setup`
        puts the default in place of an option not given (or given as 0).
        """
        action = self.add_argument(flag, type=int, help=f"{help} ({full}{note}; {quick} with --quick)")
        self._sized[action.dest] = (full, quick)

    def setup(self, argv: Sequence[str] | None = None) -> Example:
        """Parse ``argv`` (the command line), limit the threads, create the output folder, seed the streams."""
        args = self.parse_args(argv)
        limit_threads(args.threads)
        for dest, (full, quick) in self._sized.items():
            setattr(args, dest, getattr(args, dest) or (quick if args.quick else full))
        args.out.mkdir(parents=True, exist_ok=True)
        if args.quick:
            print(QUICK_NOTE)
        return Example(
            args=args,
            out=args.out,
            rng=np.random.default_rng(args.seed),
            test_rng=np.random.default_rng(args.seed + TEST_SEED_OFFSET),
        )
