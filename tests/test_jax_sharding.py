"""Data parallelism with the Flax NNX layers: a SkipGRU training step sharded over the batch axis.

jax fixes its devices when it initialises, so the check runs in a fresh
interpreter with ``XLA_FLAGS=--xla_force_host_platform_device_count=4``: four
CPU devices, a mesh over them, the batch split four ways and the parameters
replicated. The jitted step must give the unsharded step's loss and gradients,
and must really run sharded (its outputs are split over the batch axis).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("jax")
pytest.importorskip("flax.nnx")

from rnnspec.conformance.assertions import assert_tree_close
from rnnspec.conformance.tolerances import tolerance

DEVICES = 4
TIME, LAYERS = 7, 2

STEP_SCRIPT = textwrap.dedent(
    """
    import json

    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx
    from jax.sharding import NamedSharding, PartitionSpec

    import rnnspec
    from rnnspec.backends.jax.nnx import SkipGRU

    BATCH, TIME, FEATURES, HIDDEN = 8, {time}, 3, 5
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, TIME, FEATURES)).astype(np.float32)
    target = rng.standard_normal((BATCH, TIME, HIDDEN)).astype(np.float32)
    lengths = np.array([TIME, 5, 0, TIME, 2, 6, TIME, 1], np.int32)
    model = SkipGRU(FEATURES, HIDDEN, num_layers={layers}, rngs=nnx.Rngs(0))


    def loss_fn(model, x, lengths, target):
        result = model(x, lengths=lengths)
        return jnp.mean((result.outputs - target) ** 2) + rnnspec.skip_budget_loss(result.update_gate, 1e-2)


    @nnx.jit
    def step(model, x, lengths, target):
        loss, grads = nnx.value_and_grad(loss_fn)(model, x, lengths, target)
        return loss, grads, model(x, lengths=lengths).outputs


    def flat(grads):
        return {{"/".join(map(str, path)): np.asarray(leaf).tolist() for path, leaf in nnx.to_flat_state(grads)}}


    loss, grads, _ = step(model, jnp.asarray(x), jnp.asarray(lengths), jnp.asarray(target))
    mesh = jax.make_mesh(({devices},), ("data",))
    by_batch = NamedSharding(mesh, PartitionSpec("data"))
    nnx.update(model, jax.device_put(nnx.state(model), NamedSharding(mesh, PartitionSpec())))
    sharded = [jax.device_put(a, by_batch) for a in (x, lengths, target)]
    sharded_loss, sharded_grads, outputs = step(model, *sharded)
    print(json.dumps({{
        "devices": jax.device_count(),
        "input_devices": len(sharded[0].sharding.device_set),
        "outputs_spec": [None if axis is None else str(axis) for axis in outputs.sharding.spec],
        "loss": float(loss),
        "sharded_loss": float(sharded_loss),
        "grads": flat(grads),
        "sharded_grads": flat(sharded_grads),
    }}))
    """
)


def test_a_batch_sharded_skip_gru_step_gives_the_unsharded_loss_and_gradients(tmp_path: Path) -> None:
    script = tmp_path / "sharded_step.py"
    script.write_text(STEP_SCRIPT.format(time=TIME, layers=LAYERS, devices=DEVICES), encoding="utf-8")
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={DEVICES}".strip()
    env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])

    assert report["devices"] == DEVICES
    assert report["input_devices"] == DEVICES
    assert report["outputs_spec"][0] == "data", f"outputs not split over the batch: {report['outputs_spec']}"
    grads = {k: np.asarray(v, np.float32) for k, v in report["grads"].items()}
    sharded = {k: np.asarray(v, np.float32) for k, v in report["sharded_grads"].items()}
    assert any(g.any() for g in grads.values()), "every gradient is zero: the comparison would prove nothing"
    where = f"SkipGRU training step, batch sharded over {DEVICES} CPU devices, against the unsharded step"
    steps = TIME * LAYERS
    assert_tree_close(
        np.float32(report["sharded_loss"]), np.float32(report["loss"]), tolerance("float32", steps=steps), context=where
    )
    assert_tree_close(sharded, grads, tolerance("float32", steps=steps, kind="gradient"), context=where)
