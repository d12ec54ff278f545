"""The spec's op records, by name.

Each op has a record here (:class:`OpSpec`), a page beside it (``<op>.md``) with
the equations and conventions for people, and a method of the same name on
:class:`rnnspec.Backend` that fixes its Python signature.
"""

from __future__ import annotations

from types import MappingProxyType

from .act import ACT, ACT_CELLS
from .gru import GRU
from .indrnn import INDRNN, INDRNN_RECURRENCE
from .lstm import LSTM
from .phased_lstm import PHASED_LSTM
from .qrnn import LINEAR_RECURRENCE, QRNN, QRNN_GATES
from .record import FLOAT_DTYPES, REQUIRED_DTYPES, InitScheme, OpSpec, OptionSpec, ParamSpec, StateSpec
from .rnn import RNN
from .skip import SKIP_GRU, SKIP_LSTM, SKIP_RNN

__all__ = [
    "ACT_CELLS",
    "FLOAT_DTYPES",
    "OPS",
    "QRNN_GATES",
    "REQUIRED_DTYPES",
    "InitScheme",
    "OpSpec",
    "OptionSpec",
    "ParamSpec",
    "StateSpec",
]

#: Every op of the spec, by name.
OPS: MappingProxyType[str, OpSpec] = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            RNN,
            LSTM,
            GRU,
            SKIP_RNN,
            SKIP_LSTM,
            SKIP_GRU,
            ACT,
            INDRNN,
            INDRNN_RECURRENCE,
            QRNN,
            LINEAR_RECURRENCE,
            PHASED_LSTM,
        )
    }
)
