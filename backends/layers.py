"""What the layers of the framework backends share, framework-free.

The PyTorch modules (:mod:`rnnspec.backends.torch.nn`), the Flax NNX modules
(:mod:`rnnspec.backends.jax.nnx`) and the Keras layers
(:mod:`rnnspec.backends.tensorflow.keras`) hold an op's params in the canonical
layout and call their backend's op. This module holds what does not depend on
the framework: the backend a layer calls, the check of the option
``checkpoint_every`` a layer passes to its op, and :class:`ParamFiles`, the
``save_params``/``load_params`` methods every layer has.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, Protocol

from rnnspec.backend import Backend
from rnnspec.errors import OptionError
from rnnspec.ops import OPS
from rnnspec.param_files import load_numpy_params, save_params

__all__ = ["CELL_BIASES", "TIME_FIELDS", "ParamFiles", "check_checkpoint_every", "layer_backend"]

#: The cell biases that a layer without bias leaves at zero (the gate and halting biases stay trainable).
CELL_BIASES = frozenset({"b_ih", "b_hh", "b"})
#: Results' fields with a time axis (transposed for time-major layers).
TIME_FIELDS = ("outputs", "update_gate", "update_prob", "ponder_steps", "ponder_remainder", "ponder_cost")


#: The backends the layers call, by name, loaded at a layer's first use rather than at import.
_BACKENDS: dict[str, Backend] = {}


def layer_backend(name: str) -> Backend:
    """The backend called ``name``, loaded at the first call of a layer rather than at import."""
    # A plain dict, not functools.cache: torch.compile traces layers and warns on (refuses) cached functions.
    backend = _BACKENDS.get(name)
    if backend is None:
        import rnnspec

        backend = _BACKENDS[name] = rnnspec.get_backend(name)
    return backend


def check_checkpoint_every(layer: str, op: str, value: Any) -> int | None:
    """A layer's ``checkpoint_every``, checked by the spec as the op checks it.

    Parameters
    ----------
    layer
        The layer's name, for the error.
    op
        The op the layer calls.
    value
        None (every step's activations kept) or the segment length K, an integer >= 1.

    Returns
    -------
    int or None
        ``value`` as a Python integer (a NumPy integer too), or None.

    Raises
    ------
    rnnspec.errors.OptionError
        ``value`` is neither, naming the layer and the argument ``checkpoint_every``.
    """
    option = OPS[op].option("checkpoint_every")
    if not option.accepts(value):
        raise OptionError(layer, option.name, option.describe_allowed(), repr(value))
    return None if value is None else int(value)


class _Layer(Protocol):
    """What :class:`ParamFiles` needs of a layer."""

    #: The op of the spec.
    op: ClassVar[str]
    #: The name of the backend whose op the layer calls (its arrays are that backend's).
    backend_name: ClassVar[str]

    @property
    def options(self) -> Mapping[str, Any] | Iterable[tuple[str, Any]]:
        """The op's options the layer was built with (those that may fix the params' layout among them)."""
        ...

    def canonical_params(self) -> Sequence[Mapping[str, Any]]:
        """The params as the op takes them, one mapping per layer."""
        ...

    def load_canonical(self, params: Sequence[Mapping[str, Any]]) -> None:
        """Copy canonical params into the layer, checked and cast to its dtype."""
        ...


class ParamFiles:
    """A layer's ``save_params`` and ``load_params``: its params in rnnspec's parameter files.

    A mixin of each framework's layer base class, which supplies what
    :class:`_Layer` lists.
    """

    def save_params(self: _Layer, path: str | os.PathLike[str]) -> None:
        """Write the params to a parameter file (``.npz`` or ``.safetensors``, by the suffix), exactly.

        The file records the op; :meth:`load_params` of a layer of the same op
        and sizes, on any backend, reads it back (see :func:`rnnspec.save_params`).
        """
        params = self.canonical_params()
        save_params(path, params, backend=layer_backend(self.backend_name), op=self.op, options=dict(self.options))

    def load_params(self: _Layer, path: str | os.PathLike[str]) -> None:
        """Copy the params of a file written by :func:`rnnspec.save_params` (or a layer's :meth:`save_params`) in.

        The file is checked against the layer's op and options first; the values
        are then cast to the layer's dtype, as ``load_canonical`` does.

        Raises
        ------
        rnnspec.errors.ParamFileError
            The file is truncated, corrupt, pickled (refused), or not of this op.
        rnnspec.errors.ParameterError
            Its layers or shapes differ from the layer's.
        """
        params = load_numpy_params(path, op=self.op, options=dict(self.options), widen_bfloat16=True)
        self.load_canonical(params)
