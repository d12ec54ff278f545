"""The README's quick start runs as written (its Keras example runs in test_tensorflow_readme.py)."""

from __future__ import annotations

import pytest
from helpers_readme import readme_examples

EXAMPLES = readme_examples(tensorflow=False)


def test_the_readme_has_its_quick_start_examples() -> None:
    assert len(EXAMPLES) >= 3, EXAMPLES


@pytest.mark.parametrize(("name", "code"), EXAMPLES, ids=[name for name, _ in EXAMPLES])
def test_each_readme_example_runs_as_written(name: str, code: str) -> None:
    for framework in ("torch", "jax"):
        if f"import {framework}" in code:
            pytest.importorskip(framework)
    exec(compile(code, name, "exec"), {"__name__": name})
