"""The README's and the docs pages' Python examples, read from the files, so their tests run what a reader copies."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
_TENSORFLOW = re.compile(r"^\s*(import|from)\s+(keras|tensorflow)\b", re.M)


def readme_examples(*, tensorflow: bool) -> list[tuple[str, str]]:
    """``(name, code)`` of each ```python block of the README that imports Keras/TensorFlow, or that does not."""
    blocks = re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), re.S | re.M)
    chosen = [b for b in blocks if bool(_TENSORFLOW.search(b)) == tensorflow]
    return [(f"readme-block-{blocks.index(b) + 1}", b) for b in chosen]


def run_section_example(page: Path, heading: str) -> dict[str, object]:
    """Run the first ```python block after ``heading`` in the docs ``page``; the names it defines."""
    text = page.read_text(encoding="utf-8")
    code = re.search(r"```python\n(.*?)```", text[text.index(heading) :], re.DOTALL)
    assert code is not None, f"{page.name}: no python example after {heading!r}"
    namespace: dict[str, object] = {}
    exec(compile(code.group(1), f"{page.name}: {heading}", "exec"), namespace)
    return namespace
