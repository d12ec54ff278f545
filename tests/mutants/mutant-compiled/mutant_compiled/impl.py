"""The NumPy reference with a compiled mode that is wrong for lstm only.

A classic compiler bug: the op runs right eagerly and wrong once compiled (a
fused kernel with a stale constant, a graph rewrite that changes a scale).
``compile(op)`` returns a plain wrapper of the op method for every op but
lstm, whose compiled form returns the outputs scaled by 1.01 (the state is
right). The op methods and the reverse mode are the reference's, unchanged:
only the suite's compiled check can see the bug.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from rnnspec.reference import Reference
from rnnspec.results import SequenceResult

#: The factor the compiled lstm multiplies its outputs by.
SCALE = 1.01


class Mutant(Reference):
    """Wrong on purpose: the compiled lstm's outputs are 1% too large."""

    capabilities: ClassVar[frozenset[str]] = frozenset({"vjp", "compile"})

    def compile(self, op: str) -> Callable[..., Any]:
        method = getattr(self, op)
        if op != "lstm":
            return lambda **arguments: method(**arguments)

        def compiled_lstm(**arguments: Any) -> SequenceResult:
            result: SequenceResult = method(**arguments)
            outputs = np.asarray(result.outputs)
            return result._replace(outputs=outputs * outputs.dtype.type(SCALE))

        return compiled_lstm
