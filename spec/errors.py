"""The exceptions rnnspec raises.

Every error about a call names the op, the argument, what the spec expects and
what was given, and (once a backend is known) the backend, so a message read in
a log is enough to find the faulty call::

    lstm [backend 'numpy']: argument params[0]['w_hh']: expected shape (4*H, H) = (128, 32), got (128, 31)

Each class also derives from the builtin exception a Python user would expect
(``ValueError`` for bad values and shapes, ``TypeError`` for bad types and
unknown arguments), so ``except ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "BackendLoadError",
    "BackendNotFoundError",
    "CallError",
    "DtypeError",
    "LengthsError",
    "MissingDependencyError",
    "OptionError",
    "ParamFileError",
    "ParamFileMismatchError",
    "ParameterError",
    "PluginConflictError",
    "RnnspecError",
    "ShapeError",
    "SlowPluginError",
    "SpecMismatchError",
    "UnknownArgumentError",
    "UnsafeParamFileError",
    "UnsupportedOpError",
]


class RnnspecError(Exception):
    """Base class of every error rnnspec raises on purpose."""


class CallError(RnnspecError):
    """A call of an op that breaks the spec.

    Parameters
    ----------
    op
        The op's name, such as ``"lstm"``.
    argument
        The argument at fault, as the user would write it (``"params[0]['w_hh']"``).
    expected, actual
        What the spec asks for and what was given, already formatted.
    backend
        The backend's name, when the call went through one.
    """

    def __init__(
        self,
        op: str,
        argument: str,
        expected: str,
        actual: str,
        *,
        backend: str | None = None,
    ) -> None:
        self.op = op
        self.argument = argument
        self.expected = expected
        self.actual = actual
        self.backend = backend
        super().__init__(self._render())

    def _render(self) -> str:
        where = self.op if self.backend is None else f"{self.op} [backend {self.backend!r}]"
        return f"{where}: argument {self.argument}: expected {self.expected}, got {self.actual}"

    def with_backend(self, backend: str) -> CallError:
        """Return the same error, naming ``backend``."""
        err = type(self)(self.op, self.argument, self.expected, self.actual, backend=backend)
        err.__traceback__ = self.__traceback__
        return err

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only ``backend`` would be lost by the default pickling.
        return (_rebuild, (type(self), self.op, self.argument, self.expected, self.actual, self.backend))


def _rebuild(
    cls: type[CallError], op: str, argument: str, expected: str, actual: str, backend: str | None
) -> CallError:
    return cls(op, argument, expected, actual, backend=backend)


class ShapeError(CallError, ValueError):
    """An array of the wrong rank or size, or sizes that disagree."""


class DtypeError(CallError, TypeError):
    """An array of a dtype the op does not accept, or not an array at all."""


class ParameterError(CallError, ValueError):
    """A parameter mapping with a missing, unknown or misshapen entry."""


class LengthsError(CallError, ValueError):
    """``lengths`` of the wrong shape, dtype or values."""


class OptionError(CallError, ValueError):
    """A keyword option with a value outside its allowed set."""


class UnknownArgumentError(CallError, TypeError):
    """An argument the op does not take, or a required one left out."""


class BackendError(RnnspecError):
    """A problem with the backend registry or with a backend plugin."""


class BackendNotFoundError(BackendError, LookupError):
    """No backend of the requested name is registered."""


class BackendLoadError(BackendError, ImportError):
    """A backend's plugin or framework failed to import or register."""


class UnsupportedOpError(BackendError, NotImplementedError):
    """A backend was asked for an op of the spec that it does not implement."""


class PluginConflictError(BackendError):
    """Two plugins claim one backend name."""


class SlowPluginError(BackendError):
    """A plugin module took longer to import than the budget allows (raised only in strict mode)."""


class SpecMismatchError(BackendError, TypeError):
    """A backend's op does not match the spec (unknown op, wrong signature)."""


class MissingDependencyError(RnnspecError, ImportError):
    """An optional package that a feature needs is not installed; the message names the extra to install."""


class ParamFileError(RnnspecError, ValueError):
    """A parameter file that cannot be read as rnnspec params: truncated, corrupt, or not a params file.

    Parameters
    ----------
    path
        The file, as given.
    problem
        What is wrong with it, already formatted.
    """

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"parameter file {path!r}: {problem}")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.path, self.problem))


class UnsafeParamFileError(ParamFileError):
    """A parameter file that holds a pickle, which rnnspec refuses to load (unpickling can run code)."""


class ParamFileMismatchError(ParamFileError):
    """A parameter file whose entries do not fit what was asked: another op's keys, layers or structure."""
