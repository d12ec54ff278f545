"""Bad calls of the sequence ops, and init_params: every error is specific and says what is wrong."""

from __future__ import annotations

import copy
import pickle
import re
from collections.abc import Callable
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
