"""Converters between Flax NNX's own recurrent cells and canonical params.

Flax keeps one ``Linear`` per gate (``LSTMCell``) or one per input (the
others), with kernels laid out ``(in, out)``, and puts each bias on one side
only. The canonical layout is PyTorch's: ``w_ih (G*H, I)``, ``w_hh (G*H, H)``
and both biases, gate blocks stacked in the op's order. So conversion
transposes the kernels, stacks the gates in that order, and fills the bias
Flax does not have with zeros:

==========================  ====================  ============================================
Flax cell                   rnnspec op            biases
==========================  ====================  ============================================
``LSTMCell``                ``lstm``              ``b_hh`` from ``h{i,f,g,o}``; ``b_ih = 0``
``OptimizedLSTMCell``       ``lstm``              ``b_hh`` from ``dense_h``; ``b_ih = 0``
``GRUCell``                 ``gru`` (reset after) ``b_ih`` from ``dense_i``; ``b_hh = 0``
``SimpleCell``              ``rnn``               ``b_ih`` from ``dense_i``; ``b_hh = 0``
==========================  ====================  ============================================

Flax's GRU computes ``n = tanh(W_in x + b_in + r * (W_hn h))``: rnnspec's
``gru`` with ``reset_after=True`` and ``b_hn = 0``, exactly. A ``SimpleCell``
runs as ``rnn`` with ``activation`` ``"tanh"`` or ``"relu"``, as its
``activation_fn``. Flax's LSTM carry is ``(c, h)``; rnnspec's state is
``{"h": h, "c": c}``.

:func:`to_flax` goes back: a Flax cell holding one layer's canonical params. Where Flax has a
bias on one side only, both canonical biases enter the pre-activations outside every product (LSTM's
gates, GRU's ``r`` and ``z``, SimpleCell), so their sum is stored: the function is kept, the split of
the two biases is not. GRU's ``b_hn`` sits inside ``r * (W_hn h + b_hn)``, which Flax's GRU lacks: a
nonzero ``b_hn`` is refused.

flax is imported only inside :func:`from_flax` and :func:`to_flax`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rnnspec.errors import OptionError, ParameterError

from ._classic import classic_params

__all__ = ["from_flax", "to_flax"]

_WHERE = "from_flax"
_SUPPORTED = "a flax.nnx LSTMCell, OptimizedLSTMCell, GRUCell or SimpleCell (or an nnx.RNN of one)"


def _kernel(linear: Any) -> np.ndarray:
    """A Linear's kernel ``(in, out)`` as a canonical weight ``(out, in)``, copied to the host."""
    return np.array(np.asarray(linear.kernel[...]).T)


def _bias(linear: Any, rows: int, dtype: np.dtype) -> np.ndarray:
    bias = getattr(linear, "bias", None)
    if bias is None:  # use_bias=False
        return np.zeros((rows,), dtype)
    return np.array(np.asarray(bias[...]))


def _check_functions(cell: Any, allowed_activations: Sequence[str]) -> str:
    """The name of the cell's activation; refuse gate or activation functions the ops do not compute."""
    from flax import nnx  # type: ignore[import-not-found,unused-ignore]

    name = type(cell).__name__
    if hasattr(cell, "gate_fn") and cell.gate_fn is not nnx.sigmoid:
        raise ParameterError(_WHERE, f"{name}.gate_fn", "flax.nnx.sigmoid", repr(cell.gate_fn))
    activations = {"tanh": nnx.tanh, "relu": nnx.relu}
    for activation in allowed_activations:
        if cell.activation_fn is activations[activation]:
            return activation
    expected = " or ".join(f"flax.nnx.{a}" for a in allowed_activations)
    raise ParameterError(_WHERE, f"{name}.activation_fn", expected, repr(cell.activation_fn))


def _one(cell: Any) -> tuple[int, int, dict[str, np.ndarray]]:
    """(input size, hidden size, canonical params) of one cell."""
    from flax import nnx  # type: ignore[import-not-found,unused-ignore]

    name = type(cell).__name__
    if isinstance(cell, nnx.RNN):
        cell = cell.cell
        name = type(cell).__name__
    if isinstance(cell, nnx.LSTMCell):
        _check_functions(cell, ("tanh",))
        inputs = (cell.ii, cell.if_, cell.ig, cell.io)
        hidden = (cell.hi, cell.hf, cell.hg, cell.ho)
        w_ih = np.concatenate([_kernel(linear) for linear in inputs])
        w_hh = np.concatenate([_kernel(linear) for linear in hidden])
        b_hh = np.concatenate([_bias(linear, cell.hidden_features, w_hh.dtype) for linear in hidden])
        b_ih = np.zeros_like(b_hh)
    elif isinstance(cell, (nnx.OptimizedLSTMCell, nnx.GRUCell, nnx.SimpleCell)):
        _check_functions(cell, ("tanh", "relu") if isinstance(cell, nnx.SimpleCell) else ("tanh",))
        if getattr(cell, "residual", False):
            raise ParameterError(_WHERE, f"{name}.residual", "False (rnn has no residual connection)", "True")
        w_ih, w_hh = _kernel(cell.dense_i), _kernel(cell.dense_h)
        b_ih = _bias(cell.dense_i, w_ih.shape[0], w_ih.dtype)
        b_hh = _bias(cell.dense_h, w_hh.shape[0], w_hh.dtype)
    else:
        raise ParameterError(_WHERE, "cell", _SUPPORTED, name)
    params = {"w_ih": w_ih, "w_hh": w_hh, "b_ih": b_ih, "b_hh": b_hh}
    return int(cell.in_features), int(cell.hidden_features), params


def from_flax(cells: Any) -> list[dict[str, np.ndarray]]:
    """Canonical params (one dict of NumPy arrays per layer) of Flax NNX recurrent cells.

    Parameters
    ----------
    cells
        One cell, an ``nnx.RNN`` wrapping one, or a sequence of them stacked
        bottom first (each layer reads the hidden state of the one below). All
        of one class: ``LSTMCell`` / ``OptimizedLSTMCell`` give ``lstm`` params,
        ``GRUCell`` ``gru`` params (``reset_after=True``), ``SimpleCell`` ``rnn``
        params (run with the cell's ``activation``).

    Returns
    -------
    list of dict
        ``w_ih``, ``w_hh``, ``b_ih``, ``b_hh`` per layer, in the parameters' dtype.

    Raises
    ------
    rnnspec.errors.ParameterError
        Another kind of cell, a gate or activation function the ops do not
        compute, a ``SimpleCell`` with ``residual=True``.
    rnnspec.errors.OptionError
        Cells of different classes or activations, or sizes that do not chain.
    """
    single = hasattr(cells, "in_features") or hasattr(cells, "cell")
    stack = [cells] if single else list(cells)
    if not stack:
        raise OptionError(_WHERE, "cells", "at least one cell", "an empty sequence")
    layers = []
    kinds = []
    previous_hidden = None
    for k, cell in enumerate(stack):
        inner = getattr(cell, "cell", cell)
        kinds.append((type(inner).__name__, getattr(inner, "activation_fn", None)))
        input_size, hidden_size, params = _one(cell)
        if previous_hidden is not None and input_size != previous_hidden:
            expected = f"in_features {previous_hidden} (the hidden size of layer {k - 1})"
            raise OptionError(_WHERE, f"cells[{k}]", expected, f"in_features {input_size}")
        if kinds[k] != kinds[0]:
            expected = f"a {kinds[0][0]} with the activation of cells[0] ({kinds[0][1]!r})"
            raise OptionError(_WHERE, f"cells[{k}]", expected, f"a {kinds[k][0]} with {kinds[k][1]!r}")
        previous_hidden = hidden_size
        layers.append(params)
    return layers


#: The Flax cell class ``to_flax`` makes for each op by default, and the classes it can make.
_TO_FLAX = {"lstm": ("LSTMCell", "OptimizedLSTMCell"), "gru": ("GRUCell",), "rnn": ("SimpleCell",)}


def to_flax(
    params: Any,
    op: str,
    *,
    cell_class: str | None = None,
    activation: str = "tanh",
    reset_after: bool = True,
    rngs: Any = None,
) -> Any:
    """A Flax NNX cell holding the canonical params of one layer (the inverse of :func:`from_flax`).

    Parameters
    ----------
    params
        One mapping, or a sequence of one (one layer), of NumPy arrays (or anything ``np.asarray``
        takes) in the layout of ``op``: what ``cell.numpy_params()`` of an rnnspec NNX cell gives.
    op
        ``"lstm"`` (a ``LSTMCell``, or ``OptimizedLSTMCell`` by ``cell_class``), ``"gru"`` (a
        ``GRUCell``) or ``"rnn"`` (a ``SimpleCell``).
    cell_class
        The Flax class's name, one of those of ``op``; None: the first.
    activation
        For ``rnn``: ``"tanh"`` or ``"relu"``, the cell's ``activation_fn``.
    reset_after
        For ``gru``: Flax's GRU resets after the matmul; False raises.
    rngs
        The ``nnx.Rngs`` the cell is built with (its draws are overwritten); None: ``nnx.Rngs(0)``.

    Raises
    ------
    rnnspec.errors.OptionError
        Another op, class, activation or ``reset_after``.
    rnnspec.errors.ParameterError
        More than one layer, a missing key, a misshapen array, a GRU's nonzero ``b_hn``.
    """
    from flax import nnx  # type: ignore[import-not-found,unused-ignore]

    where = "to_flax"
    (layer,) = _one_layer(where, classic_params(where, params, op, activation=activation))
    classes = _TO_FLAX[op]
    name = classes[0] if cell_class is None else cell_class
    if name not in classes:
        raise OptionError(where, "cell_class", " or ".join(repr(c) for c in classes) + f" for {op}", repr(name))
    if op == "gru" and reset_after is not True:
        raise OptionError(where, "reset_after", "True (Flax's GRU resets after the matmul)", repr(reset_after))
    w_ih, w_hh, b_ih, b_hh = (layer[k] for k in ("w_ih", "w_hh", "b_ih", "b_hh"))
    hidden, inputs = w_hh.shape[1], w_ih.shape[1]
    rows = {"lstm": 4, "gru": 3, "rnn": 1}[op] * hidden
    for key, shape in {"w_ih": (rows, inputs), "w_hh": (rows, hidden), "b_ih": (rows,), "b_hh": (rows,)}.items():
        if layer[key].shape != shape:
            raise ParameterError(where, f"params[0][{key!r}]", f"shape {shape}", f"shape {layer[key].shape}")
    dtype = w_ih.dtype
    kwargs: dict[str, Any] = {"param_dtype": dtype, "rngs": nnx.Rngs(0) if rngs is None else rngs}
    if op == "rnn":
        kwargs["activation_fn"] = {"tanh": nnx.tanh, "relu": nnx.relu}[activation]
    cell = getattr(nnx, name)(inputs, hidden, **kwargs)
    if op == "gru":
        if np.any(b_hh[2 * hidden :]):
            raise ParameterError(where, "params[0]['b_hh']", "zeros in the n block (Flax's GRU has no b_hn)", "nonzero")
        biases = {"dense_i": b_ih + np.concatenate([b_hh[: 2 * hidden], np.zeros_like(b_hh[2 * hidden :])])}
        kernels = {"dense_i": w_ih, "dense_h": w_hh}
    elif name == "LSTMCell":
        gates = ("i", "f", "g", "o")
        kernels = {f"i{g}" if g != "f" else "if_": w_ih[j * hidden : (j + 1) * hidden] for j, g in enumerate(gates)}
        kernels |= {f"h{g}": w_hh[j * hidden : (j + 1) * hidden] for j, g in enumerate(gates)}
        bias = b_ih + b_hh
        biases = {f"h{g}": bias[j * hidden : (j + 1) * hidden] for j, g in enumerate(gates)}
    else:  # OptimizedLSTMCell: the bias on the hidden side; SimpleCell: on the input side
        kernels = {"dense_i": w_ih, "dense_h": w_hh}
        biases = {"dense_h" if op == "lstm" else "dense_i": b_ih + b_hh}
    for attribute, weight in kernels.items():
        getattr(cell, attribute).kernel[...] = np.array(weight.T, dtype=dtype)
    for attribute, bias in biases.items():
        getattr(cell, attribute).bias[...] = np.array(bias, dtype=dtype)
    return cell


def _one_layer(where: str, layers: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    if len(layers) != 1:
        raise ParameterError(where, "params", "the params of one layer (a cell)", f"{len(layers)} layers")
    return layers
