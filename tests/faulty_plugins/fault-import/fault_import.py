"""Plugin of the ``fault_import`` backend, faulty on purpose: importing it raises."""

from __future__ import annotations

#: The message of the error; the registry's report must carry it.
MESSAGE = "fault_import: the framework exploded while the plugin module was imported"

raise RuntimeError(MESSAGE)
