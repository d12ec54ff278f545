"""Plugin of the ``fault_repr`` backend, faulty on purpose: importing it raises an unprintable exception.

Both ``repr()`` and ``str()`` of the exception raise: whatever the registry
reports of it (strict mode included) must not raise in turn.
"""

from __future__ import annotations


class UnprintableError(Exception):
    """An exception that cannot be printed."""

    def __repr__(self) -> str:
        raise RuntimeError("fault_repr: repr() of the plugin's exception raised")

    def __str__(self) -> str:
        raise RuntimeError("fault_repr: str() of the plugin's exception raised")


raise UnprintableError
