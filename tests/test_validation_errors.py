"""Bad calls of the sequence ops, and init_params: every error is specific and says what is wrong."""

from __future__ import annotations

import copy
import pickle
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

import rnnspec
import rnnspec.reference
from rnnspec.errors import (
    CallError,
    DtypeError,
    LengthsError,
    OptionError,
    ParameterError,
    RnnspecError,
    ShapeError,
    UnknownArgumentError,
)
from rnnspec.ops import OPS
from rnnspec.reference import Reference
from rnnspec.shapes import evaluate

SEQUENCE_OPS = ("rnn", "lstm", "gru")
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
STATE_KEYS = {"rnn": ("h",), "lstm": ("h", "c"), "gru": ("h",)}
BATCH, TIME, INPUT, HIDDEN, LAYERS = 2, 5, 3, 4, 2


@dataclass
class Call:
    """One call of an op: its positional and keyword arguments."""

    args: list[Any]
    kwargs: dict[str, Any]

    @property
    def params(self) -> Any:
        return self.args[1]

    @property
    def state(self) -> Any:
        return self.kwargs["initial_state"]


def good_call(op: str) -> Call:
    """A valid two-layer call of ``op`` with lengths and an initial state, all float32."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((BATCH, TIME, INPUT)).astype(np.float32)
    params = rnnspec.init_params(op, input_size=INPUT, hidden_size=HIDDEN, num_layers=LAYERS, seed=1)
    state = [
        {key: rng.standard_normal((BATCH, HIDDEN)).astype(np.float32) for key in STATE_KEYS[op]} for _ in range(LAYERS)
    ]
    return Call([x, params], {"lengths": np.array([TIME, 3]), "initial_state": state})


def zeros(*shape: int, dtype: type = np.float32) -> np.ndarray:
    return np.zeros(shape, dtype)


def gh(op: str) -> int:
    """Rows of a weight of ``op``: gate blocks times the hidden size."""
    return GATES[op] * HIDDEN


@dataclass(frozen=True)
class BadCall:
    """A way to break a good call, and the error it must raise.

    ``actual`` and ``expected`` are formatted with ``GH`` (weight rows of the op)
    and ``keys`` (the op's state keys, as a sorted list).
    """

    name: str
    break_call: Callable[[str, Call], None]
    error: type[CallError]
    builtin: type[Exception]
    argument: str
    actual: str
    expected: str = ""
    ops: tuple[str, ...] = SEQUENCE_OPS
    extra_fields: dict[str, Callable[[str], str]] = field(default_factory=dict)

    def fields(self, op: str) -> dict[str, Any]:
        return {"GH": gh(op), **{k: f(op) for k, f in self.extra_fields.items()}}


def _set_arg(index: int, make: Callable[[str, Call], Any]) -> Callable[[str, Call], None]:
    def edit(op: str, call: Call) -> None:
        call.args[index] = make(op, call)

    return edit


def _set_kwarg(name: str, make: Callable[[str, Call], Any]) -> Callable[[str, Call], None]:
    def edit(op: str, call: Call) -> None:
        call.kwargs[name] = make(op, call)

    return edit


def _set_param(layer: int, key: str, make: Callable[[str, Call], Any]) -> Callable[[str, Call], None]:
    def edit(op: str, call: Call) -> None:
        call.params[layer][key] = make(op, call)

    return edit


def _set_state(layer: int, key: Any, make: Callable[[str, Call], Any]) -> Callable[[str, Call], None]:
    def edit(op: str, call: Call) -> None:
        call.state[layer][key] = make(op, call)

    return edit


def _drop_param(op: str, call: Call) -> None:
    del call.params[0]["b_hh"]


def _wrong_state_keys(op: str, call: Call) -> None:
    if op == "lstm":
        del call.state[0]["c"]
    else:
        call.state[0]["c"] = zeros(BATCH, HIDDEN)


def _append_positional(op: str, call: Call) -> None:
    call.args.append(None)


def _drop_params(op: str, call: Call) -> None:
    del call.args[1]


def _x_also_by_keyword(op: str, call: Call) -> None:
    call.kwargs["x"] = call.args[0]


BAD_CALLS = [
    # x
    BadCall("x of rank 2", _set_arg(0, lambda op, c: c.args[0][0]), ShapeError, ValueError, "x",
            "shape (5, 3) of rank 2", "rank 3"),
    BadCall("x of rank 4", _set_arg(0, lambda op, c: c.args[0][None]), ShapeError, ValueError, "x",
            "shape (1, 2, 5, 3) of rank 4", "rank 3"),
    BadCall("x of int dtype", _set_arg(0, lambda op, c: c.args[0].astype(np.int64)), DtypeError, TypeError, "x",
            "dtype int64", "a floating dtype"),
    BadCall("x of complex dtype", _set_arg(0, lambda op, c: c.args[0].astype(np.complex64)), DtypeError, TypeError,
            "x", "dtype complex64", "a floating dtype"),
    BadCall("x as a list", _set_arg(0, lambda op, c: c.args[0].tolist()), DtypeError, TypeError, "x",
            "an object of type list", "a numpy array"),
    BadCall("x with an input size that w_ih does not take", _set_arg(0, lambda op, c: zeros(BATCH, TIME, INPUT + 2)),
            ParameterError, ValueError, "params[0]['w_ih']", "shape ({GH}, 3)", "= ({GH}, 5)"),
    # params
    BadCall("a missing parameter", _drop_param, ParameterError, ValueError, "params[0]",
            "keys ['b_ih', 'w_hh', 'w_ih']", "a key 'b_hh'"),
    BadCall("an unknown parameter key", _set_param(0, "bias", lambda op, c: zeros(gh(op))), ParameterError,
            ValueError, "params[0]", "unknown key 'bias'", "keys among ['b_hh', 'b_ih', 'w_hh', 'w_ih']"),
    BadCall("a misshapen w_hh", _set_param(0, "w_hh", lambda op, c: zeros(gh(op), HIDDEN - 1)), ParameterError,
            ValueError, "params[0]['w_hh']", "shape ({GH}, 3)", "= ({GH}, 4)"),
    BadCall("a misshapen w_ih in the second layer", _set_param(1, "w_ih", lambda op, c: zeros(gh(op), HIDDEN + 1)),
            ParameterError, ValueError, "params[1]['w_ih']", "shape ({GH}, 5)", "= ({GH}, 4)"),
    BadCall("a bias of rank 2", _set_param(0, "b_ih", lambda op, c: zeros(gh(op), 1)), ParameterError, ValueError,
            "params[0]['b_ih']", "shape ({GH}, 1)", "of rank 1"),
    BadCall("a parameter whose dtype differs from x", _set_param(1, "w_hh", lambda op, c: zeros(gh(op), HIDDEN,
            dtype=np.float64)), DtypeError, TypeError, "params[1]['w_hh']", "dtype float64", "dtype float32"),
    BadCall("a parameter that is not an array", _set_param(0, "b_hh", lambda op, c: [0.0] * gh(op)), DtypeError,
            TypeError, "params[0]['b_hh']", "an object of type list", "a numpy array"),
    BadCall("an empty params list", _set_arg(1, lambda op, c: []), ParameterError, ValueError, "params",
            "an empty sequence", "non-empty sequence"),
    BadCall("params that are a number", _set_arg(1, lambda op, c: 42), ParameterError, ValueError, "params", "int",
            "a mapping of named arrays"),
    BadCall("params that are a string", _set_arg(1, lambda op, c: "w_ih"), ParameterError, ValueError, "params",
            "str", "a mapping of named arrays"),
    BadCall("a params layer that is not a mapping", _set_arg(1, lambda op, c: [c.params[0], c.args[0]]),
            ParameterError, ValueError, "params[1]", "numpy.ndarray", "a mapping of named arrays"),
    # lengths
    BadCall("negative lengths", _set_kwarg("lengths", lambda op, c: np.array([5, -1])), LengthsError, ValueError,
            "lengths", "a value -1", "values in [0, 5]"),
    BadCall("lengths beyond time", _set_kwarg("lengths", lambda op, c: np.array([5, 6])), LengthsError, ValueError,
            "lengths", "a value 6", "values in [0, 5]"),
    BadCall("lengths in a list beyond time", _set_kwarg("lengths", lambda op, c: [9, 1]), LengthsError, ValueError,
            "lengths", "a value 9", "values in [0, 5]"),
    BadCall("lengths of the wrong size", _set_kwarg("lengths", lambda op, c: np.array([5, 5, 5])), LengthsError,
            ValueError, "lengths", "shape (3,)", "shape (2,)"),
    BadCall("lengths of rank 2", _set_kwarg("lengths", lambda op, c: np.array([[5], [5]])), LengthsError, ValueError,
            "lengths", "shape (2, 1)", "shape (2,)"),
    BadCall("lengths of float dtype", _set_kwarg("lengths", lambda op, c: np.array([5.0, 3.0])), LengthsError,
            ValueError, "lengths", "dtype float64", "an integer dtype"),
    BadCall("lengths that are a number", _set_kwarg("lengths", lambda op, c: 5), LengthsError, ValueError, "lengths",
            "int", "integer array of shape (batch,)"),
    # initial_state
    BadCall("an initial state for the wrong number of layers", _set_kwarg("initial_state", lambda op, c: c.state[:1]),
            ShapeError, ValueError, "initial_state", "a sequence of length 1", "a sequence of 2 state mapping(s)"),
    BadCall("an initial state that is a number", _set_kwarg("initial_state", lambda op, c: 3), ShapeError,
            ValueError, "initial_state", "int", "a sequence of 2 state mapping(s)"),
    BadCall("an initial state with the wrong keys", _wrong_state_keys, ShapeError, ValueError, "initial_state[0]",
            "keys {wrong}", "a mapping with keys {keys}",
            extra_fields={"wrong": lambda op: "['h']" if op == "lstm" else "['c', 'h']",
                          "keys": lambda op: str(list(STATE_KEYS[op]))}),
    BadCall("an initial state with a key that is not a string", _set_state(0, 0, lambda op, c: zeros(BATCH, HIDDEN)),
            ShapeError, ValueError, "initial_state[0]", "keys {got}", "a mapping with keys",
            extra_fields={"got": lambda op: str([0, *sorted(STATE_KEYS[op])])}),
    BadCall("an initial state of the wrong hidden size", _set_state(1, "h", lambda op, c: zeros(BATCH, HIDDEN + 1)),
            ShapeError, ValueError, "initial_state[1]['h']", "shape (2, 5)", "shape (2, 4) (batch, H)"),
    BadCall("an initial state of the wrong batch", _set_state(0, "h", lambda op, c: zeros(BATCH + 1, HIDDEN)),
            ShapeError, ValueError, "initial_state[0]['h']", "shape (3, 4)", "shape (2, 4) (batch, H)"),
    BadCall("an initial state of the wrong dtype", _set_state(0, "h", lambda op, c: zeros(BATCH, HIDDEN,
            dtype=np.float64)), DtypeError, TypeError, "initial_state[0]['h']", "dtype float64", "dtype float32"),
    BadCall("an lstm cell state of the wrong shape", _set_state(1, "c", lambda op, c: zeros(BATCH, HIDDEN - 1)),
            ShapeError, ValueError, "initial_state[1]['c']", "shape (2, 3)", "shape (2, 4)", ops=("lstm",)),
    # options and the call's form
    BadCall("an unknown keyword", _set_kwarg("dropout", lambda op, c: 0.5), UnknownArgumentError, TypeError,
            "dropout", "an unknown argument 'dropout'", "one of the op's arguments"),
    BadCall("the activation option of rnn", _set_kwarg("activation", lambda op, c: "tanh"), UnknownArgumentError,
            TypeError, "activation", "an unknown argument 'activation'", ops=("lstm", "gru")),
    BadCall("the reset_after option of gru", _set_kwarg("reset_after", lambda op, c: True), UnknownArgumentError,
            TypeError, "reset_after", "an unknown argument 'reset_after'", ops=("rnn", "lstm")),
    BadCall("activation sigmoid", _set_kwarg("activation", lambda op, c: "sigmoid"), OptionError, ValueError,
            "activation", "'sigmoid'", "'tanh' or 'relu'", ops=("rnn",)),
    BadCall("reset_after yes", _set_kwarg("reset_after", lambda op, c: "yes"), OptionError, ValueError,
            "reset_after", "'yes'", "True or False", ops=("gru",)),
    BadCall("reset_after one", _set_kwarg("reset_after", lambda op, c: 1), OptionError, ValueError, "reset_after",
            "1", "True or False", ops=("gru",)),
    BadCall("reverse one", _set_kwarg("reverse", lambda op, c: 1), OptionError, ValueError, "reverse", "1",
            "True or False"),
    BadCall("reverse yes", _set_kwarg("reverse", lambda op, c: "yes"), OptionError, ValueError, "reverse", "'yes'",
            "True or False"),
    BadCall("reverse none", _set_kwarg("reverse", lambda op, c: None), OptionError, ValueError, "reverse", "None",
            "True or False"),
    BadCall("too many positional arguments", _append_positional, UnknownArgumentError, TypeError, "*args",
            "3 positional arguments", "at most 2 positional arguments (x, params)"),
    BadCall("x by position and by keyword", _x_also_by_keyword, UnknownArgumentError, TypeError, "x",
            "a value both by position and by keyword", "one value"),
    BadCall("params left out", _drop_params, UnknownArgumentError, TypeError, "params", "nothing",
            "a value for this required argument"),
]  # fmt: skip

BAD_CALL_CASES = [
    pytest.param(case, op, id=f"{op}: {case.name}") for case in BAD_CALLS for op in SEQUENCE_OPS if op in case.ops
]


def broken_call(case: BadCall, op: str) -> Call:
    call = good_call(op)
    case.break_call(op, call)
    return call


def assert_names_everything(err: CallError, case: BadCall, op: str, backend: str | None) -> None:
    fields = case.fields(op)
    argument, actual = case.argument, case.actual.format(**fields)
    assert type(err) is case.error
    assert issubclass(case.error, case.builtin)
    assert isinstance(err, case.builtin)
    assert isinstance(err, RnnspecError)
    assert (err.op, err.argument, err.actual, err.backend) == (op, argument, actual, backend)
    assert case.expected.format(**fields) in err.expected
    where = op if backend is None else f"{op} [backend {backend!r}]"
    assert str(err) == f"{where}: argument {argument}: expected {err.expected}, got {actual}"


@pytest.mark.parametrize("op", SEQUENCE_OPS)
def test_the_good_call_that_each_case_breaks_succeeds(op: str) -> None:
    call = good_call(op)
    result = getattr(rnnspec.get_backend("numpy"), op)(*call.args, **call.kwargs)
    assert result.outputs.shape == (BATCH, TIME, HIDDEN)
    assert result.outputs.dtype == np.float32
    assert len(result.state) == LAYERS


@pytest.mark.parametrize(("case", "op"), BAD_CALL_CASES)
def test_a_bad_call_raises_its_specific_error_naming_op_argument_backend_and_value(case: BadCall, op: str) -> None:
    call = broken_call(case, op)
    backend = rnnspec.get_backend("numpy")
    prefix = re.escape(f"{op} [backend 'numpy']: argument {case.argument}: expected ")
    with pytest.raises(case.builtin, match=prefix) as info:
        getattr(backend, op)(*call.args, **call.kwargs)
    assert_names_everything(info.value, case, op, "numpy")


@pytest.mark.parametrize(("case", "op"), BAD_CALL_CASES)
def test_check_call_raises_the_same_error_as_the_call(case: BadCall, op: str) -> None:
    call = broken_call(case, op)
    with pytest.raises(case.error) as info:
        rnnspec.get_backend("numpy").check_call(op, *call.args, **call.kwargs)
    assert_names_everything(info.value, case, op, "numpy")


@pytest.mark.parametrize(("case", "op"), BAD_CALL_CASES)
def test_a_failing_call_leaves_the_users_arrays_and_containers_unmodified(case: BadCall, op: str) -> None:
    call = broken_call(case, op)
    before = copy.deepcopy(call)
    identities = [id(v) for v in (*call.args, *call.kwargs.values())]
    with pytest.raises(case.error):
        getattr(rnnspec.get_backend("numpy"), op)(*call.args, **call.kwargs)
    assert [id(v) for v in (*call.args, *call.kwargs.values())] == identities
    assert_same_tree(call.args, before.args)
    assert_same_tree(call.kwargs, before.kwargs)


@pytest.mark.parametrize("op", SEQUENCE_OPS)
def test_a_successful_call_leaves_the_users_arrays_unmodified(op: str) -> None:
    call = good_call(op)
    before = copy.deepcopy(call)
    getattr(rnnspec.get_backend("numpy"), op)(*call.args, **call.kwargs)
    assert_same_tree(call.args, before.args)
    assert_same_tree(call.kwargs, before.kwargs)


def assert_same_tree(got: Any, want: Any) -> None:
    assert type(got) is type(want)
    if isinstance(want, np.ndarray):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want, strict=True)
    elif isinstance(want, dict):
        assert list(got) == list(want)
        for key in want:
            assert_same_tree(got[key], want[key])
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            assert_same_tree(g, w)
    else:
        assert got == want


@pytest.mark.parametrize("op", SEQUENCE_OPS)
def test_the_reference_functions_validate_like_the_numpy_backend(op: str) -> None:
    call = good_call(op)
    call.args[0] = call.args[0].astype(np.int32)
    with pytest.raises(DtypeError, match=rf"^{op} \[backend 'numpy'\]: argument x: .*got dtype int32$"):
        getattr(rnnspec.reference, op)(*call.args, **call.kwargs)


def test_an_op_outside_the_spec_given_to_check_call_is_an_unknown_argument() -> None:
    with pytest.raises(UnknownArgumentError, match=r"argument op: expected an op of the spec") as info:
        rnnspec.get_backend("numpy").check_call("conv", np.zeros((1, 1, 1)), {})
    assert isinstance(info.value, TypeError)
    assert (info.value.op, info.value.actual, info.value.backend) == ("conv", "'conv'", "numpy")


def test_a_call_error_survives_pickling_with_its_backend() -> None:
    call = good_call("lstm")
    call.kwargs["lengths"] = np.array([5, 6])
    with pytest.raises(LengthsError) as info:
        rnnspec.get_backend("numpy").lstm(*call.args, **call.kwargs)
    clone = pickle.loads(pickle.dumps(info.value))
    assert type(clone) is LengthsError
    assert str(clone) == str(info.value)
    assert (clone.op, clone.argument, clone.expected, clone.actual, clone.backend) == (
        "lstm",
        "lengths",
        info.value.expected,
        "a value 6",
        "numpy",
    )


def test_options_accept_numpy_bool_for_reverse_and_a_single_layer_mapping() -> None:
    call = good_call("gru")
    x, params = call.args
    single = rnnspec.get_backend("numpy").gru(x, params[0], reverse=np.bool_(True), initial_state=call.state[0])
    listed = rnnspec.get_backend("numpy").gru(x, [params[0]], reverse=True, initial_state=[call.state[0]])
    np.testing.assert_array_equal(single.outputs, listed.outputs)


# -- init_params ---------------------------------------------------------------


@pytest.mark.parametrize("op", SEQUENCE_OPS)
@pytest.mark.parametrize("num_layers", [1, 3])
def test_init_params_gives_the_spec_shapes_for_every_layer(op: str, num_layers: int) -> None:
    params = rnnspec.init_params(op, input_size=3, hidden_size=5, num_layers=num_layers)
    assert isinstance(params, list)
    assert len(params) == num_layers
    rows = GATES[op] * 5
    for k, layer in enumerate(params):
        inputs = 3 if k == 0 else 5
        assert {name: a.shape for name, a in layer.items()} == {
            "w_ih": (rows, inputs),
            "w_hh": (rows, 5),
            "b_ih": (rows,),
            "b_hh": (rows,),
        }
        assert all(isinstance(a, np.ndarray) and a.dtype == np.float32 for a in layer.values())


@pytest.mark.parametrize(
    ("op", "options"),
    [("rnn", {"activation": "relu"}), ("rnn", {}), ("lstm", {}), ("gru", {"reset_after": False}), ("gru", {})],
)
def test_init_params_are_accepted_by_their_op(op: str, options: dict[str, Any]) -> None:
    params = rnnspec.init_params(op, input_size=3, hidden_size=5, num_layers=2, **options)
    x = np.ones((2, 4, 3), np.float32)
    result = getattr(rnnspec.get_backend("numpy"), op)(x, params, **options)
    assert result.outputs.shape == (2, 4, 5)
    assert len(result.state) == 2


@pytest.mark.parametrize("op", SEQUENCE_OPS)
def test_init_params_is_reproducible_from_its_seed(op: str) -> None:
    first = rnnspec.init_params(op, input_size=3, hidden_size=4, num_layers=2, seed=11)
    again = rnnspec.init_params(op, input_size=3, hidden_size=4, num_layers=2, seed=11)
    other = rnnspec.init_params(op, input_size=3, hidden_size=4, num_layers=2, seed=12)
    for a, b, c in zip(first, again, other, strict=True):
        assert list(a) == list(b) == list(c)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
            assert not np.array_equal(a[key], c[key])


def test_init_params_draws_every_parameter_and_layer_independently() -> None:
    params = rnnspec.init_params("lstm", input_size=4, hidden_size=4, num_layers=2, seed=0)
    arrays = [a for layer in params for a in (layer["w_ih"], layer["w_hh"])]
    for i, a in enumerate(arrays):
        for b in arrays[i + 1 :]:
            assert not np.array_equal(a, b)


@pytest.mark.parametrize("op", SEQUENCE_OPS)
def test_init_params_draws_uniformly_within_one_over_root_hidden_size(op: str) -> None:
    bound = 1 / np.sqrt(16)
    params = rnnspec.init_params(op, input_size=8, hidden_size=16, dtype="float64")
    values = np.concatenate([a.ravel() for a in params[0].values()])
    assert np.all(np.abs(values) <= bound)
    assert values.min() < -0.9 * bound
    assert values.max() > 0.9 * bound
    assert abs(values.mean()) < 0.15 * bound  # about five standard errors of the mean


@pytest.mark.parametrize("op", SEQUENCE_OPS)
def test_init_params_honours_the_dtype_and_rounds_the_same_draws(op: str) -> None:
    wide = rnnspec.init_params(op, input_size=3, hidden_size=4, num_layers=2, dtype="float64", seed=5)
    narrow = rnnspec.init_params(op, input_size=3, hidden_size=4, num_layers=2, dtype="float32", seed=5)
    for w, n in zip(wide, narrow, strict=True):
        for key in w:
            assert w[key].dtype == np.float64
            assert n[key].dtype == np.float32
            np.testing.assert_array_equal(n[key], w[key].astype(np.float32))


def test_init_params_accepts_numpy_integer_sizes() -> None:
    params = rnnspec.init_params("gru", input_size=np.int64(3), hidden_size=np.int32(4), num_layers=np.uint8(2))
    assert [p["w_ih"].shape for p in params] == [(12, 3), (12, 4)]


def test_init_params_rejects_a_dtype_outside_float32_and_float64() -> None:
    with pytest.raises(OptionError, match=r"^init_params: argument dtype: expected 'float32' or 'float64'") as info:
        rnnspec.init_params("lstm", input_size=3, hidden_size=4, dtype="float16")
    assert isinstance(info.value, ValueError)
    assert info.value.actual == "'float16'"


@pytest.mark.parametrize(("op", "option"), [("lstm", "foo"), ("lstm", "activation"), ("rnn", "reset_after")])
def test_init_params_rejects_an_unknown_option(op: str, option: str) -> None:
    with pytest.raises(UnknownArgumentError, match=rf"^init_params: argument {option}: expected an option of '{op}'"):
        rnnspec.init_params(op, input_size=3, hidden_size=4, **{option: True})


@pytest.mark.parametrize(
    ("op", "option", "value"),
    [("rnn", "activation", "sigmoid"), ("gru", "reset_after", "yes"), ("gru", "reset_after", 0)],
)
def test_init_params_rejects_a_bad_option_value(op: str, option: str, value: Any) -> None:
    with pytest.raises(OptionError, match=rf"^init_params: argument {option}: ") as info:
        rnnspec.init_params(op, input_size=3, hidden_size=4, **{option: value})
    assert isinstance(info.value, ValueError)
    assert info.value.actual == repr(value)


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("input_size", 0),
        ("input_size", -2),
        ("hidden_size", 0),
        ("hidden_size", 2.5),
        ("hidden_size", True),
        ("input_size", "3"),
        ("num_layers", 0),
        ("num_layers", None),
    ],
)
def test_init_params_rejects_a_size_that_is_not_a_positive_integer(argument: str, value: Any) -> None:
    sizes: dict[str, Any] = {"input_size": 3, "hidden_size": 4, "num_layers": 1, argument: value}
    with pytest.raises(ShapeError, match=r"^init_params: argument ") as info:
        rnnspec.init_params("lstm", **sizes)
    assert isinstance(info.value, ValueError)
    assert (info.value.op, info.value.argument, info.value.expected, info.value.actual) == (
        "init_params",
        argument,
        "a positive integer",
        repr(value),
    )


def test_init_params_rejects_an_op_outside_the_spec() -> None:
    with pytest.raises(UnknownArgumentError, match=r"^init_params: argument op: ") as info:
        rnnspec.init_params("conv", input_size=3, hidden_size=4)
    assert isinstance(info.value, TypeError)
    assert info.value.actual == "'conv'"


# -- sizes and dtypes the layouts alone do not fix -------------------------------------


@pytest.mark.parametrize("layer", [0, 1])
def test_a_qrnn_window_of_width_zero_is_a_parameter_error_naming_w(layer: int) -> None:
    params = rnnspec.init_params("qrnn", input_size=INPUT, hidden_size=HIDDEN, num_layers=2, window=2)
    params[layer]["w"] = params[layer]["w"][..., :0]
    x = np.zeros((BATCH, TIME, INPUT), np.float32)
    with pytest.raises(ParameterError) as info:
        rnnspec.get_backend("numpy").qrnn(x, params)
    assert (info.value.argument, info.value.actual) == (f"params[{layer}]['w']", f"shape {params[layer]['w'].shape}")
    assert "K >= 1" in info.value.expected


@pytest.mark.parametrize(("op", "dtype"), [("linear_recurrence", np.int32), ("indrnn_recurrence", np.complex64)])
def test_a_primitives_first_array_of_a_non_floating_dtype_reads_like_x_of_a_sequence_op(op: str, dtype: type) -> None:
    backend = rnnspec.get_backend("numpy")
    first = np.zeros((BATCH, TIME, HIDDEN), dtype)
    second = np.zeros((BATCH, TIME, HIDDEN) if op == "linear_recurrence" else (HIDDEN,), np.float32)
    with pytest.raises(DtypeError) as primitive:
        getattr(backend, op)(first, second)
    call = good_call("lstm")
    with pytest.raises(DtypeError) as sequence:
        backend.lstm(call.args[0].astype(dtype), call.params)
    assert primitive.value.expected == sequence.value.expected
    assert primitive.value.actual == sequence.value.actual == f"dtype {np.dtype(dtype).name}"


def test_a_zoneout_mask_that_is_no_array_of_the_backend_names_the_backends_array_type() -> None:
    params = rnnspec.init_params("qrnn", input_size=INPUT, hidden_size=HIDDEN)
    x = np.zeros((BATCH, TIME, INPUT), np.float32)
    with pytest.raises(ShapeError) as info:
        rnnspec.get_backend("numpy").qrnn(x, params, zoneout_mask=0.5)
    assert info.value.argument == "zoneout_mask"
    assert info.value.expected.startswith("None, a numpy array (batch, time, H)")


# -- the cotangents of vjp: checked in the spec layer, for every backend ----------------


class RecordingReference(Reference):
    """The reference, recording what its reverse mode is handed: a backend whose vjp reads
    cotangents without checking them (as torch's, jax's and TensorFlow's autodiff do)."""

    def __init__(self) -> None:
        self.handed: list[Mapping[str, Any]] = []

    def vjp(self, op: str, arguments: dict[str, Any], cotangents: Mapping[str, Any]) -> dict[str, Any]:
        self.handed.append(cotangents)
        return super().vjp(op, arguments, cotangents)


def recording_backend() -> tuple[rnnspec.Backend, RecordingReference]:
    implementation = RecordingReference()
    return rnnspec.Backend("recording", implementation, version="test"), implementation


def vjp_call(op: str) -> tuple[list[Any], dict[str, Any], Any]:
    """A valid float32 call of ``op`` (two layers where the op stacks) and its result."""
    rng = np.random.default_rng(3)
    if OPS[op].kind == "primitive":
        first = rng.standard_normal((BATCH, TIME, HIDDEN)).astype(np.float32)
        second = first if op == "linear_recurrence" else np.ones(HIDDEN, np.float32)
        args: list[Any] = [first, second]
    else:
        layers = 1 if op == "act" else LAYERS
        x = rng.standard_normal((BATCH, TIME, INPUT)).astype(np.float32)
        args = [x, rnnspec.init_params(op, input_size=INPUT, hidden_size=HIDDEN, num_layers=layers, seed=2)]
    kwargs = {"lengths": np.array([TIME, 3])}
    return args, kwargs, getattr(rnnspec.get_backend("numpy"), op)(*args, **kwargs)


def ones_like(a: np.ndarray, shape: tuple[int, ...] | None = None, dtype: Any = None) -> np.ndarray:
    return np.ones(a.shape if shape is None else shape, a.dtype if dtype is None else dtype)


def _state_with(result: Any, layer: int, **entries: Any) -> list[dict[str, Any]]:
    state = [{k: ones_like(v) for k, v in s.items()} for s in result.state]
    state[layer].update(entries)
    return state


#: (op, what, cotangents from the result, error, argument, actual)
BAD_COTANGENTS: list[tuple[str, str, Callable[[Any], Any], type[CallError], str, str]] = [
    ("gru", "a misspelt field", lambda r: {"output": ones_like(r.outputs)}, UnknownArgumentError, "cotangents",
     "a key 'output'"),
    ("linear_recurrence", "a field a primitive has not", lambda r: {"outputs": ones_like(r)}, UnknownArgumentError,
     "cotangents", "a key 'outputs'"),
    ("act", "a misspelt ponder field", lambda r: {"ponder_step": ones_like(r.ponder_cost)}, UnknownArgumentError,
     "cotangents", "a key 'ponder_step'"),
    ("gru", "an unknown state entry", lambda r: {"state": _state_with(r, 1, c=ones_like(r.state[1]["h"]))},
     UnknownArgumentError, "cotangents['state'][1]", "a key 'c'"),
    ("lstm", "a state cotangent for an extra layer", lambda r: {"state": [*_state_with(r, 0), {}]}, ShapeError,
     "cotangents['state']", "a sequence of length 3"),
    ("act", "a state cotangent for a second layer", lambda r: {"state": [{}, {}]}, ShapeError, "cotangents['state']",
     "a sequence of length 2"),
    ("gru", "a state that is one mapping for two layers", lambda r: {"state": {"h": ones_like(r.state[0]["h"])}},
     ShapeError, "cotangents['state']", "dict"),
    ("gru", "a state layer that is an array", lambda r: {"state": [ones_like(r.state[0]["h"]), {}]}, ShapeError,
     "cotangents['state'][0]", "numpy.ndarray"),
    ("qrnn", "outputs of shape (B, T, 1), which broadcasts", lambda r: {"outputs": ones_like(r.outputs, (2, 5, 1))},
     ShapeError, "cotangents['outputs']", "shape (2, 5, 1)"),
    ("linear_recurrence", "h of shape (B, T, 1), which broadcasts", lambda r: {"h": ones_like(r, (2, 5, 1))},
     ShapeError, "cotangents['h']", "shape (2, 5, 1)"),
    ("lstm", "a cell state of another hidden size", lambda r: {"state": _state_with(r, 1, c=ones_like(r.outputs,
     (2, 5)))}, ShapeError, "cotangents['state'][1]['c']", "shape (2, 5)"),
    ("skip_gru", "the top layer's update_prob of shape (B,)", lambda r: {"state": _state_with(r, 1,
     update_prob=ones_like(r.outputs, (2,)))}, ShapeError, "cotangents['state'][1]['update_prob']", "shape (2,)"),
    ("skip_rnn", "update_gate of shape (B, T, H)", lambda r: {"update_gate": ones_like(r.outputs)}, ShapeError,
     "cotangents['update_gate']", "shape (2, 5, 4)"),
    ("rnn", "outputs as a list", lambda r: {"outputs": r.outputs.tolist()}, DtypeError, "cotangents['outputs']",
     "an object of type list"),
    ("indrnn", "outputs of an integer dtype", lambda r: {"outputs": ones_like(r.outputs, dtype=np.int64)},
     DtypeError, "cotangents['outputs']", "dtype int64"),
    ("rnn", "cotangents that are a list", lambda r: [ones_like(r.outputs)], ShapeError, "cotangents", "list"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("op", "make", "error", "argument", "actual"),
    [pytest.param(op, make, error, argument, actual, id=f"{op}: {what}") for op, what, make, error, argument, actual
     in BAD_COTANGENTS],
)  # fmt: skip
def test_vjp_refuses_cotangents_outside_the_results_structure_before_the_backend_runs(
    op: str, make: Callable[[Any], Any], error: type[CallError], argument: str, actual: str
) -> None:
    args, kwargs, result = vjp_call(op)
    backend, implementation = recording_backend()
    with pytest.raises(error) as info:
        backend.vjp(op, make(result), *args, **kwargs)
    assert (info.value.op, info.value.argument, info.value.actual, info.value.backend) == (
        op,
        argument,
        actual,
        "recording",
    )
    assert implementation.handed == []


def test_a_cotangents_expected_shape_names_the_result_field_it_belongs_to() -> None:
    args, kwargs, result = vjp_call("qrnn")
    with pytest.raises(ShapeError) as info:
        rnnspec.get_backend("numpy").vjp("qrnn", {"outputs": ones_like(result.outputs, (2, 5, 1))}, *args, **kwargs)
    assert str(info.value) == (
        "qrnn [backend 'numpy']: argument cotangents['outputs']: expected shape (2, 5, 4) (batch, time, H), "
        "the shape of the result's outputs, got shape (2, 5, 1)"
    )


def test_vjp_hands_the_backend_its_cotangents_normalised_and_without_absent_entries() -> None:
    args, kwargs, result = vjp_call("lstm")
    backend, implementation = recording_backend()
    d_c = ones_like(result.state[1]["c"])
    d_out = ones_like(result.outputs).astype(np.float64)  # another floating dtype: cast by the backend
    grads = backend.vjp("lstm", {"outputs": d_out, "state": [None, {"h": None, "c": d_c}]}, *args, **kwargs)
    (handed,) = implementation.handed
    assert set(handed) == {"outputs", "state"}
    assert handed["outputs"] is d_out
    assert type(handed["state"]) is tuple
    assert handed["state"][0] == {}
    assert list(handed["state"][1]) == ["c"]
    assert handed["state"][1]["c"] is d_c
    want = rnnspec.get_backend("numpy").vjp("lstm", {"outputs": d_out, "state": [{}, {"c": d_c}]}, *args, **kwargs)
    assert_same_tree(grads, want)


def test_a_single_layers_state_cotangent_may_be_one_mapping_as_its_initial_state_may() -> None:
    args, kwargs, result = vjp_call("act")
    d_h = ones_like(result.state[0]["h"])
    backend, implementation = recording_backend()
    as_mapping = backend.vjp("act", {"state": {"h": d_h}}, *args, **kwargs)
    assert implementation.handed[0]["state"] == ({"h": d_h},)
    assert_same_tree(as_mapping, backend.vjp("act", {"state": [{"h": d_h}]}, *args, **kwargs))


# -- sizes every backend can run --------------------------------------------------------


def _zero_sized_params(op: str, *, input_size: int, hidden_size: int, layers: int = 1) -> list[dict[str, Any]]:
    """Params of ``op`` by the record's layout, of any sizes (init_params takes only positive ones)."""
    spec = OPS[op]
    options = {"cell": "rnn"} if op == "act" else {}
    params = []
    for k in range(layers):
        dims = {**spec.fixed_dims(options), "I": input_size if k == 0 else HIDDEN, "H": hidden_size, "K": 2}
        if k < layers - 1:
            dims["H"] = HIDDEN
        top = k == layers - 1
        layout = spec.layer_params(top=top, options=options)
        params.append({p.name: np.zeros([evaluate(e, dims) for e in p.shape], np.float32) for p in layout})
    return params


@pytest.mark.parametrize("op", ["rnn", "lstm", "gru", "skip_lstm", "act", "indrnn", "qrnn"])
@pytest.mark.parametrize("layers", [1, 2])
def test_a_layer_of_hidden_size_zero_is_a_parameter_error_naming_the_hidden_size(op: str, layers: int) -> None:
    if op == "act" and layers == 2:
        pytest.skip("act takes one layer")
    params = _zero_sized_params(op, input_size=INPUT, hidden_size=0, layers=layers)
    x = np.zeros((BATCH, TIME, INPUT), np.float32)
    with pytest.raises(ParameterError) as info:
        getattr(rnnspec.get_backend("numpy"), op)(x, params)
    top = layers - 1
    first = next(iter(params[top]))
    want = (f"params[{top}][{first!r}]", f"shape {params[top][first].shape}")
    assert (info.value.argument, info.value.actual) == want
    assert "H >= 1 (the hidden size)" in info.value.expected


@pytest.mark.parametrize("op", ["rnn", "lstm", "gru", "skip_gru", "act", "indrnn", "qrnn"])
def test_x_without_input_features_is_a_shape_error_even_where_the_params_agree(op: str) -> None:
    params = _zero_sized_params(op, input_size=0, hidden_size=HIDDEN)
    x = np.zeros((BATCH, TIME, 0), np.float32)
    with pytest.raises(ShapeError) as info:
        getattr(rnnspec.get_backend("numpy"), op)(x, params)
    assert (info.value.argument, info.value.actual) == ("x", f"shape {x.shape}")
    assert "input_size >= 1" in info.value.expected


@pytest.mark.parametrize("op", ["linear_recurrence", "indrnn_recurrence"])
def test_a_primitive_over_zero_features_runs_and_gives_empty_results(op: str) -> None:
    first = np.zeros((BATCH, TIME, 0), np.float32)
    second = first if op == "linear_recurrence" else np.zeros(0, np.float32)
    assert getattr(rnnspec.get_backend("numpy"), op)(first, second).shape == (BATCH, TIME, 0)


# -- option values ------------------------------------------------------------------------


@pytest.mark.parametrize("value", [2**31, 2**63, np.int64(2**40), np.uint64(2**63)])
def test_act_refuses_max_steps_beyond_what_a_32_bit_loop_counter_holds(value: Any) -> None:
    x, params = vjp_call("act")[0]
    with pytest.raises(OptionError) as info:
        rnnspec.get_backend("numpy").act(x, params, max_steps=value)
    assert (info.value.argument, info.value.actual) == ("max_steps", repr(value))
    assert info.value.expected == "an integer in [1, 2**31 - 1]"


def test_act_takes_the_largest_max_steps_a_32_bit_loop_counter_holds() -> None:
    x, params = vjp_call("act")[0]
    result = rnnspec.get_backend("numpy").act(x, params, max_steps=2**31 - 1)
    assert result.ponder_steps.max() >= 1


@pytest.mark.parametrize(
    ("op", "option", "numpy_value", "value"),
    [
        ("gru", "reset_after", np.False_, False),
        ("skip_gru", "reset_after", np.True_, True),
        ("rnn", "activation", np.str_("relu"), "relu"),
        ("act", "cell", np.str_("gru"), "gru"),
        ("act", "max_steps", np.int32(3), 3),
        ("lstm", "checkpoint_every", np.int64(2), 2),
        ("qrnn", "mode", np.str_("ifo"), "ifo"),
    ],
)
def test_options_take_numpy_scalars_and_hand_the_backend_the_python_value(
    op: str, option: str, numpy_value: Any, value: Any
) -> None:
    backend = rnnspec.get_backend("numpy")
    x = np.ones((BATCH, TIME, INPUT), np.float32)
    params = rnnspec.init_params(op, input_size=INPUT, hidden_size=HIDDEN, **{option: value})
    normalised = backend.check_call(op, x, params, **{option: numpy_value})
    assert type(normalised[option]) is type(value)
    assert normalised[option] == value
    got = getattr(backend, op)(x, params, **{option: numpy_value})
    assert_same_tree(got, getattr(backend, op)(x, params, **{option: value}))


@pytest.mark.parametrize(("option", "value"), [("reset_after", np.int64(1)), ("reset_after", np.float64(0.0))])
def test_a_numpy_number_is_no_bool_option_value(option: str, value: Any) -> None:
    call = good_call("gru")
    with pytest.raises(OptionError) as info:
        rnnspec.get_backend("numpy").gru(*call.args, **{option: value})
    assert info.value.actual == repr(value)


# -- from_numpy ----------------------------------------------------------------------------


@pytest.mark.parametrize("framework", ["torch", "jax", "tensorflow"])
def test_from_numpy_takes_arrays_of_either_byte_order(framework: str) -> None:
    pytest.importorskip(framework)
    backend = rnnspec.get_backend(framework)
    x = np.arange(BATCH * TIME * INPUT, dtype=">f4").reshape(BATCH, TIME, INPUT)
    params = {k: v.astype(v.dtype.newbyteorder(">")) for k, v in rnnspec.init_params("gru", input_size=INPUT,
              hidden_size=HIDDEN)[0].items()}  # fmt: skip
    converted = backend.from_numpy(x)
    assert backend.implementation.dtype_name(converted) == "float32"
    np.testing.assert_array_equal(backend.to_numpy(converted), x)
    got = backend.to_numpy(backend.gru(converted, backend.from_numpy(params)))
    want = rnnspec.get_backend("numpy").gru(x.astype(np.float32), {k: v.astype(np.float32) for k, v in params.items()})
    np.testing.assert_allclose(got.outputs, want.outputs, rtol=1e-5, atol=1e-6)
