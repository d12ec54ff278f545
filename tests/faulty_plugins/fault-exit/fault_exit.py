"""Plugin of the ``fault_exit`` backend, faulty on purpose: importing it raises ``SystemExit``.

``SystemExit`` is no ``Exception``: the registry must contain it all the same,
or one plugin ends the program of whoever lists backends.
"""

from __future__ import annotations

#: The message of the exit; the registry's report must carry it.
MESSAGE = "fault_exit: the plugin module called sys.exit at import"

raise SystemExit(MESSAGE)
