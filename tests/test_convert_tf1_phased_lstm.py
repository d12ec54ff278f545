"""``rnnspec.convert.from_tf1_phased_lstm`` gives params that compute what TF1's ``PhasedLSTMCell`` computed.

TF1's cell is written here independently, in NumPy float64, from the semantics of
``tf.contrib.rnn.PhasedLSTMCell`` (TF 1.x): the dense maps of ``[x, h_prev]`` (and of the cell state
with ``use_peepholes``), ``tf.math.mod`` (the floor modulo) through the cell's ``_mod``
(``stop_gradient(mod(x, y) - x) + x``, whose value is computed here as TF computes it), the gate's
``where``s in TF1's order, and ``tf.nn.dynamic_rnn``'s handling of ``sequence_length`` (zero
outputs and a frozen state past a row's length). TF1 casts the cycle ratio to float32 (its cell
runs in float32); the loop here keeps float64 throughout, so the comparison with the reference is
one of float64 computations. Timestamps are irregular, with ties, and start before the phases.
The converted params, run by ``rnnspec.reference.phased_lstm`` with the same timestamps and leak,
give TF1's outputs and final states; the layout is PyTorch's LSTM's; what rnnspec cannot express
(TF1's full peephole matrices) and malformed variables are refused, naming the variable.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
from helpers import TORCH_RTOL, assert_trees_close, assert_trees_equal, deep_copy, sigmoid
from helpers_tf1 import SCOPE, tf1_variables

import rnnspec
import rnnspec.reference as reference
from rnnspec.convert import from_tf1_phased_lstm
from rnnspec.errors import DtypeError, OptionError, ParameterError, RnnspecError, ShapeError

B, T, I, H = 3, 9, 2, 4  # noqa: E741


# -- TF1's cell and dynamic_rnn, independently ----------------------------------------------


def tf1_cell(
    v: Mapping[str, np.ndarray],
    scope: str,
    time: np.ndarray,
    x: np.ndarray,
    state: tuple[np.ndarray, np.ndarray],
    *,
    leak: float,
    peepholes: bool,
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray], np.ndarray]:
    """One step of TF1's PhasedLSTMCell: (new_h, (new_c, new_h), the gate's branch per unit: 0 up, 1 down, 2 closed)."""
    c_prev, h_prev = state

    def linear(name: str, args: list[np.ndarray]) -> np.ndarray:
        out: np.ndarray = np.concatenate(args, axis=1) @ v[f"{scope}{name}/kernel"] + v[f"{scope}{name}/bias"]
        return out

    mask_gates = sigmoid(linear("mask_gates", [x, h_prev, c_prev] if peepholes else [x, h_prev]))
    input_gate, forget_gate = np.split(mask_gates, 2, axis=1)
    new_input = np.tanh(linear("new_input", [x, h_prev]))
    new_c = c_prev * forget_gate + input_gate * new_input
    output_gate = sigmoid(linear("output_gate", [x, h_prev, new_c] if peepholes else [x, h_prev]))
    new_h = np.tanh(new_c) * output_gate
    period, phase, ratio_on = v[f"{scope}period"], v[f"{scope}phase"], v[f"{scope}ratio_on"]
    shifted = time - phase  # time (B, 1)
    cycle_ratio = ((np.mod(shifted, period) - shifted) + shifted) / period
    k_up = 2 * cycle_ratio / ratio_on
    k_down = 2 - k_up
    k_closed = leak * cycle_ratio
    k = np.where(cycle_ratio < ratio_on, k_down, k_closed)
    k = np.where(cycle_ratio < 0.5 * ratio_on, k_up, k)
    branch = np.where(cycle_ratio < 0.5 * ratio_on, 0, np.where(cycle_ratio < ratio_on, 1, 2))
    new_c = k * new_c + (1 - k) * c_prev
    new_h = k * new_h + (1 - k) * h_prev
    return new_h, (new_c, new_h), branch


def tf1_dynamic_rnn(
    v: Mapping[str, np.ndarray],
    scopes: list[str],
    time: np.ndarray,
    x: np.ndarray,
    initial: list[tuple[np.ndarray, np.ndarray]],
    *,
    sequence_length: np.ndarray,
    leak: float,
    peepholes: bool = False,
) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]], np.ndarray]:
    """Batch-major ``dynamic_rnn`` over a stack whose every cell reads ``(time, input)``: outputs, final
    ``(c, h)`` per layer, and how often each branch of the gate was taken at valid steps."""
    states = list(initial)
    outputs = np.zeros((x.shape[0], x.shape[1], states[-1][1].shape[1]))
    branches = np.zeros(3, dtype=int)
    for t in range(x.shape[1]):
        valid = (t < sequence_length)[:, None]
        inp = x[:, t]
        for k, scope in enumerate(scopes):
            inp, new_state, branch = tf1_cell(v, scope, time[:, t], inp, states[k], leak=leak, peepholes=peepholes)
            states[k] = tuple(np.where(valid, new, old) for new, old in zip(new_state, states[k], strict=True))
            branches += np.bincount(branch[valid[:, 0]].ravel(), minlength=3)
        outputs[:, t] = np.where(valid, inp, 0.0)
    return outputs, states, branches


def irregular_times(rng: np.random.Generator) -> np.ndarray:
    """(B, T, 1) times as TF1's cell reads them: gaps of 0 (ties) or up to 1.5, from a start that may be negative."""
    gaps = rng.uniform(0.0, 1.5, (B, T)) * (rng.uniform(size=(B, T)) > 0.3)
    gaps[:, 1] = 0.0  # a tie in every row
    return (rng.uniform(-3.0, 2.0, (B, 1)) + np.cumsum(gaps, axis=1))[:, :, None]


def run_both(
    variables: Mapping[str, np.ndarray],
    scopes: list[str],
    params: list[dict[str, np.ndarray]],
    *,
    seed: int,
    leak: float,
    peepholes: bool = False,
) -> tuple[dict[str, Any], dict[str, Any], np.ndarray]:
    """(the reference's result, TF1's, the branch counts) on one random batch with lengths and an initial state."""
    rng = np.random.default_rng(seed)
    time = irregular_times(rng)
    x = rng.uniform(-1.0, 1.0, (B, T, I))
    lengths = np.array([T, T - 3, 0])
    initial = [(rng.uniform(-1, 1, (B, H)), rng.uniform(-1, 1, (B, H))) for _ in scopes]
    out, final, branches = tf1_dynamic_rnn(
        variables, scopes, time, x, initial, sequence_length=lengths, leak=leak, peepholes=peepholes
    )
    got = reference.phased_lstm(
        x,
        params,
        timestamps=time[:, :, 0],
        leak=leak,
        peepholes=peepholes,
        lengths=lengths,
        initial_state=[{"h": h, "c": c} for c, h in initial],
    )
    ours = {"outputs": got.outputs, "state": [dict(s) for s in got.state]}
    theirs = {"outputs": out, "state": [{"h": h, "c": c} for c, h in final]}
    return ours, theirs, branches


# -- the converted params compute TF1's cell ---------------------------------------------------


@pytest.mark.parametrize("leak", [0.0, 1e-3, 0.25])
def test_converted_params_run_in_the_reference_as_tf1s_cell_runs_in_dynamic_rnn(leak: float) -> None:
    variables = tf1_variables(np.random.default_rng(1), I, H)
    params = from_tf1_phased_lstm(variables, prefix=SCOPE)
    ours, theirs, branches = run_both(variables, [SCOPE], params, seed=1, leak=leak)
    assert np.all(branches > 0), f"the case must open, close and leak every gate: branch counts {branches}"
    assert_trees_close(ours, theirs, TORCH_RTOL, "reference on the converted params vs TF1's cell")


def test_a_stack_converts_from_a_multi_rnn_cell_scope_and_from_one_scope_per_layer() -> None:
    rng = np.random.default_rng(2)
    scopes = [f"rnn/multi_rnn_cell/cell_{k}/phased_lstm_cell/" for k in range(3)]
    variables = {
        name: value
        for k, scope in enumerate(scopes)
        for name, value in tf1_variables(rng, I if k == 0 else H, H, scope=scope).items()
    }
    from_stack = from_tf1_phased_lstm(variables, prefix="rnn/multi_rnn_cell")
    from_list = from_tf1_phased_lstm(variables, prefix=[s.rstrip("/") for s in scopes])
    assert_trees_equal(from_stack, from_list, "stack scope vs one scope per layer")
    assert [p["w_ih"].shape for p in from_stack] == [(4 * H, I), (4 * H, H), (4 * H, H)]
    ours, theirs, branches = run_both(variables, scopes, from_stack, seed=2, leak=1e-3)
    assert np.all(branches > 0), f"branch counts {branches}"
    assert_trees_close(ours, theirs, TORCH_RTOL, "a 3-layer stack vs TF1's cells")


def test_a_peephole_cell_with_diagonal_cell_state_weights_converts_to_the_papers_peepholes() -> None:
    variables = tf1_variables(np.random.default_rng(3), I, H, peepholes=True, diagonal=True)
    params = from_tf1_phased_lstm(variables, prefix=SCOPE)
    assert list(params[0]) == ["w_ih", "w_hh", "b_ih", "b_hh", "w_peephole", "tau", "s", "r_on"]
    mask, out = variables[f"{SCOPE}mask_gates/kernel"], variables[f"{SCOPE}output_gate/kernel"]
    cells = slice(I + H, I + 2 * H)
    want = np.concatenate([np.diag(mask[cells, :H]), np.diag(mask[cells, H:]), np.diag(out[cells])])
    np.testing.assert_array_equal(params[0]["w_peephole"], want)
    assert np.all(want != 0.0)
    ours, theirs, branches = run_both(variables, [SCOPE], params, seed=3, leak=1e-3, peepholes=True)
    assert np.all(branches > 0), f"branch counts {branches}"
    assert_trees_close(ours, theirs, TORCH_RTOL, "peepholes vs TF1's diagonal cell-state weights")


# -- the layout ---------------------------------------------------------------------------------


def test_the_gate_blocks_are_the_transposed_kernels_in_pytorchs_order_with_one_bias() -> None:
    variables = tf1_variables(np.random.default_rng(4), I, H)
    (p,) = from_tf1_phased_lstm(variables, prefix=SCOPE)
    assert list(p) == ["w_ih", "w_hh", "b_ih", "b_hh", "tau", "s", "r_on"]
    assert list(p) == [spec.name for spec in rnnspec.OPS["phased_lstm"].layer_params(top=True)]
    kernel = {name: variables[f"{SCOPE}{name}/kernel"] for name in ("mask_gates", "new_input", "output_gate")}
    bias = {name: variables[f"{SCOPE}{name}/bias"] for name in ("mask_gates", "new_input", "output_gate")}
    blocks = {"i": ("mask_gates", slice(0, H)), "f": ("mask_gates", slice(H, 2 * H))}
    blocks |= {"g": ("new_input", slice(0, H)), "o": ("output_gate", slice(0, H))}
    for j, (name, columns) in enumerate(blocks.values()):
        rows = slice(j * H, (j + 1) * H)
        np.testing.assert_array_equal(p["w_ih"][rows], kernel[name][:I, columns].T)
        np.testing.assert_array_equal(p["w_hh"][rows], kernel[name][I:, columns].T)
        np.testing.assert_array_equal(p["b_ih"][rows], bias[name][columns])
    np.testing.assert_array_equal(p["b_hh"], np.zeros(4 * H))
    for ours, theirs in (("tau", "period"), ("s", "phase"), ("r_on", "ratio_on")):
        np.testing.assert_array_equal(p[ours], variables[f"{SCOPE}{theirs}"])


def test_tf1_1_0s_weights_and_biases_names_convert_as_kernel_and_bias() -> None:
    current = tf1_variables(np.random.default_rng(5), I, H)
    legacy = tf1_variables(np.random.default_rng(5), I, H, legacy_names=True)
    assert f"{SCOPE}mask_gates/weights" in legacy
    assert_trees_equal(from_tf1_phased_lstm(legacy, prefix=SCOPE), from_tf1_phased_lstm(current, prefix=SCOPE), "names")


def test_other_variables_are_ignored_and_a_scope_may_end_without_its_slash() -> None:
    variables = tf1_variables(np.random.default_rng(6), I, H)
    alone = from_tf1_phased_lstm(variables, prefix=SCOPE)
    crowded = dict(variables)
    crowded |= {f"{name}/Adam": np.ones_like(value) for name, value in variables.items()}
    crowded |= {"beta1_power": np.float32(0.9), "dense/kernel": np.ones((H, 1)), "global_step": np.int64(7)}
    assert_trees_equal(from_tf1_phased_lstm(crowded, prefix=SCOPE.rstrip("/")), alone, "crowded")
    top_level = {name.removeprefix(SCOPE): value for name, value in variables.items()}
    assert_trees_equal(from_tf1_phased_lstm(top_level), alone, "no prefix")


def test_tf1s_float32_time_gate_is_cast_to_the_kernels_dtype_or_the_one_asked_for() -> None:
    variables = tf1_variables(np.random.default_rng(7), I, H, gate_dtype="float32")
    (p,) = from_tf1_phased_lstm(variables, prefix=SCOPE)
    assert {a.dtype for a in p.values()} == {np.dtype("float64")}
    np.testing.assert_array_equal(p["tau"], variables[f"{SCOPE}period"].astype(np.float64))
    (p32,) = from_tf1_phased_lstm(variables, prefix=SCOPE, dtype="float32")
    assert {a.dtype for a in p32.values()} == {np.dtype("float32")}
    single = tf1_variables(np.random.default_rng(7), I, H, dtype="float32")
    assert {a.dtype for a in from_tf1_phased_lstm(single, prefix=SCOPE)[0].values()} == {np.dtype("float32")}


def test_the_params_are_copies_and_the_variables_are_left_as_they_were() -> None:
    variables = tf1_variables(np.random.default_rng(8), I, H)
    before = deep_copy(variables)
    (p,) = from_tf1_phased_lstm(variables, prefix=SCOPE)
    assert_trees_equal(variables, before, "the variables after conversion")
    saved = deep_copy(p)
    for value in variables.values():
        value += 1.0
    assert_trees_equal(p, saved, "params after the variables changed")


# -- what rnnspec cannot express, and malformed variables, are refused naming the variable -----


def assert_names(err: pytest.ExceptionInfo[Exception], argument: str, *words: str) -> None:
    assert isinstance(err.value, RnnspecError)
    message = str(err.value)
    assert message.startswith(f"from_tf1_phased_lstm: argument {argument}: expected "), message
    for word in words:
        assert word in message, message


@pytest.mark.parametrize("gate", ["mask_gates", "output_gate"])
def test_tf1s_full_peephole_matrices_are_refused_naming_the_kernel(gate: str) -> None:
    variables = tf1_variables(np.random.default_rng(9), I, H, peepholes=True, diagonal=True)
    variables[f"{SCOPE}{gate}/kernel"][I + H, 1] = 0.5  # one weight of c_prev's unit 0 into unit 1
    with pytest.raises(ParameterError) as err:
        from_tf1_phased_lstm(variables, prefix=SCOPE)
    assert_names(err, f"variables['{SCOPE}{gate}/kernel']", "use_peepholes=True", "one weight per unit", "1 non-zero")


def test_a_missing_variable_is_named() -> None:
    variables = tf1_variables(np.random.default_rng(10), I, H)
    del variables[f"{SCOPE}ratio_on"]
    with pytest.raises(ParameterError) as err:
        from_tf1_phased_lstm(variables, prefix=SCOPE)
    assert_names(err, "variables", f"'{SCOPE}ratio_on'", "none of that name")
    variables = tf1_variables(np.random.default_rng(10), I, H)
    del variables[f"{SCOPE}new_input/bias"]
    with pytest.raises(ParameterError) as err:
        from_tf1_phased_lstm(variables, prefix=SCOPE)
    assert_names(err, "variables", f"'{SCOPE}new_input/bias' or '{SCOPE}new_input/biases'")


def test_a_prefix_that_holds_no_cell_is_refused_listing_the_scopes_that_do() -> None:
    variables = tf1_variables(np.random.default_rng(11), I, H)
    with pytest.raises(OptionError) as err:
        from_tf1_phased_lstm(variables)
    assert_names(err, "prefix", "''", f"'{SCOPE}'")
    with pytest.raises(OptionError) as err:
        from_tf1_phased_lstm(variables, prefix=[SCOPE, "rnn/other/"])
    assert_names(err, "prefix[1]", "'rnn/other/'", f"'{SCOPE}'")
    with pytest.raises(OptionError) as err:
        from_tf1_phased_lstm({"dense/kernel": np.ones((2, 2))}, prefix="")
    assert_names(err, "prefix", "no PhasedLSTMCell")
    for bad in ([], [SCOPE, 3], 7):
        with pytest.raises(OptionError) as err:
            from_tf1_phased_lstm(variables, prefix=bad)  # type: ignore[arg-type]
        assert_names(err, "prefix", repr(bad))


@pytest.mark.parametrize(
    ("name", "shape", "words"),
    [
        ("period", (H, 1), ("shape (H,)",)),
        ("phase", (H + 1,), (f"shape ({H},)",)),
        ("new_input/kernel", (I + H, H + 1), ("(I + H, H)", f"H = {H}")),
        ("mask_gates/kernel", (I + H, H), (f"shape ({I + H}, {2 * H}) or ({I + 2 * H}, {2 * H})",)),
        ("output_gate/kernel", (I + H + 1, H), (f"shape ({I + H}, {H}) or ({I + 2 * H}, {H})",)),
        ("mask_gates/bias", (H,), (f"shape ({2 * H},)",)),
    ],
)
def test_a_variable_of_the_wrong_shape_is_named(name: str, shape: tuple[int, ...], words: tuple[str, ...]) -> None:
    variables = tf1_variables(np.random.default_rng(12), I, H)
    variables[f"{SCOPE}{name}"] = np.zeros(shape)
    with pytest.raises(ShapeError) as err:
        from_tf1_phased_lstm(variables, prefix=SCOPE)
    assert_names(err, f"variables['{SCOPE}{name}']", f"got shape {shape}", *words)


def test_cell_state_rows_in_one_gate_kernel_only_are_refused() -> None:
    variables = tf1_variables(np.random.default_rng(13), I, H)
    variables[f"{SCOPE}mask_gates/kernel"] = np.zeros((I + 2 * H, 2 * H))
    with pytest.raises(ShapeError) as err:
        from_tf1_phased_lstm(variables, prefix=SCOPE)
    assert_names(err, f"variables['{SCOPE}output_gate/kernel']", f"{I + 2 * H} rows", "use_peepholes")


def test_a_stack_whose_sizes_do_not_chain_is_refused() -> None:
    rng = np.random.default_rng(14)
    variables = tf1_variables(rng, I, H, scope="cell_0/c/") | tf1_variables(rng, H + 1, H, scope="cell_1/c/")
    with pytest.raises(ShapeError) as err:
        from_tf1_phased_lstm(variables)
    assert_names(err, "variables['cell_1/c/new_input/kernel']", f"{H} input rows", f"got {H + 1} input rows")


def test_non_floating_variables_bad_dtypes_and_non_mappings_are_refused() -> None:
    variables = tf1_variables(np.random.default_rng(15), I, H)
    variables[f"{SCOPE}phase"] = np.zeros(H, dtype=np.int32)
    with pytest.raises(DtypeError) as err:
        from_tf1_phased_lstm(variables, prefix=SCOPE)
    assert_names(err, f"variables['{SCOPE}phase']", "a floating array", "int32")
    variables = tf1_variables(np.random.default_rng(15), I, H)
    for bad in ("int64", "not a dtype"):
        with pytest.raises(OptionError) as err:
            from_tf1_phased_lstm(variables, prefix=SCOPE, dtype=bad)
        assert_names(err, "dtype", repr(bad))
    with pytest.raises(ParameterError) as err:
        from_tf1_phased_lstm([1, 2], prefix=SCOPE)  # type: ignore[arg-type]
    assert_names(err, "variables", "a mapping", "list")
