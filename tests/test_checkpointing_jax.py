"""checkpoint_every on the JAX backend: XLA's buffers shrink, and the program does not grow with T/K."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnspec

JAX = rnnspec.get_backend("jax")
BATCH, INPUT, HIDDEN = 4, 4, 16


def grad_of_outputs(op: str, every: int | None) -> Any:
    """The jitted gradient of <outputs, cotangent> with respect to x and the params."""
    layers = 1 if op == "act" else 2

    def loss(x: jax.Array, params: Any, cotangent: jax.Array) -> jax.Array:
        out = getattr(JAX, op)(x, params, checkpoint_every=every).outputs
        return jnp.sum(out * cotangent)

    params = JAX.from_numpy(rnnspec.init_params(op, input_size=INPUT, hidden_size=HIDDEN, num_layers=layers, seed=0))
    return jax.jit(jax.grad(loss, argnums=(0, 1))), params


def temp_bytes(op: str, time: int, every: int | None) -> int:
    grad, params = grad_of_outputs(op, every)
    x = jnp.ones((BATCH, time, INPUT), jnp.float32)
    cotangent = jnp.ones((BATCH, time, HIDDEN), jnp.float32)
    analysis = grad.lower(x, params, cotangent).compile().memory_analysis()
    if analysis is None:
        pytest.skip("this jax backend gives no memory analysis")
    return int(analysis.temp_size_in_bytes)


@pytest.mark.parametrize("op", ["lstm", "skip_gru"])
def test_xla_needs_a_fraction_of_the_temporary_buffers_with_checkpoint_every(op: str) -> None:
    whole, cut = temp_bytes(op, 400, None), temp_bytes(op, 400, 20)
    assert cut < whole / 3, (op, whole, cut)


def equations(time: int, every: int) -> int:
    grad, params = grad_of_outputs("lstm", every)
    x = jnp.ones((BATCH, time, INPUT), jnp.float32)
    cotangent = jnp.ones((BATCH, time, HIDDEN), jnp.float32)
    return len(jax.make_jaxpr(grad)(x, params, cotangent).eqns[0].params["jaxpr"].eqns)


def test_the_program_has_the_same_size_for_ten_segments_and_for_a_hundred() -> None:
    assert equations(1000, 100) == equations(1000, 10)


@pytest.mark.parametrize("op", ["linear_recurrence", "indrnn_recurrence"])
def test_a_primitive_carries_each_rows_last_processed_step_into_the_next_segment(op: str) -> None:
    rng = np.random.default_rng(0)
    first = JAX.from_numpy(rng.uniform(-1, 1, (3, 11, 5)).astype(np.float32))
    second = JAX.from_numpy(rng.uniform(-1, 1, (3, 11, 5) if op == "linear_recurrence" else (5,)).astype(np.float32))
    for reverse in (False, True):
        call = getattr(JAX, op)
        whole = call(first, second, lengths=np.array([11, 6, 0]), reverse=reverse)
        cut = call(first, second, lengths=np.array([11, 6, 0]), reverse=reverse, checkpoint_every=4)
        np.testing.assert_allclose(np.asarray(cut), np.asarray(whole), rtol=1e-6, atol=1e-6)
