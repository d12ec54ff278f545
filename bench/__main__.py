"""``python -m rnnspec.bench``: see :mod:`rnnspec.bench.cli`."""

import sys

from .cli import main

sys.exit(main())
