"""The Keras layers inside ``keras.layers.Bidirectional``, and their ``go_backwards``.

``go_backwards=True`` runs the op with ``reverse=True`` and returns the sequence in
reversed time order, as Keras' own layers do; it is in the config, so Bidirectional
clones a layer into its backward direction. Wrapped, rnnspec's LSTM, GRU and RNN
give what Keras' Bidirectional LSTM, GRU and SimpleRNN give on the same weights
(merge modes, masks, states, initial states); every layer gives the NumPy
reference's forward and reversed runs; the wrapper trains with ``model.fit``,
saves and loads; the documentation's example runs as written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from helpers_readme import run_section_example  # noqa: E402

import rnnspec  # noqa: E402  (after the skips: the layers import tensorflow and keras)
from rnnspec.backends.tensorflow import keras as layers  # noqa: E402
from rnnspec.conformance.tolerances import tolerance  # noqa: E402
from rnnspec.convert import from_keras  # noqa: E402
from rnnspec.errors import OptionError  # noqa: E402

REFERENCE = rnnspec.get_backend("numpy")
BATCH, TIME, FEATURES, UNITS = 4, 6, 3, 5
LENGTHS = np.array([6, 0, 4, 1])
#: Which rows the left-padded masks pad on the left: the last stays right-padded (a mixed batch).
LEFT = np.array([True, True, True, False])
#: Keras' float32 results against rnnspec's on the same weights.
FLOAT32_ATOL = 1e-5
DOCS = Path(__file__).resolve().parents[1] / "docs" / "getting-started" / "tensorflow.md"

#: (layer, constructor options beyond units, the op options the reference takes, inner steps per step).
#: Bidirectional knows a layer's output and states only: ``return_extras`` is for a layer called directly.
CASES: list[tuple[str, dict[str, Any], dict[str, Any], int]] = [
    ("RNN", {"num_layers": 2, "activation": "relu"}, {"activation": "relu"}, 1),
    ("LSTM", {"num_layers": 2}, {}, 1),
    ("GRU", {"num_layers": 2, "reset_after": False}, {"reset_after": False}, 1),
    ("SkipRNN", {"num_layers": 2}, {}, 1),
    ("SkipLSTM", {"num_layers": 2, "trainable_initial_state": True}, {}, 1),
    ("SkipGRU", {"num_layers": 2}, {}, 1),
    ("ACT", {"cell": "lstm", "max_steps": 4}, {"cell": "lstm", "max_steps": 4}, 4),
    ("IndRNN", {"num_layers": 2, "seq_len": TIME}, {}, 1),
    ("QRNN", {"num_layers": 2, "mode": "ifo", "window": 2}, {"mode": "ifo"}, 1),
]
ALL_LAYERS = [name for name, *_ in CASES] + ["PhasedLSTM"]
#: Keras' layer and rnnspec's that computes it with the defaults of both.
KERAS_TWINS = [("LSTM", "LSTM"), ("GRU", "GRU"), ("SimpleRNN", "RNN")]
# Keras' saving reads each variable with np.array(tf.Variable), whose __array__ predates NumPy 2's copy
# keyword: NumPy warns for a plain Dense layer too, so the warning is Keras' and TensorFlow's, not the layers'.
KERAS_SAVING_WARNING = "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"


def case_id(case: tuple[str, dict[str, Any], dict[str, Any], int]) -> str:
    return case[0]


def inputs(dtype: str = "float64", seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((BATCH, TIME, FEATURES)).astype(dtype)


def right_padded_mask() -> np.ndarray:
    return np.arange(TIME)[None, :] < LENGTHS[:, None]


def left_padded_mask() -> np.ndarray:
    """LENGTHS' valid steps at the end of the rows that LEFT marks, at the start of the others."""
    right = right_padded_mask()
    return np.stack([row[::-1] if left else row for row, left in zip(right, LEFT, strict=True)])


def to_left(a: np.ndarray) -> np.ndarray:
    """Right-padded per-step values (batch, time, ...) placed where the left-padded mask's valid steps lie."""
    rows = zip(a, LENGTHS, LEFT, strict=True)
    return np.stack([np.roll(row, TIME - n, axis=0) if left else row for row, n, left in rows])


def left_padded(x: np.ndarray) -> np.ndarray:
    """Inputs ``x`` cut to LENGTHS and placed as :func:`left_padded_mask` says, zeros elsewhere (``Masking``)."""
    return to_left(np.where(right_padded_mask()[:, :, None], x, 0.0))


def close(got: Any, want: Any, *, steps: int, what: str = "") -> None:
    tol = tolerance("float64", steps=steps, kind="value")
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=tol.rtol, atol=tol.atol, err_msg=what)


def flat_state(state: Any, layer: Any) -> list[np.ndarray]:
    return [np.asarray(state[k][entry]) for k, entry in layer.state_names]


def keras_pair(keras_name: str, ours: str, merge_mode: str, **options: Any) -> tuple[Any, Any]:
    """Keras' Bidirectional of ``keras_name`` and rnnspec's of ``ours``, each direction with its own weights,
    the same in both wrappers."""
    theirs = keras.layers.Bidirectional(getattr(keras.layers, keras_name)(UNITS, **options), merge_mode=merge_mode)
    mine = keras.layers.Bidirectional(getattr(layers, ours)(UNITS, **options), merge_mode=merge_mode)
    for wrapper in (theirs, mine):
        wrapper.build((None, None, FEATURES))
    keras.utils.set_random_seed(1)
    for direction in ("forward_layer", "backward_layer"):
        # A plain (forward) Keras layer holds the direction's weights: from_keras reads no go_backwards layer.
        source = getattr(keras.layers, keras_name)(UNITS)
        source.build((None, None, FEATURES))
        getattr(theirs, direction).set_weights(source.get_weights())
        getattr(mine, direction).load_canonical(from_keras(source))
    return theirs, mine


# -- go_backwards on the bare layer -------------------------------------------------------


@pytest.mark.parametrize("name", ALL_LAYERS)
def test_every_layer_takes_go_backwards_keeps_it_in_its_config_and_is_never_stateful(name: str) -> None:
    cls = getattr(layers, name)
    assert cls(UNITS).go_backwards is False
    layer = cls(UNITS, go_backwards=True, return_sequences=True)
    config = layer.get_config()
    assert config["go_backwards"] is True
    twin = cls.from_config(config)
    assert twin.go_backwards is True
    assert twin.get_config() == config
    assert layer.stateful is False
    assert "go_backwards" in str(cls.__doc__)


def test_a_go_backwards_that_is_no_bool_is_refused_naming_it() -> None:
    with pytest.raises(OptionError, match=r"argument go_backwards: expected True or False, got 1"):
        layers.GRU(UNITS, go_backwards=1)


@pytest.mark.parametrize("padding", ["right", "left"])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_go_backwards_is_the_reversed_op_returned_in_reversed_time_order(
    case: tuple[str, dict[str, Any], dict[str, Any], int], padding: str
) -> None:
    """Keras' convention: ``outputs[:, j]`` (and each extra field) is the step that read ``x[:, time - 1 - j]``;
    the state is the op's with ``reverse=True``, after each row's first valid step."""
    name, options, op_options, inner = case
    cls = getattr(layers, name)
    flags = {"return_sequences": True, "return_state": True, "return_extras": bool(cls.extra_fields)}
    layer = cls(UNITS, seed=3, dtype="float64", go_backwards=True, **flags, **options)
    layer.build((None, None, FEATURES))
    x = inputs()
    mask = right_padded_mask()
    want = getattr(REFERENCE, layer.op)(x, layer.numpy_params(), lengths=LENGTHS, reverse=True, **op_options)
    per_step = {"outputs": want.outputs, **{f: getattr(want, f) for f in layer.extra_fields}}
    if padding == "left":
        x, mask = left_padded(x), left_padded_mask()
        per_step = {k: to_left(v) for k, v in per_step.items()}
    got = layer(x, mask=mask)
    steps = TIME * layer.num_layers * inner
    close(got[0], per_step["outputs"][:, ::-1], steps=steps, what="outputs")
    names = layer.state_names
    for (k, entry), tensor, expected in zip(names, got[1 : 1 + len(names)], flat_state(want.state, layer), strict=True):
        close(tensor, expected, steps=steps, what=f"state[{k}][{entry!r}]")
    extras = got[1 + len(names) :]
    assert len(extras) == len(layer.extra_fields)
    for field, tensor in zip(layer.extra_fields, extras, strict=True):
        close(tensor, per_step[field][:, ::-1], steps=steps, what=field)


@pytest.mark.parametrize("name", ["LSTM", "SkipGRU", "QRNN"])
def test_without_return_sequences_go_backwards_gives_the_output_of_each_rows_first_valid_step(name: str) -> None:
    layer = getattr(layers, name)(UNITS, num_layers=2, seed=3, dtype="float64", go_backwards=True)
    layer.build((None, None, FEATURES))
    x = inputs()
    outputs = getattr(REFERENCE, layer.op)(x, layer.numpy_params(), lengths=LENGTHS, reverse=True).outputs
    close(layer(x, mask=right_padded_mask()), outputs[:, 0], steps=2 * TIME)
    assert np.all(outputs[LENGTHS == 0, 0] == 0.0)  # a row of length 0 gives zeros
    close(layer(left_padded(x), mask=left_padded_mask()), outputs[:, 0], steps=2 * TIME, what="left-padded")
    full = getattr(REFERENCE, layer.op)(x, layer.numpy_params(), reverse=True).outputs
    close(layer(x), full[:, 0], steps=2 * TIME, what="no mask")


def _keras_lstm_params(layer: Any) -> list[dict[str, np.ndarray]]:
    """A go_backwards Keras LSTM's weights, canonical (from_keras reads only forward layers)."""
    twin = keras.layers.LSTM(UNITS)
    twin.build((None, None, FEATURES))
    twin.set_weights(layer.get_weights())
    return from_keras(twin)


def test_go_backwards_gives_keras_own_lstms_reversed_sequence_and_state() -> None:
    theirs = keras.layers.LSTM(UNITS, go_backwards=True, return_sequences=True, return_state=True)
    theirs.build((None, None, FEATURES))
    ours = layers.LSTM(UNITS, go_backwards=True, return_sequences=True, return_state=True)
    ours.load_canonical(_keras_lstm_params(theirs))
    x = inputs("float32")
    for g, w in zip(ours(x), theirs(x), strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), atol=FLOAT32_ATOL)
    # With a mask, Keras' bare layer repeats the previous output at the masked steps where rnnspec's give
    # zeros (Bidirectional makes Keras' zeros too); they agree at the valid steps, and on the state.
    mask = right_padded_mask()
    got, want = ours(x, mask=mask), theirs(x, mask=mask)
    valid = mask[:, ::-1, None]
    np.testing.assert_allclose(np.where(valid, got[0], 0.0), np.where(valid, want[0], 0.0), atol=FLOAT32_ATOL)
    assert np.all(np.asarray(got[0])[~mask[:, ::-1]] == 0.0)
    for g, w in zip(got[1:], want[1:], strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), atol=FLOAT32_ATOL)


def test_a_go_backwards_phased_lstm_is_the_op_reversed_with_its_timestamps() -> None:
    layer = layers.PhasedLSTM(UNITS, num_layers=2, seed=3, go_backwards=True, return_sequences=True, return_state=True)
    rng = np.random.default_rng(1)
    x = inputs("float32")
    timestamps = np.cumsum(rng.uniform(0.0, 2.0, (BATCH, TIME)), axis=1).astype(np.float32)
    mask = right_padded_mask()
    outputs, *state = layer(x, mask=mask, timestamps=timestamps)
    want = rnnspec.get_backend("tensorflow").phased_lstm(
        tf.constant(x),
        layer.canonical_params(),
        timestamps=tf.constant(timestamps),
        lengths=tf.constant(LENGTHS, tf.int32),
        reverse=True,
    )
    np.testing.assert_array_equal(outputs.numpy(), want.outputs.numpy()[:, ::-1])
    np.testing.assert_array_equal(state[-1].numpy(), want.state[1]["c"].numpy())


def test_the_mask_passed_on_is_reversed_with_the_sequence() -> None:
    mask = tf.constant(right_padded_mask())
    backwards = layers.GRU(UNITS, go_backwards=True, return_sequences=True)
    np.testing.assert_array_equal(np.asarray(backwards.compute_mask(None, mask)), right_padded_mask()[:, ::-1])
    forwards = layers.GRU(UNITS, return_sequences=True)
    np.testing.assert_array_equal(np.asarray(forwards.compute_mask(None, mask)), right_padded_mask())
    assert layers.GRU(UNITS, go_backwards=True).compute_mask(None, mask) is None


def test_compute_output_shape_gives_keras_own_lstms_shapes() -> None:
    for options in (
        {},
        {"return_sequences": True},
        {"return_state": True},
        {"return_sequences": True, "return_state": True},
    ):
        theirs = keras.layers.LSTM(UNITS, **options).compute_output_shape((BATCH, TIME, FEATURES))
        ours = layers.LSTM(UNITS, **options).compute_output_shape((BATCH, TIME, FEATURES))
        assert tuple(ours) == tuple(theirs), options


# -- Bidirectional against Keras' own ---------------------------------------------------------


@pytest.mark.parametrize("return_sequences", [True, False], ids=["sequences", "last"])
@pytest.mark.parametrize("merge_mode", ["concat", "sum"])
@pytest.mark.parametrize(("keras_name", "ours"), KERAS_TWINS, ids=[t[0] for t in KERAS_TWINS])
def test_bidirectional_gives_keras_own_bidirectional_outputs_on_the_same_weights(
    keras_name: str, ours: str, merge_mode: str, return_sequences: bool
) -> None:
    theirs, mine = keras_pair(keras_name, ours, merge_mode, return_sequences=return_sequences)
    x = inputs("float32")
    for label, mask in [("no mask", None), ("right", right_padded_mask()), ("left", left_padded_mask())]:
        got, want = np.asarray(mine(x, mask=mask)), np.asarray(theirs(x, mask=mask))
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=FLOAT32_ATOL, err_msg=label)


def test_bidirectional_returns_and_takes_the_states_in_keras_order() -> None:
    """``[output, h_fwd, c_fwd, h_bwd, c_bwd]``, and ``initial_state`` split the same way."""
    theirs, mine = keras_pair("LSTM", "LSTM", "concat", return_sequences=True, return_state=True)
    x = inputs("float32")
    mask = left_padded_mask()
    initial = list(np.random.default_rng(2).standard_normal((4, BATCH, UNITS)).astype("float32"))
    for label, kwargs in [("zeros", {}), ("given", {"initial_state": initial})]:
        got, want = mine(x, mask=mask, **kwargs), theirs(x, mask=mask, **kwargs)
        assert len(got) == len(want) == 5
        for j, (g, w) in enumerate(zip(got, want, strict=True)):
            np.testing.assert_allclose(np.asarray(g), np.asarray(w), atol=FLOAT32_ATOL, err_msg=f"{label}: {j}")


def test_both_directions_start_from_the_same_weights_with_a_seed_and_from_their_own_without() -> None:
    seeded = keras.layers.Bidirectional(layers.GRU(UNITS, seed=3))
    drawn = keras.layers.Bidirectional(layers.GRU(UNITS))
    for wrapper in (seeded, drawn):
        wrapper.build((None, None, FEATURES))
    pairs = [zip(w.forward_layer.weights, w.backward_layer.weights, strict=True) for w in (seeded, drawn)]
    assert all(np.array_equal(np.asarray(f), np.asarray(b)) for f, b in pairs[0])
    assert not any(np.array_equal(np.asarray(f), np.asarray(b)) for f, b in pairs[1])


def test_the_functional_api_gets_keras_own_shapes_through_bidirectional() -> None:
    for options in ({"return_sequences": True}, {"return_state": True}):
        for merge_mode in ("concat", "sum", None):
            inp = keras.Input((None, FEATURES))
            theirs = keras.layers.Bidirectional(keras.layers.LSTM(UNITS, **options), merge_mode=merge_mode)(inp)
            ours = keras.layers.Bidirectional(layers.LSTM(UNITS, **options), merge_mode=merge_mode)(inp)
            assert [t.shape for t in keras.tree.flatten(ours)] == [t.shape for t in keras.tree.flatten(theirs)]


# -- every layer in Bidirectional ---------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_every_layer_in_bidirectional_gives_the_reference_forward_and_reversed_runs(
    case: tuple[str, dict[str, Any], dict[str, Any], int],
) -> None:
    """Concatenated: the forward run, then the reversed one aligned with the inputs; the states, forward first.

    A mixed batch of left- and right-padded rows, eagerly and in ``model.predict`` (a traced call)."""
    name, options, op_options, inner = case
    keras.utils.set_random_seed(3)  # seed=None: each direction draws its own weights
    layer = getattr(layers, name)(UNITS, dtype="float64", return_sequences=True, return_state=True, **options)
    wrapper = keras.layers.Bidirectional(layer, dtype="float64")
    inp = keras.Input((None, FEATURES), dtype="float64")
    model = keras.Model(inp, wrapper(keras.layers.Masking(dtype="float64")(inp)))
    forward, backward = wrapper.forward_layer, wrapper.backward_layer
    assert (forward.go_backwards, backward.go_backwards) == (False, True)
    first = [next(iter(w.numpy_params()[0].values())) for w in (forward, backward)]  # the first weight, w_ih...
    assert not np.array_equal(*first)
    op = getattr(REFERENCE, layer.op)
    x = inputs("float32").astype("float64")  # model.predict reads its data in float32
    want_forward = op(x, forward.numpy_params(), lengths=LENGTHS, **op_options)
    want_backward = op(x, backward.numpy_params(), lengths=LENGTHS, reverse=True, **op_options)
    want = [
        to_left(np.concatenate([want_forward.outputs, want_backward.outputs], axis=-1)),
        *flat_state(want_forward.state, forward),
        *flat_state(want_backward.state, backward),
    ]
    padded = left_padded(x)
    steps = TIME * layer.num_layers * inner
    for label, got in [
        ("eager", wrapper(padded, mask=left_padded_mask())),
        ("predict", model.predict(padded, verbose=0)),
    ]:
        assert len(got) == len(want)
        for j, (g, w) in enumerate(zip(got, want, strict=True)):
            close(g, w, steps=steps, what=f"{label}: {j}")


@pytest.mark.parametrize(
    ("name", "return_sequences"),
    [("RNN", True), ("LSTM", False), ("GRU", True), ("SkipGRU", True), ("SkipGRU", False)],
)
def test_model_fit_trains_both_directions_of_bidirectional(name: str, return_sequences: bool) -> None:
    keras.utils.set_random_seed(0)
    options = {"budget_loss_weight": 1e-2} if name == "SkipGRU" else {}
    model = keras.Sequential(
        [
            keras.Input((None, FEATURES)),
            keras.layers.Masking(),
            keras.layers.Bidirectional(getattr(layers, name)(UNITS, return_sequences=return_sequences, **options)),
            keras.layers.Dense(1),
        ]
    )
    model.compile(keras.optimizers.SGD(0.1), "mse")
    x = inputs("float32", seed=2).repeat(2, axis=0)
    x[1, 4:] = 0.0  # masked steps
    y = np.random.default_rng(3).standard_normal((len(x), TIME, 1) if return_sequences else (len(x), 1))
    wrapper = model.layers[1]
    weights = wrapper.trainable_weights
    assert len(weights) == len(wrapper.forward_layer.trainable_weights) + len(wrapper.backward_layer.trainable_weights)
    before = [np.array(w.numpy()) for w in weights]
    history = model.fit(x, y.astype("float32"), batch_size=3, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    for w, b in zip(weights, before, strict=True):
        assert not np.array_equal(np.array(w.numpy()), b), f"{w.path} did not change"
    if name == "SkipGRU":
        model(x)
        assert len(model.losses) == 2  # each direction's budget loss


#: Every layer concatenated, the classic LSTM and SkipGRU summed too.
SAVED = [(case, "concat") for case in CASES] + [(case, "sum") for case in CASES if case[0] in ("LSTM", "SkipGRU")]


@pytest.mark.filterwarnings(KERAS_SAVING_WARNING)
@pytest.mark.parametrize(("case", "merge_mode"), SAVED, ids=[f"{case[0]}-{mode}" for case, mode in SAVED])
def test_a_saved_bidirectional_model_loads_with_its_configs_and_gives_identical_outputs(
    case: tuple[str, dict[str, Any], dict[str, Any], int], merge_mode: str, tmp_path: Path
) -> None:
    name, options, _, _ = case
    layer = getattr(layers, name)(UNITS, return_sequences=True, **options)
    inp = keras.Input((None, FEATURES))
    outputs = keras.layers.Bidirectional(layer, merge_mode=merge_mode)(keras.layers.Masking()(inp))
    model = keras.Model(inp, outputs)
    x = left_padded(inputs("float32"))
    want = model.predict(x, verbose=0)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    got = loaded.predict(x, verbose=0)
    for g, w in zip(keras.tree.flatten(got), keras.tree.flatten(want), strict=True):
        np.testing.assert_array_equal(g, w)
    wrapper, twin = model.layers[-1], loaded.layers[-1]
    assert twin.merge_mode == merge_mode
    for direction in ("forward_layer", "backward_layer"):
        assert type(getattr(twin, direction)) is type(layer)
        # (The wrapper's own config differs in its layers' build_config: JSON gives lists for tuples.)
        assert getattr(twin, direction).get_config() == getattr(wrapper, direction).get_config()
        for mine, theirs in zip(getattr(wrapper, direction).weights, getattr(twin, direction).weights, strict=True):
            np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs))
    assert twin.backward_layer.go_backwards is True


# -- the documentation --------------------------------------------------------------------------------


def test_the_getting_started_pages_bidirectional_example_runs_as_written() -> None:
    namespace: dict[str, Any] = run_section_example(DOCS, "### Bidirectional")
    assert namespace["model"].output_shape == (None, None, 1)
    assert namespace["model"].layers[1].output.shape == (None, None, 16)
