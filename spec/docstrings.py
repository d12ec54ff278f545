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
    One mapping per layer with the entries {state} (shapes on the op's spec
    page), of x's dtype; when omitted, the op's start state (zeros, or the
    learnt h0/c0 and the gate's start values for the skip ops). The ``state``
    of a previous result continues a sequence.
reverse : bool, default False
    Run each row backwards over its own valid prefix; outputs stay aligned with x.
"""


_PRIMITIVE_COMMON = """\
lengths : integer array of shape (batch,), optional
    Valid length of each row, in [0, time]. Past a row's length h is frozen
    (and returned as zeros).
reverse : bool, default False
    Run each row backwards over its own valid prefix; h stays aligned with the inputs.
"""


def _options(spec: OpSpec) -> list[str]:
    lines = []
    for opt in spec.options:
        if opt.kind == "array" and opt.required:
            lines.append(f"{opt.name} : array")
        else:
            kind = "array, optional" if opt.kind == "array" else opt.describe_allowed()
            lines.append(f"{opt.name} : {kind}, default {opt.default!r}")
        lines.append(f"    {opt.description[0].upper()}{opt.description[1:]}.")
    return lines


def _notes(spec: OpSpec) -> list[str]:
    lines = ["", "Notes", "-----", "Equations::", ""]
    lines += [f"    {eq}" for eq in spec.equations]
    lines += ["", "Gradient: " + spec.gradient]
    return lines


def render_op_docstring(spec: OpSpec) -> str:
    """Render the numpydoc docstring of ``spec``'s op method."""
    lines = [spec.summary, "", "Parameters", "----------"]
    if spec.kind == "primitive":
        for p in spec.params:
            optional = "" if p.required else ", optional"
            lines += [f"{p.name} : array of shape {format_shape(p.shape)}{optional}", f"    {p.description}."]
        lines += _options(spec)
        lines += _PRIMITIVE_COMMON.splitlines()
        lines += ["", "Returns", "-------", "h : array of shape (B, T, H)", "    h_t for every step."]
        return "\n".join(lines + _notes(spec))
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
    lines += _options(spec)
    state = ", ".join(f"``{s.name}``" for s in spec.state)
    lines += _COMMON.format(state=state).splitlines()
    lines += [
        "",
        "Returns",
        "-------",
        "result : NamedTuple with fields " + ", ".join(f"``{f}``" for f in spec.result_fields),
    ]
    return "\n".join(lines + _notes(spec))
