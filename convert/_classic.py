"""What the converters to torch's and Keras' classic layers share: the check of the op, its options and the params."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rnnspec.errors import OptionError, ParameterError

__all__ = ["CLASSIC_KEYS", "classic_params"]

#: The keys of a classic layer's canonical params (rnn, lstm, gru), in the spec's order.
CLASSIC_KEYS = ("w_ih", "w_hh", "b_ih", "b_hh")


def classic_params(
    where: str, params: Mapping[str, Any] | Sequence[Mapping[str, Any]], op: str, *, activation: str
) -> list[dict[str, np.ndarray]]:
    """The classic op's params, one dict of NumPy arrays per layer, checked for a converter called ``where``.

    Raises
    ------
    rnnspec.errors.OptionError
        ``op`` is none of rnn, lstm and gru, or rnn's ``activation`` neither tanh nor relu.
    rnnspec.errors.ParameterError
        A layer lacks one of :data:`CLASSIC_KEYS`, named.
    """
    if op not in ("rnn", "lstm", "gru"):
        raise OptionError(where, "op", "'rnn', 'lstm' or 'gru'", repr(op))
    if op == "rnn" and activation not in ("tanh", "relu"):
        raise OptionError(where, "activation", "'tanh' or 'relu'", repr(activation))
    out = []
    for k, layer in enumerate([params] if isinstance(params, Mapping) else list(params)):
        missing = [key for key in CLASSIC_KEYS if key not in layer]
        if missing:
            raise ParameterError(where, f"params[{k}]", f"keys {sorted(CLASSIC_KEYS)}", f"missing {missing}")
        out.append({key: np.asarray(layer[key]) for key in CLASSIC_KEYS})
    return out
