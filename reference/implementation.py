"""The NumPy reference as a backend implementation (registered as "numpy").

Dtype policy: the reference computes every op in float64 and rounds the
results to the input's dtype (float16, float32 or float64), so its answer in a
low precision is the correctly rounded one; backends are compared to it within
the tolerance policy. bfloat16 has no NumPy dtype and is not offered here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from rnnspec.implementation import Implementation
from rnnspec.results import SequenceResult

from .activations import Array
from .cells import make_cell
from .stack import full_lengths, run_stack

__all__ = ["Forward", "Reference"]


class Forward:
    """A forward run of a classic op (rnn, lstm, gru) in float64, on validated
    arguments, keeping everything its reverse mode needs."""

    def __init__(
        self,
        op: str,
        x: np.ndarray,
        params: Sequence[Mapping[str, np.ndarray]],
        options: Mapping[str, Any],
        lengths: Any,
        initial_state: Sequence[Mapping[str, np.ndarray]] | None,
        reverse: bool,
    ) -> None:
        batch, time, _ = x.shape
        self.op = op
        self.dtype = x.dtype
        self.cell = make_cell(op, options)
        self.reverse = reverse
        self.params: list[dict[str, Array]] = [{k: np.asarray(v, np.float64) for k, v in p.items()} for p in params]
        if initial_state is None:
            initial_state = [
                {name: np.zeros((batch, p["w_hh"].shape[1])) for name in self.cell.state_names} for p in self.params
            ]
        state64 = [{k: np.asarray(v, np.float64) for k, v in s.items()} for s in initial_state]
        self.lengths = full_lengths(lengths, batch, time)
        self.outputs, self.state, self.tape = run_stack(
            lambda k: self.cell, self.params, np.asarray(x, np.float64), self.lengths, state64, reverse
        )

    def result(self) -> SequenceResult:
        """The result, rounded to the input dtype."""
        cast = self.dtype
        state = tuple({k: v.astype(cast) for k, v in s.items()} for s in self.state)
        return SequenceResult(self.outputs.astype(cast), state)


class Reference(Implementation):
    """The NumPy reference implementation of every op of the spec."""

    ops: ClassVar[tuple[str, ...]] = ("rnn", "lstm", "gru")
    dtypes: ClassVar[tuple[str, ...]] = ("float16", "float32", "float64")
    framework: ClassVar[str] = "numpy"

    def framework_version(self) -> str:
        return np.__version__

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
        return Forward("rnn", x, params, {"activation": activation}, lengths, initial_state, reverse).result()

    def lstm(
        self, x: Any, params: Any, *, lengths: Any = None, initial_state: Any = None, reverse: bool = False
    ) -> SequenceResult:
        return Forward("lstm", x, params, {}, lengths, initial_state, reverse).result()

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
        return Forward("gru", x, params, {"reset_after": reset_after}, lengths, initial_state, reverse).result()
