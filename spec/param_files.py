"""Parameter files: an op's params saved and loaded exactly, as ``.npz`` or ``.safetensors``.

:func:`save_params` takes params in the canonical structure (one mapping of
named arrays, or a list of them, one per layer: what :func:`rnnspec.init_params`
returns and every op takes) holding arrays of any backend, and writes them::

    rnnspec.save_params("lstm.npz", params)             # or "lstm.safetensors"
    params = rnnspec.load_params("lstm.npz")            # NumPy arrays
    params = rnnspec.load_params("lstm.npz", backend="torch", op="lstm")

The suffix picks the format. Each array is stored under ``"<layer>/<name>"``
(``"0/w_ih"``, ``"1/b_hh"``) with its dtype and bits unchanged, so a round trip
is exact; bfloat16, which NumPy lacks, is stored as its 16-bit patterns. A
header (the ``.npz`` member ``__rnnspec__``, the safetensors metadata key
``__rnnspec__``) records the format, the structure (one mapping or a list), each
layer's names in order, the bfloat16 entries and the op, when one was named.

Reading never unpickles: an ``.npz`` is opened with ``allow_pickle=False``, and
a pickle, or an archive holding an object array, is refused
(:class:`~rnnspec.errors.UnsafeParamFileError`). A truncated or corrupt file is a
:class:`~rnnspec.errors.ParamFileError`; a file that rnnspec did not write, or
whose entries do not fit the ``op=`` asked for, a
:class:`~rnnspec.errors.ParamFileMismatchError`. safetensors is optional:
``pip install 'rnnspec[safetensors]'``. A file is written to a temporary name
beside it and renamed, so an interrupted save never leaves a truncated file.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
import zipfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ._version import __version__
from .backend import Backend
from .errors import (
    BackendError,
    DtypeError,
    MissingDependencyError,
    OptionError,
    ParameterError,
    ParamFileError,
    ParamFileMismatchError,
    UnknownArgumentError,
    UnsafeParamFileError,
)
from .implementation import Implementation
from .ops import OPS
from .registry import get_backend, list_backends, loaded_backends
from .shapes import format_shape

__all__ = ["FORMAT", "FORMAT_VERSION", "HEADER", "load_numpy_params", "load_params", "save_params"]

#: What the header's ``format`` says.
FORMAT = "rnnspec.params"
#: The newest layout this module writes and reads.
FORMAT_VERSION = 1
#: The ``.npz`` member, and the safetensors metadata key, that holds the header.
HEADER = "__rnnspec__"
_SUFFIXES = (".npz", ".safetensors")
_SAFETENSORS_EXTRA = "pip install 'rnnspec[safetensors]'"
#: dtype kinds a file may hold: bool, signed and unsigned integers, floats.
_NUMERIC_KINDS = "biuf"

Params = dict[str, Any] | list[dict[str, Any]]
#: One layer of what a file holds: name -> (shape, dtype name), for the checks against an op.
LayerLayout = dict[str, tuple[tuple[int, ...], str]]


# -- saving -------------------------------------------------------------------------


def save_params(
    path: str | os.PathLike[str],
    params: Any,
    *,
    backend: str | Backend | None = None,
    op: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> None:
    """Write ``params`` to ``path``, exactly, as ``.npz`` or ``.safetensors`` (by the suffix).

    Parameters
    ----------
    path
        The file to write (replaced if it exists); its suffix picks the format.
    params
        One mapping of named arrays, or a sequence of them (one per layer). The
        arrays may be NumPy's or any backend's: each is converted with the
        ``asnumpy`` of the backend that ``backend`` names, else of the loaded
        backend whose ``is_array`` accepts it (or of a registered backend of
        the same name as an imported framework, loaded for the purpose).
    backend
        The backend (a name or a :class:`~rnnspec.Backend`) whose arrays ``params`` holds.
    op, options
        The op these params are for (with its options, for ops whose layout
        depends on one, such as act's ``cell``): their keys, ranks and dtypes
        are checked against it, and it is recorded, so that
        ``load_params(..., op=...)`` can check.

    Raises
    ------
    rnnspec.errors.ParameterError
        ``params`` is not in the canonical structure, or does not fit ``op``.
    rnnspec.errors.DtypeError
        An entry is not a numeric array of NumPy or of a backend.
    rnnspec.errors.OptionError
        ``path`` has another suffix.
    rnnspec.errors.MissingDependencyError
        A ``.safetensors`` path without the package safetensors.
    """
    target = os.fspath(path)
    suffix = _suffix("save_params", target)
    layers, structure = _structure(params)
    chosen = _backend_argument("save_params", backend)
    arrays: dict[str, np.ndarray] = {}
    bfloat16: list[str] = []
    layouts: list[LayerLayout] = []
    for k, layer in enumerate(layers):
        layout: LayerLayout = {}
        for name, value in layer.items():
            argument = f"params[{k}][{name!r}]" if structure == "layers" else f"params[{name!r}]"
            if not isinstance(name, str) or not name or "/" in name:
                raise ParameterError("save_params", argument, "a non-empty string key without '/'", repr(name))
            host, dtype = _to_host(argument, value, chosen)
            key = f"{k}/{name}"
            arrays[key] = host
            if dtype == "bfloat16":
                bfloat16.append(key)
            layout[name] = (tuple(int(n) for n in host.shape), dtype)
        layouts.append(layout)
    if op is not None:
        _check_op_argument("save_params", op)
        problem = _misfit(op, options or {}, layouts)
        if problem is not None:
            raise ParameterError(op, "params", f"params of op {op!r}", problem)
    header = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "structure": structure,
        "layers": [list(layer) for layer in layers],
        "bfloat16": bfloat16,
        "op": op,
        "rnnspec": __version__,
    }
    text = json.dumps(header, sort_keys=True)
    if suffix == ".npz":
        members: dict[str, Any] = {**arrays, HEADER: np.array(text)}  # Any: savez also takes allow_pickle=
        _write_atomically(target, lambda f: np.savez(f, **members))
    else:
        numpy_io = _safetensors("write", target)
        data = numpy_io.save(arrays, metadata={HEADER: text})
        _write_atomically(target, lambda f: f.write(data))


def _structure(params: Any) -> tuple[list[Mapping[Any, Any]], str]:
    expected = "a mapping of named arrays, or a non-empty sequence of such mappings (one per layer)"
    if isinstance(params, Mapping):
        return [params], "dict"
    if isinstance(params, Sequence) and not isinstance(params, (str, bytes)):
        if len(params) == 0:
            raise ParameterError("save_params", "params", expected, "an empty sequence")
        for k, layer in enumerate(params):
            if not isinstance(layer, Mapping):
                raise ParameterError("save_params", f"params[{k}]", "a mapping of named arrays", _type_name(layer))
        return list(params), "layers"
    raise ParameterError("save_params", "params", expected, _type_name(params))


def _to_host(argument: str, value: Any, chosen: Backend | None) -> tuple[np.ndarray, str]:
    """``value`` as a NumPy array to store, and its dtype's name (bfloat16 as its bit patterns)."""
    if isinstance(value, np.ndarray):
        host, dtype = value, value.dtype.name
    else:
        impl = _implementation_of(argument, value, chosen)
        host, dtype = np.asarray(impl.asnumpy(value)), impl.dtype_name(value)
    if dtype == "bfloat16":
        if host.dtype.name == "bfloat16":  # ml_dtypes' bfloat16 in NumPy
            return np.array(host.view(np.uint16), order="C"), dtype
        # Backends give bfloat16 as float32, which holds it exactly: its upper 16 bits are the bfloat16.
        wide = np.asarray(host, dtype=np.float32)
        return np.array(wide.view(np.uint32) >> 16, dtype=np.uint16, order="C"), dtype
    if host.dtype.kind not in _NUMERIC_KINDS:
        raise DtypeError("save_params", argument, "a numeric array (bool, integer or float)", f"dtype {host.dtype}")
    if host.dtype.name != dtype:
        raise DtypeError("save_params", argument, f"to come to NumPy as dtype {dtype}", f"dtype {host.dtype.name}")
    return np.array(host, order="C"), dtype


def _implementation_of(argument: str, value: Any, chosen: Backend | None) -> Implementation:
    if chosen is not None:
        if not chosen.implementation.is_array(value):
            raise DtypeError("save_params", argument, f"an array of backend {chosen.name!r}", _type_name(value))
        return chosen.implementation
    for loaded in loaded_backends():
        if loaded.implementation.is_array(value):
            return loaded.implementation
    # An array of a framework exists only once the framework is imported: a backend of that name is worth loading.
    for record in list_backends(load=False):
        if record.error is None and not record.loaded and record.name in sys.modules:
            try:
                candidate = get_backend(record.name)
            except BackendError:
                continue
            if candidate.implementation.is_array(value):
                return candidate.implementation
    raise DtypeError(
        "save_params",
        argument,
        "a NumPy array or an array of a backend (name it with backend=)",
        _type_name(value),
    )


def _write_atomically(target: str, write: Callable[[Any], object]) -> None:
    temporary = f"{target}.{uuid.uuid4().hex}.tmp"
    try:
        with open(temporary, "xb") as f:
            write(f)
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


# -- loading ------------------------------------------------------------------------


def load_params(
    path: str | os.PathLike[str],
    *,
    backend: str | Backend | None = None,
    op: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> Params:
    """Read params written by :func:`save_params`, in the structure they were saved in.

    Parameters
    ----------
    path
        A ``.npz`` or ``.safetensors`` file.
    backend
        Return this backend's arrays (a name or a :class:`~rnnspec.Backend`);
        by default NumPy arrays. Each dtype is kept, or the load fails.
    op, options
        Check the file against this op (with these options, for ops whose
        layout depends on one, such as act's ``cell``): its recorded op, the
        number of layers, each layer's keys and each array's rank and dtype.
        The full shape check happens at the call.

    Returns
    -------
    dict or list of dict
        One mapping of named arrays if one was saved, else a list of them.
        bfloat16 entries come back as ``ml_dtypes.bfloat16`` arrays in NumPy.

    Raises
    ------
    rnnspec.errors.UnsafeParamFileError
        The file is a pickle, or holds an object array (pickled data).
    rnnspec.errors.ParamFileMismatchError
        The file was not written by :func:`save_params`, or does not fit ``op``.
    rnnspec.errors.ParamFileError
        The file is truncated or corrupt.
    rnnspec.errors.DtypeError
        ``backend`` cannot hold an entry's dtype.
    """
    chosen = _backend_argument("load_params", backend)
    structure, layers = _read(os.fspath(path), op, options, widen_bfloat16=False)
    if chosen is not None:
        impl = chosen.implementation
        converted = []
        for k, layer in enumerate(layers):
            out: dict[str, Any] = {}
            for name, host in layer.items():
                argument = f"backend (for entry '{k}/{name}')"
                expected = f"a backend that takes NumPy {host.dtype.name} arrays and keeps their dtype"
                try:
                    out[name] = impl.asarray(host)
                except (TypeError, ValueError) as err:
                    if isinstance(err, DtypeError):
                        raise
                    raise DtypeError("load_params", argument, expected, f"backend {chosen.name!r}: {err}") from err
                got = impl.dtype_name(out[name])
                if got != host.dtype.name:
                    raise DtypeError("load_params", argument, expected, f"backend {chosen.name!r}, which made it {got}")
            converted.append(out)
        layers = converted
    return layers[0] if structure == "dict" else layers


def load_numpy_params(
    path: str | os.PathLike[str],
    *,
    op: str | None = None,
    options: Mapping[str, Any] | None = None,
    widen_bfloat16: bool = False,
) -> list[dict[str, np.ndarray]]:
    """Read a parameter file as a list of layers of NumPy arrays, whatever structure it was saved in.

    What the layers' ``load_params`` methods use. ``widen_bfloat16=True`` gives
    bfloat16 entries as float32 (which holds them exactly; ml_dtypes is then not
    needed). The checks and errors are those of :func:`load_params`.
    """
    return _read(os.fspath(path), op, options, widen_bfloat16=widen_bfloat16)[1]


def _read(
    source: str, op: str | None, options: Mapping[str, Any] | None, *, widen_bfloat16: bool
) -> tuple[str, list[dict[str, np.ndarray]]]:
    suffix = _suffix("load_params", source)
    if op is not None:
        _check_op_argument("load_params", op)
    _sniff(source, suffix)
    members, text = _read_npz(source) if suffix == ".npz" else _read_safetensors(source)
    header = _header(source, text, members)
    listed = {f"{k}/{name}" for k, names in enumerate(header["layers"]) for name in names}
    missing = sorted(listed - set(members))
    if missing:
        raise ParamFileError(source, f"entries {missing}, listed in its header, are missing (truncated or edited)")
    extra = sorted(set(members) - listed)
    if extra:
        raise ParamFileMismatchError(source, f"entries {extra} are not listed in its header (edited after saving)")
    layers: list[dict[str, np.ndarray]] = []
    for k, names in enumerate(header["layers"]):
        layer: dict[str, np.ndarray] = {}
        for name in names:
            key = f"{k}/{name}"
            host = members[key]
            if key in header["bfloat16"]:
                host = _bfloat16(source, key, host, widen=widen_bfloat16)
            layer[name] = host
        layers.append(layer)
    if op is not None:
        if header["op"] is not None and header["op"] != op:
            raise ParamFileMismatchError(source, f"holds params of op {header['op']!r}, not of op {op!r}")
        bfloat16 = set(header["bfloat16"])
        layouts = [
            {n: (a.shape, "bfloat16" if f"{k}/{n}" in bfloat16 else a.dtype.name) for n, a in layer.items()}
            for k, layer in enumerate(layers)
        ]
        problem = _misfit(op, options or {}, layouts)
        if problem is not None:
            raise ParamFileMismatchError(source, f"does not hold params of op {op!r}: {problem}")
    return header["structure"], layers


def _sniff(source: str, suffix: str) -> None:
    """Refuse what is plainly no file of the suffix's format, before any parser sees it."""
    with open(source, "rb") as f:
        start = f.read(9)
    if not start:
        raise ParamFileError(source, "is empty (0 bytes): truncated")
    if start[:1] == b"\x80":
        raise UnsafeParamFileError(source, "is a pickle: rnnspec never unpickles (a pickle can run code)")
    if suffix == ".npz":
        if start[:6] == b"\x93NUMPY":
            raise ParamFileMismatchError(source, "is a single .npy array, not an .npz archive of params")
        if start[:4] not in (b"PK\x03\x04", b"PK\x05\x06"):
            raise ParamFileMismatchError(source, f"is not an .npz archive (it starts with {start[:4]!r})")
    elif start[:2] == b"PK":
        raise ParamFileMismatchError(source, "is a zip archive (an .npz, or a torch.save checkpoint), not safetensors")


def _read_npz(source: str) -> tuple[dict[str, np.ndarray], str | None]:
    broken = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError)
    members: dict[str, np.ndarray] = {}
    with open(source, "rb") as f:  # ours to close, whatever np.load makes of it
        try:
            archive = np.load(f, allow_pickle=False)
        except broken as err:
            problem = f"is truncated or corrupt: it does not open as an .npz archive ({err})"
            raise ParamFileError(source, problem) from err
        with archive:
            for key in archive.files:
                try:
                    members[key] = archive[key]
                except ValueError as err:
                    if "allow_pickle" in str(err):
                        raise UnsafeParamFileError(
                            source,
                            f"entry {key!r} is an object array, stored as a pickle: rnnspec never unpickles "
                            "(a pickle can run code)",
                        ) from err
                    raise ParamFileError(source, f"entry {key!r} is truncated or corrupt ({err})") from err
                except broken as err:
                    raise ParamFileError(source, f"entry {key!r} is truncated or corrupt ({err})") from err
    header = members.pop(HEADER, None)
    if header is None:
        return members, None
    if header.dtype.kind != "U" or header.shape != ():
        raise ParamFileMismatchError(source, f"its {HEADER!r} entry is no text header: {header.dtype} {header.shape}")
    return members, str(header)


def _read_safetensors(source: str) -> tuple[dict[str, np.ndarray], str | None]:
    _safetensors("read", source)
    from safetensors import safe_open

    try:
        with safe_open(source, framework="np") as f:
            metadata = f.metadata() or {}
            members = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 - safe_open is no mapping
    except Exception as err:  # safetensors raises its own SafetensorError, and others for a bad header
        raise ParamFileError(source, f"is truncated or corrupt: it does not read as safetensors ({err})") from err
    return members, metadata.get(HEADER)


def _header(source: str, text: str | None, members: Mapping[str, np.ndarray]) -> dict[str, Any]:
    if text is None:
        raise ParamFileMismatchError(
            source,
            f"has no rnnspec header ({HEADER!r}): it was not written by rnnspec.save_params; "
            f"its entries: {sorted(members)[:8]}{' ...' if len(members) > 8 else ''}",
        )
    try:
        header = json.loads(text)
    except json.JSONDecodeError as err:
        raise ParamFileError(source, f"its header is not JSON ({err})") from err
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ParamFileMismatchError(source, f"its header is not that of {FORMAT!r}: {text[:80]!r}")
    version = header.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ParamFileMismatchError(
            source, f"has format version {version!r}; this rnnspec reads versions up to {FORMAT_VERSION}"
        )
    layers = header.get("layers")
    good = (
        header.get("structure") in ("dict", "layers")
        and isinstance(layers, list)
        and len(layers) >= 1
        and all(isinstance(names, list) and all(isinstance(n, str) for n in names) for names in layers)
        and (header.get("structure") == "layers" or len(layers) == 1)
        and isinstance(header.get("bfloat16"), list)
        and (header.get("op") is None or isinstance(header.get("op"), str))
    )
    if not good:
        raise ParamFileError(source, f"its header is malformed: {text[:200]!r}")
    return header


def _bfloat16(source: str, key: str, bits: np.ndarray, *, widen: bool) -> np.ndarray:
    if bits.dtype != np.uint16:
        raise ParamFileError(source, f"bfloat16 entry {key!r} is stored as {bits.dtype}, not as 16-bit patterns")
    if widen:
        return np.asarray(bits.astype(np.uint32) << 16).view(np.float32)
    try:
        import ml_dtypes
    except ImportError as err:
        raise MissingDependencyError(
            f"parameter file {source!r}: entry {key!r} is bfloat16, which NumPy holds only with the package "
            "ml_dtypes (installed with jax and tensorflow): pip install ml_dtypes"
        ) from err
    return np.asarray(bits.view(ml_dtypes.bfloat16))


# -- checks ---------------------------------------------------------------------------


def _misfit(op: str, options: Mapping[str, Any], layouts: Sequence[LayerLayout]) -> str | None:
    """What keeps ``layouts`` from being params of ``op`` (keys, ranks, dtypes), or ``None``."""
    spec = OPS[op]
    if spec.max_layers is not None and len(layouts) > spec.max_layers:
        return f"{len(layouts)} layers, where op {op!r} takes at most {spec.max_layers}"
    dtypes: set[str] = set()
    for k, layout in enumerate(layouts):
        allowed = {p.name: p for p in spec.layer_params(top=k == len(layouts) - 1, options=options)}
        unknown = [name for name in layout if name not in allowed]
        if unknown:
            return f"layer {k} has key {unknown[0]!r}, which op {op!r} does not take there (keys: {sorted(allowed)})"
        for p in allowed.values():
            if p.name not in layout:
                if p.required:
                    return f"layer {k} lacks key {p.name!r} (shape {format_shape(p.shape)})"
                continue
            shape, dtype = layout[p.name]
            if len(shape) != len(p.shape):
                return f"layer {k} key {p.name!r} has shape {shape}, where op {op!r} takes {format_shape(p.shape)}"
            dtypes.add(dtype)
    if len(dtypes) > 1:
        return f"its arrays mix dtypes {sorted(dtypes)}, where op {op!r} takes one dtype for all"
    wrong = sorted(dtypes - set(spec.dtypes))
    if wrong:
        return f"its arrays are {wrong[0]}, where op {op!r} takes {' or '.join(spec.dtypes)}"
    return None


def _check_op_argument(caller: str, op: Any) -> None:
    if not isinstance(op, str) or op not in OPS:
        raise UnknownArgumentError(caller, "op", f"None or an op of the spec {sorted(OPS)}", repr(op))
    if OPS[op].kind != "sequence":
        raise OptionError(caller, "op", "an op with per-layer params (not a primitive)", repr(op))


def _suffix(caller: str, path: str) -> str:
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in _SUFFIXES:
        raise OptionError(caller, "path", "a path ending in .npz or .safetensors", repr(path))
    return suffix


def _backend_argument(caller: str, backend: Any) -> Backend | None:
    if backend is None or isinstance(backend, Backend):
        return backend
    if isinstance(backend, str):
        return get_backend(backend)
    raise UnknownArgumentError(caller, "backend", "None, a backend's name or an rnnspec.Backend", _type_name(backend))


def _safetensors(action: str, path: str) -> Any:
    try:
        import safetensors.numpy
    except ImportError as err:
        raise MissingDependencyError(
            f"parameter file {path!r}: to {action} .safetensors files rnnspec needs the package safetensors: "
            f"{_SAFETENSORS_EXTRA}"
        ) from err
    return safetensors.numpy


def _type_name(value: Any) -> str:
    kind = type(value)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
