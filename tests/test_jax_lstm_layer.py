"""The JAX backend's lstm time loop and its derivative (:mod:`rnnspec.backends.jax.lstm_layer`).

The derivative is written by hand (a ``jax.custom_jvp``), so it is checked here
against JAX's own derivative of the very same loop (``lstm_layer.fun``, the
undecorated function) in float64, with and without lengths, in reverse mode,
forward mode, second order and under ``jax.vmap``; the conformance suite checks
both against the reference. The gradient's program keeps one matmul per step
in every loop: the weight gradient is one matmul after the reverse loop, not a
product per step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

jax = pytest.importorskip("jax")

import jax.numpy as jnp  # noqa: E402  (after the skip)

import rnnspec  # noqa: E402
from rnnspec.backends.jax.lstm_layer import lstm_layer  # noqa: E402
from rnnspec.conformance.assertions import assert_tree_close  # noqa: E402
from rnnspec.conformance.tolerances import tolerance  # noqa: E402

B = rnnspec.get_backend("jax")
BATCH, TIME, INPUTS, HIDDEN = 3, 6, 4, 5
#: Row lengths: full, part, none (a row of length 0 keeps its initial state).
LENGTHS = (TIME, 2, 0)


def arguments(masked: bool, seed: int = 0) -> tuple[tuple[jax.Array, ...], jax.Array | None]:
    """``lstm_layer``'s differentiable arguments ``(gi, b_ih, w_hh, b_hh, h0, c0)`` in float64, and ``valid``."""
    rng = np.random.default_rng(seed)
    p = rnnspec.init_params("lstm", input_size=INPUTS, hidden_size=HIDDEN, seed=seed, dtype="float64")[0]
    x = rng.standard_normal((TIME, BATCH, INPUTS))
    gi = jnp.asarray(x @ p["w_ih"].T)
    h0, c0 = (jnp.asarray(rng.standard_normal((BATCH, HIDDEN))) for _ in range(2))
    valid = jnp.asarray(np.arange(TIME)[None, :] < np.array(LENGTHS)[:, None]) if masked else None
    return (gi, jnp.asarray(p["b_ih"]), jnp.asarray(p["w_hh"]), jnp.asarray(p["b_hh"]), h0, c0), valid


def loss(layer: Callable[..., Any], valid: jax.Array | None, seed: int = 1) -> Callable[..., jax.Array]:
    """A scalar of every output of ``layer``: outputs and final state weighted by fixed random cotangents."""
    rng = np.random.default_rng(seed)
    d_out = jnp.asarray(rng.standard_normal((BATCH, TIME, HIDDEN)))
    d_h, d_c = (jnp.asarray(rng.standard_normal((BATCH, HIDDEN))) for _ in range(2))

    def scalar(*arrays: jax.Array) -> jax.Array:
        out, final = layer(*arrays, valid)
        return jnp.sum(out * d_out) + jnp.sum(final["h"] * d_h) + jnp.sum(final["c"] * d_c)

    return scalar


GRADIENT = tolerance("float64", steps=TIME, kind="gradient")
MASKED = pytest.mark.parametrize("masked", [False, True], ids=["full", "lengths"])
ARGNUMS = tuple(range(6))


@MASKED
def test_values_equal_those_of_the_same_loop_without_the_custom_derivative(masked: bool, x64: None) -> None:
    """The value, and the value under a derivative, are the loop's."""
    arrays, valid = arguments(masked)
    want = lstm_layer.fun(*arrays, valid)
    value = tolerance("float64", steps=TIME)
    assert_tree_close(B.to_numpy(lstm_layer(*arrays, valid)), B.to_numpy(want), value, context="value")
    under, _ = jax.vjp(lambda *a: lstm_layer(*a, valid), *arrays)
    assert_tree_close(B.to_numpy(under), B.to_numpy(want), value, context="value under jax.vjp")


@MASKED
def test_reverse_mode_equals_jax_autodiff_of_the_same_loop(masked: bool, x64: None) -> None:
    """jax.grad with respect to every argument (the projection, the weights, the initial state)."""
    arrays, valid = arguments(masked)
    got = jax.grad(loss(lstm_layer, valid), argnums=ARGNUMS)(*arrays)
    want = jax.grad(loss(lstm_layer.fun, valid), argnums=ARGNUMS)(*arrays)
    assert_tree_close(B.to_numpy(got), B.to_numpy(want), GRADIENT, context="reverse mode")


@MASKED
def test_forward_mode_equals_jax_autodiff_of_the_same_loop(masked: bool, x64: None) -> None:
    """jax.jvp along a random direction of every argument: the custom_jvp keeps forward mode."""
    arrays, valid = arguments(masked)
    directions, _ = arguments(masked, seed=2)
    _, got = jax.jvp(lambda *a: lstm_layer(*a, valid), arrays, directions)
    _, want = jax.jvp(lambda *a: lstm_layer.fun(*a, valid), arrays, directions)
    assert_tree_close(B.to_numpy(got), B.to_numpy(want), GRADIENT, context="forward mode")


@MASKED
def test_second_derivatives_equal_jax_autodiff_of_the_same_loop(masked: bool, x64: None) -> None:
    """A Hessian-vector product (forward over reverse) in w_hh: the derivative differentiates too."""
    arrays, valid = arguments(masked)
    direction = jnp.asarray(np.random.default_rng(3).standard_normal(arrays[2].shape))

    def hvp(layer: Callable[..., Any]) -> jax.Array:
        grad_w = jax.grad(lambda w: loss(layer, valid)(*arrays[:2], w, *arrays[3:]))
        return jax.jvp(grad_w, (arrays[2],), (direction,))[1]

    got, want = hvp(lstm_layer), hvp(lstm_layer.fun)
    assert_tree_close(B.to_numpy(got), B.to_numpy(want), GRADIENT, context="hessian-vector product")


def test_gradients_under_vmap_equal_a_loop_over_the_calls(x64: None) -> None:
    """jax.vmap of jax.grad over three stacked calls equals the three gradients."""
    calls = [arguments(masked=True, seed=seed)[0] for seed in (4, 5, 6)]
    _, valid = arguments(masked=True)
    grad = jax.grad(loss(lstm_layer, valid), argnums=ARGNUMS)
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *calls)
    got = jax.vmap(grad)(*stacked)
    want = jax.tree.map(lambda *leaves: jnp.stack(leaves), *(grad(*call) for call in calls))
    assert_tree_close(B.to_numpy(got), B.to_numpy(want), GRADIENT, context="vmap of grad")


def matmuls_per_loop(jaxpr: Any) -> Iterator[int]:
    """For every ``lax.scan`` in ``jaxpr`` (inside its calls too), how many ``dot_general`` its body holds."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "scan":
            yield count_dots(eqn.params["jaxpr"].jaxpr)
            continue
        for value in eqn.params.values():
            for sub in value if isinstance(value, (list, tuple)) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from matmuls_per_loop(inner)


def count_dots(jaxpr: Any) -> int:
    """``dot_general`` equations in ``jaxpr`` and the jaxprs inside it."""
    total = 0
    for eqn in jaxpr.eqns:
        total += eqn.primitive.name == "dot_general"
        for value in eqn.params.values():
            for sub in value if isinstance(value, (list, tuple)) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    total += count_dots(inner)
    return total


@MASKED
def test_the_lstm_gradient_runs_one_matmul_per_step_in_each_loop(masked: bool) -> None:
    """The program of jax.grad of the lstm op has a forward and a reverse loop, each with the recurrent matmul
    alone: ``d w_hh`` is one matmul after the reverse loop (JAX's own reverse mode adds a product per step)."""
    host = rnnspec.init_params("lstm", input_size=INPUTS, hidden_size=HIDDEN, seed=0, num_layers=2)
    params = B.from_numpy(host)
    x = jnp.zeros((BATCH, TIME, INPUTS), jnp.float32)
    lengths = jnp.asarray(LENGTHS) if masked else None

    def scalar(x: jax.Array, params: Any) -> jax.Array:
        return jnp.sum(B.lstm(x, params, lengths=lengths).outputs)

    jaxpr = jax.make_jaxpr(jax.grad(scalar, argnums=(0, 1)))(x, params).jaxpr
    per_loop = list(matmuls_per_loop(jaxpr))
    assert len(per_loop) == 4, f"two layers, a forward and a reverse loop each: {per_loop}"
    assert per_loop == [1] * 4, f"matmuls in each loop's body: {per_loop}"
