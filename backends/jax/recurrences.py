"""The elementwise recurrences: ``linear_recurrence`` (QRNN's pooling) and ``indrnn_recurrence``.

``h_t = a_t * h_{t-1} + b_t`` and ``h_t = act(pre_t + u * h_{t-1})`` over
``(batch, time, H)``, from ``h_0``; past a row's length ``h`` is frozen, and
returned as 0. Three ways to run them, chosen per call by :func:`linear_path`
and :func:`indrnn_path` (never by catching an error):

- ``"plain"``: one sequential ``lax.scan`` over time, vectorised over batch and units;
- ``"associative-scan"`` (``linear_recurrence`` only, it is associative):
  ``lax.associative_scan`` of the affine maps ``h -> a_t h + b_t``, composed as
  ``(a1, b1) then (a2, b2) = (a1 a2, a2 b1 + b2)``, padded steps being the
  identity ``(1, 0)`` and ``h_0`` folded into the first step. ``log2 T`` passes
  over memory instead of one, so it wins only where the sequential loop is
  latency-bound, on GPUs: on the CPU the sequential scan was faster from T=64 on
  and level below (``bench/jax_recurrences.py``, :data:`ASSOCIATIVE_MIN_TIME`);
- ``"pallas-recurrences"``: the Pallas kernels of :mod:`.pallas_recurrences`
  (one program per block of (batch, unit) pairs, a loop over time on chip),
  for float32 arrays on a GPU when that module is present. indrnn's recurrence
  is not associative (relu), so on a GPU without Pallas it takes the plain scan.

:func:`.paths.plain_path` or ``RNNSPEC_JAX_PLAIN=1`` force the plain scan.
"""

from __future__ import annotations

import importlib.util

import jax
import jax.numpy as jnp
from jax import lax

from rnnspec.backends.common import state as common_state

from .cells import ACTIVATIONS
from .paths import on_gpu, plain_forced, record_path
from .sequence import ARRAY_OPS, UNROLL, time_major

__all__ = [
    "ASSOCIATIVE_MIN_TIME",
    "associative_linear_scan",
    "indrnn_path",
    "indrnn_recurrence",
    "indrnn_scan",
    "linear_path",
    "linear_recurrence",
    "linear_scan",
    "pallas_available",
    "sequential_indrnn_scan",
    "sequential_linear_scan",
]

#: Per platform, the shortest time axis from which ``lax.associative_scan`` runs ``linear_recurrence``
#: (None: never). CPU (jax 0.10.2, 2 cores, float32, B=16 H=256, bench/jax_recurrences.py): the sequential
#: ``lax.scan`` took 0.36 / 2.0 / 24 / 112 ms forward at T=64 / 256 / 1024 / 4096, the associative scan
#: 0.45 / 2.3 / 55 / 223 ms; forward + backward 0.77 / 4.2 / 38 / 200 ms against 1.4 / 11 / 111 / 592 ms.
#: At T=16 the two are within 0.07 ms. GPU: used only where the Pallas kernel is not (float64, or no
#: Pallas module); there a sequential loop pays a kernel launch per step, which the log-depth scan
#: avoids from a few dozen steps on (the threshold is not measured here: no GPU).
ASSOCIATIVE_MIN_TIME: dict[str, int | None] = {"cpu": None, "gpu": 32}

_PALLAS_MODULE = "rnnspec.backends.jax.pallas_recurrences"


def pallas_available() -> str | None:
    """Why the Pallas kernels cannot run in this installation, or None when they can (on a GPU)."""
    try:
        found = importlib.util.find_spec(_PALLAS_MODULE) is not None
    except ImportError:
        found = False
    if not found:
        return f"{_PALLAS_MODULE} is not installed"
    if jax.default_backend() not in ("gpu", "cuda", "rocm"):
        return f"no GPU: jax's default backend is {jax.default_backend()!r}"
    return None


def _pallas_applies(x: jax.Array) -> bool:
    return x.dtype == jnp.float32 and on_gpu(x) and pallas_available() is None


def linear_path(a: jax.Array) -> str:
    """The path ``linear_recurrence`` takes on ``a`` (see the module docstring)."""
    if plain_forced():
        return "plain"
    if _pallas_applies(a):
        return "pallas-recurrences"
    threshold = ASSOCIATIVE_MIN_TIME["gpu" if on_gpu(a) else "cpu"]
    if threshold is not None and a.shape[1] >= threshold:
        return "associative-scan"
    return "plain"


def indrnn_path(pre: jax.Array) -> str:
    """The path ``indrnn_recurrence`` takes on ``pre`` (see the module docstring)."""
    if not plain_forced() and _pallas_applies(pre):
        return "pallas-recurrences"
    return "plain"


def _mask(h: jax.Array, valid: jax.Array | None) -> jax.Array:
    return h if valid is None else jnp.where(valid[:, :, None], h, jnp.zeros((), h.dtype))


def sequential_linear_scan(
    a: jax.Array, b: jax.Array, h0: jax.Array, valid: jax.Array | None
) -> tuple[jax.Array, jax.Array]:
    """``h_t = a_t h_{t-1} + b_t`` by one ``lax.scan``; all ``h`` (0 past each length) and the final one.

    Padded steps are the identity map ``(a, b) = (1, 0)``, so the state is
    frozen there without a select in the loop.
    """
    if valid is not None:
        keep = valid[:, :, None]
        a = jnp.where(keep, a, jnp.ones((), a.dtype))
        b = jnp.where(keep, b, jnp.zeros((), b.dtype))

    def body(h: jax.Array, ab: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        h = ab[0] * h + ab[1]
        return h, h

    final, hs = lax.scan(body, h0, (time_major(a), time_major(b)), unroll=UNROLL)
    return _mask(time_major(hs), valid), final


def associative_linear_scan(
    a: jax.Array, b: jax.Array, h0: jax.Array, valid: jax.Array | None
) -> tuple[jax.Array, jax.Array]:
    """The same as :func:`sequential_linear_scan`, by ``lax.associative_scan`` (log-depth)."""
    if a.shape[1] == 0:
        return jnp.zeros_like(a), h0
    if valid is not None:
        keep = valid[:, :, None]
        a = jnp.where(keep, a, jnp.ones((), a.dtype))
        b = jnp.where(keep, b, jnp.zeros((), b.dtype))
    b = b.at[:, 0].add(a[:, 0] * h0)  # h_0 folded into the first step: h_1 = a_1 h_0 + b_1

    def compose(first: tuple[jax.Array, jax.Array], second: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        return first[0] * second[0], second[0] * first[1] + second[1]

    _, hs = lax.associative_scan(compose, (a, b), axis=1)
    return _mask(hs, valid), hs[:, -1]


def sequential_indrnn_scan(
    pre: jax.Array, u: jax.Array, h0: jax.Array, activation: str, valid: jax.Array | None
) -> tuple[jax.Array, jax.Array]:
    """``h_t = act(pre_t + u h_{t-1})`` by one ``lax.scan``; all ``h`` (0 past each length) and the final one."""
    fn = ACTIVATIONS[activation]
    xs: list[jax.Array] = [time_major(pre)]
    if valid is not None:
        xs.append(valid.T)

    def body(h: jax.Array, step: list[jax.Array]) -> tuple[jax.Array, jax.Array]:
        new = fn(step[0] + u * h)
        if valid is not None:
            new = jnp.where(step[1][:, None], new, h)
        return new, new

    final, hs = lax.scan(body, h0, xs, unroll=UNROLL)
    return _mask(time_major(hs), valid), final


def linear_scan(
    a: jax.Array, b: jax.Array, h0: jax.Array, valid: jax.Array | None, *, op: str = "linear_recurrence"
) -> tuple[jax.Array, jax.Array]:
    """``h_t = a_t h_{t-1} + b_t`` on the path :func:`linear_path` chooses; all ``h`` and the final one."""
    path = linear_path(a)
    record_path(op, path)
    if path == "pallas-recurrences":
        from .pallas_recurrences import linear_scan_pallas  # type: ignore[import-not-found,unused-ignore]

        h, final = linear_scan_pallas(a, b, h0, valid)
        return _mask(h, valid), final
    if path == "associative-scan":
        return associative_linear_scan(a, b, h0, valid)
    return sequential_linear_scan(a, b, h0, valid)


def indrnn_scan(
    pre: jax.Array,
    u: jax.Array,
    h0: jax.Array,
    activation: str,
    valid: jax.Array | None,
    *,
    op: str = "indrnn_recurrence",
) -> tuple[jax.Array, jax.Array]:
    """``h_t = act(pre_t + u h_{t-1})`` on the path :func:`indrnn_path` chooses; all ``h`` and the final one."""
    path = indrnn_path(pre)
    record_path(op, path)
    if path == "pallas-recurrences":
        from .pallas_recurrences import indrnn_scan_pallas  # type: ignore[import-not-found,unused-ignore]

        h, final = indrnn_scan_pallas(pre, u, h0, valid, activation)
        return _mask(h, valid), final
    return sequential_indrnn_scan(pre, u, h0, activation, valid)


#: The primitives' op functions: lengths, reverse and the zero start from the core, the scans from here.
linear_recurrence = common_state.linear_recurrence(linear_scan, ARRAY_OPS)
indrnn_recurrence = common_state.indrnn_recurrence(indrnn_scan, ARRAY_OPS)
