"""An example third-party rnnspec backend (backend name ``example``).

The package is split the way every backend should be: :mod:`.plugin` is what
rnnspec imports to list backends, and stays light; :mod:`.implementation`
holds the computation and is imported only when the backend is first used.
"""

__version__ = "0.1.0"
