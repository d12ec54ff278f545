"""The README's Keras example runs as written (in the TensorFlow session, without Triton)."""

from __future__ import annotations

import pytest
from helpers_readme import readme_examples

EXAMPLES = readme_examples(tensorflow=True)

pytest.importorskip("keras")


def test_the_readme_has_a_keras_example() -> None:
    assert EXAMPLES


@pytest.mark.parametrize(("name", "code"), EXAMPLES, ids=[name for name, _ in EXAMPLES])
def test_each_keras_readme_example_runs_as_written(name: str, code: str) -> None:
    exec(compile(code, name, "exec"), {"__name__": name})
