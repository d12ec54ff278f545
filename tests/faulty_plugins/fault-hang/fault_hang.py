"""Plugin of the ``fault_hang`` backend, faulty on purpose: importing it never finishes.

It waits on an event nobody sets, as an import stuck on a network file system
or a lock would: the registry must give up on it after its time limit, and
never import it for another backend.
"""

from __future__ import annotations

import os
import pathlib
import threading

# A test that must act while the import hangs (not before it starts) names a file to create first.
if os.environ.get("RNNSPEC_TEST_HANG_MARKER"):
    pathlib.Path(os.environ["RNNSPEC_TEST_HANG_MARKER"]).touch()
threading.Event().wait()
