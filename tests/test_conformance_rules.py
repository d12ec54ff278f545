"""The conformance suite's own rules, on the NumPy reference: the cases it builds and how it compares.

The mutants (tests/test_conformance_bites.py) show that the suite catches wrong backends; these tests
pin the pieces that make it so: ties cases land exactly on their thresholds, large cases cross the
built-in backends' size thresholds with unsorted lengths, the half-precision rule separates float32
from float16 accumulation, and every repro line rebuilds its case.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import rnnspec
from rnnspec.conformance.assertions import assert_tree_close
from rnnspec.conformance.cases import CLEAR_EPSILON, TIE_EPSILON, CaseSpec
from rnnspec.conformance.checks_common import assert_values_match_the_reference
from rnnspec.conformance.strategies import LARGE_SIZES, TIE_OPTIONS, large_case
from rnnspec.conformance.test_gradients import relu_kink_margin
from rnnspec.conformance.tolerances import HALF, reference_tolerance, ulp
from rnnspec.reference import decision_margin

NUMPY = rnnspec.get_backend("numpy")
DECIDING_OPS = ("skip_rnn", "skip_lstm", "skip_gru", "act")


def _ties(op: str, dtype: str, seed: int, **fields: Any) -> CaseSpec:
    fields.setdefault("options", tuple(TIE_OPTIONS[op].items()))
    return CaseSpec(op, dtype, batch=4, time=6, seed=seed, decisions="ties", **fields)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("op", DECIDING_OPS)
@pytest.mark.parametrize("initial_state", [False, True])
def test_a_ties_case_puts_a_decision_exactly_on_its_threshold(op: str, dtype: str, initial_state: bool) -> None:
    case = _ties(op, dtype, seed=3, initial_state=initial_state).build()
    assert decision_margin(op, *case.args, **case.kwargs) == 0.0


def test_a_ties_case_of_act_halts_at_the_first_inner_step_as_the_spec_says() -> None:
    case = _ties("act", "float32", seed=1, options=(("epsilon", TIE_EPSILON), ("max_steps", 3))).build()
    result = case.run(NUMPY)
    assert np.array_equal(result.ponder_steps, np.ones_like(result.ponder_steps))  # sum 1/2 >= 1 - 1/2


def test_a_ties_case_of_a_skip_op_updates_at_every_step_as_the_spec_says() -> None:
    case = _ties("skip_gru", "float32", seed=2).build()
    assert np.array_equal(case.run(NUMPY).update_gate, np.ones((4, 6)))  # u~ = 1/2 at every step: >= updates


def test_a_ties_case_of_act_needs_epsilon_one_half() -> None:
    with pytest.raises(ValueError, match=r"epsilon=0\.5"):
        CaseSpec("act", decisions="ties", options=(("epsilon", 0.01),)).build()


@pytest.mark.parametrize("op", ["rnn", "indrnn", "indrnn_recurrence"])
@pytest.mark.parametrize("initial_state", [False, True])
def test_a_ties_case_puts_relu_pre_activations_exactly_on_zero(op: str, initial_state: bool) -> None:
    case = _ties(op, "float32", seed=5, initial_state=initial_state, num_layers=1).build()
    assert relu_kink_margin(case) == 0.0
    drawn = CaseSpec(op, "float32", batch=4, time=6, options=case.spec.options, seed=5).build()
    assert relu_kink_margin(drawn) > 0.0


@pytest.mark.parametrize("op", sorted(DECIDING_OPS))
def test_clear_decisions_stay_wide_over_thousands_of_steps(op: str) -> None:
    options = (("cell", "gru"), ("epsilon", CLEAR_EPSILON), ("max_steps", 4)) if op == "act" else ()
    case = CaseSpec(op, "float32", 2, 2000, 2, 2, lengths=(2000, 1400), options=options, decisions="clear").build()
    assert decision_margin(op, *case.args, **case.kwargs) > 0.02


def test_the_large_tier_crosses_every_size_threshold_of_the_built_in_backends() -> None:
    # The thresholds, as the backends define them (the modules that hold them import their framework).
    torch_loops = pytest.importorskip("rnnspec.backends.torch.recurrence_loops")
    torch_skip = pytest.importorskip("rnnspec.backends.torch.skip")
    jax_skipping = pytest.importorskip("rnnspec.backends.jax.skipping")
    times = [torch_loops.CHUNKED_MIN_STEPS, 64, 32]  # torch's chunked scan; TensorFlow's graph and its reads
    batches = [torch_skip.PROJECT_PER_UPDATE_FROM, jax_skipping.MIN_BUCKET_BATCH]
    for t in times:
        assert any(size.time > t and size.time % 32 for size in LARGE_SIZES), t
    for b in batches:
        assert any(size.batch >= b for size in LARGE_SIZES), b
    assert any(48 <= size.time < 64 and 8 <= size.batch < 32 for size in LARGE_SIZES)  # between thresholds


@given(seed=st.integers(0, 2**32 - 1))
def test_a_large_case_has_unsorted_lengths_with_a_full_and_an_empty_row(seed: int) -> None:
    spec = large_case("gru", LARGE_SIZES[1], seed, dtypes=("float32", "float64"))
    lengths = list(spec.lengths or ())
    assert len(lengths) == spec.batch
    assert spec.time in lengths
    assert 0 in lengths
    assert lengths not in (sorted(lengths), sorted(lengths, reverse=True))


@given(seed=st.integers(0, 2**32 - 1))
def test_every_case_spec_repro_rebuilds_the_same_arrays(seed: int) -> None:
    spec = CaseSpec("skip_lstm", "float32", 3, 5, 2, 3, lengths=(5, 0, 2), seed=seed, bias=4.0, nan_at=(0, 1, 1))
    again = eval(repr(spec), {"CaseSpec": CaseSpec})
    assert again == spec
    a, b = spec.build(), again.build()
    assert np.isnan(a.args[0][0, 1, 1])
    np.testing.assert_array_equal(a.args[0], b.args[0])  # NaN where the other has NaN, equal elsewhere


def test_a_case_spec_repr_names_only_what_differs_from_the_defaults() -> None:
    assert repr(CaseSpec("gru", time=7)) == "CaseSpec(op='gru', time=7)"


def test_a_biased_case_drives_lstm_cells_past_ten() -> None:
    case = CaseSpec("lstm", "float64", 2, 40, 3, 4, bias=4.0, initial_state=False).build()
    assert np.abs(case.run(NUMPY).state[0]["c"]).max() > 10


def test_a_wide_recurrent_bound_draws_indrnn_weights_past_one() -> None:
    case = CaseSpec("indrnn", "float64", 2, 6, 3, 8, recurrent_bound=2.0).build()
    assert np.abs(case.args[1][0]["u"]).max() > 1


def test_ulp_is_the_half_formats_spacing() -> None:
    assert ulp(np.array(1.0), "float16") == 2.0**-10
    assert ulp(np.array(1.5), "bfloat16") == 2.0**-7
    assert ulp(np.array(0.0), "float16") == 2.0**-24  # subnormal spacing
    assert ulp(np.array(np.inf), "float16") == np.inf


def _state_run(spec: CaseSpec, state: type[np.floating[Any]]) -> np.ndarray:
    """linear_recurrence (full rows, forward) with its arithmetic and carried state in ``state``, rounded
    to float16 at the end."""
    a, b, _ = spec.build().args
    h = np.zeros((a.shape[0], a.shape[2]), dtype=state)
    out = np.zeros(a.shape, dtype=state)
    for t in range(a.shape[1]):
        h = a[:, t].astype(state) * h + b[:, t].astype(state)
        out[:, t] = h
    return out.astype(np.float16)


@pytest.mark.parametrize("seed", range(5))
def test_the_half_rule_passes_float32_accumulation_and_fails_float16_accumulation(seed: int) -> None:
    spec = CaseSpec("linear_recurrence", "float16", 3, 12, 1, 4, seed=seed)
    case = spec.build()
    assert_values_match_the_reference(_state_run(spec, np.float32), case, context="")
    with pytest.raises(AssertionError, match=r"0\.5 ulp of float16"):
        assert_values_match_the_reference(_state_run(spec, np.float16), case, context="")


def test_the_half_rule_takes_an_overflowing_answer_as_inf() -> None:
    tol = reference_tolerance("float16", steps=1)
    assert_tree_close(np.array([np.inf], np.float16), np.array([70000.0]), tol, context="", dtype=np.dtype("float16"))
    with pytest.raises(AssertionError, match="infinities differ"):
        assert_tree_close(np.array([65504.0], np.float16), np.array([70000.0]), tol, context="", check_dtype=False)
    assert set(HALF) == {"float16", "bfloat16"}


def test_hypothesis_profile_from_the_environment_is_the_one_the_suite_runs(tmp_path: Path) -> None:
    (tmp_path / "test_profile.py").write_text(
        "from hypothesis import settings\n\n\n"
        "def test_profile(rnnspec_backend):\n"
        "    assert settings.get_current_profile_name() == 'thorough'\n"
        "    assert settings.default.max_examples == 300\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "RNNSPEC_"))}
    env["HYPOTHESIS_PROFILE"] = "thorough"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--rnnspec-backend=numpy", "-p", "no:cacheprovider", "test_profile.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
