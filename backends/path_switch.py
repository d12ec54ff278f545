"""A framework backend's switch to its plain path, and its record of the path each op took.

Every framework backend has fast paths (fused kernels, scans, cuDNN) and a
plain one (a loop over time in the framework's own ops), and lets users force
the plain one, for debugging or comparison, with a context manager or an
environment variable, and ask which path the last call of an op took. This is
that machinery, framework-free; each backend makes one :class:`PathSwitch`
with its own variable and exposes its methods under its documented names
(``rnnspec.backends.torch.fused.plain_path``, ``rnnspec.backends.jax.paths.plain_path``,
``rnnspec.backends.tensorflow.paths.plain_path``, and ``plain_forced``,
``record_path``, ``last_path`` beside them).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import threading
from collections.abc import Iterator
from typing import Generic, TypeVar

__all__ = ["PathSwitch"]

#: The names of a backend's paths (a ``Literal`` of them, or ``str``).
P = TypeVar("P", bound=str)


class PathSwitch(Generic[P]):
    """Forcing one backend's plain path, and the path each of its ops took last.

    Parameters
    ----------
    env
        The environment variable that, set to anything but ``""`` or ``"0"``, forces the plain path.
    name
        The name of the context variable that :meth:`plain_path` sets (one per backend).
    """

    def __init__(self, env: str, name: str) -> None:
        self.env = env
        self._forced: contextvars.ContextVar[bool] = contextvars.ContextVar(name, default=False)
        self._last: dict[str, P] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def plain_path(self) -> Iterator[None]:
        """Force the plain path for every op of the backend within the block.

        A context variable: it holds for the current thread (and asyncio task) only.
        """
        token = self._forced.set(True)
        try:
            yield
        finally:
            self._forced.reset(token)

    def plain_forced(self) -> bool:
        """Whether the plain path is forced, by :meth:`plain_path` or the environment variable."""
        return self._forced.get() or os.environ.get(self.env, "") not in ("", "0")

    def record_path(self, op: str, path: P) -> None:
        """Note that the last call (or trace) of ``op`` took ``path``."""
        with self._lock:
            self._last[op] = path

    def last_path(self, op: str) -> P | None:
        """The path the last call (or trace) of ``op`` took in this process, None before any.

        ``"plain"``, or a fast path's name (the backend's paths module lists them).
        """
        with self._lock:
            return self._last.get(op)
