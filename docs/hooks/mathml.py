"""mkdocs hook: render the pages' TeX as MathML at build time, so the site needs no script or network.

pymdownx.arithmatex (generic mode) leaves each equation as ``\\(...\\)`` in a
``<span class="arithmatex">`` or ``\\[...\\]`` in a ``<div class="arithmatex">``;
this hook converts it with latex2mathml into a ``<math>`` element, which browsers
render natively (MathML Core: Chromium, Firefox, Safari). The wrapper stays, for
the theme's styles (a wide display equation scrolls).

latex2mathml's output is adjusted to what MathML Core renders, and checked: an
equation that does not convert cleanly fails the build, naming the page and the TeX.
The site ships a math font (STIX Two Math, from the ziamath package) and a
stylesheet for it: without an OpenType MATH font, brackets and braces do not
stretch around a matrix, and few systems have one installed.
"""

from __future__ import annotations

import html
import re
import unicodedata
import xml.etree.ElementTree as ET
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from latex2mathml.converter import convert
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

MATHML = "http://www.w3.org/1998/Math/MathML"
ET.register_namespace("", MATHML)

#: Where the stylesheet and the font go on the site; the stylesheet names the font relative to itself.
STYLESHEET = "assets/mathml/mathml.css"
FONT = "assets/mathml/STIXTwoMath-Regular.ttf"
CSS = """\
@font-face {
  font-family: "STIX Two Math";
  src: url("STIXTwoMath-Regular.ttf") format("truetype");
}
math {
  font-family: "STIX Two Math", math;
}
/* The math font's tall line box would give a display equation a vertical scrollbar; wide ones still scroll. */
.md-typeset div.arithmatex {
  overflow-y: hidden;
}
/* Core ignores columnalign (Firefox honours it). Chromium aligns a cell's math right with -webkit-right only. */
mtd[columnalign="left"] {
  text-align: left;
}
mtd[columnalign="right"] {
  text-align: right;
  text-align: -webkit-right;
}
/* A right-aligned cell and the left-aligned one after it are one of TeX's &-pairs (a &= b): no gap. */
mtd[columnalign="right"]:has(+ mtd[columnalign="left"]) {
  padding-right: 0;
}
mtd[columnalign="right"] + mtd[columnalign="left"] {
  padding-left: 0;
}
"""

#: arithmatex's generic output: the wrapper's tag, then the TeX with its delimiters, HTML-escaped.
ARITHMATEX = re.compile(r'<(?P<tag>div|span) class="arithmatex">(?P<tex>.*?)</(?P=tag)>', re.DOTALL)
DELIMITERS = {"\\(": ("\\)", False), "\\[": ("\\]", True)}

ALIGNED = re.compile(r"\\begin\{aligned\}(?P<body>.*?)\\end\{aligned\}", re.DOTALL)
ENVIRONMENT = re.compile(r"\\begin\{\w+\}|\\end\{\w+\}")
#: Delimiters that latex2mathml leaves escaped after a size command (``\\big\\{`` gives ``<mo>\\{</mo>``).
SIZED_DELIMITERS = {"\\{": "{", "\\}": "}", "\\|": "\u2016", "\\langle": "\u27e8", "\\rangle": "\u27e9"}
#: How many children the MathML elements of fixed arity have: a wrong count is a conversion gone wrong.
ARITY = {"msub": 2, "msup": 2, "msubsup": 3, "munder": 2, "mover": 2, "munderover": 3, "mfrac": 2, "mroot": 2}


def on_config(config: Any) -> Any:
    """Link every page to the math stylesheet."""
    config.extra_css.append(STYLESHEET)
    return config


def on_files(files_: Files, config: Any) -> Files:
    """Add the math stylesheet and its font to the site."""
    files_.append(File.generated(config, STYLESHEET, content=CSS))
    files_.append(File.generated(config, FONT, abs_src_path=str(_ziamath_font())))
    return files_


def _ziamath_font() -> Path:
    # Found, not imported: ziamath's import warns of deprecated importlib.resources calls.
    spec = find_spec("ziamath")
    if spec is None or not spec.submodule_search_locations:
        raise PluginError("the math font comes from the ziamath package: pip install ziamath")
    font = Path(spec.submodule_search_locations[0]) / "fonts" / "STIXTwoMath-Regular.ttf"
    if not font.is_file():
        raise PluginError(f"ziamath has no {font.name} (its release is pinned in noxfile.py's docs session)")
    return font


class MathError(ValueError):
    """An equation that does not convert to clean MathML."""


def on_page_content(html_text: str, page: Any, config: Any, files: Any) -> str:
    """Replace every arithmatex equation of the page by its MathML."""

    def render(match: re.Match[str]) -> str:
        tex = html.unescape(match["tex"])
        try:
            math = tex_to_mathml(tex)
        except MathError as err:
            raise PluginError(f"{page.file.src_uri}: an equation does not render as MathML ({err}):\n{tex}") from err
        return f'<{match["tag"]} class="arithmatex">{math}</{match["tag"]}>'

    return ARITHMATEX.sub(render, html_text)


def tex_to_mathml(tex: str) -> str:
    """The MathML of ``tex``, an equation in arithmatex's delimiters: ``\\(...\\)`` inline, ``\\[...\\]`` display."""
    tex = tex.strip()
    end, display = DELIMITERS.get(tex[:2], (None, False))
    if end is None or not tex.endswith(end):
        raise MathError("not within \\( \\) or \\[ \\]")
    body = ALIGNED.sub(_aligned_as_array, tex[2:-2])
    # latex2mathml makes a sub- or superscript after an environment take the environment's pieces as its
    # bases (``\\begin{bmatrix}...\\end{bmatrix}_t``: an msub of four children); in braces it is one base.
    body = ENVIRONMENT.sub(lambda m: "{" + m[0] if m[0].startswith("\\begin") else m[0] + "}", body)
    try:
        mathml = convert(body, display="block" if display else "inline")
    except Exception as err:  # latex2mathml raises bare exceptions of several kinds on bad input
        raise MathError(f"latex2mathml: {type(err).__name__}: {err}") from err
    try:
        root = ET.fromstring(mathml)
    except ET.ParseError as err:  # e.g. an ``&`` outside an environment that aligns, left as text
        raise MathError(f"latex2mathml wrote malformed MathML: {err}") from err
    for element in root.iter():
        _fit_to_mathml_core(element)
    return ET.tostring(root, encoding="unicode")


def _aligned_as_array(match: re.Match[str]) -> str:
    # latex2mathml does not align ``aligned`` (its ``&`` and ``\\`` come out as text and a line break that
    # MathML Core ignores), but it does ``array``: aligned's columns pair up right- and left-aligned, and
    # ``{}`` before each cell keeps a leading ``=`` a relation (spaced) rather than a prefix operator.
    body = match["body"]
    columns = "rl" * (body.count("&") // 2 + 1)
    return f"\\begin{{array}}{{{columns}}}{body.replace('&', '&{}')}\\end{{array}}"


def _fit_to_mathml_core(element: ET.Element) -> None:
    """Rewrite what MathML Core (Chromium) ignores into what it renders; fail on TeX left as text."""
    tag = element.tag.removeprefix(f"{{{MATHML}}}")
    text = element.text or ""
    if tag == "mo" and text in SIZED_DELIMITERS:
        element.text = text = SIZED_DELIMITERS[text]
    if tag == "mo" and len(text) > 1 and text.isalpha():
        # latex2mathml writes \min as an operator, spaced on both sides in Core; TeX sets it as a name.
        element.tag = f"{{{MATHML}}}mi"
    if "\\" in text:
        raise MathError(f"left as text: {text!r} (a command latex2mathml does not know?)")
    if tag in ARITY and len(element) != ARITY[tag]:
        raise MathError(f"a <{tag}> of {len(element)} children, not {ARITY[tag]}")
    variant = element.get("mathvariant", "normal")
    if variant != "normal":
        # Core renders only mathvariant="normal"; the other variants are characters of their own (a
        # one-letter <mi> is italic already: italic h has no character but the Planck constant).
        del element.attrib["mathvariant"]
        if not (variant == "italic" and tag == "mi" and len(text) == 1):
            element.text = "".join(_math_character(c, variant) for c in text)


def _math_character(char: str, variant: str) -> str:
    """``char`` in a MathML ``variant`` (``double-struck``, ``bold-italic``...): its Unicode math alphanumeric."""
    name = unicodedata.name(char, "")
    letter = re.fullmatch(r"(?:LATIN |GREEK )?(SMALL|CAPITAL) LETTER (\w+)", name)
    what = f"{letter[1]} {letter[2]}" if letter else name
    words = variant.upper().replace("DOUBLE-STRUCK", "DOUBLE_STRUCK").replace("SANS-SERIF", "SANS_SERIF").split("-")
    if "SANS_SERIF" in words:  # Unicode names it "SANS-SERIF BOLD ITALIC", MathML "sans-serif-bold-italic"
        words.remove("SANS_SERIF")
        words.insert(0, "SANS_SERIF")
    style = " ".join(words).replace("_", "-")
    # The letterlike symbols predate the block: double-struck C is "DOUBLE-STRUCK CAPITAL C", no MATHEMATICAL.
    for candidate in (f"MATHEMATICAL {style} {what}", f"{style} {what}"):
        try:
            return unicodedata.lookup(candidate)
        except KeyError:
            continue
    raise MathError(f"no {variant} form of {char!r} in Unicode")
