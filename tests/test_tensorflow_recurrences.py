"""The TensorFlow ``linear_recurrence`` differentiates by its own reverse recurrence (:mod:`.linear_gradient`).

Its values and gradients (of ``a``, ``b`` and the initial state, through the
outputs and the final state) equal TensorFlow's autodiff of the masked time
loop it replaced and the reference's, in float64 to rounding: with lengths
(rows of length 0 included), reversed, eagerly, in a ``tf.function`` (lengths
and sizes known only at run time) and under XLA. A NaN in the padding reaches
neither the values nor the gradients, and no call modifies its inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

import rnnspec  # noqa: E402  (after the skip: the backend imports tensorflow)
from rnnspec.backends.tensorflow import recurrences, sequence  # noqa: E402

B = rnnspec.get_backend("tensorflow")
REFERENCE = rnnspec.get_backend("numpy")
RTOL = 1e-12
BATCH, TIME, HIDDEN = 4, 7, 3
#: Row lengths: full, None (every row full), short rows and an empty row.
LENGTHS: list[list[int] | None] = [None, [7, 3, 0, 5]]
MODES = ["eager", "function", "xla"]


def _old_linear_scan(a: Any, b: Any, h0: Any, valid: Any) -> tuple[Any, Any]:
    """The masked time loop of :mod:`.sequence` that ``linear_scan`` ran before, differentiated by TensorFlow."""

    def step(h: Any, xs: Sequence[Any], keep: Any) -> tuple[Any, list[Any]]:
        new = xs[0] * h + xs[1]
        return new, [new]

    (h,), final = sequence.scan(step, [a, b], h0, valid, [(int(h0.shape[1]),)])
    return h, final


def _compiled(fn: Callable[..., Any], mode: str) -> Callable[..., Any]:
    if mode == "eager":
        return fn
    return tf.function(fn, jit_compile=mode == "xla", autograph=False)


def _arrays(seed: int, lengths: list[int] | None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = (BATCH, TIME, HIDDEN)
    found = {
        "a": rng.uniform(-1.0, 1.0, shape),
        "b": rng.standard_normal(shape),
        "h0": rng.standard_normal((BATCH, HIDDEN)),
        "dh": rng.standard_normal(shape),
        "dfinal": rng.standard_normal((BATCH, HIDDEN)),
    }
    found["valid"] = np.arange(TIME)[None, :] < np.asarray(lengths if lengths is not None else [TIME] * BATCH)[:, None]
    return found


def _scan_and_gradients(scan: Callable[..., Any], arrays: dict[str, np.ndarray], masked: bool, mode: str) -> list[Any]:
    """``scan``'s outputs, final state and the gradients of ``<dh, h> + <dfinal, final>`` w.r.t. a, b, h0."""

    def run(a: Any, b: Any, h0: Any, valid: Any, dh: Any, dfinal: Any) -> list[Any]:
        with tf.GradientTape() as tape:
            tape.watch([a, b, h0])
            h, final = scan(a, b, h0, valid if masked else None)
            loss = tf.reduce_sum(dh * h) + tf.reduce_sum(dfinal * final)
        return [h, final, *tape.gradient(loss, [a, b, h0])]

    names = ("a", "b", "h0", "valid", "dh", "dfinal")
    found = _compiled(run, mode)(*(tf.constant(arrays[k]) for k in names))
    return [np.asarray(f) for f in found]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("lengths", LENGTHS)
def test_the_scan_and_its_gradients_equal_autodiff_of_the_old_loop(mode: str, lengths: list[int] | None) -> None:
    arrays = _arrays(0, lengths)
    masked = lengths is not None
    found = _scan_and_gradients(recurrences.linear_scan, arrays, masked, mode)
    want = _scan_and_gradients(_old_linear_scan, arrays, masked, mode)
    for name, f, w in zip(("h", "final", "da", "db", "dh0"), found, want, strict=True):
        np.testing.assert_allclose(f, w, rtol=RTOL, atol=RTOL, err_msg=f"{name} ({mode}, lengths {lengths})")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("lengths", LENGTHS)
@pytest.mark.parametrize("initial", [False, True])
def test_values_and_gradients_equal_the_references(
    mode: str, reverse: bool, lengths: list[int] | None, initial: bool
) -> None:
    arrays = _arrays(1, lengths)
    host_lengths = None if lengths is None else np.asarray(lengths)
    h0 = arrays["h0"] if initial else None

    def run(a: Any, b: Any, h0: Any, lengths: Any, dh: Any) -> list[Any]:
        with tf.GradientTape() as tape:
            tape.watch([a, b] if h0 is None else [a, b, h0])
            h = B.linear_recurrence(a, b, h0, lengths=lengths, reverse=reverse)
            loss = tf.reduce_sum(dh * h)
        sources = [a, b] if h0 is None else [a, b, h0]
        return [h, *tape.gradient(loss, sources)]

    def tensor(value: Any) -> Any:
        return None if value is None else tf.constant(value)

    found = _compiled(run, mode)(*(tensor(v) for v in (arrays["a"], arrays["b"], h0, host_lengths, arrays["dh"])))
    options = {"lengths": host_lengths, "reverse": reverse}
    want_h = REFERENCE.linear_recurrence(arrays["a"], arrays["b"], h0, **options)
    grads = REFERENCE.vjp("linear_recurrence", {"h": arrays["dh"]}, arrays["a"], arrays["b"], h0, **options)
    want = [want_h, grads["a"], grads["b"]] + ([grads["initial"]] if initial else [])
    assert len(found) == len(want)
    for name, f, w in zip(("h", "da", "db", "dinitial"), found, want, strict=False):
        np.testing.assert_allclose(np.asarray(f), w, rtol=RTOL, atol=RTOL, err_msg=f"{name} ({mode})")


@pytest.mark.parametrize("mode", MODES)
def test_a_nan_in_the_padding_reaches_neither_values_nor_gradients(mode: str) -> None:
    lengths = [7, 3, 0, 5]
    arrays = _arrays(2, lengths)
    clean = _scan_and_gradients(recurrences.linear_scan, arrays, True, mode)
    for name in ("a", "b"):
        arrays[name] = np.where(arrays["valid"][:, :, None], arrays[name], np.nan)
    dirty = _scan_and_gradients(recurrences.linear_scan, arrays, True, mode)
    for what, c, d in zip(("h", "final", "da", "db", "dh0"), clean, dirty, strict=True):
        np.testing.assert_array_equal(d, c, err_msg=what)


def test_an_empty_time_axis_known_only_at_run_time_keeps_the_initial_state() -> None:
    spec = tf.TensorSpec([None, None, HIDDEN], tf.float64)

    @tf.function(input_signature=[spec, spec, tf.TensorSpec([None, HIDDEN], tf.float64)])
    def run(a: Any, b: Any, h0: Any) -> Any:
        with tf.GradientTape() as tape:
            tape.watch(h0)
            h, final = recurrences.linear_scan(a, b, h0, None)
            loss = tf.reduce_sum(final)
        return h, final, tape.gradient(loss, h0)

    h0 = np.arange(2 * HIDDEN, dtype=np.float64).reshape(2, HIDDEN)
    empty = tf.zeros([2, 0, HIDDEN], tf.float64)
    h, final, dh0 = run(empty, empty, tf.constant(h0))
    assert h.shape == (2, 0, HIDDEN)
    np.testing.assert_array_equal(final.numpy(), h0)
    np.testing.assert_array_equal(dh0.numpy(), np.ones_like(h0))


@pytest.mark.parametrize("mode", MODES)
def test_no_call_modifies_its_inputs(mode: str) -> None:
    arrays = _arrays(3, [7, 3, 0, 5])
    tensors = {k: tf.Variable(v) for k, v in arrays.items() if k != "valid"}
    before = {k: v.numpy().copy() for k, v in tensors.items()}

    def run(a: Any, b: Any, h0: Any, dh: Any) -> Any:
        with tf.GradientTape() as tape:
            h = B.linear_recurrence(a, b, h0, lengths=np.asarray([7, 3, 0, 5]), reverse=True)
            loss = tf.reduce_sum(dh * h)
        return tape.gradient(loss, [a, b, h0])

    grads = _compiled(run, mode)(*(tensors[k] for k in ("a", "b", "h0", "dh")))
    assert all(g is not None for g in grads)
    for k, v in tensors.items():
        np.testing.assert_array_equal(v.numpy(), before[k], err_msg=k)


def test_a_scan_reads_large_static_steps_in_short_chunks_and_others_in_the_default_ones() -> None:
    assert sequence.chunk_steps(tf.zeros([16, 5, 512])) == sequence.LARGE_STEP_CHUNK_STEPS
    assert sequence.chunk_steps(tf.zeros([2, 5, 3])) == sequence.CHUNK_STEPS

    @tf.function(input_signature=[tf.TensorSpec([None, None, 512], tf.float32)])
    def unknown_batch(a: Any) -> Any:
        return tf.constant(sequence.chunk_steps(a))

    assert int(unknown_batch(tf.zeros([16, 5, 512]))) == sequence.CHUNK_STEPS


@pytest.mark.parametrize("mode", ["function", "xla"])
def test_a_scan_over_short_chunks_gives_the_references_values_and_gradients(mode: str) -> None:
    rng = np.random.default_rng(4)
    batch, time, hidden = 2, 13, sequence.LARGE_STEP // 2  # 13 steps: the last chunk of 8 is padded
    pre, u = rng.standard_normal((batch, time, hidden)), rng.uniform(-1.0, 1.0, hidden)
    dh = rng.standard_normal((batch, time, hidden))
    lengths = np.asarray([13, 6])
    assert sequence.chunk_steps(tf.constant(pre)) == sequence.LARGE_STEP_CHUNK_STEPS

    def run(pre: Any, u: Any, dh: Any) -> list[Any]:
        with tf.GradientTape() as tape:
            tape.watch([pre, u])
            h = B.indrnn_recurrence(pre, u, lengths=lengths, reverse=False)
            loss = tf.reduce_sum(dh * h)
        return [h, *tape.gradient(loss, [pre, u])]

    found = _compiled(run, mode)(tf.constant(pre), tf.constant(u), tf.constant(dh))
    options = {"lengths": lengths, "reverse": False}
    want_h = REFERENCE.indrnn_recurrence(pre, u, **options)
    grads = REFERENCE.vjp("indrnn_recurrence", {"h": dh}, pre, u, **options)
    for name, f, w in zip(("h", "dpre", "du"), found, [want_h, grads["pre"], grads["u"]], strict=True):
        np.testing.assert_allclose(np.asarray(f), w, rtol=RTOL, atol=RTOL, err_msg=name)


def test_a_tape_outside_a_trace_of_unknown_time_gets_the_gradients_at_every_length() -> None:
    """The trace is reused across lengths (as the backend's graph cache reuses it), the empty one included,
    and the tape records the call from outside: the gradients are the old loop's."""
    spec = tf.TensorSpec([None, None, HIDDEN], tf.float64)
    signature = [spec, spec, tf.TensorSpec([None, HIDDEN], tf.float64)]
    traced = tf.function(lambda a, b, h0: recurrences.linear_scan(a, b, h0, None), input_signature=signature)

    def gradients(scan: Callable[..., Any], a: Any, b: Any, h0: Any, dh: Any, dfinal: Any) -> list[np.ndarray]:
        with tf.GradientTape() as tape:
            tape.watch([a, b, h0])
            h, final = scan(a, b, h0)
            loss = tf.reduce_sum(dh * h) + tf.reduce_sum(dfinal * final)
        return [np.asarray(g) for g in tape.gradient(loss, [a, b, h0])]

    for time in (9, 5, 0):
        rng = np.random.default_rng(time)
        a, b, dh = (tf.constant(rng.uniform(-1.0, 1.0, (BATCH, time, HIDDEN))) for _ in range(3))
        h0, dfinal = (tf.constant(rng.standard_normal((BATCH, HIDDEN))) for _ in range(2))
        got = gradients(traced, a, b, h0, dh, dfinal)
        if time == 0:
            want = [np.zeros((BATCH, 0, HIDDEN)), np.zeros((BATCH, 0, HIDDEN)), dfinal.numpy()]
        else:
            want = gradients(lambda a, b, h0: _old_linear_scan(a, b, h0, None), a, b, h0, dh, dfinal)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, rtol=RTOL, atol=RTOL)
