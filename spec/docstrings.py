"""Numpydoc docstrings for the op methods, rendered from the op records.

The records are the one source of the equations and layouts; rendering them
into ``Backend.<op>.__doc__`` keeps ``help(B.lstm)`` and the spec in step.
"""

from __future__ import annotations

from .ops.record import OpSpec
from .shapes import format_shape

__all__ = ["render_op_docstring"]

_COMMON = """\
lengths : integer array of shape (batch,), optional
    Valid length of each row, in [0, time]. Past a row's length its state is
    frozen and its outputs are zero.
initial_state : sequence of mappings, optional
    One mapping per layer with the entries {state}, each (batch, H) of x's dtype;
    zeros when omitted. The ``state`` of a previous result continues a sequence.
reverse : bool, default False
    Run each row backwards over its own valid prefix; outputs stay aligned with x.
"""


def render_op_docstring(spec: OpSpec) -> str:
    """Render the numpydoc docstring of ``spec``'s op method."""
    lines = [spec.summary, "", "Parameters", "----------"]
    lines += [
        "x : array of shape (batch, time, input_size)",
        "    The input sequences, batch-first, of a floating dtype.",
        "params : mapping of arrays, or a sequence of mappings (one per layer)",
        "    Layer k reads the outputs of layer k-1. Each mapping holds:",
        "",
    ]
    for p in spec.params:
        extra = "" if p.required else ", optional"
        extra += ", top layer only" if p.layers == "top" else ""
        lines.append(f"    - ``{p.name}`` {format_shape(p.shape)}: {p.description}{extra}")
    lines.append("")
    for opt in spec.options:
        lines.append(f"{opt.name} : {' or '.join(repr(a) for a in opt.allowed)}, default {opt.default!r}")
        lines.append(f"    {opt.description[0].upper()}{opt.description[1:]}.")
    state = ", ".join(f"``{s.name}``" for s in spec.state)
    lines += _COMMON.format(state=state).splitlines()
    lines += [
        "",
        "Returns",
        "-------",
        "result : NamedTuple with fields " + ", ".join(f"``{f}``" for f in spec.result_fields),
        "",
        "Notes",
        "-----",
        "Equations::",
        "",
    ]
    lines += [f"    {eq}" for eq in spec.equations]
    lines += ["", "Gradient: " + spec.gradient]
    return "\n".join(lines)
