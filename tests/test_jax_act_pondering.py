"""The JAX backend's act runs its cell as many inner steps as the rows ponder, not ``max_steps``.

Without a derivative the inner loop is a ``lax.while_loop`` that stops when
every row has halted; under ``jax.vjp`` it is a ``lax.scan`` over
``max_steps`` whose steps skip the cell once every row has halted
(:mod:`rnnspec.backends.jax.act`). A counter (``jax.debug.callback`` in the
cell's step) counts the cell's runs: with every row forced to halt after N
inner steps (``w_halt = 0``, ``b_halt = logit(q)``, as the benchmarks force
it), T input steps run the cell N * T times, for N = 1, 2 and 4 of
``max_steps = 8``, with and without a derivative.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytest

jax = pytest.importorskip("jax")

import jax.numpy as jnp  # noqa: E402  (after the skip)

import rnnspec  # noqa: E402
from rnnspec.backends.jax import act  # noqa: E402
from rnnspec.backends.jax.cells import Cell, make_cell  # noqa: E402
from rnnspec.backends.jax.run import OP_FUNCTIONS  # noqa: E402

#: halting unit q -> inner steps with epsilon = 0.01: ceil(0.99 / q).
PONDER = {0.995: 1, 0.5: 2, 0.25: 4}
EPSILON, MAX_STEPS, TIME = 0.01, 8, 5


def _counted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Patch act's cells to record each run of their step; returns the record (rows per run)."""
    runs: list[int] = []

    def counted(name: str, options: Any) -> Cell:
        cell = make_cell(name, options)

        def fn(p: Any, state: Any, gi: Any) -> Any:
            jax.debug.callback(lambda g: runs.append(int(np.shape(g)[0])), gi)
            return cell.fn(p, state, gi)

        return dataclasses.replace(cell, fn=fn)

    monkeypatch.setattr(act, "make_cell", counted)
    return runs


def _inputs(q: float) -> tuple[Any, list[dict[str, Any]]]:
    host = rnnspec.init_params("act", input_size=3, hidden_size=4, cell="gru", seed=0)[0]
    host["w_halt"] = np.zeros_like(host["w_halt"])
    host["b_halt"] = np.array([math.log(q / (1.0 - q))], np.float32)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((3, TIME, 3)).astype(np.float32))
    return x, [{k: jnp.asarray(v) for k, v in host.items()}]


def _act(x: Any, params: Any) -> Any:
    return OP_FUNCTIONS["act"](
        x=x,
        params=params,
        cell="gru",
        epsilon=EPSILON,
        max_steps=MAX_STEPS,
        lengths=None,
        initial_state=None,
        reverse=False,
    )


@pytest.mark.parametrize(("q", "steps"), list(PONDER.items()))
def test_inference_runs_the_cell_once_per_ponder_step(q: float, steps: int, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = _counted(monkeypatch)
    x, params = _inputs(q)
    result = jax.jit(lambda x, p: _act(x, p))(x, params)  # a fresh trace, with the counter
    np.testing.assert_array_equal(np.asarray(result.ponder_steps), steps)
    jax.effects_barrier()
    assert runs == [3] * (steps * TIME)


@pytest.mark.parametrize(("q", "steps"), list(PONDER.items()))
def test_reverse_mode_skips_the_cell_once_every_row_halted(
    q: float, steps: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = _counted(monkeypatch)
    x, params = _inputs(q)
    result, pullback = jax.vjp(jax.jit(lambda x, p: _act(x, p)), x, params)
    np.testing.assert_array_equal(np.asarray(result.ponder_steps), steps)
    (dx, _) = pullback(jax.tree_util.tree_map(jnp.ones_like, result))
    assert np.all(np.isfinite(np.asarray(dx)))
    jax.effects_barrier()
    assert runs == [3] * (steps * TIME)
