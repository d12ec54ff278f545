"""Converters between Keras 3's ``SimpleRNN``/``LSTM``/``GRU`` (and their cells) and canonical params.

Keras stores one layer's weights as ``kernel`` ``(I, G*H)``, ``recurrent_kernel``
``(H, G*H)`` and ``bias``; rnnspec's canonical layout is PyTorch's, ``w_ih``
``(G*H, I)`` and ``w_hh`` ``(G*H, H)`` with two biases. The gate blocks:

- LSTM: Keras i, f, c, o is the canonical i, f, g, o (the same order);
- GRU: Keras z, r, h becomes the canonical r, z, n (the first two blocks swap).
  ``reset_after=True`` (Keras 3's default) has ``bias`` ``(2, 3H)``, the input
  and recurrent biases, exactly ``b_ih`` and ``b_hh``; ``reset_after=False`` is
  Cho's placement, the spec's ``gru(reset_after=False)``, with one bias.

Where Keras has one bias (SimpleRNN, LSTM, GRU with ``reset_after=False``) it
enters the pre-activations exactly where ``b_ih + b_hh`` does, so
:func:`from_keras` gives ``b_ih = bias`` and ``b_hh = 0`` and :func:`to_keras`
stores ``b_ih + b_hh``: the function is kept, the split of the two biases is not.

Keras is imported only inside :func:`to_keras`; :func:`from_keras` reads any
layer with Keras' attributes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rnnspec.errors import OptionError, ParameterError

from ._classic import classic_params

__all__ = ["from_keras", "to_keras"]

#: Keras class name -> (rnnspec op, number of gate blocks G).
_CLASSES = {"SimpleRNN": ("rnn", 1), "LSTM": ("lstm", 4), "GRU": ("gru", 3)}
_KERAS_CLASSES = {op: name for name, (op, _) in _CLASSES.items()}
#: Keras' cell classes (``SimpleRNNCell``...) and their layers' names.
_CELLS = {f"{name}Cell": name for name in _CLASSES}


def _gru_swap(a: np.ndarray, hidden: int) -> np.ndarray:
    """Swap the first two gate blocks along axis 0 (Keras z, r, h <-> canonical r, z, n; its own inverse)."""
    return np.concatenate([a[hidden : 2 * hidden], a[:hidden], a[2 * hidden :]], axis=0)


def _activation_name(fn: Any) -> str:
    return str(getattr(fn, "__name__", fn))


def _layer_params(layer: Any, where: str) -> tuple[str, dict[str, np.ndarray]]:
    name = type(layer).__name__
    if name in _CELLS and hasattr(layer, "units"):  # a cell
        name, cell = _CELLS[name], layer
    elif name not in _CLASSES or not hasattr(layer, "cell"):
        raise ParameterError(where, "layer", "a keras.layers.SimpleRNN, LSTM or GRU, or its cell", name)
    else:
        cell = layer.cell
    op, gates = _CLASSES[name]
    if not getattr(cell, "built", False):
        raise ParameterError(where, "layer", "a built layer (call it once, or build it)", "an unbuilt layer")
    if getattr(layer, "go_backwards", False):
        raise ParameterError(where, "layer", "go_backwards=False", "go_backwards=True")
    activation = _activation_name(cell.activation)
    allowed = ("tanh", "relu") if op == "rnn" else ("tanh",)
    if activation not in allowed:
        raise ParameterError(where, "layer.activation", " or ".join(repr(a) for a in allowed), repr(activation))
    if op != "rnn" and _activation_name(cell.recurrent_activation) != "sigmoid":
        actual = repr(_activation_name(cell.recurrent_activation))
        raise ParameterError(where, "layer.recurrent_activation", "'sigmoid'", actual)
    kernel = np.array(cell.kernel.numpy())
    recurrent = np.array(cell.recurrent_kernel.numpy())
    hidden = recurrent.shape[0]
    rows = gates * hidden
    zeros = np.zeros((rows,), dtype=kernel.dtype)
    if cell.use_bias:
        bias = np.array(cell.bias.numpy())
        b_ih, b_hh = (bias[0], bias[1]) if bias.ndim == 2 else (bias, zeros)
    else:
        b_ih, b_hh = zeros, zeros.copy()
    params = {"w_ih": kernel.T.copy(), "w_hh": recurrent.T.copy(), "b_ih": b_ih.copy(), "b_hh": b_hh.copy()}
    if op == "gru":
        params = {k: _gru_swap(v, hidden) for k, v in params.items()}
    return op, params


def from_keras(layers: Any) -> list[dict[str, np.ndarray]]:
    """Canonical params (one dict of NumPy arrays per layer) of built Keras recurrent layers.

    Parameters
    ----------
    layers
        A ``keras.layers.SimpleRNN``, ``LSTM`` or ``GRU``, or a sequence of them
        of one class forming a stack (each reading the outputs of the one
        before). Their op is ``rnn`` (``activation`` as the layer's), ``lstm``
        or ``gru`` with ``reset_after`` as the layer's. Or their cells
        (``SimpleRNNCell``, ``LSTMCell``, ``GRUCell``), what the rnnspec Keras
        cells (``rnnspec.backends.tensorflow.keras.LSTMCell``...) load.

    Raises
    ------
    ParameterError
        For layers rnnspec cannot express: another class, activations other
        than Keras' defaults (relu is allowed for SimpleRNN), ``go_backwards``,
        an unbuilt layer, or a stack that mixes classes or GRU placements.
    """
    stack = list(layers) if isinstance(layers, Sequence) else [layers]
    if not stack:
        raise ParameterError("from_keras", "layers", "a layer or a non-empty sequence of layers", "an empty sequence")
    out = []
    first: tuple[Any, ...] | None = None
    for k, layer in enumerate(stack):
        _, params = _layer_params(layer, "from_keras")
        cell = getattr(layer, "cell", layer)
        kind = (type(layer).__name__, getattr(cell, "reset_after", None), _activation_name(cell.activation))
        if first is None:
            first = kind
        elif kind != first:
            expected = f"the class and options of layers[0] (class, reset_after, activation) = {first}"
            raise ParameterError("from_keras", f"layers[{k}]", expected, repr(kind))
        out.append(params)
    return out


def to_keras(
    params: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    op: str,
    *,
    activation: str = "tanh",
    reset_after: bool = True,
    return_sequences: bool = True,
    cells: bool = False,
) -> list[Any]:
    """Keras layers (one per layer of the stack) holding canonical ``params`` (``cells=True``: their cells).

    Parameters
    ----------
    params
        One mapping or one mapping per layer, NumPy arrays (or anything
        ``np.asarray`` takes), in the layout of ``op``.
    op
        ``"rnn"``, ``"lstm"`` or ``"gru"``.
    activation
        For ``rnn``: ``"tanh"`` or ``"relu"``.
    reset_after
        For ``gru``: the spec's option; False gives Keras' ``reset_after=False``.
    return_sequences
        Passed to every layer but the top one, which always returns sequences in a
        stack (the top's gets this value).
    cells
        True: Keras cells (``SimpleRNNCell``/``LSTMCell``/``GRUCell``), one per layer, built, for
        ``keras.layers.RNN`` (``return_sequences`` is ignored).

    Returns
    -------
    A list of built ``keras.layers.SimpleRNN``/``LSTM``/``GRU``, in the params' dtype:
    ``keras.Sequential(layers)`` runs the stack.
    """
    import keras

    stack = classic_params("to_keras", params, op, activation=activation)
    if op == "gru" and not isinstance(reset_after, bool):
        raise OptionError("to_keras", "reset_after", "True or False", repr(reset_after))
    gates = _CLASSES[_KERAS_CLASSES[op]][1]
    out = []
    for k, arrays in enumerate(stack):
        hidden = arrays["w_hh"].shape[1]
        rows = gates * hidden
        inputs = arrays["w_ih"].shape[1]
        want = {"w_ih": (rows, inputs), "w_hh": (rows, hidden), "b_ih": (rows,), "b_hh": (rows,)}
        for key, shape in want.items():
            if arrays[key].shape != shape:
                raise ParameterError(
                    "to_keras", f"params[{k}][{key!r}]", f"shape {shape}", f"shape {arrays[key].shape}"
                )
        if op == "gru":
            arrays = {key: _gru_swap(v, hidden) for key, v in arrays.items()}
        kwargs: dict[str, Any] = {}
        if op == "rnn":
            kwargs["activation"] = activation
        if op == "gru":
            kwargs["reset_after"] = reset_after
        top = k == len(stack) - 1
        dtype = str(arrays["w_ih"].dtype)
        if cells:
            keras_layer = getattr(keras.layers, f"{_KERAS_CLASSES[op]}Cell")(hidden, dtype=dtype, **kwargs)
            keras_layer.build((None, inputs))
        else:
            keras_layer = getattr(keras.layers, _KERAS_CLASSES[op])(
                hidden, return_sequences=return_sequences if top else True, dtype=dtype, **kwargs
            )
            keras_layer.build((None, None, inputs))
        if op == "gru" and reset_after:
            bias = np.stack([arrays["b_ih"], arrays["b_hh"]])
        else:
            # One Keras bias: both canonical biases enter the pre-activations outside every gate product.
            bias = arrays["b_ih"] + arrays["b_hh"]
        cell = keras_layer if cells else keras_layer.cell
        cell.kernel.assign(arrays["w_ih"].T.astype(dtype))
        cell.recurrent_kernel.assign(arrays["w_hh"].T.astype(dtype))
        cell.bias.assign(bias.astype(dtype))
        out.append(keras_layer)
    return out
