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
layer's names in order, the bfloat16 entries, the op, when one was named, and
(``sha256``) the SHA-256 of the rest of the header and of every entry's key,
dtype, shape and bytes.

Reading never unpickles: a pickle, or an archive holding an object array, is
refused (:class:`~rnnspec.errors.UnsafeParamFileError`). A truncated or corrupt
file is a :class:`~rnnspec.errors.ParamFileError`; a file that rnnspec did not
write, or whose entries do not fit the ``op=`` asked for, a
:class:`~rnnspec.errors.ParamFileMismatchError`. safetensors is optional:
``pip install 'rnnspec[safetensors]'``. A file is written to a temporary name
beside it and renamed, so an interrupted save never leaves a truncated file.

A file is read as untrusted input, header first, and costs no more than what
its header lists: only a regular file is opened (a named pipe would block);
the header is bounded (4 Mi characters, nested 16 deep; rnnspec writes 3) and
must have exactly the keys above; every member is accounted for before any
array is read. An ``.npz`` is read member by member rather than by ``np.load``:
each member's ``.npy`` header is bounded and its declared shape must match the
size that the zip directory declares, which in turn cannot exceed what the
member's compressed bytes can hold (deflate expands at most 1032-fold), so no
array is allocated beyond about a thousand times the file's size. The
checksum is verified after reading: a changed bit anywhere in an entry or the
header is an error, where safetensors itself checks none. Files without
``sha256`` (written before rnnspec recorded one) still load, unverified; an
``.npz``'s members keep their zip CRC-32 checks.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import re
import stat
import struct
import sys
import uuid
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import IO, Any, BinaryIO

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
from .structure import param_layers, type_name

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
#: The header's keys (all required), and the optional one that holds the SHA-256 of header and entries.
_HEADER_KEYS = frozenset({"format", "version", "structure", "layers", "bfloat16", "op", "rnnspec"})
_DIGEST = "sha256"
#: Bounds on what a file declares, checked before anything is read or allocated. A header lists the entries'
#: names (some 20 characters each) and nests 3 deep.
_MAX_HEADER_CHARS = 2**22
_MAX_HEADER_DEPTH = 16
#: The largest .npy header of an entry (NumPy's own bound; the ones save_params writes are 128 bytes).
_MAX_NPY_HEADER = 10_000
#: Deflate expands a byte to at most 1032 (two 1-bit codes for a 258-byte match): a deflated member that declares
#: more is corrupt or a zip bomb.
_DEFLATE_MOST = 1032
_DEFLATE_SLACK = 1024
#: An entry's data is read in chunks of this many bytes.
_CHUNK = 2**24

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
    header[_DIGEST] = _digest(header, arrays)
    text = json.dumps(header, sort_keys=True)
    if suffix == ".npz":
        members: dict[str, Any] = {**arrays, HEADER: np.array(text)}  # Any: savez also takes allow_pickle=
        _write_atomically(target, lambda f: np.savez(f, **members))
    else:
        numpy_io = _safetensors("write", target)
        data = numpy_io.save(arrays, metadata={HEADER: text})
        _write_atomically(target, lambda f: f.write(data))


def _structure(params: Any) -> tuple[list[Mapping[Any, Any]], str]:
    """The layers of ``params``, and how the file records their structure: ``"dict"`` (one layer) or ``"layers"``."""
    return param_layers("save_params", params), "dict" if isinstance(params, Mapping) else "layers"


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
            raise DtypeError("save_params", argument, f"an array of backend {chosen.name!r}", type_name(value))
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
        type_name(value),
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
        The file is truncated or corrupt (its checksum, sizes or header do not
        hold), declares more than it can hold, or is no regular file.
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
    with contextlib.ExitStack() as stack:
        f = stack.enter_context(_open_regular(source))
        _sniff(source, f, suffix)
        reader: _NpzReader | _SafetensorsReader
        reader = _NpzReader(source, f) if suffix == ".npz" else _SafetensorsReader(source)
        stack.enter_context(reader)
        header = _header(source, reader.header_text(), reader.keys)
        order = [f"{k}/{name}" for k, names in enumerate(header["layers"]) for name in names]
        missing = sorted(set(order) - set(reader.keys))
        if missing:
            raise ParamFileError(source, f"entries {missing}, listed in its header, are missing (truncated or edited)")
        extra = sorted(set(reader.keys) - set(order))
        if extra:
            raise ParamFileMismatchError(source, f"entries {extra} are not listed in its header (edited after saving)")
        # Only now, with the header read and every member accounted for, is any array's data read.
        stored = {key: reader.read(key) for key in order}
    recorded = header.pop(_DIGEST, None)
    if recorded is not None and _digest(header, stored) != recorded:
        raise ParamFileError(
            source,
            f"its entries do not match the SHA-256 its header records ({recorded[:12]}...): corrupt (a flipped bit, "
            "say) or edited after saving",
        )
    layers: list[dict[str, np.ndarray]] = []
    for k, names in enumerate(header["layers"]):
        layer: dict[str, np.ndarray] = {}
        for name in names:
            key = f"{k}/{name}"
            host = stored[key]
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


def _open_regular(source: str) -> BinaryIO:
    """``source`` opened for reading if it is a regular file: a named pipe blocks its reader, a device never ends."""
    # Non-blocking, so that opening a named pipe returns at once (to be refused) rather than wait for a writer;
    # reads of a regular file never block anyway.
    fd = os.open(source, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ParamFileError(source, f"is not a regular file but {_kind_of_file(mode)}")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _kind_of_file(mode: int) -> str:
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a named pipe"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((kind for test, kind in kinds if test(mode)), f"a file of mode {stat.filemode(mode)}")


def _sniff(source: str, f: BinaryIO, suffix: str) -> None:
    """Refuse what is plainly no file of the suffix's format, before any parser sees it."""
    start = f.read(9)
    f.seek(0)
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


#: What zipfile and zlib raise for a damaged archive or member.
_BROKEN_ZIP = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError, struct.error)


class _NpzReader:
    """An ``.npz`` archive read member by member, each member's sizes checked before its data is read.

    ``np.load`` is not used: it decompresses a member before its ``.npy``
    header can be checked, allocates whatever shape that header declares, and
    hands back a member without the ``.npy`` magic as raw bytes.
    """

    def __init__(self, source: str, f: BinaryIO) -> None:
        self.source = source
        self.f = f

    def __enter__(self) -> _NpzReader:
        size = os.fstat(self.f.fileno()).st_size
        try:
            self.archive = zipfile.ZipFile(self.f)
        except _BROKEN_ZIP as err:
            problem = f"is truncated or corrupt: it does not open as an .npz archive ({err})"
            raise ParamFileError(self.source, problem) from err
        try:
            infos = self.archive.infolist()
            # Compressed data of distinct members never overlaps: more than the file holds is a corrupt directory,
            # or a zip bomb whose members share their data.
            compressed = sum(info.compress_size for info in infos)
            if compressed > size:
                raise ParamFileError(
                    self.source,
                    f"its members' compressed bytes add up to {compressed}, more than its {size} bytes: corrupt, "
                    "or a zip bomb of overlapping members",
                )
            self.members: dict[str, zipfile.ZipInfo] = {}
            for info in infos:
                key = info.filename.removesuffix(".npy")
                if key in self.members:
                    raise ParamFileError(self.source, f"entry {key!r} appears twice in the archive (corrupt or edited)")
                self.members[key] = info
        except BaseException:
            self.archive.close()
            raise
        self.keys = [key for key in self.members if key != HEADER]
        return self

    def __exit__(self, *exc: object) -> None:
        self.archive.close()

    def header_text(self) -> str | None:
        if HEADER not in self.members:
            return None
        with self._member(HEADER) as (member, dtype, shape, fortran, offset):
            if dtype.kind != "U" or shape != ():
                raise ParamFileMismatchError(self.source, f"its {HEADER!r} entry is no text header: {dtype} {shape}")
            length = dtype.itemsize // np.dtype("U1").itemsize
            if length > _MAX_HEADER_CHARS:
                raise ParamFileError(self.source, _overlong_header(length))
            self._check_size(HEADER, dtype, shape, offset)
            return str(self._data(HEADER, member, dtype, shape, fortran)[()])

    def read(self, key: str) -> np.ndarray:
        with self._member(key) as (member, dtype, shape, fortran, offset):
            _check_dtype(self.source, key, dtype)
            self._check_size(key, dtype, shape, offset)
            return self._data(key, member, dtype, shape, fortran)

    @contextlib.contextmanager
    def _member(self, key: str) -> Iterator[tuple[IO[bytes], np.dtype[Any], tuple[int, ...], bool, int]]:
        """The member of ``key``, open past its ``.npy`` header, with the dtype, shape, order and offset it declares."""
        info = self.members[key]
        if info.flag_bits & 0x1:
            raise ParamFileError(self.source, f"entry {key!r} is encrypted, where a params file's entries are not")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ParamFileError(
                self.source,
                f"entry {key!r} is compressed by zip method {info.compress_type}, where a params file's entries are "
                f"stored ({zipfile.ZIP_STORED}) or deflated ({zipfile.ZIP_DEFLATED})",
            )
        stored = info.compress_type == zipfile.ZIP_STORED
        most = info.compress_size if stored else _DEFLATE_MOST * info.compress_size + _DEFLATE_SLACK
        if info.file_size > most or (stored and info.file_size != info.compress_size):
            raise ParamFileError(
                self.source,
                f"entry {key!r} declares {info.file_size} bytes, more than its {info.compress_size} compressed bytes "
                "can hold (corrupt, or a zip bomb)"
                if info.file_size > most
                else f"entry {key!r} declares {info.file_size} bytes, but stores {info.compress_size} (corrupt)",
            )
        try:
            with self.archive.open(info) as member:
                yield (member, *self._npy_header(key, member))
        except ParamFileError:
            raise
        except _BROKEN_ZIP as err:
            raise ParamFileError(self.source, f"entry {key!r} is truncated or corrupt ({err})") from err

    def _npy_header(self, key: str, member: IO[bytes]) -> tuple[np.dtype[Any], tuple[int, ...], bool, int]:
        start = member.read(8)
        if len(start) < 8 or start[:6] != b"\x93NUMPY":
            raise ParamFileError(self.source, f"entry {key!r} is no .npy array (it starts with {start[:6]!r})")
        version = (start[6], start[7])
        if version not in ((1, 0), (2, 0)):
            raise ParamFileError(
                self.source,
                f"entry {key!r} has .npy format version {version[0]}.{version[1]}, where a params file's have 1.0 "
                "or 2.0",
            )
        width = 2 if version == (1, 0) else 4
        prefix = member.read(width)
        length = int.from_bytes(prefix, "little")
        # NumPy's own bound, checked here so that np.load's advice (trust the file with allow_pickle) never shows.
        if length > _MAX_NPY_HEADER:
            raise ParamFileError(
                self.source,
                f"entry {key!r} has an .npy header of {length} bytes, where a params file's are at most "
                f"{_MAX_NPY_HEADER}",
            )
        text = member.read(length)
        if len(prefix) < width or len(text) < length:
            raise ParamFileError(self.source, f"entry {key!r} is truncated or corrupt: its .npy header ends early")
        parse = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        try:
            shape, fortran, dtype = parse(io.BytesIO(prefix + text), max_header_size=_MAX_NPY_HEADER)
        except (ValueError, TypeError, SyntaxError) as err:
            raise ParamFileError(self.source, f"entry {key!r} has a malformed .npy header ({err})") from err
        if any(n < 0 for n in shape):
            raise ParamFileError(self.source, f"entry {key!r} has a malformed .npy header (shape {shape})")
        if dtype.hasobject:
            raise UnsafeParamFileError(
                self.source,
                f"entry {key!r} is an object array, stored as a pickle: rnnspec never unpickles (a pickle can run "
                "code)",
            )
        return dtype, tuple(shape), bool(fortran), 8 + width + length

    def _check_size(self, key: str, dtype: np.dtype[Any], shape: tuple[int, ...], offset: int) -> None:
        """Refuse a declared shape that the member's declared size does not match, before anything is allocated."""
        nbytes = math.prod(shape) * dtype.itemsize
        held = self.members[key].file_size - offset
        if nbytes != held:
            raise ParamFileError(
                self.source,
                f"entry {key!r} declares shape {shape} of {dtype} ({nbytes} bytes), but its member holds {held}",
            )

    def _data(
        self, key: str, member: IO[bytes], dtype: np.dtype[Any], shape: tuple[int, ...], fortran: bool
    ) -> np.ndarray:
        array = np.empty(math.prod(shape), dtype)
        raw = array.view(np.uint8)
        filled = 0
        while filled < raw.size:
            chunk = member.read(min(_CHUNK, raw.size - filled))
            if not chunk:
                raise ParamFileError(
                    self.source, f"entry {key!r} is truncated or corrupt: it ends after {filled} of {raw.size} bytes"
                )
            raw[filled : filled + len(chunk)] = np.frombuffer(chunk, np.uint8)
            filled += len(chunk)
        return array.reshape(shape, order="F" if fortran else "C")


class _SafetensorsReader:
    """A ``.safetensors`` file, through the package safetensors, which bounds and checks its own header."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.closing = contextlib.ExitStack()
        _safetensors("read", source)

    def __enter__(self) -> _SafetensorsReader:
        from safetensors import safe_open

        try:
            self.file = self.closing.enter_context(safe_open(self.source, framework="np"))
            self.metadata = dict(self.file.metadata() or {})
            self.keys = list(self.file.keys())
        except Exception as err:  # safetensors raises its own SafetensorError, and others for a bad header
            self.closing.close()
            raise ParamFileError(
                self.source, f"is truncated or corrupt: it does not read as safetensors ({err})"
            ) from err
        return self

    def __exit__(self, *exc: object) -> None:
        self.closing.close()

    def header_text(self) -> str | None:
        text = self.metadata.get(HEADER)
        extra = sorted(set(self.metadata) - {HEADER})
        if text is not None and extra:
            raise ParamFileMismatchError(
                self.source, f"its metadata has keys {extra} beside {HEADER!r} (edited after saving)"
            )
        return text

    def read(self, key: str) -> np.ndarray:
        try:
            array = np.asarray(self.file.get_tensor(key))
        except Exception as err:  # as above
            raise ParamFileError(self.source, f"entry {key!r} is truncated or corrupt ({err})") from err
        _check_dtype(self.source, key, array.dtype)
        return array


def _check_dtype(source: str, key: str, dtype: np.dtype[Any]) -> None:
    if dtype.kind not in _NUMERIC_KINDS:
        raise ParamFileError(
            source, f"entry {key!r} has dtype {dtype}, where a params file holds bool, integer and float arrays"
        )


def _overlong_header(length: int) -> str:
    return f"its header is {length} characters long, where a params file's is at most {_MAX_HEADER_CHARS}"


def _header(source: str, text: str | None, keys: Sequence[str]) -> dict[str, Any]:
    if text is None:
        raise ParamFileMismatchError(
            source,
            f"has no rnnspec header ({HEADER!r}): it was not written by rnnspec.save_params; "
            f"its entries: {sorted(keys)[:8]}{' ...' if len(keys) > 8 else ''}",
        )
    if len(text) > _MAX_HEADER_CHARS:
        raise ParamFileError(source, _overlong_header(len(text)))
    if _nests_too_deep(text):
        raise ParamFileError(
            source, f"its header nests more than {_MAX_HEADER_DEPTH} deep, where a params file's nests 3 deep"
        )
    try:
        header = json.loads(text)
    except json.JSONDecodeError as err:
        raise ParamFileError(source, f"its header is not JSON ({err})") from err
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ParamFileMismatchError(source, f"its header is not that of {FORMAT!r}: {text[:80]!r}")
    version = header.get("version")
    if type(version) is not int or version < 1:  # not isinstance: True is an int
        raise ParamFileError(source, f"its header has format version {version!r}, where versions are integers from 1")
    if version > FORMAT_VERSION:
        raise ParamFileMismatchError(
            source, f"has format version {version!r}; this rnnspec reads versions up to {FORMAT_VERSION}"
        )
    unknown = sorted(set(header) - _HEADER_KEYS - {_DIGEST})
    if unknown:
        raise ParamFileError(
            source,
            f"its header has keys {unknown}, which format version {FORMAT_VERSION} does not have (corrupt or edited)",
        )
    if not _well_formed(header):
        raise ParamFileError(source, f"its header is malformed: {text[:200]!r}")
    return header


def _well_formed(header: Mapping[str, Any]) -> bool:
    layers = header.get("layers")
    if not (
        set(header) >= _HEADER_KEYS
        and header["structure"] in ("dict", "layers")
        and isinstance(layers, list)
        and len(layers) >= 1
        and (header["structure"] == "layers" or len(layers) == 1)
        and isinstance(header["rnnspec"], str)
        and (header["op"] is None or isinstance(header["op"], str))
    ):
        return False
    for names in layers:
        valid = isinstance(names, list) and all(isinstance(n, str) and n and "/" not in n for n in names)
        if not valid or len(set(names)) != len(names):
            return False
    listed = {f"{k}/{name}" for k, names in enumerate(layers) for name in names}
    bfloat16 = header["bfloat16"]
    if not isinstance(bfloat16, list) or not all(isinstance(key, str) and key in listed for key in bfloat16):
        return False
    digest = header.get(_DIGEST)
    return digest is None or (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest) is not None)


#: A JSON string's escapes, its quotes and the brackets that nest.
_JSON_TOKEN = re.compile(r'\\.|["\[\]{}]', re.DOTALL)


def _nests_too_deep(text: str) -> bool:
    """Whether ``text``'s arrays and objects nest deeper than a params file's may, found without recursion.

    ``json.loads`` recurses once per level: a header nested 100,000 deep would
    end in a RecursionError.
    """
    depth = 0
    within_string = False
    for match in _JSON_TOKEN.finditer(text):
        token = match.group()
        if token == '"':
            within_string = not within_string
        elif within_string or len(token) == 2:
            continue
        elif token in "[{":
            depth += 1
            if depth > _MAX_HEADER_DEPTH:
                return True
        else:
            depth -= 1
    return False


def _digest(header: Mapping[str, Any], entries: Mapping[str, np.ndarray]) -> str:
    """The SHA-256 of a header (less its digest), then of each entry's key, dtype, shape and little-endian bytes."""
    digest = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    for key, array in entries.items():
        little = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
        digest.update(f"\0{key}\0{little.dtype.name}\0{little.shape}\0".encode())
        digest.update(little.data)
    return digest.hexdigest()


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
    raise UnknownArgumentError(caller, "backend", "None, a backend's name or an rnnspec.Backend", type_name(backend))


def _safetensors(action: str, path: str) -> Any:
    try:
        import safetensors.numpy
    except ImportError as err:
        raise MissingDependencyError(
            f"parameter file {path!r}: to {action} .safetensors files rnnspec needs the package safetensors: "
            f"{_SAFETENSORS_EXTRA}"
        ) from err
    return safetensors.numpy
