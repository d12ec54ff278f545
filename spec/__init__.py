"""rnnspec: a framework-agnostic specification of recurrent-network operations.

``import rnnspec`` imports no framework. A framework is imported when its
backend is first requested::

    import rnnspec
    B = rnnspec.get_backend("numpy")
    params = rnnspec.init_params("lstm", input_size=3, hidden_size=8)
    result = B.lstm(x, params)          # result.outputs, result.state
"""

from __future__ import annotations

from ._version import __version__
from .backend import Backend
from .constraints import indrnn_bound, indrnn_constrain
from .errors import RnnspecError
from .implementation import Implementation
from .init import init_params
from .losses import skip_budget_loss
from .ops import OPS
from .param_files import load_params, save_params
from .registry import BackendRecord, get_backend, list_backends
from .results import ACTResult, SequenceResult, SkipResult

# Last: the converters import the names above. They import a framework only when called.
from . import convert  # isort: skip

__all__ = [
    "OPS",
    "ACTResult",
    "Backend",
    "BackendRecord",
    "Implementation",
    "RnnspecError",
    "SequenceResult",
    "SkipResult",
    "__version__",
    "convert",
    "get_backend",
    "indrnn_bound",
    "indrnn_constrain",
    "init_params",
    "list_backends",
    "load_params",
    "save_params",
    "skip_budget_loss",
]
