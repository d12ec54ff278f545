"""``python -m rnnspec.bench``: see :mod:`rnnspec.bench.cli`."""

import sys

from .cli import main

__all__: list[str] = []

sys.exit(main())
