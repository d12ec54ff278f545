"""The JAX backend's Skip RNN at inference: only the rows whose gate opens run the cells.

Without a derivative the skip ops run :mod:`rnnspec.backends.jax.skipping`'s
loop (a ``lax.switch`` per step: no row, a gathered bucket of rows, or the
whole batch); under ``jax.vjp``, ``jax.grad`` and ``jax.jvp`` they run the
training loop, every candidate at every step. Checked here:

- values: the skipping loop's equal the training loop's (forced by
  :func:`rnnspec.backends.jax.paths.plain_path`), within float rounding (XLA
  fuses the two programs differently), gates bitwise, over random cases with
  lengths, reverse, stacked layers, an initial state, batches with and without
  gathered buckets, float32 and float64;
- derivatives: reverse mode and forward mode are bitwise those of the training loop;
- work: a counter (``jax.debug.callback`` in the cell's step) counts the rows
  the cells run on: at batch 1 only the updating steps, at a larger batch only
  buckets that hold the updating rows; under ``jax.vjp`` every row at every
  step; with ``checkpoint_every`` and under ``jax.vmap`` the values hold;
- a NaN in a row that skips never reaches the rows that update beside it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
from helpers import logit

jax = pytest.importorskip("jax")

import jax.numpy as jnp  # noqa: E402  (after the skip)

import rnnspec  # noqa: E402
from rnnspec.backends.jax import paths, skip, skipping  # noqa: E402
from rnnspec.backends.jax.cells import Cell, make_cell  # noqa: E402
from rnnspec.backends.jax.run import OP_FUNCTIONS  # noqa: E402
from rnnspec.conformance.assertions import flatten  # noqa: E402

B = rnnspec.get_backend("jax")
OPTIONS: dict[str, dict[str, Any]] = {
    "skip_rnn": {"activation": "tanh"},
    "skip_lstm": {},
    "skip_gru": {"reset_after": True},
}


def _params(op: str, layers: int, seed: int, dtype: Any, gate: float | None = None) -> list[dict[str, Any]]:
    """Random params; ``gate`` forces ``du~ = gate`` at every update (``w_gate = 0``), as the benchmarks do."""
    init_options = {"activation": "tanh"} if op == "skip_rnn" else {}
    host = rnnspec.init_params(op, input_size=3, hidden_size=4, num_layers=layers, seed=seed, **init_options)
    rng = np.random.default_rng(seed)
    top = host[-1]
    if gate is None:  # gates that both open and close over a few steps
        top["w_gate"] = 0.5 * rng.standard_normal(top["w_gate"].shape)
        top["b_gate"] = np.array([rng.uniform(-2.5, -1.0)])
    else:
        top["w_gate"], top["b_gate"] = np.zeros_like(top["w_gate"]), np.array([logit(gate)])
    return [{k: jnp.asarray(np.asarray(v, dtype)) for k, v in p.items()} for p in host]


def _state(op: str, layers: int, batch: int, seed: int, dtype: Any) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed + 100)
    names = ("h", "c") if op == "skip_lstm" else ("h",)
    state: list[dict[str, Any]] = [
        {n: jnp.asarray(rng.standard_normal((batch, 4)).astype(dtype)) for n in names} for _ in range(layers)
    ]
    state[-1]["update_prob"] = jnp.asarray(rng.uniform(0.2, 1.0, (batch, 1)).astype(dtype))
    state[-1]["cum_update_prob"] = jnp.asarray(rng.uniform(0.0, 0.45, (batch, 1)).astype(dtype))
    return state


def _call(op: str, x: Any, params: Any, **kwargs: Any) -> dict[str, np.ndarray]:
    return flatten(B.to_numpy(getattr(B, op)(x, params, **OPTIONS[op], **kwargs)))


def _both(op: str, x: Any, params: Any, **kwargs: Any) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(the skipping loop's values, the training loop's)."""
    got = _call(op, x, params, **kwargs)
    with paths.plain_path():
        want = _call(op, x, params, **kwargs)
    return got, want


# -- values -----------------------------------------------------------------------------


@pytest.mark.parametrize("op", list(OPTIONS))
@pytest.mark.parametrize("batch", [1, 3, 16])
@pytest.mark.parametrize("seed", [0, 1])
def test_skipping_values_equal_the_training_loop(op: str, batch: int, seed: int) -> None:
    """Random gates, lengths (a zero one included), reverse, 2 layers, an initial state: the training loop's values."""
    rng = np.random.default_rng(seed)
    layers = 1 + seed
    params = _params(op, layers, seed, np.float32)
    x = jnp.asarray(rng.standard_normal((batch, 12, 3)).astype(np.float32))
    lengths = rng.integers(0, 13, batch)
    lengths[0] = 12
    kwargs: dict[str, Any] = {"lengths": lengths, "reverse": bool(seed)}
    if seed:
        kwargs["initial_state"] = _state(op, layers, batch, seed, np.float32)
    got, want = _both(op, x, params, **kwargs)
    gate = want[".update_gate"]
    assert 0 < gate.sum() < np.sum(lengths), f"the case should both update and skip: {gate}"
    for path in want:
        if path in (".update_gate",):
            np.testing.assert_array_equal(got[path], want[path], err_msg=path)
        else:
            np.testing.assert_allclose(got[path], want[path], rtol=2e-6, atol=2e-6, err_msg=path)


@pytest.mark.parametrize("op", list(OPTIONS))
def test_skipping_values_equal_the_training_loop_in_float64(op: str, x64: None) -> None:
    rng = np.random.default_rng(7)
    params = _params(op, 2, 7, np.float64)
    x = jnp.asarray(rng.standard_normal((9, 10, 3)))
    state = _state(op, 2, 9, 7, np.float64)
    got, want = _both(op, x, params, lengths=rng.integers(0, 11, 9), initial_state=state)
    assert 0 < want[".update_gate"].sum() < want[".update_gate"].size
    for path in want:
        np.testing.assert_allclose(got[path], want[path], rtol=1e-13, atol=1e-13, err_msg=path)


def test_skipping_values_are_those_of_each_row_alone() -> None:
    """At batch 16 (gathered buckets) each row's values are those it gets alone at batch 1 (whole-batch
    branch or none): gathering computes each row from its own inputs only."""
    op = "skip_gru"
    rng = np.random.default_rng(3)
    params = _params(op, 2, 3, np.float32)
    x = rng.standard_normal((16, 10, 3)).astype(np.float32)
    state = _state(op, 2, 16, 3, np.float32)
    whole = _call(op, jnp.asarray(x), params, initial_state=state)
    assert 0 < whole[".update_gate"].sum() < whole[".update_gate"].size
    for row in (0, 5, 15):
        alone_state = [{k: v[row : row + 1] for k, v in layer.items()} for layer in state]
        alone = _call(op, jnp.asarray(x[row : row + 1]), params, initial_state=alone_state)
        for path, value in alone.items():
            np.testing.assert_allclose(whole[path][row : row + 1], value, rtol=2e-6, atol=2e-6, err_msg=path)


# -- derivatives ---------------------------------------------------------------------------


@pytest.mark.parametrize("op", list(OPTIONS))
def test_reverse_and_forward_mode_are_bitwise_the_training_loops(op: str) -> None:
    rng = np.random.default_rng(5)
    batch, layers = 9, 2
    params = _params(op, layers, 5, np.float32)
    x = jnp.asarray(rng.standard_normal((batch, 8, 3)).astype(np.float32))
    lengths = rng.integers(0, 9, batch)
    state = _state(op, layers, batch, 5, np.float32)
    cotangents = {
        "outputs": rng.standard_normal((batch, 8, 4)).astype(np.float32),
        "update_prob": rng.standard_normal((batch, 8)).astype(np.float32),
    }
    kwargs = {"lengths": lengths, "initial_state": state, "reverse": True, **OPTIONS[op]}

    def derivatives() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        grads = B.vjp(op, {k: jnp.asarray(v) for k, v in cotangents.items()}, x, params, **kwargs)
        _, tangent = jax.jvp(lambda x: getattr(B, op)(x, params, **kwargs), (x,), (jnp.ones_like(x),))
        return flatten(B.to_numpy(grads)), flatten(B.to_numpy(tangent))

    grads, tangent = derivatives()
    with paths.plain_path():
        want_grads, want_tangent = derivatives()
    assert any(np.any(v != 0) for v in grads.values())
    for got, want in ((grads, want_grads), (tangent, want_tangent)):
        assert got.keys() == want.keys()
        for path in want:
            np.testing.assert_array_equal(got[path], want[path], err_msg=path)


# -- work -----------------------------------------------------------------------------------


class _Counter:
    """The row counts the cell's step ran on, in order, by ``jax.debug.callback``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.rows: list[int] = []

        def counted(name: str, options: Any) -> Cell:
            cell = make_cell(name, options)

            def fn(p: Any, state: Any, gi: Any) -> Any:
                jax.debug.callback(self._record, gi)
                return cell.fn(p, state, gi)

            return dataclasses.replace(cell, fn=fn)

        monkeypatch.setattr(skip, "make_cell", counted)

    def _record(self, gi: Any) -> None:
        self.rows.append(int(np.shape(gi)[0]))


def _forced(batch: int, time: int, rate: float) -> tuple[Any, Any, list[dict[str, Any]]]:
    """skip_gru inputs whose rows update every ``1 / rate`` steps, each row at its own phase (row mod k)."""
    du = {1.0: 0.5, 0.5: 0.3, 0.25: 0.13}[rate]
    params = _params("skip_gru", 1, 0, np.float32, gate=du)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((batch, time, 3)).astype(np.float32))
    phase = (np.arange(batch) % round(1.0 / rate)).astype(np.float32)[:, None]
    state = [
        {
            "h": jnp.zeros((batch, 4), jnp.float32),
            "update_prob": jnp.full((batch, 1), du, jnp.float32),
            "cum_update_prob": jnp.asarray(phase * np.float32(du)),
        }
    ]
    return x, params, state


def _run(x: Any, params: Any, state: Any, **options: Any) -> Any:
    """skip_gru under a fresh ``jax.jit``: the backend's jit cache may hold a program traced without the counter."""
    fn = jax.jit(lambda x, params, state: OP_FUNCTIONS["skip_gru"](**_arguments(x, params, state)))
    return fn(x, params, state) if not options else jax.jit(_with(options))(x, params, state)


def _arguments(x: Any, params: Any, state: Any) -> dict[str, Any]:
    return {"x": x, "params": params, "lengths": None, "initial_state": state, "reverse": False, "reset_after": True}


def _with(options: dict[str, Any]) -> Any:
    return lambda x, params, state: OP_FUNCTIONS["skip_gru"](**_arguments(x, params, state), **options)


def test_batch_one_runs_the_cell_at_the_updating_steps_only(monkeypatch: pytest.MonkeyPatch) -> None:
    counter = _Counter(monkeypatch)
    x, params, state = _forced(1, 16, 0.25)
    result = _run(x, params, state)
    updates = int(np.sum(np.asarray(result.update_gate)))
    assert updates == 4
    jax.effects_barrier()
    assert counter.rows == [1] * updates


def test_a_batch_runs_the_cells_on_buckets_of_the_updating_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows staggered at rate 1/4: 4 of 16 rows update at each step, and a bucket of 4 runs the cell."""
    counter = _Counter(monkeypatch)
    x, params, state = _forced(16, 8, 0.25)
    result = _run(x, params, state)
    per_step = np.asarray(result.update_gate).sum(axis=0)
    np.testing.assert_array_equal(per_step, 4)
    jax.effects_barrier()
    assert skipping.buckets(16) == (2, 4, 8)
    assert counter.rows == [4] * 8
    counter.rows.clear()
    x, params, state = _forced(16, 8, 0.5)
    _run(x, params, state)
    jax.effects_barrier()
    assert counter.rows == [8] * 8


def test_every_row_at_every_step_under_reverse_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    """The straight-through gradient reads every candidate: jax.vjp runs the training loop."""
    counter = _Counter(monkeypatch)
    x, params, state = _forced(16, 8, 0.25)
    result, pullback = jax.vjp(lambda x: OP_FUNCTIONS["skip_gru"](**_arguments(x, params, state)), x)
    jax.effects_barrier()
    assert counter.rows == [16] * 8
    (dx,) = pullback(jax.tree_util.tree_map(jnp.ones_like, result))
    assert np.all(np.isfinite(np.asarray(dx)))


def test_checkpoint_every_keeps_the_skipping(monkeypatch: pytest.MonkeyPatch) -> None:
    x, params, state = _forced(1, 16, 0.25)
    with paths.plain_path():
        want = flatten(_run(x, params, state))
    counter = _Counter(monkeypatch)
    got = flatten(_run(x, params, state, checkpoint_every=5))
    jax.effects_barrier()
    assert counter.rows == [1] * 4
    for path in want:
        np.testing.assert_allclose(np.asarray(got[path]), np.asarray(want[path]), rtol=2e-6, atol=2e-6, err_msg=path)


def test_vmap_over_the_skipping_loop_keeps_the_values() -> None:
    """Under vmap the switch runs every branch and selects: the values are still the training loop's."""
    op = "skip_gru"
    rng = np.random.default_rng(11)
    params = _params(op, 1, 11, np.float32)
    xs = jnp.asarray(rng.standard_normal((2, 16, 6, 3)).astype(np.float32))
    got = jax.vmap(lambda x: B.skip_gru(x, params, reset_after=True).outputs)(xs)
    for k in range(2):
        with paths.plain_path():
            want = B.skip_gru(xs[k], params, reset_after=True).outputs
        np.testing.assert_allclose(np.asarray(got[k]), np.asarray(want), rtol=2e-6, atol=2e-6)


def test_a_nan_in_a_skipping_row_stays_in_its_row() -> None:
    """A NaN input at a step where its row skips while rows of another phase update (a gathered bucket, whose
    fillers are skipping rows) is never read: no row, its own included, sees a NaN."""
    x, params, state = _forced(16, 8, 0.25)
    gates = np.asarray(_run(x, params, state).update_gate)
    row, step = 1, 1
    assert gates[row, step] == 0
    assert gates[:, step].sum() == 4
    bad = np.asarray(x).copy()
    bad[row, step, :] = np.nan
    result = B.skip_gru(jnp.asarray(bad), params, initial_state=state, reset_after=True)
    assert all(np.isfinite(leaf).all() for leaf in flatten(B.to_numpy(result)).values()), "a skipped NaN was read"
