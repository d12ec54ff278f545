"""Converters between ``torch.nn.RNN``/``LSTM``/``GRU`` (and their cells) and canonical params.

rnnspec's canonical layout *is* PyTorch's (``w_ih`` = ``weight_ih_l{k}``, gate
blocks in the same order), so conversion renames and copies; it never
reorders. torch is imported only inside :func:`to_torch`; :func:`from_torch`
reads any module with PyTorch's attributes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np

from rnnspec.errors import OptionError, ParameterError

from ._classic import classic_params

__all__ = ["from_torch", "module_op", "to_torch"]

_MODES = {"RNN_TANH": "rnn", "RNN_RELU": "rnn", "LSTM": "lstm", "GRU": "gru"}
#: The class of torch.nn of each op.
_CLASSES = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}
#: The directions of a bidirectional module's params (``direction="both"``), forward first.
_DIRECTIONS = ("forward", "reverse")
_NAMES = (("w_ih", "weight_ih"), ("w_hh", "weight_hh"), ("b_ih", "bias_ih"), ("b_hh", "bias_hh"))
#: torch.nn's cell classes (one step of one layer, parameters without the ``_l{k}`` suffix) and their ops.
_CELLS = {"RNNCell": "rnn", "LSTMCell": "lstm", "GRUCell": "gru"}


def _cell_op(module: Any) -> tuple[str, dict[str, Any]] | None:
    """The op and options of a ``torch.nn.RNNCell``, ``LSTMCell`` or ``GRUCell``; None for anything else."""
    op = _CELLS.get(type(module).__name__)
    if op is None or not hasattr(module, "weight_ih"):
        return None
    return op, ({"activation": module.nonlinearity} if op == "rnn" else {})


def _to_numpy(tensor: Any) -> np.ndarray:
    t = tensor.detach().cpu()
    if str(t.dtype) in ("torch.bfloat16", "torch.float16"):
        t = t.float()  # NumPy has no bfloat16; float32 holds both exactly
    return np.array(t.numpy())  # a copy, never a view of the module's storage


def module_op(module: Any) -> tuple[str, dict[str, Any]]:
    """The op of a ``torch.nn.RNN``, ``LSTM`` or ``GRU`` and the options it runs with.

    ``rnn`` with ``activation=module.nonlinearity``, ``lstm``, or ``gru`` (torch's resets after the matmul,
    ``reset_after=True``, the op's default).

    Raises
    ------
    ParameterError
        ``module`` is none of them.
    """
    mode = getattr(module, "mode", None)
    if mode not in _MODES:
        raise ParameterError("from_torch", "module", "a torch.nn.RNN, LSTM or GRU", type(module).__name__)
    op = _MODES[mode]
    return op, ({"activation": module.nonlinearity} if op == "rnn" else {})


def from_torch(module: Any, *, direction: str | None = None) -> list[dict[str, np.ndarray]]:
    """Canonical params (one dict of NumPy arrays per layer) of a torch RNN module.

    Parameters
    ----------
    module
        A ``torch.nn.RNN``, ``LSTM`` or ``GRU`` (any number of layers). Its op is
        ``rnn`` (with ``activation=module.nonlinearity``), ``lstm`` or ``gru``
        (``reset_after=True``). A module without biases gives zero biases. Or a
        ``torch.nn.RNNCell``, ``LSTMCell`` or ``GRUCell``: one layer, what the
        rnnspec cells (``rnnspec.backends.torch.nn.LSTMCell``...) load.
    direction
        Which direction of a bidirectional module to read: ``"forward"``, or
        ``"reverse"`` (run it with ``reverse=True``), of a one-layer module;
        ``"both"``: ``{"forward": [...], "reverse": [...]}``, what a bidirectional
        layer of :mod:`rnnspec.backends.torch.nn` loads (a stacked module too,
        whose layers k > 0 read both directions: ``w_ih`` ``(gates * H, 2 * H)``).
        Required for a bidirectional module, so that no direction is dropped
        unnoticed. A unidirectional module has only ``"forward"`` (the default).

    Returns
    -------
    list of dict, or dict of two lists
        One dict per layer of NumPy arrays (``w_ih``, ``w_hh``, ``b_ih``,
        ``b_hh``), copies in the module's dtype: what the ``numpy`` backend and
        every layer's ``load_canonical`` take (for ``direction="both"``, one such
        list per direction). For the torch backend's ops, convert them with
        ``rnnspec.get_backend("torch").from_numpy(params)``.

    Raises
    ------
    ParameterError
        For modules rnnspec cannot express: ``proj_size > 0``, or one direction
        of a stacked bidirectional module (whose upper layers read both
        directions: read it with ``direction="both"``).
    """
    if _cell_op(module) is not None:
        if direction not in (None, "forward"):
            raise OptionError("from_torch", "direction", "None or 'forward' for a cell", repr(direction))
        return [_read_layer(module, "")]
    module_op(module)
    if getattr(module, "proj_size", 0):
        raise ParameterError("from_torch", "module", "an LSTM with proj_size=0", f"proj_size={module.proj_size}")
    bidirectional = bool(module.bidirectional)
    if direction is None and bidirectional:
        raise OptionError(
            "from_torch",
            "direction",
            "'forward' or 'reverse' for a bidirectional module (each direction converts to params of its own; "
            "call from_torch once per direction), or 'both' (the params of a bidirectional layer)",
            "None",
        )
    direction = "forward" if direction is None else direction
    if direction not in ("forward", "reverse", "both"):
        raise OptionError("from_torch", "direction", "'forward', 'reverse' or 'both'", repr(direction))
    if direction != "forward" and not bidirectional:
        raise OptionError("from_torch", "direction", "'forward' for a unidirectional module", repr(direction))
    if direction == "both":
        return {d: _direction_params(module, d) for d in ("forward", "reverse")}  # type: ignore[return-value]
    if bidirectional and module.num_layers > 1:
        raise ParameterError(
            "from_torch",
            "module",
            "one layer when bidirectional (upper layers of a stacked bidirectional module read both directions; "
            "read both with direction='both', the params of rnnspec's bidirectional layers)",
            f"num_layers={module.num_layers}, bidirectional=True",
        )
    return _direction_params(module, direction)


def _direction_params(module: Any, direction: str) -> list[dict[str, np.ndarray]]:
    """The params of one direction of ``module``, one dict per layer."""
    suffix = "_reverse" if direction == "reverse" else ""
    return [_read_layer(module, f"_l{k}{suffix}") for k in range(module.num_layers)]


def _read_layer(module: Any, suffix: str) -> dict[str, np.ndarray]:
    """The params of the layer whose torch attributes end in ``suffix`` (``"_l0"``; ``""`` for a cell)."""
    layer = {}
    for ours, theirs in _NAMES:
        tensor = getattr(module, f"{theirs}{suffix}", None)
        if tensor is None:  # bias=False
            weight = _to_numpy(getattr(module, f"weight_ih{suffix}"))
            layer[ours] = np.zeros((weight.shape[0],), dtype=weight.dtype)
        else:
            layer[ours] = _to_numpy(tensor)
    return layer


def to_torch(
    params: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    op: str,
    *,
    activation: str = "tanh",
    reset_after: bool = True,
    batch_first: bool = True,
    bias: bool = True,
    cell: bool = False,
) -> Any:
    """A ``torch.nn.RNN``/``LSTM``/``GRU`` holding canonical ``params`` (``cell=True``: its cell).

    Parameters
    ----------
    params
        One mapping or one mapping per layer, NumPy arrays (or anything
        ``np.asarray`` takes), in the layout of ``op``; or
        ``{"forward": [...], "reverse": [...]}``, one list per direction (what
        ``from_torch(module, direction="both")`` and a bidirectional layer give),
        for a bidirectional module, whose layers k > 0 read both directions.
    op
        ``"rnn"``, ``"lstm"`` or ``"gru"``.
    activation
        For ``rnn``: ``"tanh"`` or ``"relu"``.
    reset_after
        For ``gru``: torch implements only ``True``; ``False`` raises.
    batch_first
        Passed to the module (rnnspec's own ops are always batch-first).
    bias
        False: a module without biases (``bias=False``), for params whose biases are all zero.
    cell
        True: a ``torch.nn.RNNCell``/``LSTMCell``/``GRUCell`` (one step) of the params of one layer
        (``batch_first`` is ignored).

    Raises
    ------
    OptionError
        Another op, or options torch cannot express.
    ParameterError
        A missing key or a misshapen array; with ``bias=False``, a bias that is not zero.
    """
    import torch

    bidirectional = isinstance(params, Mapping) and sorted(params) == sorted(_DIRECTIONS)
    if bidirectional:
        both = cast(Mapping[str, Any], params)
        directions = {d: classic_params("to_torch", both[d], op, activation=activation) for d in _DIRECTIONS}
        if len(directions["forward"]) != len(directions["reverse"]):
            expected = f"{len(directions['forward'])} layers, as params['forward']"
            raise ParameterError("to_torch", "params['reverse']", expected, f"{len(directions['reverse'])} layers")
    else:
        directions = {"forward": classic_params("to_torch", params, op, activation=activation)}
    if cell and (bidirectional or len(directions["forward"]) != 1):
        actual = "two directions" if bidirectional else f"{len(directions['forward'])} layers"
        raise ParameterError("to_torch", "params", "the params of one layer (cell=True)", actual)
    if op == "gru" and reset_after is not True:
        raise OptionError("to_torch", "reset_after", "True (torch's GRU resets after the matmul)", repr(reset_after))
    names = _NAMES if bias else _NAMES[:2]
    for direction, arrays in directions.items():
        where = f"params[{direction!r}]" if bidirectional else "params"
        for k, layer in enumerate(arrays):
            for ours, _ in _NAMES[len(names) :]:
                if np.any(layer[ours]):
                    expected = "zeros (a module without biases cannot hold others)"
                    raise ParameterError("to_torch", f"{where}[{k}][{ours!r}]", expected, "a non-zero bias")
    arrays = directions["forward"]
    first = arrays[0]
    kwargs: dict[str, Any] = {}
    if op == "rnn":
        kwargs["nonlinearity"] = activation
    dtype = getattr(torch, str(first["w_ih"].dtype))
    if cell:
        shape = first["w_ih"].shape[1], first["w_hh"].shape[1]
        module = getattr(torch.nn, f"{_CLASSES[op]}Cell")(*shape, bias=bias, dtype=dtype, **kwargs)
    else:
        module = getattr(torch.nn, _CLASSES[op])(
            input_size=first["w_ih"].shape[1],
            hidden_size=first["w_hh"].shape[1],
            num_layers=len(arrays),
            bias=bias,
            batch_first=batch_first,
            bidirectional=bidirectional,
            dtype=dtype,
            **kwargs,
        )
    with torch.no_grad():
        for direction, arrays in directions.items():
            suffix = "_reverse" if direction == "reverse" else ""
            where = f"params[{direction!r}]" if bidirectional else "params"
            for k, layer in enumerate(arrays):
                for ours, theirs in names:
                    target = getattr(module, theirs if cell else f"{theirs}_l{k}{suffix}")
                    if tuple(target.shape) != layer[ours].shape:
                        raise ParameterError(
                            "to_torch",
                            f"{where}[{k}][{ours!r}]",
                            f"shape {tuple(target.shape)}",
                            f"shape {layer[ours].shape}",
                        )
                    target.copy_(torch.from_numpy(np.array(layer[ours], dtype=layer[ours].dtype)))
    return module
