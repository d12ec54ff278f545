"""The JAX backend's implementation: adapters, jit, reverse mode, dispatch to the ops.

Every op is a pure function of jax arrays (:data:`.run.OP_FUNCTIONS`):
its control flow depends on shapes and on the static options only, its loops
over time are ``lax.scan`` (no Python loop over time), so it traces under
``jax.jit``, batches under ``jax.vmap`` and differentiates under ``jax.grad``
and ``jax.vjp``. The op methods run it under ``jax.jit`` (:func:`.run.jitted`, one
compiled program per op, shapes, dtypes and static options), which
:meth:`JaxImplementation.compile` also returns.

Dtype policy (:mod:`.run`): float32 and float64 compute in their own dtype;
float16 and bfloat16 inputs are computed in float32 and the results rounded
back to the input dtype. float64 needs ``jax_enable_x64`` (``JAX_ENABLE_X64=1`` or
``jax.config.update("jax_enable_x64", True)`` before arrays are made): without
it jax has no float64 arrays, and :meth:`JaxImplementation.asarray` refuses a
float64 NumPy array rather than silently computing it in float32.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from rnnspec.errors import DtypeError
from rnnspec.implementation import Implementation
from rnnspec.methods import spec_method

from . import cudnn
from .paths import PLAIN_ENV, plain_forced
from .recurrences import ASSOCIATIVE_MIN_TIME, pallas_available
from .run import OP_FUNCTIONS, jitted

__all__ = ["JaxImplementation"]


def _run_jitted(op: str, arguments: dict[str, Any]) -> Any:
    return jitted(op)(**arguments)


class JaxImplementation(Implementation):
    """Every op of the spec on jax arrays (CPU, GPU, TPU), under ``jax.jit``."""

    ops: ClassVar[tuple[str, ...]] = tuple(OP_FUNCTIONS)
    dtypes: ClassVar[tuple[str, ...]] = ("float16", "bfloat16", "float32", "float64")
    framework: ClassVar[str] = "jax"
    capabilities: ClassVar[frozenset[str]] = frozenset({"vjp", "compile"})
    #: As every jax function, the ops take NumPy arrays too (converted once, by the Backend, with asarray).
    accepts_numpy: ClassVar[bool] = True
    expected_failures: ClassVar[Mapping[str, str]] = {}

    def framework_version(self) -> str:
        return str(jax.__version__)

    def device(self) -> str:
        return str(jax.default_backend())

    def fast_paths(self) -> dict[str, str]:
        off = f" [off now: {PLAIN_ENV} is set]" if plain_forced() else ""
        pallas = pallas_available()
        pallas_text = (
            "linear_recurrence, indrnn_recurrence and the recurrences of qrnn and indrnn through Pallas kernels, "
            "float32 on a GPU"
        )
        cpu = ASSOCIATIVE_MIN_TIME["cpu"]
        gpu = ASSOCIATIVE_MIN_TIME["gpu"]
        scan_text = (
            "linear_recurrence and qrnn's pooling as lax.associative_scan "
            f"(GPU: from T={gpu} where Pallas does not apply; CPU: "
            f"{'never, the sequential lax.scan measured faster' if cpu is None else f'from T={cpu}'})"
        )
        return {
            cudnn.FAST_PATH: cudnn.describe() + off,
            "pallas-recurrences": (pallas_text if pallas is None else f"{pallas_text} [inactive here: {pallas}]") + off,
            "associative-scan": scan_text + off,
        }

    # -- adapters -----------------------------------------------------------------

    def is_array(self, value: Any) -> bool:
        return isinstance(value, jax.Array)

    def asarray(self, value: np.ndarray) -> jax.Array:
        host = np.asarray(value)
        if not host.dtype.isnative:  # jax takes no big-endian array: the same values, in native order
            host = host.astype(host.dtype.newbyteorder("="))
        if host.dtype == np.float64 and jax.dtypes.canonicalize_dtype(np.float64) != np.float64:
            raise DtypeError(
                "from_numpy",
                "value",
                "float32 or float16: float64 needs jax_enable_x64 (JAX_ENABLE_X64=1, or "
                "jax.config.update('jax_enable_x64', True) before any array is made)",
                "a float64 NumPy array, which jax would silently make float32",
                backend="jax",
            )
        return jnp.array(host)  # a copy on the default device

    def asnumpy(self, value: Any) -> np.ndarray:
        host = np.asarray(jax.device_get(value))
        if host.dtype == jnp.bfloat16:
            host = host.astype(np.float32)  # NumPy has no bfloat16; float32 holds it exactly
        return np.array(host)

    def dtype_name(self, value: Any) -> str:
        return str(jnp.dtype(value.dtype).name)

    def host_values(self, value: Any) -> np.ndarray | None:
        return None if isinstance(value, jax.core.Tracer) else self.asnumpy(value)

    # -- reverse mode and compiled mode --------------------------------------------

    def vjp(self, op: str, arguments: dict[str, Any], cotangents: Mapping[str, Any]) -> dict[str, Any]:
        from .autodiff import vjp

        return vjp(op, arguments, cotangents)

    def compile(self, op: str) -> Callable[..., Any]:
        return jitted(op)


#: The ops whose dropout masks (``dropout_mask``, ``recurrent_mask``) this backend runs; the others leave them
#: out of their signature, so the Backend refuses a mask for them, naming the backend.
MASKED_OPS: frozenset[str] = frozenset(
    {"rnn", "lstm", "gru", "indrnn", "qrnn", "skip_rnn", "skip_lstm", "skip_gru", "act", "phased_lstm"}
)

for _op in JaxImplementation.ops:
    _without = () if _op in MASKED_OPS else ("dropout_mask", "recurrent_mask")
    setattr(JaxImplementation, _op, spec_method(_op, _run_jitted, without=_without))
