"""Static checks of a backend implementation against the spec, run at load time.

pluggy checks hook argument names only; these checks cover what the registry
needs before a backend is usable: every op it claims is in the spec, is a
method, and has the spec's signature (names, kinds and defaults), and the
required dtypes are supported. A method may lack the keywords the spec gained
later (:data:`rnnspec.backend.LATER_KEYWORDS`), so a backend written before
them keeps loading; the :class:`~rnnspec.Backend` then calls it without them.
Numerical agreement is the conformance suite's job.
"""

from __future__ import annotations

import inspect

from .backend import LATER_KEYWORDS, op_signature
from .errors import SpecMismatchError
from .implementation import Implementation
from .ops import OPS, REQUIRED_DTYPES

__all__ = ["check_implementation"]


def _signature_text(sig: inspect.Signature) -> str:
    # Annotations are the implementer's business; names, kinds and defaults are the contract.
    bare = [p.replace(annotation=inspect.Parameter.empty) for p in sig.parameters.values()]
    return str(sig.replace(parameters=bare, return_annotation=inspect.Signature.empty))


def check_implementation(name: str, distribution: str, impl: Implementation) -> None:
    """Raise :class:`SpecMismatchError` if ``impl`` breaks the spec's contract."""
    where = f"backend {name!r} ({distribution}, {type(impl).__module__}.{type(impl).__qualname__})"
    for op in impl.ops:
        if op not in OPS:
            raise SpecMismatchError(f"{where}: claims op {op!r}, which is not in the spec; spec ops: {sorted(OPS)}")
        method = getattr(impl, op, None)
        if not callable(method):
            raise SpecMismatchError(f"{where}: claims op {op!r} but has no method {op}()")
        spec = op_signature(op)
        signature = inspect.signature(method)
        older = [p for p in spec.parameters.values() if p.name in signature.parameters or p.name not in LATER_KEYWORDS]
        want = _signature_text(spec)
        got = _signature_text(signature)
        if _signature_text(spec.replace(parameters=older)) != got:
            raise SpecMismatchError(f"{where}: op {op!r} has signature {op}{got}, the spec's is {op}{want}")
    missing = [d for d in REQUIRED_DTYPES if d not in impl.dtypes]
    if missing:
        raise SpecMismatchError(f"{where}: dtypes {list(impl.dtypes)} lack the required {missing}")
