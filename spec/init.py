"""``init_params``: reproducible parameter initialisation for every op.

Each op's parameters are initialised as its paper or reference framework does;
the shapes come from the op's record, so they always match what the op
accepts. The result is plain NumPy (convert with ``Backend.from_numpy``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .errors import OptionError, ShapeError, UnknownArgumentError
from .ops import OPS, OpSpec
from .shapes import evaluate

__all__ = ["init_params"]

#: An initialiser draws one parameter: (rng, param name, shape, layer sizes, options) -> float64 array.
Initialiser = Callable[[np.random.Generator, str, tuple[int, ...], Mapping[str, int], Mapping[str, Any]], np.ndarray]


def _uniform_fan_in(
    rng: np.random.Generator, name: str, shape: tuple[int, ...], dims: Mapping[str, int], options: Mapping[str, Any]
) -> np.ndarray:
    # PyTorch's nn.RNN/LSTM/GRU: every weight and bias ~ U(-1/sqrt(H), 1/sqrt(H)).
    bound = 1.0 / np.sqrt(dims["H"])
    return rng.uniform(-bound, bound, size=shape)


#: op name -> (initialiser, init-only options with their defaults)
_INITIALISERS: dict[str, tuple[Initialiser, dict[str, Any]]] = {
    "rnn": (_uniform_fan_in, {}),
    "lstm": (_uniform_fan_in, {}),
    "gru": (_uniform_fan_in, {}),
}


def _check_size(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ShapeError("init_params", name, "a positive integer", repr(value))
    return int(value)


def init_params(
    op: str,
    *,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    seed: int = 0,
    dtype: str = "float32",
    **options: Any,
) -> list[dict[str, np.ndarray]]:
    """Initial parameters for ``op``: one dict of NumPy arrays per layer.

    Parameters
    ----------
    op
        The op's name, such as ``"lstm"``.
    input_size, hidden_size, num_layers
        Sizes I and H of the first layer (later layers read H) and the depth.
    seed
        Seed of the generator; the same arguments give the same arrays.
    dtype
        ``"float32"`` (the default, what frameworks train in) or ``"float64"``.
    **options
        The op's keyword options that shape its parameters, and init options
        of the op (listed on its spec page).

    Examples
    --------
    >>> import rnnspec
    >>> params = rnnspec.init_params("lstm", input_size=3, hidden_size=8, num_layers=2)
    >>> [p["w_ih"].shape for p in params]
    [(32, 3), (32, 8)]
    """
    if op not in OPS or op not in _INITIALISERS:
        raise UnknownArgumentError("init_params", "op", f"one of {sorted(_INITIALISERS)}", repr(op))
    spec: OpSpec = OPS[op]
    initialiser, init_defaults = _INITIALISERS[op]
    op_defaults = {opt.name: opt.default for opt in spec.options}
    for key in options:
        if key not in op_defaults and key not in init_defaults:
            known = sorted({*op_defaults, *init_defaults})
            raise UnknownArgumentError("init_params", key, f"an option of {op!r} among {known}", f"{key!r}")
    merged = {**op_defaults, **init_defaults, **options}
    for opt in spec.options:
        if not opt.accepts(merged[opt.name]):
            raise OptionError("init_params", opt.name, " or ".join(map(repr, opt.allowed)), repr(merged[opt.name]))
    if dtype not in ("float32", "float64"):
        raise OptionError("init_params", "dtype", "'float32' or 'float64'", repr(dtype))
    sizes = {
        "input_size": _check_size("input_size", input_size),
        "hidden_size": _check_size("hidden_size", hidden_size),
        "num_layers": _check_size("num_layers", num_layers),
    }
    rng = np.random.default_rng(seed)
    layers = []
    for k in range(sizes["num_layers"]):
        dims = {
            **spec.fixed_dims(merged),
            "I": sizes["input_size"] if k == 0 else sizes["hidden_size"],
            "H": sizes["hidden_size"],
            "layer": k,
            "num_layers": sizes["num_layers"],
        }
        layer = {}
        for p in spec.layer_params(top=k == sizes["num_layers"] - 1):
            if not p.required:
                continue
            shape = tuple(evaluate(e, dims) for e in p.shape)
            layer[p.name] = initialiser(rng, p.name, shape, dims, merged).astype(dtype)
        layers.append(layer)
    return layers
