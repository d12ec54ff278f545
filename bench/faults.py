"""Counts of the faults of issue 18 on one backend, rerun from the project's own calls.

``python -m rnnspec.bench.faults BACKEND`` prints, for the backend:

- ``padding``: of the 22 checks (11 ops x values and gradients), how many change when the
  padding of row 1 (``lengths=[6, 3, 6]``) holds NaN, and when it holds inf, instead of the
  drawn values: every value and every cotangent must stay the same;
- ``cotangents``: of the bad cotangents (a misspelt field, an unknown state entry, one layer
  too many, a shape that broadcasts, a wrong shape) given to ``vjp`` of every op they apply
  to, how many are not refused with an rnnspec error;
- ``sizes``: of the 11 ops, how many fail when called at T=64 with hidden size 8 and then 9,
  and input size 4 and then 5, in one process;
- ``act NaN``: the seconds ``act`` takes with a NaN in ``x`` and ``max_steps`` at its bound, and
  whether the NaN stays in its row.

It is a record of behaviour, not of speed: a count is a number of wrong outcomes.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

import rnnspec
from rnnspec.conformance.cases import Case, CaseSpec
from rnnspec.conformance.tolerances import tolerance
from rnnspec.errors import RnnspecError
from rnnspec.ops import OPS
from rnnspec.tree import tree_leaves

__all__ = ["main"]

_PADDING_LENGTHS = (6, 3, 6)


def _spec(op: str, **fields: Any) -> CaseSpec:
    layers = 1 if OPS[op].kind == "primitive" or OPS[op].max_layers == 1 else 2
    fields.setdefault("options", (("epsilon", 0.01),) if op == "act" else ())
    return CaseSpec(op, dtype="float32", num_layers=layers, seed=1, **fields)


def _same(a: Any, b: Any, steps: int = 12) -> bool:
    """Within the conformance suite's float32 value tolerance for ``steps`` cell applications."""
    tol = tolerance("float32", steps=steps)
    return all(np.allclose(x, y, rtol=tol.rtol, atol=tol.atol) for x, y in zip(_leaves(a), _leaves(b), strict=True))


def _leaves(tree: Any) -> list[Any]:
    """The leaves, a mapping's in the order of its sorted keys (backends may order state entries differently)."""
    if isinstance(tree, dict):
        return [leaf for key in sorted(tree) for leaf in _leaves(tree[key])]
    if isinstance(tree, (list, tuple)):
        return [leaf for item in tree for leaf in _leaves(item)]
    return tree_leaves(tree)


def padding_faults(backend: rnnspec.Backend, poison: float) -> list[str]:
    """The checks (``op values``, ``op gradients``) that change with ``poison`` in row 1's padding."""
    failed = []
    for op in backend.ops:
        clean = _spec(op, batch=3, time=6, lengths=_PADDING_LENGTHS).build()
        first = np.array(clean.args[0])
        first[1, _PADDING_LENGTHS[1] :] = poison
        poisoned = Case(clean.spec, (first, *clean.args[1:]), clean.kwargs)
        result = clean.run(backend)
        cotangents = clean.cotangents(result, seed=3)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            if not _same(poisoned.run(backend), result):
                failed.append(f"{op} values")
            if not _same(poisoned.vjp(backend, cotangents), clean.vjp(backend, cotangents)):
                failed.append(f"{op} gradients")
    return failed


def _bad_cotangents(op: str, result: Any) -> dict[str, Callable[[], Any]]:
    """The bad cotangents for ``op``'s result (NumPy), by what is wrong with them."""
    if OPS[op].kind == "primitive":
        h = result
        return {
            "misspelt field": lambda: {"H": h},
            "broadcasting shape": lambda: {"h": h[..., :1]},
            "wrong shape": lambda: {"h": h[:, :-1]},
        }
    outputs, state = result.outputs, result.state
    return {
        "misspelt field": lambda: {"output": outputs},
        "unknown state entry": lambda: {"state": [{**s, "z": s[next(iter(s))]} for s in state]},
        "one layer too many": lambda: {"state": [*state, state[-1]]},
        "broadcasting shape": lambda: {"outputs": outputs[..., :1]},
        "wrong shape": lambda: {"outputs": outputs[:, :-1]},
    }


def cotangent_faults(backend: rnnspec.Backend) -> tuple[int, list[str]]:
    """(the bad cotangents tried, those not refused with an rnnspec error)."""
    tried, silent = 0, []
    for op in backend.ops:
        case = _spec(op, batch=2, time=5).build()
        result = case.run(backend)
        for what, make in _bad_cotangents(op, result).items():
            tried += 1
            try:
                case.vjp(backend, make())
            except RnnspecError:
                continue
            except Exception as err:  # a raw framework error is what is counted
                silent.append(f"{op}: {what} (raw {type(err).__name__})")
                continue
            silent.append(f"{op}: {what} (accepted)")
    return tried, silent


def size_faults(backend: rnnspec.Backend) -> list[str]:
    """The ops that fail on a second hidden or input size in one process, at T=64."""
    failed = []
    for op in backend.ops:
        hidden = "hidden_size" if OPS[op].kind == "primitive" else None
        sizes = ((8, 4), (9, 4), (9, 5)) if hidden is None else ((8, 4), (9, 4))
        for h, i in sizes:
            case = _spec(op, batch=2, time=64, hidden_size=h, input_size=i).build()
            try:
                got = case.run(backend)
            except Exception as err:  # any failure is counted
                failed.append(f"{op} H={h} I={i}: {type(err).__name__}")
                break
            if not _same(got, case.run(rnnspec.get_backend("numpy")), steps=case.spec.steps):
                failed.append(f"{op} H={h} I={i}: values")
                break
    return failed


def act_nan(backend: rnnspec.Backend, max_steps: int) -> tuple[float, bool]:
    """(seconds for act with a NaN in row 0 and ``max_steps``, whether rows 1.. stayed finite)."""
    spec = _spec("act", batch=3, time=4, nan_at=(0, 1, 0), options=(("epsilon", 0.01), ("max_steps", max_steps)))
    case = spec.build()
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = case.run(backend)
    seconds = time.perf_counter() - start
    return seconds, bool(np.isfinite(result.outputs[1:]).all())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rnnspec.bench.faults", description=__doc__.splitlines()[0])
    parser.add_argument("backend")
    parser.add_argument("--act-max-steps", type=int, default=10**6, help="act's max_steps for the NaN call")
    args = parser.parse_args(argv)
    backend = rnnspec.get_backend(args.backend)
    checks = 2 * len(backend.ops)
    for label, poison in (("NaN", np.nan), ("inf", np.inf)):
        failed = padding_faults(backend, poison)
        print(f"padding ({label}): {len(failed)}/{checks} checks change {failed}")
    tried, silent = cotangent_faults(backend)
    print(f"cotangents: {len(silent)}/{tried} bad cotangents not refused {silent}")
    failed = size_faults(backend)
    print(f"sizes: {len(failed)}/{len(backend.ops)} ops fail on a second size {failed}")
    seconds, finite = act_nan(backend, args.act_max_steps)
    print(f"act NaN: max_steps={args.act_max_steps} returned in {seconds:.2f} s; other rows finite: {finite}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
