"""Converter from TensorFlow 1's ``tf.contrib.rnn.PhasedLSTMCell`` variables to canonical ``phased_lstm`` params.

TF1's cell keeps three dense maps of the concatenation ``[x, h_prev]``, each a
``kernel`` ``(I + H, n)`` (rows of ``x`` first, then of ``h_prev``) and a
``bias`` ``(n,)`` (``weights`` and ``biases`` in TF 1.0 and 1.1), under the
cell's variable scope, and the time gate's ``(H,)`` vectors beside them:

======================  =============  ===========================================
TF1 variable            shape          canonical
======================  =============  ===========================================
``mask_gates/kernel``   ``(I+H, 2H)``  gates ``i``, ``f`` (columns ``:H``, ``H:``)
``new_input/kernel``    ``(I+H, H)``   gate ``g`` (the candidate, through tanh)
``output_gate/kernel``  ``(I+H, H)``   gate ``o``
``*/bias``              ``(n,)``       ``b_ih`` blocks, in the same order
``period``              ``(H,)``       ``tau``
``phase``               ``(H,)``       ``s``
``ratio_on``            ``(H,)``       ``r_on``
======================  =============  ===========================================

The canonical layout is PyTorch's LSTM's, ``w_ih (4H, I)`` and ``w_hh (4H, H)`` with
the row blocks ``i, f, g, o``: each kernel's ``x`` rows, transposed, give
``w_ih``'s blocks and its ``h_prev`` rows ``w_hh``'s. TF1 has one bias per
gate, which enters the pre-activation where ``b_ih + b_hh`` does: it becomes
``b_ih``, with ``b_hh = 0``. TF1's ``cycle_ratio = mod(time - phase, period) /
period`` is the spec's ``phi`` (``tf.math.mod`` is the floor modulo), and its
``k`` and the mixing of the state are the spec's, with the cell's ``leak``
(a constructor argument, not a variable: pass the same ``leak`` to the op).

With ``use_peepholes=True`` TF1 appends ``c_prev`` to the mask gates' input and
the candidate cell state to the output gate's: ``H`` more kernel rows, a full
``(H, H)`` matrix per gate. rnnspec's peepholes are the paper's, one weight per
unit, so such a checkpoint converts only where those rows are exactly diagonal
(to ``w_peephole``, run with ``peepholes=True``); any other is refused.

tensorflow is imported only to read a checkpoint path.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from rnnspec.errors import DtypeError, MissingDependencyError, OptionError, ParameterError, ShapeError
from rnnspec.ops import OPS

__all__ = ["from_tf1_phased_lstm"]

_WHERE = "from_tf1_phased_lstm"
#: The dense maps of TF1's cell, in the canonical order of their gate blocks (mask_gates holds i and f).
_LINEARS = ("mask_gates", "new_input", "output_gate")
#: The names of a dense map's variables: TF >= 1.2 first, then TF 1.0 and 1.1's.
_KERNELS = ("kernel", "weights")
_BIASES = ("bias", "biases")
#: TF1's time-gate variables and their canonical names.
_TIME_GATE = (("period", "tau"), ("phase", "s"), ("ratio_on", "r_on"))
_STACK_CELL = re.compile(r"cell_(\d+)/")
_SHOWN = 8


class _CheckpointVariables(Mapping[str, Any]):
    """The variables of a checkpoint, read one at a time when asked for."""

    def __init__(self, reader: Any) -> None:
        self._reader = reader
        self._names = frozenset(reader.get_variable_to_shape_map())

    def __getitem__(self, name: str) -> Any:
        if name not in self._names:
            raise KeyError(name)
        return self._reader.get_tensor(name)

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._names))

    def __len__(self) -> int:
        return len(self._names)


def _read_checkpoint(path: str | os.PathLike[str]) -> Mapping[str, Any]:
    try:
        import tensorflow as tf
    except ImportError as err:
        raise MissingDependencyError(
            f"{_WHERE}: reading the checkpoint {os.fspath(path)!r} needs TensorFlow (pip install tensorflow-cpu); "
            "or pass a mapping of the variables' names to arrays"
        ) from err
    try:
        reader = tf.train.load_checkpoint(os.fspath(path))
    except (ValueError, tf.errors.OpError) as err:
        expected = "a TF1 checkpoint: its path prefix, or a directory with a 'checkpoint' file"
        raise ParameterError(_WHERE, "variables", expected, f"{os.fspath(path)!r} ({err})") from err
    return _CheckpointVariables(reader)


def _cell_scopes(variables: Mapping[Any, Any]) -> list[str]:
    """Every scope that holds a PhasedLSTMCell's ``mask_gates`` kernel, sorted."""
    suffixes = tuple(f"mask_gates/{kernel}" for kernel in _KERNELS)
    scopes = set()
    for name in variables:
        if not isinstance(name, str):
            continue
        for suffix in suffixes:
            if name == suffix or name.endswith("/" + suffix):
                scopes.add(name[: len(name) - len(suffix)])
    return sorted(scopes)


def _found(scopes: Sequence[str]) -> str:
    if not scopes:
        return "no variable named <scope>mask_gates/kernel: no PhasedLSTMCell among the variables"
    shown = ", ".join(repr(s) for s in scopes[:_SHOWN])
    more = f" and {len(scopes) - _SHOWN} more" if len(scopes) > _SHOWN else ""
    return f"the cells' scopes are {shown}{more}"


def _as_scope(prefix: str) -> str:
    return prefix if not prefix or prefix.endswith("/") else prefix + "/"


def _scopes(variables: Mapping[str, Any], prefix: str | Sequence[str]) -> list[str]:
    """The scope of each layer's variables, bottom first."""
    found = _cell_scopes(variables)
    if isinstance(prefix, str):
        scope = _as_scope(prefix)
        if scope in found:
            return [scope]
        # A stack's scope: cell_0/, cell_1/... under it, each holding one cell (MultiRNNCell's naming).
        stack: dict[int, list[str]] = {}
        for s in found:
            match = _STACK_CELL.match(s, len(scope)) if s.startswith(scope) else None
            if match is not None:
                stack.setdefault(int(match.group(1)), []).append(s)
        if stack and sorted(stack) == list(range(len(stack))) and all(len(v) == 1 for v in stack.values()):
            return [stack[k][0] for k in range(len(stack))]
        expected = (
            "the scope of a PhasedLSTMCell's variables (such as 'rnn/phased_lstm_cell/'), or of a stack whose "
            "cell_0/, cell_1/... scopes hold one cell each"
        )
        raise OptionError(_WHERE, "prefix", expected, f"{prefix!r}; {_found(found)}")
    if not isinstance(prefix, Sequence) or not prefix or not all(isinstance(p, str) for p in prefix):
        expected = "a string, or a non-empty sequence of strings (one scope per layer, bottom first)"
        raise OptionError(_WHERE, "prefix", expected, repr(prefix))
    scopes = [_as_scope(p) for p in prefix]
    for k, scope in enumerate(scopes):
        if scope not in found:
            raise OptionError(
                _WHERE, f"prefix[{k}]", "the scope of a PhasedLSTMCell's variables", f"{prefix[k]!r}; {_found(found)}"
            )
    return scopes


def _variable(variables: Mapping[str, Any], scope: str, names: Sequence[str]) -> tuple[str, np.ndarray]:
    """The first of ``scope + name`` present, as a NumPy array, with its full name; a floating array."""
    for name in names:
        full = scope + name
        if full in variables:
            array = np.asarray(variables[full])
            if not np.issubdtype(array.dtype, np.floating):
                raise DtypeError(_WHERE, f"variables[{full!r}]", "a floating array", f"dtype {array.dtype}")
            return full, array
    wanted = " or ".join(repr(scope + name) for name in names)
    raise ParameterError(_WHERE, "variables", f"a variable {wanted} (TF1's PhasedLSTMCell)", "none of that name")


def _check_shape(name: str, array: np.ndarray, shape: tuple[int, ...], what: str) -> None:
    if array.shape != shape:
        raise ShapeError(_WHERE, f"variables[{name!r}]", f"shape {shape} ({what})", f"shape {array.shape}")


def _diagonal(name: str, block: np.ndarray, gate: str, rows: str) -> np.ndarray:
    """The diagonal of a gate's ``(H, H)`` cell-state rows; refused unless every other entry is exactly zero."""
    off = int(np.count_nonzero(block - np.diag(np.diag(block))))
    if off:
        expected = (
            f"rows {rows} for the cell state (use_peepholes=True) that are zero off the diagonal in gate {gate}'s "
            "columns: phased_lstm's peepholes are one weight per unit (w_peephole), and TF1's full (H, H) "
            "cell-state matrix is another model, which rnnspec cannot express"
        )
        raise ParameterError(_WHERE, f"variables[{name!r}]", expected, f"{off} non-zero off-diagonal weights")
    return np.diag(block).copy()


def _layer(variables: Mapping[str, Any], scope: str) -> tuple[int, dict[str, np.ndarray], str]:
    """(input size, canonical params in the variables' dtypes, the name of its new_input kernel) of one cell."""
    gate_vars = {ours: _variable(variables, scope, (theirs,)) for theirs, ours in _TIME_GATE}
    period_name, period = gate_vars["tau"]
    if period.ndim != 1 or period.shape[0] == 0:
        raise ShapeError(_WHERE, f"variables[{period_name!r}]", "shape (H,) with H >= 1", f"shape {period.shape}")
    hidden = period.shape[0]
    for name, array in gate_vars.values():
        _check_shape(name, array, (hidden,), f"H = {hidden}, the length of {period_name!r}")
    kernels = {linear: _variable(variables, f"{scope}{linear}/", _KERNELS) for linear in _LINEARS}
    biases = {linear: _variable(variables, f"{scope}{linear}/", _BIASES) for linear in _LINEARS}
    name, new_input = kernels["new_input"]
    if new_input.ndim != 2 or new_input.shape[1] != hidden or new_input.shape[0] <= hidden:
        expected = f"shape (I + H, H) with H = {hidden} (the length of {period_name!r}) and I >= 1"
        raise ShapeError(_WHERE, f"variables[{name!r}]", expected, f"shape {new_input.shape}")
    inputs = new_input.shape[0] - hidden
    columns = {"mask_gates": 2 * hidden, "new_input": hidden, "output_gate": hidden}
    rows = {}
    for linear in _LINEARS:
        name, kernel = kernels[linear]
        allowed = [(inputs + hidden, columns[linear])]
        if linear != "new_input":
            allowed.append((inputs + 2 * hidden, columns[linear]))
        if kernel.shape not in allowed:
            what = " or ".join(str(s) for s in allowed)
            expected = (
                f"shape {what} (I + H rows for [x, h_prev], H more for the cell state; I = {inputs}, H = {hidden})"
            )
            raise ShapeError(_WHERE, f"variables[{name!r}]", expected, f"shape {kernel.shape}")
        rows[linear] = kernel.shape[0]
        bias_name, bias = biases[linear]
        _check_shape(bias_name, bias, (columns[linear],), f"the columns of {name!r}")
    peepholes = rows["mask_gates"] > inputs + hidden
    if peepholes != (rows["output_gate"] > inputs + hidden):
        name = kernels["output_gate"][0]
        expected = (
            f"{rows['mask_gates']} rows, as {kernels['mask_gates'][0]!r} (use_peepholes adds the cell state to both)"
        )
        raise ShapeError(_WHERE, f"variables[{name!r}]", expected, f"{rows['output_gate']} rows")
    mask, cand, out = (kernels[linear][1] for linear in _LINEARS)
    x_rows, h_rows = slice(0, inputs), slice(inputs, inputs + hidden)
    params = {
        "w_ih": np.concatenate([mask[x_rows].T, cand[x_rows].T, out[x_rows].T]),
        "w_hh": np.concatenate([mask[h_rows].T, cand[h_rows].T, out[h_rows].T]),
        "b_ih": np.concatenate([biases[linear][1] for linear in _LINEARS]),
    }
    params["b_hh"] = np.zeros_like(params["b_ih"])
    if peepholes:
        c_rows = slice(inputs + hidden, inputs + 2 * hidden)
        where = f"{inputs + hidden}:{inputs + 2 * hidden}"
        mask_name, out_name = kernels["mask_gates"][0], kernels["output_gate"][0]
        params["w_peephole"] = np.concatenate(
            [
                _diagonal(mask_name, mask[c_rows, :hidden], "i", where),
                _diagonal(mask_name, mask[c_rows, hidden:], "f", where),
                _diagonal(out_name, out[c_rows], "o", where),
            ]
        )
    for ours, (_, array) in gate_vars.items():
        params[ours] = array
    return inputs, params, kernels["new_input"][0]


def from_tf1_phased_lstm(
    variables: Mapping[str, Any] | str | os.PathLike[str],
    *,
    prefix: str | Sequence[str] = "",
    dtype: Any = None,
) -> list[dict[str, np.ndarray]]:
    """Canonical ``phased_lstm`` params (one dict of NumPy arrays per layer) of TF1 ``PhasedLSTMCell`` variables.

    Parameters
    ----------
    variables
        The variables by their full TF1 names: a mapping of names to arrays (what
        ``tf.train.load_checkpoint(path).get_tensor(name)`` gives, for instance
        ``{name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}``),
        or a checkpoint's path (its prefix, or a directory with a ``checkpoint``
        file), read with TensorFlow, imported only then. Other variables (the
        optimizer's slots, other layers) are ignored.
    prefix
        The scope of the cell's variables, with or without its final ``/``: the
        cell's kernels are ``prefix + "mask_gates/kernel"``... (``""``: at the top
        level; ``"rnn/phased_lstm_cell"`` for a cell run by ``tf.nn.dynamic_rnn``).
        For a stack, a sequence of such scopes, one per layer bottom first, or
        the scope of a stack whose ``cell_0/``, ``cell_1/``... scopes hold one
        cell each (``MultiRNNCell``'s naming), read in that order.
    dtype
        The dtype of every returned array; ``None``: the first layer's
        kernels' (their common dtype). TF1 makes ``period``, ``phase`` and ``ratio_on``
        float32 in any model (``get_variable``'s default), and a call of the op
        takes params of one dtype.

    Returns
    -------
    list of dict
        Per layer ``w_ih (4H, I)``, ``w_hh (4H, H)``, ``b_ih``, ``b_hh (4H,)``
        (row blocks ``i, f, g, o``; ``b_hh = 0``), then ``tau``, ``s``, ``r_on``
        ``(H,)``, copies. Where the cell had ``use_peepholes=True`` with exactly
        diagonal cell-state weights, also ``w_peephole (3H,)``: run those with
        ``peepholes=True``. The cell's ``leak`` is not a variable: pass it to the
        op (``leak=``; TF1's default 0.001, applied in every call).

    Raises
    ------
    rnnspec.errors.OptionError
        ``prefix`` names no cell's scope (the message lists the scopes found), or ``dtype`` is not a floating dtype.
    rnnspec.errors.ParameterError
        A variable of the cell is missing; a cell with ``use_peepholes=True``
        whose cell-state weights are not diagonal (TF1's full matrices, which
        ``phased_lstm``'s per-unit peepholes cannot express); an unreadable checkpoint.
    rnnspec.errors.ShapeError
        A variable of the wrong shape, or layers whose sizes do not chain.
    rnnspec.errors.DtypeError
        A variable that is not a floating array.
    rnnspec.errors.MissingDependencyError
        A checkpoint path without TensorFlow installed.
    """
    given: object = variables  # checked at run time whatever the annotation says
    if isinstance(given, str | os.PathLike):
        source = _read_checkpoint(given)
    elif isinstance(given, Mapping):
        source = given
    else:
        expected = "a mapping of TF1 variable names to arrays, or a checkpoint's path"
        raise ParameterError(_WHERE, "variables", expected, f"an object of type {type(given).__name__}")
    layers = [_layer(source, scope) for scope in _scopes(source, prefix)]
    if dtype is None:
        target = layers[0][1]["w_ih"].dtype
    else:
        try:
            target = np.dtype(dtype)
        except TypeError as err:
            raise OptionError(_WHERE, "dtype", "a floating dtype or None", repr(dtype)) from err
        if not np.issubdtype(target, np.floating):
            raise OptionError(_WHERE, "dtype", "a floating dtype or None", repr(dtype))
    spec = OPS["phased_lstm"]
    out = []
    previous: int | None = None
    for k, (inputs, params, kernel) in enumerate(layers):
        hidden = params["tau"].shape[0]
        if previous is not None and inputs != previous:
            expected = f"{previous} input rows (the hidden size of layer {k - 1}, whose output this layer reads)"
            raise ShapeError(_WHERE, f"variables[{kernel!r}]", expected, f"{inputs} input rows")
        previous = hidden
        order = spec.layer_params(top=True, options={"peepholes": "w_peephole" in params})
        out.append({p.name: params[p.name].astype(target) for p in order})
    return out
