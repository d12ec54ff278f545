"""The documentation's equations render offline: the build turns their TeX into MathML (docs/hooks/mathml.py).

The hook's conversion is checked on its own, then the built site is opened
from disk in headless Chromium, with every request off the disk refused, and
each op page with equations must show them as rendered math, not as raw TeX.

``nox -s docs`` runs this file after its build, and on CI (``$CI`` set) it
fails rather than skips when Chromium or playwright is missing. Chromium is
Debian's (``apt-get install chromium``), or ``$RNNSPEC_CHROMIUM``; playwright
drives it (never ``playwright install``). ``$RNNSPEC_DOCS_SITE`` checks a site
already built there instead of building one.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
HOOK = ROOT / "docs" / "hooks" / "mathml.py"
OP_PAGES = ROOT / "spec" / "ops"
#: The op pages with equations: ``$$...$$`` or ``$...$`` in their markdown (a shell prompt's ``$ `` is not one).
TEX = re.compile(r"\$\$|\$[^\s$]")
MATH_PAGES = sorted(p.stem for p in OP_PAGES.glob("*.md") if TEX.search(p.read_text(encoding="utf-8")))

#: Set by ``nox -s docs`` on CI: a missing browser fails the check instead of skipping it.
REQUIRED = os.environ.get("RNNSPEC_DOCS_BROWSER") == "required"
#: Chromium's flags for a machine without network: without them it keeps trying to reach Google's hosts.
CHROMIUM_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def _missing(what: str) -> None:
    message = f"{what}: nox -s docs runs this check, with Debian's chromium installed"
    if REQUIRED:
        pytest.fail(message)
    pytest.skip(message)


def _load_hook() -> ModuleType:
    for module in ("latex2mathml", "mkdocs"):
        if importlib.util.find_spec(module) is None:
            _missing(f"{module} is not installed")
    spec = importlib.util.spec_from_file_location("docs_hook_mathml", HOOK)
    assert spec is not None
    assert spec.loader is not None
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    return hook


@pytest.fixture(scope="module")
def hook() -> ModuleType:
    return _load_hook()


def test_an_aligned_block_becomes_a_table_of_right_and_left_aligned_cells(hook: Any) -> None:
    mathml = hook.tex_to_mathml(r"\[\begin{aligned} c_t &= a \\ h &= b, \qquad y = h \end{aligned}\]")
    assert mathml.startswith("<math")
    assert 'display="block"' in mathml
    assert mathml.count("<mtr>") == 2
    cells = re.findall(r'<mtd columnalign="(\w+)"', mathml)
    assert cells[:2] == ["right", "left"]
    assert cells[2:4] == ["right", "left"]
    assert "&" not in mathml.replace("&amp;", "")  # no alignment mark left as text


def test_inline_math_stays_inline(hook: Any) -> None:
    assert 'display="inline"' in hook.tex_to_mathml(r"\(y_t = h_t\)")


def test_a_sized_brace_is_a_brace_not_its_tex(hook: Any) -> None:
    mathml = hook.tex_to_mathml(r"\(\Big\{ M \Big\}\)")
    assert "{" in mathml
    assert "}" in mathml
    assert "\\" not in mathml


def test_a_double_struck_one_is_its_unicode_character(hook: Any) -> None:
    # Chromium ignores mathvariant="double-struck": the character itself must carry the style.
    mathml = hook.tex_to_mathml(r"\(\mathbb{1}[n > 1]\)")
    assert "\U0001d7d9" in mathml
    assert "mathvariant" not in mathml


def test_a_matrix_with_a_subscript_is_one_base(hook: Any) -> None:
    mathml = hook.tex_to_mathml(r"\[\begin{bmatrix} a \\ b \end{bmatrix}_t = c\]")
    assert re.search(r"<msub><mrow><mo>\[</mo><mtable>.*</mtable><mo>\]</mo></mrow><mi>t</mi></msub>", mathml)


def test_min_is_set_as_a_name(hook: Any) -> None:
    assert "<mi>min</mi>" in hook.tex_to_mathml(r"\(\min(a, b)\)")


def test_an_unknown_command_fails_the_build_naming_the_page_and_the_tex(hook: Any) -> None:
    from mkdocs.exceptions import PluginError

    page = SimpleNamespace(file=SimpleNamespace(src_uri="ops/broken.md"))
    html = '<p>see</p><div class="arithmatex">\\[h_t = \\frobnicate{x_t}\\]</div>'
    with pytest.raises(PluginError, match=r"ops/broken\.md.*frobnicate(.|\n)*h_t = \\frobnicate\{x_t\}"):
        hook.on_page_content(html, page, None, None)


def test_every_equation_of_a_page_is_replaced_by_mathml(hook: Any) -> None:
    html = '<p><span class="arithmatex">\\(a &lt; b\\)</span></p><div class="arithmatex">\\[x\\]</div>'
    out = hook.on_page_content(html, None, None, None)
    assert out.count("<math") == 2
    assert "\\(" not in out
    assert "\\[" not in out
    assert "<mo>&lt;</mo>" in out  # the TeX was unescaped before conversion, the MathML escaped after


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if built := os.environ.get("RNNSPEC_DOCS_SITE"):
        return Path(built)
    _load_hook()  # skips, with its reason, where the build could not run
    out = tmp_path_factory.mktemp("site")
    build = [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(out)]
    subprocess.run(build, cwd=ROOT, check=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    return out


@pytest.fixture(scope="module")
def tab() -> Any:
    """A headless Chromium tab that may load files from disk and nothing else (one tab: a new one costs)."""
    chromium = os.environ.get("RNNSPEC_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).is_file():
        _missing(f"no Chromium at {chromium}")
    if importlib.util.find_spec("playwright") is None:
        _missing("playwright is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=list(CHROMIUM_FLAGS))
        page = browser.new_page()
        page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:") else route.abort())
        yield page
        browser.close()


def _open(tab: Any, page_file: Path) -> None:
    tab.goto(page_file.as_uri(), wait_until="load")
    tab.evaluate("document.fonts.ready.then(() => true)")


#: What a page shows of its equations: every wrapper arithmatex wrote, the math elements in them with their
#: rendered sizes, and the article's text outside code (raw TeX would show there).
SHOWN = """() => {
  const article = document.querySelector("article");
  const text = article.cloneNode(true);
  text.querySelectorAll("pre, code").forEach((e) => e.remove());
  return {
    wrappers: article.querySelectorAll(".arithmatex").length,
    maths: [...article.querySelectorAll(".arithmatex > math")].map((m) => {
      const box = m.getBoundingClientRect();
      return [box.width, box.height];
    }),
    text: text.textContent,
  };
}"""


@pytest.mark.parametrize("op", MATH_PAGES)
def test_an_op_page_opened_from_disk_offline_shows_its_equations_as_rendered_math(
    site: Path, tab: Any, op: str
) -> None:
    _open(tab, site / "ops" / op / "index.html")
    shown = tab.evaluate(SHOWN)
    for raw in ("\\[", "\\(", "\\begin{", "$$"):
        assert raw not in shown["text"], f"ops/{op}: raw TeX {raw!r} shows on the page"
    assert shown["wrappers"] > 0, f"ops/{op}: no equation on the built page"
    assert len(shown["maths"]) == shown["wrappers"], f"ops/{op}: an equation is not MathML"
    assert all(w > 0 and h > 0 for w, h in shown["maths"]), f"ops/{op}: an equation has no size: {shown['maths']}"


def test_a_matrix_bracket_stretches_to_its_rows_in_the_shipped_math_font(site: Path, tab: Any) -> None:
    # Only an OpenType MATH font stretches brackets; the site ships one, and no system font is counted on.
    _open(tab, site / "ops" / "lstm" / "index.html")
    bracket, letter = tab.evaluate("""() => {
      const mo = [...document.querySelectorAll("article math mo")].find((m) => m.textContent === "[");
      const mi = mo.parentElement.querySelector("mtable mi");
      return [mo.getBoundingClientRect().height, mi.getBoundingClientRect().height];
    }""")
    font = tab.evaluate("""() => [...document.fonts]
      .filter((f) => f.family.replaceAll('"', "") === "STIX Two Math").map((f) => f.status)""")
    assert font == ["loaded"], f"the shipped math font: {font}"
    assert bracket > 3 * letter, f"lstm's [a_i; a_f; a_g; a_o] bracket is {bracket}px for {letter}px letters"
