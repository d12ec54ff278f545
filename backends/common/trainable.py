"""The parameters a layer may hold fixed, from the records: each :class:`~rnnspec.ops.ParamSpec`'s ``trainable``.

A record names, for a parameter that a model may train or not (Phased LSTM's
``r_on``; TF1's ``trainable_ratio_on``), the layers' constructor flag that says
so. The op differentiates every parameter whatever the flag; a layer built with
the flag False holds the parameter as its framework's fixed array (a torch
parameter without ``requires_grad``, an ``nnx.Variable`` that is no
``nnx.Param``, a Keras weight with ``trainable=False``), which optimizers leave
alone and parameter files keep. This module gives the flags as the layers'
constructor options and the names a layer holds fixed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rnnspec.errors import OptionError
from rnnspec.ops import OPS

from .layers import LayerOption

__all__ = ["fixed_params", "layer_fixed_params", "trainable_flags", "trainable_options", "with_trainable_options"]


def trainable_flags(op: str) -> dict[str, tuple[str, ...]]:
    """Each constructor flag of ``op``'s layers, with the parameters it decides, in the record's order."""
    flags: dict[str, tuple[str, ...]] = {}
    for options in ({}, *({o.name: v} for o in OPS[op].value_options for v in o.allowed)):
        for p in OPS[op].layer_params(top=True, options=options):
            if p.trainable is not None and p.name not in flags.get(p.trainable, ()):
                flags[p.trainable] = (*flags.get(p.trainable, ()), p.name)
    return flags


def _check_flag(layer: str, name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise OptionError(layer, name, "True or False", repr(value))
    return value


def trainable_options(op: str) -> tuple[LayerOption, ...]:
    """The layers' constructor flags of ``op`` (True by default), as the layer core's options of kind ``"layer"``."""
    return tuple(
        LayerOption(
            flag,
            True,
            "bool",
            f"Train {', '.join(f'``{n}``' for n in names)}; False holds it fixed (the op still differentiates it: "
            "the layer's framework leaves it out of what optimizers update).",
            check=_check_flag,
        )
        for flag, names in trainable_flags(op).items()
    )


def with_trainable_options(op: str, options: tuple[LayerOption, ...]) -> tuple[LayerOption, ...]:
    """A layer class's own options (``extra_options``, inherited ones included) after ``op``'s trainable flags,
    each once."""
    flags = trainable_options(op)
    names = {o.name for o in flags}
    return flags + tuple(o for o in options if o.name not in names)


def fixed_params(op: str, flag: Callable[[str], bool]) -> frozenset[str]:
    """The parameters a layer of ``op`` holds fixed, given the value of each flag (``flag(name)``)."""
    return frozenset(name for key, names in trainable_flags(op).items() if not flag(key) for name in names)


def layer_fixed_params(layer: Any) -> frozenset[str]:
    """The parameters ``layer`` (a layer of the layer core, its flags set as attributes) holds fixed."""
    return fixed_params(layer.op, lambda flag: bool(getattr(layer, flag, True)))
