"""Plugin of the ``fault_result`` backend, faulty on purpose: ops whose results break the spec.

Each op computes the reference's result and then damages it in one way
(:data:`DAMAGE`); ``indrnn`` is left sound. The signatures are the spec's, so
the backend loads: only a call shows the damage.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from rnnspec.backend import op_signature
from rnnspec.hookspecs import BackendDeclaration, hookimpl
from rnnspec.implementation import Implementation

#: What each op does to the reference's result.
DAMAGE: dict[str, Callable[[Any], Any]] = {
    "lstm": lambda result: None,
    "gru": lambda result: result._replace(outputs=np.concatenate([result.outputs, result.outputs[..., :1]], -1)),
    "rnn": lambda result: result._replace(state=result.state[:-1]),
    "qrnn": tuple,
    "linear_recurrence": lambda h: h[:, :-1],
}


def _damaged(op: str, method: Callable[..., Any]) -> Callable[..., Any]:
    def damaged(self: Implementation, *args: Any, **kwargs: Any) -> Any:
        return DAMAGE[op](method(self, *args, **kwargs))

    self_parameter = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    signature = op_signature(op)
    damaged.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[self_parameter, *signature.parameters.values()]
    )
    return damaged


def _load() -> Implementation:
    from rnnspec.reference import Reference

    class DamagedResults(Reference):
        """The reference, with the results of the ops in :data:`DAMAGE` damaged."""

        ops: ClassVar[tuple[str, ...]] = (*DAMAGE, "indrnn")

    for op in DAMAGE:
        setattr(DamagedResults, op, _damaged(op, vars(Reference)[op]))
    return DamagedResults()


@hookimpl
def rnnspec_backend() -> BackendDeclaration:
    """Declare the backend."""
    return BackendDeclaration(load=_load, description="the reference, with damaged results")
