"""Backend.compiled: the op under the backend's compiler, validated like the op method.

The backends here are built directly (``rnnspec.backend.Backend(name, impl,
version=...)``), no plugin: the reference, with a "compiler" that counts what
it compiles and what its compiled callables receive.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import pytest

import rnnspec
from rnnspec.backend import Backend
from rnnspec.errors import CallError, UnsupportedOpError
from rnnspec.reference import Reference

BATCH, TIME, INPUT, HIDDEN = 2, 5, 3, 4


class Counting(Reference):
    """The reference with capability "compile": ``compile(op)`` returns a wrapper of the op method
    that records each call; ``compiles`` lists the ops compiled, ``runs`` the calls made."""

    capabilities: ClassVar[frozenset[str]] = frozenset({"vjp", "compile"})

    def __init__(self, returns: Any = None) -> None:
        self.returns = returns  # what the compiled callables return instead of the op's result
        self.compiles: list[str] = []
        self.runs: list[tuple[str, dict[str, Any]]] = []

    def compile(self, op: str) -> Callable[..., Any]:
        self.compiles.append(op)
        method = getattr(self, op)

        def compiled(**arguments: Any) -> Any:
            self.runs.append((op, arguments))
            result = method(**arguments)
            return result if self.returns is None else self.returns

        return compiled


class CompileWithoutCapability(Counting):
    """A ``compile`` method, but no capability "compile": the capability decides."""

    capabilities: ClassVar[frozenset[str]] = frozenset({"vjp"})


def counting_backend(impl: Counting | None = None) -> Backend:
    return Backend("counting", impl if impl is not None else Counting(), version="1.0")


def lstm_call() -> tuple[list[Any], dict[str, Any]]:
    """A valid float32 call of lstm with lengths, params as one mapping: positional and keyword arguments."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((BATCH, TIME, INPUT)).astype(np.float32)
    (params,) = rnnspec.init_params("lstm", input_size=INPUT, hidden_size=HIDDEN, seed=1)
    return [x, params], {"lengths": np.array([TIME, 2])}


def linear_call() -> tuple[list[Any], dict[str, Any]]:
    rng = np.random.default_rng(4)
    a = rng.uniform(-1, 1, (BATCH, TIME, HIDDEN)).astype(np.float64)
    b = rng.standard_normal((BATCH, TIME, HIDDEN)).astype(np.float64)
    return [a, b], {"reverse": True}


# -- without the capability ---------------------------------------------------------


@pytest.mark.parametrize("op", ["lstm", "linear_recurrence"])
def test_the_numpy_backend_has_no_compiled_mode(op: str) -> None:
    """The reference declares no "compile": UnsupportedOpError, naming the backend and the capability."""
    numpy = rnnspec.get_backend("numpy")
    assert "compile" not in numpy.implementation.capabilities
    with pytest.raises(UnsupportedOpError, match=r"backend 'numpy' declares no compiled mode \(capability 'compile'\)"):
        numpy.compiled(op)


def test_the_capability_decides_not_the_method() -> None:
    """An implementation with a compile method but without the capability is not compiled."""
    impl = CompileWithoutCapability()
    backend = Backend("uncompiled", impl, version="1.0")
    with pytest.raises(UnsupportedOpError, match="backend 'uncompiled' declares no compiled mode"):
        backend.compiled("lstm")
    assert impl.compiles == []


# -- with the capability ----------------------------------------------------------


def test_the_compiled_op_returns_what_the_compiled_callable_returns() -> None:
    sentinel = object()
    backend = counting_backend(Counting(returns=sentinel))
    args, kwargs = lstm_call()
    assert backend.compiled("lstm")(*args, **kwargs) is sentinel


@pytest.mark.parametrize(("op", "call"), [("lstm", lstm_call), ("linear_recurrence", linear_call)])
def test_the_compiled_callable_gets_the_normalised_arguments_and_agrees_with_the_op(
    op: str, call: Callable[[], tuple[list[Any], dict[str, Any]]]
) -> None:
    """It receives what check_call returns (by keyword, defaults filled in, params one dict per
    layer); with a compiler that changes nothing, its result is the op method's."""
    impl = Counting()
    backend = counting_backend(impl)
    args, kwargs = call()
    got = backend.compiled(op)(*args, **kwargs)
    assert len(impl.runs) == 1
    ran, arguments = impl.runs[0]
    assert ran == op
    expected = backend.check_call(op, *args, **kwargs)
    assert list(arguments) == list(expected)
    if op == "lstm":
        assert isinstance(arguments["params"], list)  # the caller's one mapping, as one layer
        assert len(arguments["params"]) == 1
        assert arguments["reverse"] is False
        assert arguments["initial_state"] is None
    want = getattr(backend, op)(*args, **kwargs)
    assert type(got) is type(want)
    if op == "lstm":
        np.testing.assert_array_equal(got.outputs, want.outputs)
        for got_layer, want_layer in zip(got.state, want.state, strict=True):
            assert got_layer.keys() == want_layer.keys()
            for key in want_layer:
                np.testing.assert_array_equal(got_layer[key], want_layer[key])
    else:
        np.testing.assert_array_equal(got, want)


def test_each_op_is_compiled_once() -> None:
    """compile(op) runs once per op, however often the op is asked for and called."""
    impl = Counting()
    backend = counting_backend(impl)
    lstm_args, lstm_kwargs = lstm_call()
    linear_args, linear_kwargs = linear_call()
    for _ in range(3):
        compiled = backend.compiled("lstm")
        compiled(*lstm_args, **lstm_kwargs)
        compiled(*lstm_args, **lstm_kwargs)
        backend.compiled("linear_recurrence")(*linear_args, **linear_kwargs)
    assert impl.compiles == ["lstm", "linear_recurrence"]
    assert [op for op, _ in impl.runs] == ["lstm", "lstm", "linear_recurrence"] * 3
    assert backend.compiled("lstm").__name__ == "lstm"


def _bad_calls() -> list[Any]:
    """Calls of lstm that break the spec, each with the CallError it raises."""

    def call(**changes: Any) -> tuple[list[Any], dict[str, Any]]:
        args, kwargs = lstm_call()
        x, params = args
        if "x" in changes:
            x = changes.pop("x")(x)
        if "params" in changes:
            params = changes.pop("params")(params)
        return [x, params], {**kwargs, **changes}

    return [
        pytest.param(call(x=lambda x: x[0]), id="x-not-3d"),
        pytest.param(call(x=lambda x: x.astype(np.int32)), id="x-dtype"),
        pytest.param(call(params=lambda p: {k: v for k, v in p.items() if k != "w_hh"}), id="missing-param"),
        pytest.param(call(lengths=np.array([TIME + 1, 1])), id="lengths-too-long"),
        pytest.param(call(lengths=np.array([1])), id="lengths-shape"),
        pytest.param(call(initial_state=[{"h": np.zeros((BATCH, HIDDEN), np.float32)}]), id="state-missing-c"),
        pytest.param(call(activation="relu"), id="unknown-option"),
        pytest.param(call(reverse="yes"), id="bad-option-value"),
    ]


@pytest.mark.parametrize(("bad_call"), _bad_calls())
def test_a_bad_call_is_refused_before_the_compiled_callable_runs(bad_call: tuple[list[Any], dict[str, Any]]) -> None:
    """The compiled op validates like the op method: the same error (type and message, naming the
    backend), and the compiled callable never runs."""
    impl = Counting()
    backend = counting_backend(impl)
    args, kwargs = bad_call
    with pytest.raises(CallError) as by_method:
        backend.lstm(*args, **kwargs)
    with pytest.raises(CallError) as by_compiled:
        backend.compiled("lstm")(*args, **kwargs)
    assert type(by_compiled.value) is type(by_method.value)
    assert str(by_compiled.value) == str(by_method.value)
    assert "backend 'counting'" in str(by_compiled.value)
    assert impl.runs == []


def test_a_bad_call_does_not_spoil_the_next_good_one() -> None:
    impl = Counting()
    backend = counting_backend(impl)
    compiled = backend.compiled("lstm")
    (x, params), kwargs = lstm_call()
    with pytest.raises(CallError):
        compiled(x[:, :, :2], params, **kwargs)
    compiled(x, params, **kwargs)
    assert impl.compiles == ["lstm"]
    assert len(impl.runs) == 1


def test_an_op_outside_the_backend_is_refused_when_called() -> None:
    """An op the backend does not implement: the call raises UnsupportedOpError, as the op method does."""

    class LinearOnly(Counting):
        ops: ClassVar[tuple[str, ...]] = ("linear_recurrence",)

    impl = LinearOnly()
    backend = Backend("linear_only", impl, version="1.0")
    args, kwargs = lstm_call()
    with pytest.raises(UnsupportedOpError, match="backend 'linear_only' does not implement op 'lstm'"):
        backend.compiled("lstm")(*args, **kwargs)
    assert impl.runs == []


def test_an_op_outside_the_spec_is_refused_before_anything_is_compiled() -> None:
    """compiled('no_such_op') raises the op-name error of check_call, and compile() never sees the name."""
    impl = Counting()
    backend = counting_backend(impl)
    with pytest.raises(CallError, match="argument op: expected an op of the spec"):
        backend.compiled("no_such_op")
    assert impl.compiles == []
