"""Building an implementation's op methods from the spec's signatures.

An implementation whose ops all run through one function (the NumPy
reference, the PyTorch backend) can generate its methods instead of writing
each signature again: :func:`spec_method` gives a method with the spec's exact
signature, which the registry's load-time check sees like a hand-written one.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection
from typing import Any

from .backend import LATER_KEYWORDS, op_signature

__all__ = ["spec_method"]


def spec_method(
    op: str, run: Callable[[str, dict[str, Any]], Any], without: Collection[str] = ()
) -> Callable[..., Any]:
    """A method for ``op`` that binds its arguments to the spec's signature and calls ``run(op, arguments)``.

    ``without`` names keywords of :data:`rnnspec.backend.LATER_KEYWORDS` the implementation does not take
    yet: the method's signature leaves them out, so the :class:`~rnnspec.Backend` refuses any value but their
    default, naming the backend.

    Example::

        for op in MyImplementation.ops:
            setattr(MyImplementation, op, spec_method(op, my_run))
    """
    self_param = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    spec = op_signature(op)
    unknown = set(without) - set(LATER_KEYWORDS)
    if unknown:
        raise ValueError(f"spec_method({op!r}): only later keywords {LATER_KEYWORDS} may be left out, not {unknown}")
    kept = [p for p in spec.parameters.values() if p.name not in without]
    signature = spec.replace(parameters=[self_param, *kept])

    def method(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        del arguments["self"]
        return run(op, arguments)

    method.__name__ = method.__qualname__ = op
    method.__signature__ = signature  # type: ignore[attr-defined]
    method.__doc__ = f"``{op}`` on normalised arguments; see :meth:`rnnspec.Backend.{op}`."
    return method
