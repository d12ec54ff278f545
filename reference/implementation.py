"""The NumPy reference as a backend implementation (registered as "numpy").

Dtype policy: the reference computes every op in float64 and rounds the
results to the input's dtype (float16, float32 or float64), so its answer in a
low precision is the correctly rounded one; backends are compared to it within
the tolerance policy. bfloat16 has no NumPy dtype and is not offered here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from rnnspec.implementation import Implementation
from rnnspec.results import ACTResult, SequenceResult, SkipResult

from .runs import start

__all__ = ["Reference"]


class Reference(Implementation):
    """The NumPy reference implementation of every op of the spec."""

    ops: ClassVar[tuple[str, ...]] = (
        "rnn",
        "lstm",
        "gru",
        "skip_rnn",
        "skip_lstm",
        "skip_gru",
        "act",
        "indrnn",
        "indrnn_recurrence",
        "qrnn",
        "linear_recurrence",
    )
    dtypes: ClassVar[tuple[str, ...]] = ("float16", "float32", "float64")
    framework: ClassVar[str] = "numpy"
    capabilities: ClassVar[frozenset[str]] = frozenset({"vjp"})

    def framework_version(self) -> str:
        return np.__version__

    def vjp(self, op: str, arguments: dict[str, Any], cotangents: Mapping[str, Any]) -> dict[str, Any]:
        return start(op, arguments).vjp(cotangents)

    def is_array(self, value: Any) -> bool:
        return isinstance(value, np.ndarray)

    def asarray(self, value: np.ndarray) -> np.ndarray:
        return np.array(value)  # a copy: results never alias the caller's arrays

    def asnumpy(self, value: Any) -> np.ndarray:
        return np.array(value)

    def rnn(
        self,
        x: Any,
        params: Any,
        *,
        activation: str = "tanh",
        lengths: Any = None,
        initial_state: Any = None,
        reverse: bool = False,
    ) -> SequenceResult:
        return start("rnn", locals()).result()  # type: ignore[return-value]

    def lstm(
        self, x: Any, params: Any, *, lengths: Any = None, initial_state: Any = None, reverse: bool = False
    ) -> SequenceResult:
        return start("lstm", locals()).result()  # type: ignore[return-value]

    def gru(
        self,
        x: Any,
        params: Any,
        *,
        reset_after: bool = True,
        lengths: Any = None,
        initial_state: Any = None,
        reverse: bool = False,
    ) -> SequenceResult:
        return start("gru", locals()).result()  # type: ignore[return-value]

    def skip_rnn(
        self,
        x: Any,
        params: Any,
        *,
        activation: str = "tanh",
        lengths: Any = None,
        initial_state: Any = None,
        reverse: bool = False,
    ) -> SkipResult:
        return start("skip_rnn", locals()).result()  # type: ignore[return-value]

    def skip_lstm(
        self, x: Any, params: Any, *, lengths: Any = None, initial_state: Any = None, reverse: bool = False
    ) -> SkipResult:
        return start("skip_lstm", locals()).result()  # type: ignore[return-value]

    def skip_gru(
        self,
        x: Any,
        params: Any,
        *,
        reset_after: bool = True,
        lengths: Any = None,
        initial_state: Any = None,
        reverse: bool = False,
    ) -> SkipResult:
        return start("skip_gru", locals()).result()  # type: ignore[return-value]

    def act(
        self,
        x: Any,
        params: Any,
        *,
        cell: str = "rnn",
        epsilon: float = 0.01,
        max_steps: int = 100,
        lengths: Any = None,
        initial_state: Any = None,
        reverse: bool = False,
    ) -> ACTResult:
        return start("act", locals()).result()  # type: ignore[return-value]

    def indrnn(
        self,
        x: Any,
        params: Any,
        *,
        activation: str = "relu",
        lengths: Any = None,
        initial_state: Any = None,
        reverse: bool = False,
    ) -> SequenceResult:
        return start("indrnn", locals()).result()  # type: ignore[return-value]

    def indrnn_recurrence(
        self,
        pre: Any,
        u: Any,
        initial: Any = None,
        *,
        activation: str = "relu",
        lengths: Any = None,
        reverse: bool = False,
    ) -> Any:
        return start("indrnn_recurrence", locals()).result()

    def qrnn(
        self,
        x: Any,
        params: Any,
        *,
        mode: str = "fo",
        zoneout_mask: Any = None,
        lengths: Any = None,
        initial_state: Any = None,
        reverse: bool = False,
    ) -> SequenceResult:
        return start("qrnn", locals()).result()  # type: ignore[return-value]

    def linear_recurrence(
        self,
        a: Any,
        b: Any,
        initial: Any = None,
        *,
        lengths: Any = None,
        reverse: bool = False,
    ) -> Any:
        return start("linear_recurrence", locals()).result()
