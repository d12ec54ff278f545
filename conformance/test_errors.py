"""Check "errors": every invalid call raises the error the spec decides, on every backend.

Each example draws a small valid call of the op and breaks it in every way
that applies to the op (:mod:`rnnspec.conformance.invalid_calls`): wrong ranks,
sizes that disagree between ``x``, ``params``, ``lengths``, ``initial_state``
and the zoneout mask, missing, unknown or misshapen parameters, non-floating
``x``, ``lengths`` out of range, unknown options and option values, a qrnn
window of width 0. The backend must raise exactly the :mod:`rnnspec.errors`
class that the reference raises for the same call (and that the spec decides,
which the reference is checked against), for the same argument, with a
message naming op, argument, expected, actual and the backend. Validation
happens in the spec layer before any framework code runs, so no framework
error may surface.

A backend with reverse mode (capability ``"vjp"``) also gets the valid call's
``vjp`` with broken cotangents: a misspelt field, an unknown state entry, a
state for another number of layers, a shape that broadcasts to the field's
(``(batch, time, 1)`` for ``(batch, time, H)``) or does not, a non-floating
dtype. A framework's autodiff would read the first three as zero cotangents
and broadcast the fourth, silently: each must be the reference's error.

Arrays of another framework (a NumPy array given to torch, a torch tensor
given to the NumPy reference) are refused the same way; where no other
framework is installed that test skips, saying so.
"""

from __future__ import annotations

__all__: list[str] = []  # a test module: pytest collects it, nothing to import

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import rnnspec
from rnnspec.backend import Backend
from rnnspec.errors import CallError, DtypeError, LengthsError, ShapeError
from rnnspec.ops import OPS

from .checks_common import dtypes_of
from .frameworks import foreign_maker
from .invalid_calls import InvalidCall, breakers_for, draw_base

pytestmark = pytest.mark.rnnspec_check("errors")

_REQUIRED = ("float32", "float64")


def _problem(bad: InvalidCall, backend: Backend, err: BaseException | None, want: type[CallError]) -> str | None:
    """What is wrong with ``err`` as the error of ``bad`` on ``backend`` (``None``: nothing)."""
    if err is None:
        return f"the call succeeded on backend {backend.name!r}; expected {want.__name__}"
    if type(err) is not want:
        raised = f"{type(err).__module__}.{type(err).__name__}"
        return f"backend {backend.name!r} raised {raised}: {err}; expected {want.__name__}"
    assert isinstance(err, CallError)
    if (err.op, err.backend) != (bad.op, backend.name):
        return f"the error names op {err.op!r} and backend {err.backend!r}: {err}"
    if not (err.argument and err.expected and err.actual):
        return f"the error leaves argument, expected or actual empty: {err}"
    line = f"{bad.op} [backend {backend.name!r}]: argument {err.argument}: expected {err.expected}, got {err.actual}"
    if str(err) != line:
        return f"the message is {str(err)!r}, not {line!r}"
    return None


def _assert_same_error(bad: InvalidCall, backend: Backend, reference: Backend) -> None:
    """``backend`` raises what ``reference`` raises for ``bad``, and that is the class the spec decides."""
    want = reference_err = bad.raised_by(reference)
    problem = _problem(bad, reference, reference_err, bad.error)
    if problem:
        raise AssertionError(f"the reference disagrees with the spec: {problem}\ncall: {bad.describe()}")
    got = bad.raised_by(backend)
    problem = _problem(bad, backend, got, bad.error)
    if problem is None:
        assert isinstance(got, CallError)
        assert isinstance(want, CallError)
        fields = ("argument",) if bad.worded_by_backend else ("argument", "expected", "actual")
        diff = [
            f"{f}: {getattr(got, f)!r} vs the reference's {getattr(want, f)!r}"
            for f in fields
            if getattr(got, f) != getattr(want, f)
        ]
        problem = "; ".join(diff) or None
    if problem:
        raise AssertionError(f"{problem}\nreference: {want}\ncall: {bad.describe()}")


@given(data=st.data())
def test_every_invalid_call_raises_the_references_error_naming_op_argument_and_backend(
    rnnspec_backend: Backend, op: str, data: st.DataObject
) -> None:
    """Each breaker that applies to the op, on one drawn base call per example."""
    reference = rnnspec.get_backend("numpy")
    base = draw_base(data, op, dtypes=[d for d in _REQUIRED if d in dtypes_of(rnnspec_backend)])
    reverse_mode = "vjp" in rnnspec_backend.implementation.capabilities
    for breaker in breakers_for(op):
        if breaker.reverse_mode and not reverse_mode:
            continue  # the cotangents of a vjp the backend does not have
        bad = breaker.draw(data, base)
        if bad is not None:
            _assert_same_error(bad, rnnspec_backend, reference)


# -- arrays of another framework ------------------------------------------------------


@pytest.fixture(scope="session")
def foreign(rnnspec_backend: Backend) -> tuple[str, Any]:
    """Another framework than the backend's, and a function making its arrays from NumPy ones."""
    found = foreign_maker(rnnspec_backend)
    if found is None:
        pytest.skip(
            f"no framework other than backend {rnnspec_backend.name!r}'s own is installed "
            "(torch, jax or tensorflow): no foreign array to pass"
        )
    return found


def _array_paths(bad: InvalidCall) -> list[tuple[Any, ...]]:
    """Where the call passes an array: ("args", i), ("args", 1, k, name), ("kwargs", name, ...)."""
    if OPS[bad.op].kind == "primitive":
        return [("args", i) for i, a in enumerate(bad.args) if a is not None]
    paths: list[tuple[Any, ...]] = [("args", 0)]
    paths += [("args", 1, k, name) for k, layer in enumerate(bad.args[1]) for name in layer]
    paths += [("kwargs", "initial_state", k, name) for k, s in enumerate(bad.kwargs["initial_state"]) for name in s]
    paths += [("kwargs", o.name) for o in OPS[bad.op].array_options if bad.kwargs.get(o.name) is not None]
    return paths


@given(data=st.data())
def test_an_array_of_another_framework_is_refused_naming_the_argument(
    rnnspec_backend: Backend, op: str, foreign: tuple[str, Any], data: st.DataObject
) -> None:
    """x, a parameter, a state entry or a primitive's array from another framework is a DtypeError;
    lengths a LengthsError, qrnn's zoneout mask a ShapeError (as any value of the wrong structure)."""
    framework, make = foreign
    base = draw_base(data, op, dtypes=[d for d in _REQUIRED if d in dtypes_of(rnnspec_backend)])
    bad = InvalidCall(op, "", list(base.args), dict(base.kwargs), DtypeError, worded_by_backend=True)
    paths = _array_paths(bad)
    array_options = {o.name for o in OPS[op].array_options}
    if framework == "list":  # lists are valid lengths, and a list of masks is qrnn's per-layer form
        paths = [p for p in paths if p[-1] not in array_options]
    elif framework != "numpy":  # NumPy lengths are every backend's own; another framework's are no one's
        paths.append(("kwargs", "lengths"))
    path = data.draw(st.sampled_from(paths), label="argument from another framework")
    value = bad.at(path)
    if path[-1] == "lengths":
        bad.error = LengthsError
    elif path[-1] in array_options:
        bad.error = ShapeError  # neither the backend's array nor a sequence: the structure is wrong

    def foreign_to(backend: Backend) -> Any:
        # For the backend under test, the other framework's array; for the reference, an array
        # foreign to NumPy: the other framework's, or (when that is NumPy) the backend's own.
        if backend is rnnspec_backend or framework != "numpy":
            return make(value)
        return rnnspec_backend.from_numpy(value)

    bad.what, bad.foreign = f"{'.'.join(map(str, path[1:]))} from {framework}", (path, foreign_to)
    _assert_same_error(bad, rnnspec_backend, rnnspec.get_backend("numpy"))
