"""Plugin that claims the name ``numpy``, the built-in reference's: faulty on purpose.

The registry must keep the built-in and never import this module; if it did,
the import fails loudly.
"""

from __future__ import annotations

raise RuntimeError("fault_shadow was imported: a plugin shadowing a built-in backend must be ignored")
