"""Plugin of the ``fault_interrupt`` backend, faulty on purpose: importing it raises ``KeyboardInterrupt``.

Raised by the plugin's own code, not by Ctrl-C: the registry must record it as
this plugin's fault (a real Ctrl-C must still interrupt).
"""

from __future__ import annotations

#: The message of the interrupt; the registry's report must carry it.
MESSAGE = "fault_interrupt: the plugin module raised KeyboardInterrupt at import"

raise KeyboardInterrupt(MESSAGE)
