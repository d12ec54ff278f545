"""The README's Python examples, read from the README itself, so its tests run what a reader copies."""

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
