"""The option ``checkpoint_every`` in the spec: signature, validation, and backends that predate it."""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import numpy as np
import pytest

import rnnspec
from rnnspec.backend import LATER_KEYWORDS, Backend, op_signature
from rnnspec.conformity import check_implementation
from rnnspec.errors import OptionError, SpecMismatchError
from rnnspec.ops import OPS
from rnnspec.reference import Reference
from rnnspec.results import SequenceResult

NUMPY = rnnspec.get_backend("numpy")


def lstm_call() -> tuple[np.ndarray, list[dict[str, np.ndarray]]]:
    params = rnnspec.init_params("lstm", input_size=3, hidden_size=4, seed=0, dtype="float64")
    x = np.random.default_rng(1).standard_normal((2, 7, 3))
    return x, params


@pytest.mark.parametrize("op", sorted(OPS))
def test_every_op_takes_checkpoint_every_as_a_keyword_defaulting_to_none(op: str) -> None:
    parameter = op_signature(op).parameters["checkpoint_every"]
    assert parameter.kind is inspect.Parameter.KEYWORD_ONLY
    assert parameter.default is None
    assert OPS[op].option("checkpoint_every").default is None


@pytest.mark.parametrize("value", [0, -3, True, 2.0, "4", [2]], ids=repr)
def test_a_checkpoint_every_other_than_none_or_a_positive_integer_is_an_option_error(value: Any) -> None:
    x, params = lstm_call()
    with pytest.raises(OptionError) as info:
        NUMPY.lstm(x, params, checkpoint_every=value)
    assert (info.value.op, info.value.argument, info.value.backend) == ("lstm", "checkpoint_every", "numpy")
    assert "None or an integer >= 1" in str(info.value)


@pytest.mark.parametrize("value", [1, 3, 7, 100, np.int64(2)], ids=repr)
def test_the_reference_gives_the_same_result_for_any_checkpoint_every(value: Any) -> None:
    x, params = lstm_call()
    whole = NUMPY.lstm(x, params, lengths=[7, 4], reverse=True)
    cut = NUMPY.lstm(x, params, lengths=[7, 4], reverse=True, checkpoint_every=value)
    np.testing.assert_array_equal(cut.outputs, whole.outputs)
    for a, b in zip(cut.state, whole.state, strict=True):
        np.testing.assert_array_equal(a["h"], b["h"])
        np.testing.assert_array_equal(a["c"], b["c"])


class Older(Reference):
    """A backend written before checkpoint_every: its lstm has the spec's earlier signature."""

    ops: ClassVar[tuple[str, ...]] = ("lstm",)
    seen: ClassVar[list[dict[str, Any]]] = []

    def lstm(
        self, x: Any, params: Any, *, lengths: Any = None, initial_state: Any = None, reverse: bool = False
    ) -> SequenceResult:
        self.seen.append({"lengths": lengths, "initial_state": initial_state, "reverse": reverse})
        return NUMPY.implementation.lstm(
            x, params, lengths=lengths, initial_state=initial_state, reverse=reverse, checkpoint_every=None
        )


def test_an_implementation_that_predates_checkpoint_every_passes_the_load_time_check() -> None:
    assert "checkpoint_every" in LATER_KEYWORDS
    check_implementation("older", "older-dist", Older())


def test_a_later_keyword_with_another_default_still_fails_the_load_time_check() -> None:
    class Wrong(Older):
        def lstm(  # type: ignore[override]
            self,
            x: Any,
            params: Any,
            *,
            lengths: Any = None,
            initial_state: Any = None,
            reverse: bool = False,
            checkpoint_every: int | None = 10,
        ) -> SequenceResult:
            raise AssertionError("never called")

    with pytest.raises(SpecMismatchError, match="checkpoint_every=10"):
        check_implementation("wrong", "wrong-dist", Wrong())


def test_the_backend_calls_an_older_implementation_without_the_option_and_refuses_a_segment_length() -> None:
    backend = Backend("older", Older(), version="0")
    assert backend.lacking("lstm") == ("checkpoint_every", "dropout_mask", "recurrent_mask")  # it predates all three
    x, params = lstm_call()
    Older.seen.clear()
    result = backend.lstm(x, params, checkpoint_every=None)
    np.testing.assert_array_equal(result.outputs, NUMPY.lstm(x, params).outputs)
    assert "checkpoint_every" not in backend.check_call("lstm", x, params)
    assert len(Older.seen) == 1
    with pytest.raises(OptionError) as info:
        backend.lstm(x, params, checkpoint_every=4)
    assert (info.value.op, info.value.argument, info.value.backend) == ("lstm", "checkpoint_every", "older")
    assert "predates" in str(info.value)
    assert len(Older.seen) == 1


def test_a_current_implementation_receives_checkpoint_every() -> None:
    x, params = lstm_call()
    assert NUMPY.lacking("lstm") == ()
    assert NUMPY.check_call("lstm", x, params, checkpoint_every=3)["checkpoint_every"] == 3
