"""The Flax NNX layers inside ``flax.nnx.Bidirectional``: Flax's recurrent protocol in their ``__call__``.

Wrapped, every layer gives the NumPy reference's forward run and its reversed
run (``reverse=True``) side by side, and their final states as the carry;
rnnspec's LSTM gives what Flax's own Bidirectional ``nnx.RNN`` of an
``LSTMCell`` or ``OptimizedLSTMCell`` gives on the same weights (lengths, merge
functions, carries, time-major). A reversed call without ``keep_order`` returns
Flax's computation order; the per-step arrays follow the call's layout; a call
without the protocol's keywords still returns the op's result. Bidirectional
Skip GRU and IndRNN models train under ``nnx.jit``; the documentation's example
runs as written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

jax = pytest.importorskip("jax")
nnx = pytest.importorskip("flax.nnx")

import jax.numpy as jnp  # noqa: E402
from helpers_readme import run_section_example  # noqa: E402

import rnnspec  # noqa: E402
from rnnspec.backends.jax import nnx as layers  # noqa: E402
from rnnspec.conformance.assertions import assert_tree_close  # noqa: E402
from rnnspec.conformance.tolerances import tolerance  # noqa: E402
from rnnspec.convert.flax import from_flax  # noqa: E402
from rnnspec.errors import OptionError, UnknownArgumentError  # noqa: E402

REFERENCE = rnnspec.get_backend("numpy")
I, H, BATCH, T = 3, 4, 3, 6  # noqa: E741
#: Unsorted, one row full, one shorter.
LENGTHS = np.array([4, T, 2])
DOCS = Path(__file__).resolve().parents[1] / "docs" / "getting-started" / "jax.md"

#: (layer class, constructor options, op options, number of layers) of every layer Bidirectional can wrap.
CASES: list[tuple[Any, dict[str, Any], dict[str, Any], int]] = [
    (layers.RNN, {"activation": "relu"}, {"activation": "relu"}, 2),
    (layers.LSTM, {}, {}, 2),
    (layers.GRU, {"reset_after": False}, {"reset_after": False}, 2),
    (layers.SkipRNN, {}, {}, 2),
    (layers.SkipLSTM, {"trainable_initial_state": True}, {}, 2),
    (layers.SkipGRU, {}, {}, 2),
    (layers.ACT, {"cell": "gru", "max_steps": 4}, {"cell": "gru", "max_steps": 4}, 1),
    (layers.IndRNN, {"seq_len": 10}, {}, 2),
    (layers.QRNN, {"mode": "ifo", "window": 2}, {"mode": "ifo"}, 2),
]
IDS = [case[0].__name__ for case in CASES]
#: A bound on the steps along any case's longest path: time x 2 layers, or time x 4 inner steps for ACT.
STEPS = T * 2 * 4
#: Flax's float32 results against rnnspec's on the same weights (one layer, T steps).
FLAX_TOLERANCE = tolerance("float32", steps=T)


def make(cls: Any, options: dict[str, Any], num_layers: int, seed: int, **kw: Any) -> Any:
    return cls(I, H, num_layers=num_layers, **options, **kw, rngs=nnx.Rngs(seed))


def inputs(seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((BATCH, T, I)).astype(np.float32)


def host(tree: Any) -> Any:
    return jax.tree.map(np.asarray, tree)


def valid(lengths: np.ndarray | None) -> np.ndarray:
    """(batch, time): True at each row's valid steps."""
    if lengths is None:
        return np.ones((BATCH, T), bool)
    return np.arange(T)[None, :] < lengths[:, None]


def flip_valid(a: np.ndarray, lengths: np.ndarray | None) -> np.ndarray:
    """Each row's valid prefix of ``a`` (batch, time, ...) flipped in time; the padding left where it is."""
    out = a.copy()
    for b, n in enumerate(np.full(len(a), a.shape[1]) if lengths is None else lengths):
        out[b, :n] = a[b, :n][::-1]
    return out


def randomise(module: Any, seed: int) -> None:
    """Give every parameter of a Flax module random values (Flax starts biases at zero, which would hide them)."""
    state = nnx.state(module, nnx.Param)
    rng = np.random.default_rng(seed)
    nnx.update(module, jax.tree.map(lambda v: jnp.asarray(rng.uniform(-0.6, 0.6, v.shape), v.dtype), state))


def lstm_twins(cell_class: str) -> tuple[Any, Any, Any, Any]:
    """Flax's forward and backward ``nnx.RNN`` of ``cell_class``, and rnnspec's LSTMs holding their weights."""
    cells = [getattr(nnx, cell_class)(I, H, rngs=nnx.Rngs(k)) for k in (1, 2)]
    ours = []
    for k, cell in enumerate(cells):
        randomise(cell, k)
        layer = layers.LSTM(I, H, rngs=nnx.Rngs(10 + k))
        layer.load_canonical(from_flax(cell))
        ours.append(layer)
    return nnx.RNN(cells[0]), nnx.RNN(cells[1]), ours[0], ours[1]


def flax_lstm_state(carry: Any) -> list[dict[str, Any]]:
    """Flax's LSTM carry ``(c, h)`` as rnnspec's state of one layer."""
    c, h = carry
    return [{"h": np.asarray(h), "c": np.asarray(c)}]


def difference(a: Any, b: Any) -> Any:
    return a - 2.0 * b


@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
@pytest.mark.parametrize(("cls", "options", "op_options", "num_layers"), CASES, ids=IDS)
def test_bidirectional_over_each_layer_is_the_reference_forward_and_reversed_side_by_side(
    cls: Any, options: dict[str, Any], op_options: dict[str, Any], num_layers: int, lengths: np.ndarray | None
) -> None:
    forward = make(cls, options, num_layers, seed=0)
    backward = make(cls, options, num_layers, seed=1)
    bi = nnx.Bidirectional(forward, backward, return_carry=True)
    x = inputs()
    (carry_forward, carry_backward), y = bi(
        jnp.asarray(x), seq_lengths=None if lengths is None else jnp.asarray(lengths)
    )
    op = getattr(REFERENCE, forward.op)
    ahead = op(x, forward.numpy_params(), **op_options, lengths=lengths)
    behind = op(x, backward.numpy_params(), **op_options, lengths=lengths, reverse=True)
    expected = {
        "outputs": np.concatenate([ahead.outputs, behind.outputs], axis=-1),
        "forward state": ahead.state,
        "backward state": behind.state,
    }
    got = host({"outputs": y, "forward state": carry_forward, "backward state": carry_backward})
    where = f"nnx.Bidirectional of {cls.__name__}, lengths {None if lengths is None else lengths.tolist()}"
    assert_tree_close(got, expected, tolerance("float32", steps=STEPS), context=where)


@pytest.mark.parametrize("merge_fn", [None, difference], ids=["concatenate", "custom-merge"])
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
@pytest.mark.parametrize("cell_class", ["LSTMCell", "OptimizedLSTMCell"])
def test_bidirectional_lstm_equals_flaxs_bidirectional_on_the_same_weights(
    cell_class: str, lengths: np.ndarray | None, merge_fn: Any
) -> None:
    flax_forward, flax_backward, forward, backward = lstm_twins(cell_class)
    merge = {} if merge_fn is None else {"merge_fn": merge_fn}
    theirs = nnx.Bidirectional(flax_forward, flax_backward, return_carry=True, **merge)
    ours = nnx.Bidirectional(forward, backward, return_carry=True, **merge)
    x = jnp.asarray(inputs(7))
    seq_lengths = None if lengths is None else jnp.asarray(lengths)
    (their_forward, their_backward), their_y = theirs(x, seq_lengths=seq_lengths)
    (our_forward, our_backward), our_y = ours(x, seq_lengths=seq_lengths)
    # Flax's nnx.RNN runs on over the padding; only the valid steps are compared.
    mask = valid(lengths)
    got = {"outputs": np.asarray(our_y)[mask], "forward": host(our_forward), "backward": host(our_backward)}
    expected = {
        "outputs": np.asarray(their_y)[mask],
        "forward": flax_lstm_state(their_forward),
        "backward": flax_lstm_state(their_backward),
    }
    where = f"Bidirectional LSTM against Flax's Bidirectional nnx.RNN({cell_class}), merge {merge_fn}"
    assert_tree_close(got, expected, FLAX_TOLERANCE, context=where)


@pytest.mark.parametrize("batch_first", [True, False], ids=["batch-first-layers", "time-major-layers"])
def test_a_time_major_bidirectional_equals_the_batch_major_one_transposed(batch_first: bool) -> None:
    flax_forward, flax_backward, forward, backward = lstm_twins("OptimizedLSTMCell")
    if not batch_first:
        forward, backward = (make(layers.LSTM, {}, 1, seed=k, batch_first=False) for k in (3, 4))
        forward.load_canonical(from_flax(flax_forward))
        backward.load_canonical(from_flax(flax_backward))
    x = jnp.asarray(inputs(8))
    seq_lengths = jnp.asarray(LENGTHS)
    ours = nnx.Bidirectional(forward, backward, time_major=True)(jnp.swapaxes(x, 0, 1), seq_lengths=seq_lengths)
    theirs = nnx.Bidirectional(flax_forward, flax_backward)(x, seq_lengths=seq_lengths)
    assert ours.shape == (T, BATCH, 2 * H)
    mask = valid(LENGTHS)
    where = f"time-major Bidirectional of LSTMs with batch_first={batch_first} against Flax's batch-major one"
    assert_tree_close(
        np.asarray(jnp.swapaxes(ours, 0, 1))[mask], np.asarray(theirs)[mask], FLAX_TOLERANCE, context=where
    )


@pytest.mark.parametrize("time_major", [False, True], ids=["batch-major", "time-major"])
def test_a_reversed_call_returns_flaxs_order_unless_keep_order(time_major: bool) -> None:
    flax_rnn, _, layer, _ = lstm_twins("LSTMCell")
    x = inputs(9)
    laid_out = (lambda a: np.swapaxes(np.asarray(a), 0, 1)) if time_major else np.asarray
    call = {"seq_lengths": jnp.asarray(LENGTHS), "reverse": True, "time_major": time_major}
    computed = layer(jnp.asarray(laid_out(x)), **call)
    kept = layer(jnp.asarray(laid_out(x)), **call, keep_order=True)
    flax_order = flax_rnn(jnp.asarray(laid_out(x)), **call)
    reversed_run = REFERENCE.lstm(x, layer.numpy_params(), lengths=LENGTHS, reverse=True).outputs
    tol = tolerance("float32", steps=T)
    assert_tree_close(laid_out(kept), reversed_run, tol, context="keep_order=True: the op's positions")
    expected = flip_valid(reversed_run, LENGTHS)
    assert_tree_close(laid_out(computed), expected, tol, context="keep_order=None: each valid prefix flipped")
    mask = valid(LENGTHS)
    where = "keep_order=None against Flax's nnx.RNN(reverse=True)"
    assert_tree_close(laid_out(computed)[mask], laid_out(flax_order)[mask], FLAX_TOLERANCE, context=where)


def test_without_the_protocols_keywords_the_call_returns_the_ops_result() -> None:
    layer = make(layers.SkipGRU, {}, 2, seed=0)
    x = jnp.asarray(inputs())
    result = layer(x, lengths=LENGTHS)
    assert type(result).__name__ == "SkipResult"
    outputs = layer(x, seq_lengths=LENGTHS, return_carry=False)
    carry, carried_outputs = layer(x, lengths=LENGTHS, return_carry=True)
    np.testing.assert_array_equal(np.asarray(outputs), np.asarray(result.outputs))
    np.testing.assert_array_equal(np.asarray(carried_outputs), np.asarray(result.outputs))
    assert_tree_close(host(carry), host(result.state), tolerance("float32", steps=0), context="carry")


def test_an_initial_carry_is_each_directions_initial_state() -> None:
    forward, backward = (make(layers.GRU, {}, 2, seed=k) for k in (0, 1))
    x = inputs(2)
    rng = np.random.default_rng(3)
    starts = [[{"h": rng.standard_normal((BATCH, H)).astype(np.float32)} for _ in range(2)] for _ in range(2)]
    bi = nnx.Bidirectional(forward, backward, return_carry=True)
    carry, y = bi(jnp.asarray(x), initial_carry=tuple(starts), seq_lengths=jnp.asarray(LENGTHS))
    ahead = REFERENCE.gru(x, forward.numpy_params(), lengths=LENGTHS, initial_state=starts[0])
    behind = REFERENCE.gru(x, backward.numpy_params(), lengths=LENGTHS, initial_state=starts[1], reverse=True)
    expected = {"outputs": np.concatenate([ahead.outputs, behind.outputs], -1), "carry": (ahead.state, behind.state)}
    got = host({"outputs": y, "carry": carry})
    assert_tree_close(got, expected, tolerance("float32", steps=2 * T), context="Bidirectional GRU from initial_carry")


def test_the_per_step_arrays_follow_the_calls_layout() -> None:
    layer = make(layers.PhasedLSTM, {}, 1, seed=0)
    x = inputs(4)
    timestamps = np.cumsum(np.random.default_rng(5).uniform(0.5, 2.0, (BATCH, T)), axis=1).astype(np.float32)
    _, outputs = layer(jnp.asarray(x.swapaxes(0, 1)), timestamps=timestamps.T, time_major=True, return_carry=True)
    expected = REFERENCE.phased_lstm(x, layer.numpy_params(), timestamps=timestamps).outputs
    where = "PhasedLSTM called time-major with time-major timestamps"
    assert_tree_close(np.asarray(outputs).swapaxes(0, 1), expected, tolerance("float32", steps=T), context=where)


def test_bad_protocol_arguments_name_the_layer_and_the_argument() -> None:
    layer = make(layers.GRU, {}, 1, seed=0)
    x = jnp.asarray(inputs())
    state = [{"h": jnp.zeros((BATCH, H), jnp.float32)}]
    with pytest.raises(OptionError, match=r"^GRU layer \[backend 'jax'\]: argument initial_carry: expected"):
        layer(x, state, initial_carry=state)
    with pytest.raises(OptionError, match=r"argument seq_lengths: expected seq_lengths or lengths, not both"):
        layer(x, lengths=LENGTHS, seq_lengths=LENGTHS)
    with pytest.raises(OptionError, match=r"argument time_major: expected True, False or None, got 'yes'"):
        layer(x, time_major="yes")
    with pytest.raises(OptionError, match=r"argument keep_order: expected True, False or None, got 1"):
        layer(x, keep_order=1)
    phased = nnx.Bidirectional(*(make(layers.PhasedLSTM, {}, 1, seed=k) for k in (0, 1)))
    with pytest.raises(UnknownArgumentError, match=r"argument timestamps: expected a value"):
        phased(x)


@pytest.mark.parametrize(
    ("cls", "options"), [(layers.SkipGRU, {}), (layers.IndRNN, {"seq_len": T})], ids=["SkipGRU", "IndRNN"]
)
def test_bidirectional_models_train_under_nnx_jit(cls: Any, options: dict[str, Any]) -> None:
    optax = pytest.importorskip("optax")

    class Tagger(nnx.Module):
        def __init__(self, rngs: Any) -> None:
            self.bi = nnx.Bidirectional(cls(I, H, **options, rngs=rngs), cls(I, H, **options, rngs=rngs))
            self.head = nnx.Linear(2 * H, 1, rngs=rngs)

        def __call__(self, x: Any, seq_lengths: Any) -> Any:
            return self.head(self.bi(x, seq_lengths=seq_lengths))[..., 0]

    model = Tagger(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    x = jnp.asarray(inputs(6))
    seq_lengths = jnp.asarray(LENGTHS)
    target = jnp.asarray(np.sign(inputs(6)[..., 0]))
    mask = jnp.asarray(valid(LENGTHS))

    def loss_fn(model: Any) -> Any:
        return jnp.sum(jnp.where(mask, (model(x, seq_lengths) - target) ** 2, 0.0)) / jnp.sum(mask)

    @nnx.jit
    def train_step(model: Any, optimizer: Any) -> Any:
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    before = host(nnx.state(model.bi, nnx.Param))
    eager = loss_fn(model)
    losses = [float(train_step(model, optimizer)) for _ in range(4)]
    after = host(nnx.state(model.bi, nnx.Param))
    np.testing.assert_allclose(losses[0], float(eager), rtol=1e-5)
    assert np.all(np.isfinite(losses)), losses
    assert losses[-1] < losses[0], losses
    for direction in ("forward_rnn", "backward_rnn"):
        changed = [
            not np.array_equal(a, b)
            for a, b in zip(jax.tree.leaves(before[direction]), jax.tree.leaves(after[direction]), strict=True)
        ]
        assert all(changed), f"{cls.__name__}'s {direction}: some weights did not change"


def test_the_documentations_bidirectional_example_runs() -> None:
    namespace: dict[str, Any] = run_section_example(DOCS, "### Bidirectional")
    assert namespace["y"].shape == (4, 10, 16)
    assert [sorted(s) for s in namespace["forward_state"]] == [["cum_update_prob", "h", "update_prob"]]
    padding = np.asarray(namespace["y"])[2, 3:]
    assert not padding.any()
