"""The Keras 3 layers of the TensorFlow backend and the Keras weight converters.

Every layer gives the NumPy reference's values on its own canonical weights,
with a Keras mask read as lengths, the last valid output, the flattened state
and the extra fields; a returned state continues the sequence; the attached
losses carry the reference's gradients; a model saves and loads with its
config and weights; a traced call with unknown sizes equals the eager one.
Keras' own LSTM/GRU/SimpleRNN weights converted to the canonical layout give
Keras' own outputs, and back. Comparisons use the conformance suite's
tolerance policy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import rnnspec  # noqa: E402  (after the skips: the layers import tensorflow and keras)
from rnnspec.backends.tensorflow import keras as layers  # noqa: E402
from rnnspec.conformance.tolerances import tolerance  # noqa: E402
from rnnspec.convert import from_keras, to_keras  # noqa: E402
from rnnspec.errors import DtypeError, LengthsError, OptionError, ParameterError, ShapeError  # noqa: E402
from rnnspec.reference import vjp  # noqa: E402

REFERENCE = rnnspec.get_backend("numpy")
BATCH, TIME, FEATURES, UNITS = 4, 6, 3, 5
LENGTHS = np.array([6, 0, 4, 1])
#: How the layers' call-time errors name the backend, as a regular expression.
ON_TF = r"\[backend 'tensorflow'\]"

#: (layer class, constructor options beyond units, op options the reference takes, inner steps per step).
CASES: list[tuple[str, dict[str, Any], dict[str, Any], int]] = [
    ("RNN", {"num_layers": 2, "activation": "relu"}, {"activation": "relu"}, 1),
    ("LSTM", {"num_layers": 2}, {}, 1),
    ("GRU", {"num_layers": 2, "reset_after": False}, {"reset_after": False}, 1),
    ("SkipRNN", {"num_layers": 2, "return_extras": True}, {"activation": "tanh"}, 1),
    ("SkipLSTM", {"num_layers": 2, "return_extras": True, "trainable_initial_state": True}, {}, 1),
    ("SkipGRU", {"num_layers": 2, "return_extras": True}, {"reset_after": True}, 1),
    ("ACT", {"cell": "lstm", "max_steps": 4, "return_extras": True}, {"cell": "lstm", "max_steps": 4}, 4),
    ("IndRNN", {"num_layers": 2, "seq_len": TIME}, {"activation": "relu"}, 1),
    ("QRNN", {"num_layers": 2, "mode": "ifo", "window": 2}, {"mode": "ifo"}, 1),
]


def case_id(case: tuple[str, dict[str, Any], dict[str, Any], int]) -> str:
    return case[0]


def inputs(dtype: str = "float64", seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((BATCH, TIME, FEATURES)).astype(dtype)


def right_padded_mask(lengths: np.ndarray = LENGTHS, time: int = TIME) -> np.ndarray:
    return np.arange(time)[None, :] < lengths[:, None]


#: How each row of LENGTHS is padded in the left-padding tests: the last row stays right-padded (a mixed batch).
LEFT = np.array([True, True, True, False])


def left_padded(x: np.ndarray, lengths: np.ndarray = LENGTHS, left: np.ndarray = LEFT) -> np.ndarray:
    """``x`` with each row's first ``lengths`` steps moved to its end where ``left``, zeros elsewhere (Masking)."""
    out = np.zeros_like(x)
    for b, (n, at_end) in enumerate(zip(lengths, left, strict=True)):
        start = x.shape[1] - n if at_end else 0
        out[b, start : start + n] = x[b, :n]
    return out


def shifted_back(a: np.ndarray, lengths: np.ndarray = LENGTHS, left: np.ndarray = LEFT) -> np.ndarray:
    """Right-padded per-step values ``a`` (batch, time, ...) placed as the left-padded rows' steps lie."""
    rows = zip(a, lengths, left, strict=True)
    return np.stack([np.roll(row, a.shape[1] - n, axis=0) if at_end else row for row, n, at_end in rows])


def close(got: Any, want: Any, *, steps: int, dtype: str = "float64", kind: str = "value", what: str = "") -> None:
    tol = tolerance(dtype, steps=steps, kind="gradient" if kind == "gradient" else "value")
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=tol.rtol, atol=tol.atol, err_msg=what)


def make(name: str, **options: Any) -> Any:
    return getattr(layers, name)(UNITS, seed=3, dtype=options.pop("dtype", "float64"), **options)


def flat_state(state: Any, layer: Any) -> list[np.ndarray]:
    return [np.asarray(state[k][entry]) for k, entry in layer.state_names]


# -- values against the reference -------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_each_layer_gives_the_reference_op_on_its_own_weights_with_a_mask_as_lengths(
    case: tuple[str, dict[str, Any], dict[str, Any], int],
) -> None:
    name, options, op_options, inner = case
    layer = make(name, return_sequences=True, return_state=True, **options)
    x = inputs()
    got = layer(x, mask=right_padded_mask())
    want = getattr(REFERENCE, layer.op)(x, layer.numpy_params(), lengths=LENGTHS, **op_options)
    steps = TIME * layer.num_layers * inner
    close(got[0], want.outputs, steps=steps, what="outputs")
    names = layer.state_names
    for (k, entry), tensor, expected in zip(names, got[1 : 1 + len(names)], flat_state(want.state, layer), strict=True):
        close(tensor, expected, steps=steps, what=f"state[{k}][{entry!r}]")
    for field, tensor in zip(layer.extra_fields, got[1 + len(names) :], strict=True):
        close(tensor, getattr(want, field), steps=steps, what=field)
    assert len(got) == 1 + len(names) + (len(layer.extra_fields) if layer.return_extras else 0)


@pytest.mark.parametrize("name", ["LSTM", "QRNN", "SkipGRU"])
def test_without_return_sequences_each_row_gives_its_output_at_its_last_valid_step(name: str) -> None:
    layer = make(name, num_layers=2)
    x = inputs()
    got = np.asarray(layer(x, mask=right_padded_mask()))
    outputs = getattr(REFERENCE, layer.op)(x, layer.numpy_params(), lengths=LENGTHS).outputs
    want = np.stack([outputs[b, n - 1] if n > 0 else np.zeros(UNITS) for b, n in enumerate(LENGTHS)])
    close(got, want, steps=2 * TIME)
    full = np.asarray(layer(x))
    close(full, getattr(REFERENCE, layer.op)(x, layer.numpy_params()).outputs[:, -1], steps=2 * TIME)


def test_a_returned_state_continues_the_sequence_as_one_call_would() -> None:
    layer = make("SkipLSTM", num_layers=2, return_sequences=True, return_state=True)
    x = inputs()
    whole = layer(x)
    first = layer(x[:, :2])
    second = layer(x[:, 2:], initial_state=first[1:])
    close(np.concatenate([first[0], second[0]], axis=1), whole[0], steps=2 * TIME, what="outputs")
    for got, want in zip(second[1:], whole[1:], strict=True):
        close(got, want, steps=2 * TIME, what="state")


def test_the_initial_state_also_goes_in_as_the_ops_own_structure() -> None:
    layer = make("LSTM", num_layers=2, return_sequences=True)
    x = inputs()
    rng = np.random.default_rng(1)
    state = [{"h": rng.standard_normal((BATCH, UNITS)), "c": rng.standard_normal((BATCH, UNITS))} for _ in range(2)]
    got = layer(x, initial_state=state)
    flat = layer(x, initial_state=[s[k] for s in state for k in ("h", "c")])
    want = REFERENCE.lstm(x, layer.numpy_params(), initial_state=state).outputs
    close(got, want, steps=2 * TIME)
    np.testing.assert_array_equal(np.asarray(flat), np.asarray(got))


def test_a_wrong_number_of_state_tensors_is_refused_naming_the_expected_entries() -> None:
    layer = make("LSTM", num_layers=2)
    with pytest.raises(ShapeError, match=r"LSTM: argument initial_state: expected 4 tensors \(h\[0\], c\[0\]"):
        layer(inputs(), initial_state=[np.zeros((BATCH, UNITS))])


def test_a_mask_with_a_hole_is_refused_with_a_lengths_error() -> None:
    layer = make("GRU")
    mask = right_padded_mask()
    mask[0, 1] = False  # a hole inside row 0
    with pytest.raises(LengthsError, match=rf"GRU {ON_TF}: argument mask: expected True on a prefix .*got row 0 "):
        layer(inputs(), mask=mask)


def _masked_model(layer: Any) -> Any:
    """``Input -> Masking -> layer``, in float64: what ``pad_sequences`` data meets in ``model.predict``."""
    inp = keras.Input((None, FEATURES), dtype="float64")
    return keras.Model(inp, layer(keras.layers.Masking(dtype="float64")(inp)))


def test_a_mask_with_a_hole_is_refused_inside_model_predict_too() -> None:
    model = _masked_model(make("GRU", return_sequences=True))
    x = left_padded(inputs())
    x[2, 3] = 0.0  # a masked step between row 2's valid ones
    # TensorFlow escapes the quotes of an assertion's message.
    refused = r"GRU \[backend \W*tensorflow\W*\]: argument mask: expected True on a prefix"
    with pytest.raises(tf.errors.InvalidArgumentError, match=refused):
        model.predict(x, verbose=0)


def test_inputs_of_another_feature_size_are_refused_naming_inputs_inside_model_predict() -> None:
    model = keras.Sequential([keras.Input((None, 5)), make("GRU")])
    model.predict(np.zeros((2, 4, 5), np.float32), verbose=0)
    # The data's width is unknown while predict traces: the check runs in the graph, with the spec's message.
    refused = r"GRU \[backend \W*tensorflow\W*\]: argument inputs: expected \(batch, time, 5\)"
    with pytest.raises(tf.errors.InvalidArgumentError, match=refused):
        model.predict(np.zeros((2, 4, 3), np.float32), verbose=0)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_left_padding_gives_the_reference_on_the_right_aligned_rows_eagerly_and_in_model_predict(
    case: tuple[str, dict[str, Any], dict[str, Any], int],
) -> None:
    name, options, op_options, inner = case
    layer = make(name, return_sequences=True, return_state=True, **options)
    x = inputs("float32").astype("float64")  # model.predict reads its data in float32
    padded = left_padded(x)
    predicted = _masked_model(layer).predict(padded, batch_size=BATCH, verbose=0)
    eager = layer(padded, mask=np.any(padded != 0, axis=-1))
    # The rows' valid steps first (right padding, the op's lengths); their per-step values then moved back.
    want = getattr(REFERENCE, layer.op)(x, layer.numpy_params(), lengths=LENGTHS, **op_options)
    names = layer.state_names
    expected = [
        shifted_back(want.outputs),
        *flat_state(want.state, layer),
        *(shifted_back(getattr(want, f)) for f in layer.extra_fields),
    ]
    what = ["outputs", *(f"state[{k}][{entry!r}]" for k, entry in names), *layer.extra_fields]
    steps = TIME * layer.num_layers * inner
    assert len(predicted) == len(eager) == len(expected)
    for got_graph, got_eager, w, label in zip(predicted, eager, expected, what, strict=True):
        close(got_graph, w, steps=steps, what=f"model.predict: {label}")
        close(got_eager, w, steps=steps, what=f"eager: {label}")


def test_left_padding_gives_keras_own_lstms_outputs_and_state() -> None:
    ours = make("LSTM", return_sequences=True, return_state=True)
    ours.build((None, None, FEATURES))
    (theirs,) = to_keras(ours.numpy_params(), "lstm")
    theirs.return_state = True
    # Every row left-padded, as pad_sequences makes them: past a right-padded row's end, Keras' layers repeat
    # its last output where rnnspec's give zeros.
    padded = left_padded(inputs("float32").astype("float64"), left=np.ones_like(LEFT))
    want = _masked_model(theirs).predict(padded, verbose=0)
    got = _masked_model(ours).predict(padded, verbose=0)
    for g, w, label in zip(got, want, ["outputs", "h", "c"], strict=True):
        close(g, w, steps=TIME, what=label)
    last = make("LSTM")  # the same seed: the same weights
    close(_masked_model(last).predict(padded, verbose=0), want[1], steps=TIME, what="the last valid output")


@pytest.mark.parametrize(
    ("mask", "actual"),
    [
        (np.ones((BATCH, TIME - 1), bool), r"shape \(4, 5\)"),
        (np.ones((BATCH - 1, TIME), bool), r"shape \(3, 6\)"),
        (np.ones((BATCH, TIME, 1), bool), r"shape \(4, 6, 1\)"),
    ],
    ids=["short", "narrow", "3-d"],
)
def test_a_mask_of_the_wrong_shape_is_a_shape_error_naming_the_layer(mask: np.ndarray, actual: str) -> None:
    with pytest.raises(ShapeError, match=rf"^GRU {ON_TF}: argument mask: expected shape \(4, 6\) .*got {actual}$"):
        make("GRU")(inputs(), mask=mask)


def test_string_inputs_and_a_string_mask_are_dtype_errors_naming_the_layer() -> None:
    with pytest.raises(DtypeError, match=rf"^LSTM {ON_TF}: argument inputs: expected .*got dtype string$"):
        make("LSTM")(np.full((BATCH, TIME, FEATURES), "a"))
    with pytest.raises(DtypeError, match=rf"^LSTM {ON_TF}: argument mask: expected .*got dtype string$"):
        make("LSTM")(inputs(), mask=np.full((BATCH, TIME), "yes"))


def test_two_layers_of_different_sizes_run_long_eager_calls_in_one_process() -> None:
    x = np.random.default_rng(1).standard_normal((2, 100, FEATURES))
    for units in (8, 6):
        layer = layers.LSTM(units, seed=3, return_sequences=True, dtype="float64")
        close(layer(x), REFERENCE.lstm(x, layer.numpy_params()).outputs, steps=100, what=f"{units} units")


def test_the_mask_is_passed_on_with_sequences_and_dropped_with_last_outputs() -> None:
    x = keras.Input((None, FEATURES))
    masked = keras.layers.Masking()(x)
    sequences = layers.GRU(UNITS, return_sequences=True)(masked)
    last = layers.GRU(UNITS)(masked)
    assert getattr(sequences, "_keras_mask", None) is not None
    assert getattr(last, "_keras_mask", None) is None


def test_inputs_are_never_modified_in_place() -> None:
    layer = make("QRNN", window=2, return_state=True)
    x = inputs()
    mask = right_padded_mask()
    copies = (x.copy(), mask.copy())
    layer(x, mask=mask)
    np.testing.assert_array_equal(x, copies[0])
    np.testing.assert_array_equal(mask, copies[1])


# -- weights --------------------------------------------------------------------------------


def test_weights_carry_the_specs_names_and_load_from_init_params() -> None:
    layer = make("SkipGRU", num_layers=2)
    params = rnnspec.init_params("skip_gru", input_size=FEATURES, hidden_size=UNITS, num_layers=2, seed=9)
    layer.load_canonical(params)  # builds the layer for the input size the params imply
    paths = [w.path.split("/", 1)[1] for w in layer.weights]
    want = [f"layer_{k}/{key}" for k, p in enumerate(params) for key in p]
    assert paths == want
    for got, expected in zip(layer.numpy_params(), params, strict=True):
        assert list(got) == list(expected)
        for key in expected:
            np.testing.assert_array_equal(got[key], expected[key].astype(np.float64))


def test_without_bias_the_cell_biases_are_no_weights_and_enter_as_zeros() -> None:
    layer = make("LSTM", use_bias=False, return_sequences=True)
    x = inputs()
    got = layer(x)
    assert sorted(w.path.rsplit("/", 1)[1] for w in layer.weights) == ["w_hh", "w_ih"]
    params = layer.numpy_params()
    assert not np.any(params[0]["b_ih"])
    assert not np.any(params[0]["b_hh"])
    close(got, REFERENCE.lstm(x, params).outputs, steps=TIME)


def test_load_canonical_refuses_misshapen_params_naming_the_entry() -> None:
    layer = make("GRU", num_layers=2)
    params = rnnspec.init_params("gru", input_size=FEATURES, hidden_size=UNITS, num_layers=2)
    params[1]["w_hh"] = params[1]["w_hh"][:, :-1]
    with pytest.raises(ParameterError, match=r"GRU: argument params\[1\]\['w_hh'\]: expected shape \(15, 5\)"):
        layer.load_canonical(params)
    with pytest.raises(ParameterError, match=r"GRU: argument params: expected a sequence of 2 mappings"):
        layer.load_canonical(params[:1])


def test_options_outside_their_values_are_refused_naming_the_layer() -> None:
    with pytest.raises(OptionError, match=r"SkipGRU: argument reset_after: expected True or False"):
        layers.SkipGRU(UNITS, reset_after="yes")
    with pytest.raises(OptionError, match=r"QRNN: argument window"):
        layers.QRNN(UNITS, window=0)
    with pytest.raises(OptionError, match=r"LSTM: argument return_extras: expected False"):
        layers._SpecLayer.__init__(
            layers.LSTM.__new__(layers.LSTM),
            UNITS,
            1,
            use_bias=True,
            return_sequences=False,
            return_state=False,
            return_extras=True,
            seed=None,
            options={},
            init_options={},
        )
    with pytest.raises(OptionError, match=r"SkipLSTM: argument budget_loss_weight: expected a finite number >= 0"):
        layers.SkipLSTM(UNITS, budget_loss_weight=-1.0)


# -- losses and gradients -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "options", "field", "inner"),
    [
        ("SkipGRU", {"num_layers": 2, "budget_loss_weight": 0.3}, "update_gate", 1),
        ("ACT", {"cell": "gru", "max_steps": 3, "ponder_loss_weight": 0.2}, "ponder_cost", 3),
    ],
)
def test_the_attached_loss_and_the_outputs_have_the_reference_gradients(
    name: str, options: dict[str, Any], field: str, inner: int
) -> None:
    layer = make(name, return_sequences=True, **options)
    x = inputs()
    with tf.GradientTape() as tape:
        outputs = layer(x, mask=right_padded_mask())
        (loss,) = layer.losses
        total = tf.reduce_sum(outputs) + loss
    grads = tape.gradient(total, layer.trainable_weights)
    params = layer.numpy_params()
    op_options = {k: v for k, v in layer.options.items()}
    want = getattr(REFERENCE, layer.op)(x, params, lengths=LENGTHS, **op_options)
    weight = options.get("budget_loss_weight", options.get("ponder_loss_weight"))
    expected_loss = weight * getattr(want, field).sum(axis=1).mean()
    steps = TIME * layer.num_layers * inner
    close(loss, expected_loss, steps=steps, what="loss")
    cotangents = {"outputs": np.ones_like(want.outputs), field: np.full(getattr(want, field).shape, weight / BATCH)}
    reference = vjp(layer.op, cotangents, x, params, lengths=LENGTHS, **op_options)["params"]
    by_path = {w.path: g for w, g in zip(layer.trainable_weights, grads, strict=True)}
    for k, layer_grads in enumerate(reference):
        for key, expected in layer_grads.items():
            got = by_path[f"{layer.name}/layer_{k}/{key}"]
            close(got, expected, steps=steps, kind="gradient", what=f"d params[{k}][{key!r}]")


# -- Keras machinery --------------------------------------------------------------------------


# Keras' saving reads each variable with np.array(tf.Variable), whose __array__ predates NumPy 2's copy
# keyword: NumPy warns for a plain Dense layer too, so the warning is Keras' and TensorFlow's, not the layers'.
@pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_a_saved_model_loads_with_the_same_config_and_outputs(
    case: tuple[str, dict[str, Any], dict[str, Any], int], tmp_path: Path
) -> None:
    name, options, _, _ = case
    layer = getattr(layers, name)(UNITS, return_sequences=True, return_state=True, **options)
    inp = keras.Input((None, FEATURES))
    model = keras.Model(inp, layer(inp))
    x = inputs("float32")
    want = model(x)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    got = loaded(x)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
    twin = loaded.layers[-1]
    assert type(twin) is type(layer)
    assert twin.get_config() == layer.get_config()


def test_a_traced_call_with_unknown_batch_and_time_equals_the_eager_call() -> None:
    layer = make("SkipLSTM", num_layers=2, return_sequences=True, return_state=True, return_extras=True)
    x = inputs()
    mask = right_padded_mask()
    want = layer(x, mask=mask)

    @tf.function(
        input_signature=[tf.TensorSpec((None, None, FEATURES), tf.float64), tf.TensorSpec((None, None), tf.bool)]
    )
    def traced(x: Any, mask: Any) -> Any:
        return layer(x, mask=mask)

    got = traced(tf.constant(x), tf.constant(mask))
    for g, w in zip(got, want, strict=True):
        close(g, w, steps=2 * TIME)


def test_an_xla_compiled_call_equals_the_eager_call() -> None:
    layer = make("GRU", num_layers=2, return_sequences=True)
    x = inputs()
    mask = right_padded_mask()
    want = layer(x, mask=mask)
    got = tf.function(lambda x, mask: layer(x, mask=mask), jit_compile=True)(tf.constant(x), tf.constant(mask))
    close(got, want, steps=2 * TIME)


def test_model_fit_trains_every_weight_with_a_ragged_last_batch() -> None:
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((None, FEATURES)),
            keras.layers.Masking(),
            layers.SkipGRU(UNITS, num_layers=2, budget_loss_weight=1e-2),
            keras.layers.Dense(1),
        ]
    )
    model.compile(keras.optimizers.SGD(0.1), "mse")
    x = inputs("float32", seed=2).repeat(2, axis=0)[:7]
    x[1, 4:] = 0.0  # masked steps
    before = [np.array(w.numpy()) for w in model.layers[0].trainable_weights]
    history = model.fit(x, np.ones((7, 1), np.float32), batch_size=3, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    after = [np.array(w.numpy()) for w in model.layers[0].trainable_weights]
    for w, b, a in zip(model.layers[0].trainable_weights, before, after, strict=True):
        assert not np.array_equal(a, b), f"{w.path} did not change"


def test_mixed_precision_computes_in_float16_from_float32_weights() -> None:
    layer = layers.LSTM(UNITS, num_layers=2, return_sequences=True, seed=3, dtype="mixed_float16")
    x = inputs("float32")
    got = layer(x, mask=right_padded_mask())
    assert got.dtype == tf.float16
    assert {w.dtype for w in layer.weights} == {"float32"}
    half = [{k: v.astype(np.float16) for k, v in p.items()} for p in layer.numpy_params()]
    want = REFERENCE.lstm(x.astype(np.float16), half, lengths=LENGTHS).outputs
    close(np.asarray(got, np.float32), want.astype(np.float32), steps=2 * TIME, dtype="float16")


def test_qrnn_zoneout_draws_in_training_and_passes_its_expectation_in_evaluation() -> None:
    layer = make("QRNN", zoneout=0.5, return_sequences=True)
    x = inputs()
    evaluation = layer(x, training=False)
    expectation = np.full((BATCH, TIME, UNITS), 0.5)
    close(evaluation, REFERENCE.qrnn(x, layer.numpy_params(), zoneout_mask=expectation).outputs, steps=TIME)
    training = layer(x, training=True)
    assert not np.allclose(np.asarray(training), np.asarray(evaluation))


# -- converters ----------------------------------------------------------------------------


def _keras_layer(name: str, **options: Any) -> Any:
    layer = getattr(keras.layers, name)(UNITS, return_sequences=True, dtype="float64", **options)
    layer.build((None, None, FEATURES))
    rng = np.random.default_rng(4)
    layer.cell.bias.assign(rng.uniform(-0.5, 0.5, layer.cell.bias.shape))  # non-zero biases, as after training
    return layer


@pytest.mark.parametrize(
    ("keras_name", "keras_options", "ours", "op_options"),
    [
        ("LSTM", {}, "LSTM", {}),
        ("GRU", {}, "GRU", {"reset_after": True}),
        ("GRU", {"reset_after": False}, "GRU", {"reset_after": False}),
        ("SimpleRNN", {"activation": "relu"}, "RNN", {"activation": "relu"}),
    ],
)
def test_a_keras_layers_weights_loaded_give_its_outputs(
    keras_name: str, keras_options: dict[str, Any], ours: str, op_options: dict[str, Any]
) -> None:
    theirs = _keras_layer(keras_name, **keras_options)
    layer = make(ours, return_sequences=True, **op_options)
    layer.load_canonical(from_keras(theirs))
    x = inputs()
    mask = right_padded_mask()
    want = np.asarray(theirs(x))
    close(layer(x), want, steps=TIME, what="no mask")
    close(getattr(REFERENCE, layer.op)(x, from_keras(theirs), **op_options).outputs, want, steps=TIME)
    valid = mask[:, :, None]
    masked_theirs = np.where(valid, np.asarray(theirs(x, mask=mask)), 0.0)
    close(layer(x, mask=mask), masked_theirs, steps=TIME, what="valid steps under a mask")


def test_a_keras_stack_converts_to_one_params_list_per_layer() -> None:
    first = _keras_layer("LSTM")
    second = keras.layers.LSTM(UNITS, return_sequences=True, dtype="float64")
    second.build((None, None, UNITS))
    x = inputs()
    want = np.asarray(second(first(x)))
    got = REFERENCE.lstm(x, from_keras([first, second])).outputs
    close(got, want, steps=2 * TIME)


@pytest.mark.parametrize(
    ("op", "options"), [("lstm", {}), ("gru", {"reset_after": True}), ("gru", {"reset_after": False}), ("rnn", {})]
)
def test_to_keras_gives_keras_layers_that_compute_the_reference_op(op: str, options: dict[str, Any]) -> None:
    params = rnnspec.init_params(op, input_size=FEATURES, hidden_size=UNITS, num_layers=2, dtype="float64", seed=2)
    stack = to_keras(params, op, **options)
    x = inputs()
    outputs = tf.constant(x)
    for keras_layer in stack:  # float64 throughout (a Sequential model would read float32 inputs)
        outputs = keras_layer(outputs)
    close(outputs, getattr(REFERENCE, op)(x, params, **options).outputs, steps=2 * TIME)
    back = from_keras(stack)
    if op == "gru" and options["reset_after"]:  # two biases in Keras too: every array comes back as it went
        for got, want in zip(back, params, strict=True):
            for key in want:
                np.testing.assert_array_equal(got[key], want[key])
    close(getattr(REFERENCE, op)(x, back, **options).outputs, outputs, steps=2 * TIME)


def test_converters_refuse_what_the_canonical_layout_cannot_express() -> None:
    relu_lstm = keras.layers.LSTM(UNITS, activation="relu")
    relu_lstm.build((None, None, FEATURES))
    with pytest.raises(ParameterError, match=r"from_keras: argument layer.activation: expected 'tanh', got 'relu'"):
        from_keras(relu_lstm)
    with pytest.raises(ParameterError, match=r"from_keras: argument layer: expected a keras.layers.SimpleRNN"):
        from_keras(keras.layers.Dense(3))
    with pytest.raises(ParameterError, match=r"from_keras: argument layer: expected a built layer"):
        from_keras(keras.layers.GRU(UNITS))
    after, before = keras.layers.GRU(UNITS), keras.layers.GRU(UNITS, reset_after=False)
    after.build((None, None, FEATURES))
    before.build((None, None, UNITS))
    with pytest.raises(ParameterError, match=r"from_keras: argument layers\[1\]: expected the class and options"):
        from_keras([after, before])
    params = rnnspec.init_params("lstm", input_size=FEATURES, hidden_size=UNITS)
    with pytest.raises(OptionError, match=r"to_keras: argument op: expected 'rnn', 'lstm' or 'gru', got 'qrnn'"):
        to_keras(params, "qrnn")
    params[0]["b_hh"] = params[0]["b_hh"][:-1]
    with pytest.raises(ParameterError, match=r"to_keras: argument params\[0\]\['b_hh'\]: expected shape \(20,\)"):
        to_keras(params, "lstm")


# -- checkpoint_every -------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_checkpoint_every_runs_segments_and_changes_no_output_and_no_gradient(
    case: tuple[str, dict[str, Any], dict[str, Any], int], monkeypatch: pytest.MonkeyPatch
) -> None:
    name, options, _, inner = case
    segments: list[Any] = []
    recompute_grad = tf.recompute_grad

    def counting(fn: Any) -> Any:
        segments.append(fn)
        return recompute_grad(fn)

    monkeypatch.setattr(tf, "recompute_grad", counting)
    options = {k: v for k, v in options.items() if k != "return_extras"}
    x = tf.constant(inputs())
    runs = []
    for every in (None, 4):
        layer = make(name, return_sequences=True, checkpoint_every=every, **options)
        with tf.GradientTape() as tape:
            tape.watch(x)
            outputs = layer(x, mask=right_padded_mask())
            loss = tf.reduce_sum(outputs * np.linspace(-1.0, 1.0, UNITS))
        runs.append([outputs, *tape.gradient(loss, [x, *layer.trainable_weights])])
    assert len(segments) == 2, "checkpoint_every=4 over 6 steps: two segments under tf.recompute_grad"
    for got, want in zip(runs[1], runs[0], strict=True):
        close(got, want, steps=TIME * 2 * inner, kind="gradient")


@pytest.mark.parametrize("value", [0, -2, True, 2.5, "3"], ids=repr)
def test_a_bad_checkpoint_every_is_the_specs_option_error_naming_the_layer(value: Any) -> None:
    with pytest.raises(OptionError, match=r"^SkipLSTM: argument checkpoint_every: expected None or an integer >= 1"):
        layers.SkipLSTM(UNITS, checkpoint_every=value)


@pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")
def test_checkpoint_every_is_in_the_config_and_survives_saving(tmp_path: Path) -> None:
    layer = layers.IndRNN(UNITS, num_layers=2, checkpoint_every=np.int64(3), return_sequences=True)
    assert layer.get_config()["checkpoint_every"] == 3
    assert layers.IndRNN.from_config(layer.get_config()).checkpoint_every == 3
    assert layers.GRU(UNITS).get_config()["checkpoint_every"] is None
    inp = keras.Input((None, FEATURES))
    model = keras.Model(inp, layer(inp))
    x = inputs("float32")
    want = model(x)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert loaded.layers[-1].checkpoint_every == 3
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(want))
