"""Converter from Flax NNX's own recurrent cells to canonical params.

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

flax is imported only inside :func:`from_flax`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rnnspec.errors import OptionError, ParameterError

__all__ = ["from_flax"]

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
