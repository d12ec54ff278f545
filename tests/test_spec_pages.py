"""The spec pages (``rnnspec/ops/<op>.md``) and the op records say the same thing.

The pages are read through the installed package, the way a user's copy would
be, and their markdown is parsed: sections by ``## `` heading, fenced code
blocks, and tables row by row, so a name that merely appears somewhere on a
page does not count as a table row.

Primitives (``record.kind == "primitive"``) have pages of the same format: their
Parameters table lists their array arguments, their State table (optional)
describes the carried ``h`` of shape ``(B, H)``, and their Initialisation
section says that they have no parameters. An array option's "allowed" cell
reads ``array``, and a range option's (``check``) reads its ``describe_allowed()``; the default
cell of a required array option (Phased LSTM's ``timestamps``) reads ``required``.

The tables describe the top layer of a stack with the options at their
defaults: entries only the top layer carries say "top layer only", optional
ones say "optional". An op whose layout depends on an option (``params_for``,
``state_for``: act's ``cell``, phased_lstm's ``peepholes``) also gives, in a
``### `` subsection of its Parameters section (``params_for``) and of its State
section (``state_for``), one table with a leading column for each value of that
option.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable

import pytest

from rnnspec import OPS, Backend
from rnnspec.backend import op_signature
from rnnspec.ops import ACT_CELLS, OpSpec, OptionSpec, ParamSpec, StateSpec
from rnnspec.shapes import format_shape

#: The page of conventions shared by every sequence op; it has no record.
COMMON_PAGE = "sequence.md"

#: The sections of an op page, in order.
OP_SECTIONS = (
    "Signature",
    "Equations",
    "Parameters",
    "State",
    "Options",
    "Result",
    "Gradient",
    "Initialisation",
    "Conventions",
)

PARAMETER_HEADER = ["name", "shape", "description"]
STATE_HEADER = ["name", "shape", "description"]
OPTION_HEADER = ["name", "default", "allowed", "description"]

#: The option that decides the layout of each op with ``params_for`` / ``state_for``, and its values.
LAYOUT_OPTIONS: dict[str, tuple[str, tuple[object, ...]]] = {
    "act": ("cell", tuple(ACT_CELLS)),
    "phased_lstm": ("peepholes", (False, True)),
}
#: The ``### `` subsections that hold those per-value tables, by op: Parameters' where ``params_for`` is set,
#: State's where ``state_for`` is.
PER_VALUE_SUBSECTIONS: dict[str, dict[str, str]] = {
    "act": {"Parameters": "Layout for each cell", "State": "State for each cell"},
    "phased_lstm": {"Parameters": "Layout with and without peepholes"},
}

_FENCE = re.compile(r"^(`{3,}|~{3,})(.*)$")
_CELL_SPLIT = re.compile(r"(?<!\\)\|")


# -- reading markdown ------------------------------------------------------------


def pages_dir() -> Traversable:
    return files("rnnspec.ops")


def page_text(name: str) -> str:
    page = pages_dir() / name
    assert page.is_file(), f"spec page {name} is missing from the installed package rnnspec.ops"
    return page.read_text(encoding="utf-8")


@dataclass
class Page:
    title: str | None
    sections: dict[str, str]
    order: list[str]


def prose_marked_lines(text: str) -> Iterator[tuple[str, bool]]:
    """Each line of ``text`` with whether it is prose: outside fenced code blocks, and not a fence itself."""
    fence: str | None = None
    for line in text.splitlines():
        match = _FENCE.match(line.strip())
        if match:
            marker = match.group(1)
            if fence is None:
                fence = marker
            elif marker.startswith(fence) and not match.group(2).strip():
                fence = None
            yield line, False
        else:
            yield line, fence is None


def parse_page(text: str) -> Page:
    """Split a page into its ``# `` title and its ``## `` sections (ignoring code blocks)."""
    title: str | None = None
    sections: dict[str, list[str]] = {}
    order: list[str] = []
    current: list[str] | None = None
    for line, prose in prose_marked_lines(text):
        if prose and line.startswith("# ") and title is None:
            title = line[2:].strip()
            continue
        elif prose and line.startswith("## "):
            heading = line[3:].strip()
            assert heading not in sections, f"section {heading!r} appears twice"
            order.append(heading)
            current = sections[heading] = []
            continue
        if current is not None:
            current.append(line)
    return Page(title, {k: "\n".join(v) for k, v in sections.items()}, order)


def code_blocks(section: str) -> list[tuple[str, list[str]]]:
    """The fenced code blocks of a section: ``(info string, lines)``."""
    blocks: list[tuple[str, list[str]]] = []
    fence: str | None = None
    info = ""
    lines: list[str] = []
    for line in section.splitlines():
        match = _FENCE.match(line.strip())
        if fence is None and match:
            fence, info, lines = match.group(1), match.group(2).strip(), []
        elif fence is not None and match and match.group(1).startswith(fence) and not match.group(2).strip():
            blocks.append((info, lines))
            fence = None
        elif fence is not None:
            lines.append(line)
    assert fence is None, "a code block is not closed"
    return blocks


def split_row(line: str) -> list[str]:
    body = line.strip()
    assert body.startswith("|"), f"table row must start with '|': {line!r}"
    assert body.endswith("|"), f"table row must end with '|': {line!r}"
    return [cell.strip().replace("\\|", "|") for cell in _CELL_SPLIT.split(body[1:-1])]


def tables(section: str) -> list[tuple[list[str], list[list[str]]]]:
    """The markdown tables of a section (outside code blocks): ``(header, rows)``."""
    found: list[tuple[list[str], list[list[str]]]] = []
    block: list[str] = []
    fence: str | None = None
    for line in [*section.splitlines(), ""]:
        match = _FENCE.match(line.strip())
        if match:
            fence = None if fence is not None else match.group(1)
        if fence is None and line.strip().startswith("|"):
            block.append(line)
            continue
        if block:
            assert len(block) >= 2, f"a table needs a header and a separator row: {block}"
            separator = split_row(block[1])
            assert all(re.fullmatch(r":?-{3,}:?", cell) for cell in separator), f"bad separator row {block[1]!r}"
            header = split_row(block[0])
            rows = [split_row(row) for row in block[2:]]
            for row in rows:
                assert len(row) == len(header), f"row {row} has {len(row)} cells, header {header} has {len(header)}"
            found.append((header, rows))
            block = []
    return found


def plain(cell: str) -> str:
    """A table cell without its code spans' backticks."""
    return cell.replace("`", "").strip()


def words(text: str) -> str:
    """Text with every run of whitespace made one space (markdown may wrap lines)."""
    return " ".join(text.split())


def subsections(section: str) -> tuple[str, dict[str, str]]:
    """Split a section at its ``### `` headings (ignoring code blocks): ``(lead, {heading: text})``."""
    lead: list[str] = []
    found: dict[str, list[str]] = {}
    current = lead
    for line, prose in prose_marked_lines(section):
        if prose and line.startswith("### "):
            heading = line[4:].strip()
            assert heading not in found, f"subsection {heading!r} appears twice"
            current = found[heading] = []
            continue
        current.append(line)
    return "\n".join(lead), {k: "\n".join(v) for k, v in found.items()}


def one_table(text: str, where: str, header: list[str]) -> list[list[str]]:
    """The rows of the one table of ``text``; no table at all counts as no rows."""
    found = tables(text)
    assert len(found) <= 1, f"{where} has {len(found)} tables, expected at most one"
    if not found:
        return []
    got_header, rows = found[0]
    assert [plain(c).lower() for c in got_header] == header, f"{where} table header {got_header}, expected {header}"
    return rows


def the_table(page: Page, section: str, header: list[str]) -> list[list[str]]:
    """The rows of the one table of ``section`` before its subsections."""
    lead, _ = subsections(page.sections[section])
    return one_table(lead, f"section {section!r}", header)


def subsection_tables(page: Page, section: str) -> set[str]:
    """The ``### `` subsections of ``section`` that hold a table."""
    _, found = subsections(page.sections[section])
    return {heading for heading, text in found.items() if tables(text)}


# -- what the pages must say -------------------------------------------------------


def rendered_signature(op: str) -> str:
    """The canonical rendering of an op's signature on its page: the op's name and
    its parameters with their kinds and defaults, without annotations."""
    sig = op_signature(op)
    bare = sig.replace(
        parameters=[p.replace(annotation=inspect.Parameter.empty) for p in sig.parameters.values()],
        return_annotation=inspect.Signature.empty,
    )
    return f"{op}{bare}"


def state_shape(shape: tuple[str, ...], *, primitive: bool = False) -> str:
    """A state entry's full shape as the pages write it: ``(batch, H)``, or ``(B, H)``
    for a primitive, whose shapes are written over ``B``, ``T``, ``H``."""
    return format_shape(("B" if primitive else "batch", *shape))


def allowed_values(option: OptionSpec) -> str:
    """The "allowed" cell of an option: its values, ``array`` for an array option, or what a
    range option asks for."""
    if option.kind == "array":
        return "array"
    if option.check is not None:
        return option.describe_allowed()
    return ", ".join(repr(v) for v in option.allowed)


def defaults(spec: OpSpec) -> dict[str, object]:
    return {o.name: o.default for o in spec.options}


def check_parameter_rows(rows: list[list[str]], params: tuple[ParamSpec, ...], where: str) -> None:
    """Rows ``[name, shape, description]`` describe ``params`` in order, marked optional and top-only."""
    assert [plain(name) for name, _, _ in rows] == [p.name for p in params], where
    for (_, shape, description), p in zip(rows, params, strict=True):
        assert plain(shape) == format_shape(p.shape), (where, p.name)
        assert words(p.description) in words(plain(description)), (where, p.name)
        assert ("optional" in description) == (not p.required), (where, p.name)
        assert ("top layer only" in description) == (p.layers == "top"), (where, p.name)


def check_state_rows(rows: list[list[str]], state: tuple[StateSpec, ...], where: str, *, primitive: bool) -> None:
    """Rows ``[name, shape, description]`` describe ``state`` in order, marked top-only."""
    assert [plain(name) for name, _, _ in rows] == [s.name for s in state], where
    for (_, shape, description), s in zip(rows, state, strict=True):
        assert plain(shape) == state_shape(s.shape, primitive=primitive), (where, s.name)
        assert words(s.description) in words(plain(description)), (where, s.name)
        assert ("top layer only" in description) == (s.layers == "top"), (where, s.name)


@pytest.fixture(params=sorted(OPS), ids=lambda op: op)
def spec(request: pytest.FixtureRequest) -> OpSpec:
    name: str = request.param
    return OPS[name]


@pytest.fixture
def page(spec: OpSpec) -> Page:
    return parse_page(page_text(f"{spec.name}.md"))


# -- every op has a page, every page an op ---------------------------------------


def test_every_op_record_has_a_page_and_every_op_page_has_a_record() -> None:
    pages = {entry.name for entry in pages_dir().iterdir() if entry.name.endswith(".md")}
    assert COMMON_PAGE in pages
    assert pages - {COMMON_PAGE} == {f"{op}.md" for op in OPS}


def test_the_common_sequence_page_documents_every_keyword_that_no_record_lists() -> None:
    common = parse_page(page_text(COMMON_PAGE))
    assert common.title is not None
    headings = " ".join(common.order)
    for op, record in OPS.items():
        keywords = [
            p.name
            for p in op_signature(op).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in {o.name for o in record.options}
        ]
        # A primitive's initial value is an array argument (``initial``), not ``initial_state``.
        required = {"lengths", "reverse"} if record.kind == "primitive" else {"lengths", "initial_state", "reverse"}
        assert required <= set(keywords), op
        for name in keywords:
            assert f"`{name}`" in headings, f"{COMMON_PAGE} has no section heading naming `{name}` (used by {op})"
    for topic in ("Dtypes", "Validation and errors", "Gradient convention", "Chunked runs and truncated BPTT"):
        assert topic in common.order, f"{COMMON_PAGE} lacks the section {topic!r}"
    assert "go_backwards" in common.sections["Direction: `reverse`"]
    assert "rnnspec.reference" in common.sections["Gradient convention"]


# -- each op page against its record ---------------------------------------------


def test_the_page_is_titled_with_the_op_and_has_the_sections_in_order(spec: OpSpec, page: Page) -> None:
    assert page.title == spec.name
    assert page.order == list(OP_SECTIONS)


def test_the_page_refers_to_the_common_sequence_page(spec: OpSpec) -> None:
    assert f"]({COMMON_PAGE})" in page_text(f"{spec.name}.md")


def test_the_signature_block_is_the_backend_methods_signature(spec: OpSpec, page: Page) -> None:
    blocks = code_blocks(page.sections["Signature"])
    assert len(blocks) == 1
    info, lines = blocks[0]
    assert info == "python"
    assert "\n".join(lines).strip() == rendered_signature(spec.name)


def test_the_equations_block_holds_every_record_equation_verbatim_in_order(spec: OpSpec, page: Page) -> None:
    blocks = code_blocks(page.sections["Equations"])
    assert blocks, "the Equations section has no code block"
    _, lines = blocks[0]
    assert [line.rstrip() for line in lines if line.strip()] == list(spec.equations)


def test_the_parameters_table_has_exactly_the_records_parameters(spec: OpSpec, page: Page) -> None:
    rows = the_table(page, "Parameters", PARAMETER_HEADER)
    check_parameter_rows(rows, spec.layer_params(top=True, options=defaults(spec)), "Parameters")


def test_the_state_table_has_exactly_the_records_state_entries(spec: OpSpec, page: Page) -> None:
    rows = the_table(page, "State", STATE_HEADER)
    primitive = spec.kind == "primitive"
    if primitive and not rows:
        return  # a primitive returns h alone; describing its carried state is optional
    check_state_rows(rows, spec.layer_state(top=True, options=defaults(spec)), "State", primitive=primitive)


def test_only_an_op_whose_layout_follows_an_option_has_per_value_tables(spec: OpSpec, page: Page) -> None:
    layout_follows_an_option = spec.params_for is not None or spec.state_for is not None
    assert layout_follows_an_option == (spec.name in LAYOUT_OPTIONS)
    headings = PER_VALUE_SUBSECTIONS.get(spec.name, {})
    for section, follows in (("Parameters", spec.params_for), ("State", spec.state_for)):
        expected = {headings[section]} if follows is not None else set()
        assert subsection_tables(page, section) == expected, section


def per_value_rows(
    page: Page, op: str, section: str, option: str, values: tuple[object, ...]
) -> dict[object, list[list[str]]]:
    """The rows of the per-value table of ``section``, by value (first cell dropped), in the option's order."""
    heading = PER_VALUE_SUBSECTIONS[op][section]
    _, found = subsections(page.sections[section])
    rows = one_table(found[heading], f"subsection {heading!r}", [option, *PARAMETER_HEADER])
    keys = [plain(row[0]) for row in rows]
    order = [repr(v) for v in values]
    assert list(dict.fromkeys(keys)) == order, f"{heading}: rows for {keys}, expected groups {order}"
    assert keys == sorted(keys, key=order.index), f"{heading}: the rows of one value must be together"
    return {v: [row[1:] for row in rows if plain(row[0]) == repr(v)] for v in values}


@pytest.mark.parametrize("op", sorted(LAYOUT_OPTIONS))
def test_the_per_value_tables_give_the_layout_and_state_for_every_value_of_the_option(op: str) -> None:
    spec = OPS[op]
    page = parse_page(page_text(f"{op}.md"))
    option, values = LAYOUT_OPTIONS[op]
    assert spec.option(option).allowed == values
    sections = PER_VALUE_SUBSECTIONS[op]
    params = per_value_rows(page, op, "Parameters", option, values) if "Parameters" in sections else None
    state = per_value_rows(page, op, "State", option, values) if "State" in sections else None
    for value in values:
        where = f"{option}={value!r}"
        if params is not None:
            check_parameter_rows(params[value], spec.layer_params(top=True, options={option: value}), where)
        if state is not None:
            check_state_rows(state[value], spec.layer_state(top=True, options={option: value}), where, primitive=False)


@pytest.mark.parametrize("cell", sorted(ACT_CELLS))
def test_acts_layout_is_the_cells_with_one_more_input_column_and_the_halting_unit(cell: str) -> None:
    base = ACT_CELLS[cell]
    params = OPS["act"].layer_params(top=True, options={"cell": cell})
    assert [p.name for p in params] == [p.name for p in base.params] + ["w_halt", "b_halt"]
    shapes = {p.name: p.shape for p in params}
    for p in base.params:
        assert shapes[p.name] == ((p.shape[0], "I+1") if p.name == "w_ih" else p.shape), p.name
    assert OPS["act"].layer_state(top=True, options={"cell": cell}) == base.state


def test_the_options_table_has_exactly_the_records_options_with_defaults_and_allowed_values(
    spec: OpSpec, page: Page
) -> None:
    rows = the_table(page, "Options", OPTION_HEADER)
    assert [plain(name) for name, _, _, _ in rows] == [o.name for o in spec.options]
    for (_, default, allowed, description), o in zip(rows, spec.options, strict=True):
        assert plain(default) == ("required" if o.required else repr(o.default)), o.name
        assert plain(allowed) == allowed_values(o), o.name
        assert words(o.description) in words(plain(description)), o.name
    if not spec.options:
        assert f"`{spec.name}` has no op-specific options" in page.sections["Options"]


def test_the_option_defaults_on_the_page_are_the_signatures_defaults(spec: OpSpec, page: Page) -> None:
    parameters = op_signature(spec.name).parameters
    for name, default, _, _ in the_table(page, "Options", OPTION_HEADER):
        parameter = parameters[plain(name)]
        if plain(default) == "required":  # an array the call must pass: no default in the signature
            assert parameter.default is inspect.Parameter.empty, plain(name)
            assert parameter.kind is inspect.Parameter.KEYWORD_ONLY, plain(name)
        else:
            assert plain(default) == repr(parameter.default)


def test_the_result_section_names_every_result_field(spec: OpSpec, page: Page) -> None:
    section = page.sections["Result"]
    for field in spec.result_fields:
        assert f"`{field}`" in section, field


def test_the_gradient_section_states_the_records_gradient_text(spec: OpSpec, page: Page) -> None:
    assert words(spec.gradient) in words(page.sections["Gradient"])


def test_the_initialisation_section_shows_the_init_params_call(spec: OpSpec, page: Page) -> None:
    section = page.sections["Initialisation"]
    if spec.kind == "primitive":
        # No parameters to draw: the page says so, and shows no call that would fail.
        assert f"`{spec.name}` has no parameters" in words(section)
        assert f'rnnspec.init_params("{spec.name}"' not in section
    else:
        assert f'rnnspec.init_params("{spec.name}"' in section


@pytest.mark.parametrize("op", sorted(op for op, record in OPS.items() if record.kind == "primitive"))
def test_a_primitives_parameters_are_its_array_arguments_over_batch_time_and_hidden(op: str) -> None:
    spec = OPS[op]
    arguments = [
        p.name for p in op_signature(spec.name).parameters.values() if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    ]
    assert arguments == [p.name for p in spec.params]
    assert all(set(p.shape) <= {"B", "T", "H"} for p in spec.params)


def test_the_conventions_section_names_a_rejected_alternative(spec: OpSpec, page: Page) -> None:
    assert "Rejected" in page.sections["Conventions"]


# -- the docstrings rendered from the records ------------------------------------


def test_the_backend_method_docstring_contains_every_equation(spec: OpSpec) -> None:
    doc = getattr(Backend, spec.name).__doc__
    assert doc is not None
    for equation in spec.equations:
        assert equation in doc, equation
    assert spec.summary in doc
    assert words(spec.gradient) in words(doc)


# -- the parser itself -------------------------------------------------------------


def test_the_table_parser_reads_cells_not_substrings() -> None:
    section = "text `w_ih`\n\n| name | shape | description |\n|---|---|---|\n| `w_hh` | `(H, H)` | a \\| b |\n"
    ((header, rows),) = tables(section)
    assert header == ["name", "shape", "description"]
    assert rows == [["`w_hh`", "`(H, H)`", "a | b"]]


def test_the_page_parser_ignores_headings_inside_code_blocks() -> None:
    parsed = parse_page("# t\n\n## A\n\n```text\n## not a section\n```\n\n## B\nb\n")
    assert parsed.title == "t"
    assert parsed.order == ["A", "B"]
    assert code_blocks(parsed.sections["A"]) == [("text", ["## not a section"])]
