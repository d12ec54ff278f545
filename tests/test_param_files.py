"""Parameter files: exact round trips across NumPy, PyTorch and JAX; pickles, truncation and mismatches refused.

The arrays are random bit patterns (NaN payloads, infinities, subnormals and
negative zeros among them), so "equal" below means the same dtype, shape and
bytes. TensorFlow's half is in ``test_tensorflow_param_files.py`` (TensorFlow
tests run in their own session).
"""

from __future__ import annotations

import io
import itertools
import json
import os
import pickle
import re
import struct
import sys
import threading
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import random_bits

import rnnspec
from rnnspec.errors import (
    DtypeError,
    MissingDependencyError,
    OptionError,
    ParameterError,
    ParamFileError,
    ParamFileMismatchError,
    UnsafeParamFileError,
)
from rnnspec.param_files import HEADER, load_numpy_params

SUFFIXES = (".npz", ".safetensors")


def signature(array: np.ndarray) -> tuple[str, tuple[int, ...], bytes]:
    """What an exact round trip keeps: dtype, shape and bytes."""
    return array.dtype.name, tuple(array.shape), np.ascontiguousarray(array).tobytes()


def lstm_bits(dtype: str, *, layers: int = 2, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """LSTM params of the spec's shapes (I=3, H=4), with random bits."""
    shapes = {"w_ih": (16, 3), "w_hh": (16, 4), "b_ih": (16,), "b_hh": (16,)}
    params = []
    for k in range(layers):
        shapes["w_ih"] = (16, 3 if k == 0 else 4)
        params.append({n: random_bits(dtype, s, seed + 10 * k + i) for i, (n, s) in enumerate(shapes.items())})
    return params


def assert_same_params(got: Any, expected: Any) -> None:
    assert type(got) is type(expected)
    got_layers = [got] if isinstance(got, dict) else got
    expected_layers = [expected] if isinstance(expected, dict) else expected
    assert len(got_layers) == len(expected_layers)
    for got_layer, expected_layer in zip(got_layers, expected_layers, strict=True):
        assert list(got_layer) == list(expected_layer)  # the names, in their order
        for name in expected_layer:
            assert signature(got_layer[name]) == signature(expected_layer[name]), name


# -- NumPy round trips -------------------------------------------------------------------


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_a_list_of_layers_round_trips_bit_for_bit(tmp_path: Path, suffix: str, dtype: str) -> None:
    params = lstm_bits(dtype)
    path = tmp_path / f"params{suffix}"
    rnnspec.save_params(path, params, op="lstm")
    assert_same_params(rnnspec.load_params(path, op="lstm"), params)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_a_single_mapping_comes_back_as_a_mapping(tmp_path: Path, suffix: str) -> None:
    params = lstm_bits("float32", layers=1)[0]
    path = tmp_path / f"params{suffix}"
    rnnspec.save_params(str(path), params)
    loaded: Any = rnnspec.load_params(str(path))
    assert isinstance(loaded, dict)
    assert_same_params(loaded, params)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_integer_and_bool_entries_and_odd_names_keep_their_dtypes_and_order(tmp_path: Path, suffix: str) -> None:
    params = [
        {"z": random_bits("int64", (3,), 1), "a": np.array([True, False]), "m": random_bits("uint8", (2, 2), 2)},
        {"scalar": np.array(1.5, np.float32), "empty": np.zeros((0, 4), np.float64)},
    ]
    path = tmp_path / f"params{suffix}"
    rnnspec.save_params(path, params)
    assert_same_params(rnnspec.load_params(path), params)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_init_params_of_every_sequence_op_round_trip_with_the_op_checked(tmp_path: Path, suffix: str) -> None:
    cases: list[tuple[str, dict[str, Any]]] = [
        ("rnn", {}),
        ("gru", {}),
        ("skip_lstm", {"trainable_initial_state": True}),
        ("act", {"cell": "lstm"}),
        ("indrnn", {}),
        ("qrnn", {"window": 2}),
    ]
    for op, options in cases:
        layers = 1 if op == "act" else 2
        params = rnnspec.init_params(op, input_size=3, hidden_size=4, num_layers=layers, **options)
        path = tmp_path / f"{op}{suffix}"
        call_options = {k: v for k, v in options.items() if k == "cell"}
        rnnspec.save_params(path, params, op=op, options=call_options)
        assert_same_params(rnnspec.load_params(path, op=op, options=call_options), params)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_numpy_bfloat16_round_trips_bit_for_bit(tmp_path: Path, suffix: str) -> None:
    ml_dtypes = pytest.importorskip("ml_dtypes")
    params = {"w": random_bits("uint16", (5, 3), 7).view(ml_dtypes.bfloat16)}
    path = tmp_path / f"params{suffix}"
    rnnspec.save_params(path, params)
    loaded: Any = rnnspec.load_params(path)
    assert_same_params(loaded, params)
    [widened] = load_numpy_params(path, widen_bfloat16=True)
    assert widened["w"].dtype == np.float32
    np.testing.assert_array_equal(widened["w"], params["w"].astype(np.float32))


def test_saving_replaces_a_file_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "params.npz"
    rnnspec.save_params(path, lstm_bits("float32", seed=1))
    second = lstm_bits("float64", seed=2)
    rnnspec.save_params(path, second)
    assert_same_params(rnnspec.load_params(path), second)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.npz"]


def test_a_save_that_fails_midway_keeps_the_old_file_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "params.npz"
    first = lstm_bits("float32", seed=1)
    rnnspec.save_params(path, first)

    def savez_then_crash(file: Any, *args: Any, **kwargs: Any) -> None:
        file.write(b"PK\x03\x04 half an archive")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", savez_then_crash)
    with pytest.raises(OSError, match="disk full"):
        rnnspec.save_params(path, lstm_bits("float32", seed=2))
    monkeypatch.undo()
    assert_same_params(rnnspec.load_params(path), first)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.npz"]


# -- what save_params refuses -------------------------------------------------------------


def test_saving_to_another_suffix_is_refused_naming_the_formats(tmp_path: Path) -> None:
    with pytest.raises(
        OptionError, match=r"save_params: argument path: expected a path ending in .npz or .safetensors"
    ):
        rnnspec.save_params(tmp_path / "params.pt", lstm_bits("float32"))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("params", "argument"),
    [
        pytest.param([], "params", id="empty-list"),
        pytest.param("w", "params", id="string"),
        pytest.param([{"w": np.zeros(2)}, 3], "params[1]", id="layer-not-a-mapping"),
        pytest.param({"a/b": np.zeros(2)}, "params['a/b']", id="slash-in-name"),
    ],
)
def test_params_outside_the_canonical_structure_are_refused(tmp_path: Path, params: Any, argument: str) -> None:
    with pytest.raises(ParameterError, match=f"save_params: argument {re.escape(argument)}"):
        rnnspec.save_params(tmp_path / "params.npz", params)


def test_an_object_array_is_refused_when_saving(tmp_path: Path) -> None:
    with pytest.raises(DtypeError, match=r"argument params\['w'\]: expected a numeric array .*, got dtype object"):
        rnnspec.save_params(tmp_path / "params.npz", {"w": np.array([{"code": 1}], dtype=object)})


def test_an_array_of_no_backend_is_refused_naming_the_way_out(tmp_path: Path) -> None:
    with pytest.raises(DtypeError, match=r"params\[0\]\['w'\]: expected a NumPy array or an array of a backend"):
        rnnspec.save_params(tmp_path / "params.npz", [{"w": [1.0, 2.0]}])


def test_params_that_do_not_fit_the_named_op_are_refused_when_saving(tmp_path: Path) -> None:
    params = rnnspec.init_params("lstm", input_size=3, hidden_size=4)
    with pytest.raises(ParameterError, match=r"indrnn: argument params: expected params of op 'indrnn'"):
        rnnspec.save_params(tmp_path / "params.npz", params, op="indrnn")
    with pytest.raises(OptionError, match=r"argument op: expected an op with per-layer params"):
        rnnspec.save_params(tmp_path / "params.npz", params, op="linear_recurrence")
    assert list(tmp_path.iterdir()) == []


def test_safetensors_without_the_package_names_the_extra_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "params.safetensors"
    rnnspec.save_params(path, lstm_bits("float32"))
    monkeypatch.setitem(sys.modules, "safetensors", None)
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)
    for call in (lambda: rnnspec.save_params(path, lstm_bits("float32")), lambda: rnnspec.load_params(path)):
        with pytest.raises(MissingDependencyError, match=r"pip install 'rnnspec\[safetensors\]'") as info:
            call()
        assert isinstance(info.value, ImportError)


# -- what load_params refuses ---------------------------------------------------------------


class _Exploit:
    """Unpickling this writes a file: the proof that a loader ran a pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.write_text, (self.marker, "pwned"))


def test_an_npz_holding_an_object_array_is_refused_and_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    path = tmp_path / "params.npz"
    members: dict[str, Any] = {"0/w": np.array([_Exploit(marker)], dtype=object), HEADER: np.array(header_text())}
    np.savez(path, **members)
    with pytest.raises(UnsafeParamFileError, match=r"entry '0/w' is an object array, stored as a pickle") as info:
        rnnspec.load_params(path)
    assert isinstance(info.value, ValueError)
    assert not marker.exists()


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_a_pickle_under_a_params_name_is_refused_and_never_unpickled(tmp_path: Path, suffix: str) -> None:
    marker = tmp_path / "unpickled"
    path = tmp_path / f"params{suffix}"
    path.write_bytes(pickle.dumps({"w": _Exploit(marker)}))
    with pytest.raises(UnsafeParamFileError, match=r"is a pickle: rnnspec never unpickles"):
        rnnspec.load_params(path)
    assert not marker.exists()


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("keep", [0.5, 0.9, 0.999])
def test_a_truncated_file_is_reported_as_truncated(tmp_path: Path, suffix: str, keep: float) -> None:
    path = tmp_path / f"params{suffix}"
    rnnspec.save_params(path, lstm_bits("float32"), op="lstm")
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ParamFileError, match=r"is truncated or corrupt") as info:
        rnnspec.load_params(path)
    assert type(info.value) is ParamFileError
    assert str(path) in str(info.value)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_an_empty_file_is_reported_as_truncated(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"params{suffix}"
    path.write_bytes(b"")
    with pytest.raises(ParamFileError, match=r"is empty \(0 bytes\): truncated"):
        rnnspec.load_params(path)


def test_an_npz_not_written_by_rnnspec_is_a_mismatch_listing_its_entries(tmp_path: Path) -> None:
    path = tmp_path / "weights.npz"
    np.savez(path, kernel=np.zeros(3), bias=np.zeros(1))
    with pytest.raises(ParamFileMismatchError, match=r"has no rnnspec header .* its entries: \['bias', 'kernel'\]"):
        rnnspec.load_params(path)


def test_a_safetensors_file_not_written_by_rnnspec_is_a_mismatch(tmp_path: Path) -> None:
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    path = tmp_path / "model.safetensors"
    safetensors_numpy.save_file({"kernel": np.zeros(3, np.float32)}, str(path))
    with pytest.raises(ParamFileMismatchError, match=r"has no rnnspec header"):
        rnnspec.load_params(path)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        pytest.param(b"\x93NUMPY\x01\x00", r"is a single .npy array", id="npy"),
        pytest.param(b"w_ih,w_hh\n1,2\n", r"is not an .npz archive \(it starts with b'w_ih'\)", id="text"),
    ],
)
def test_a_file_of_another_format_under_an_npz_name_is_a_mismatch(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "params.npz"
    path.write_bytes(content)
    with pytest.raises(ParamFileMismatchError, match=match):
        rnnspec.load_params(path)


def test_a_zip_under_a_safetensors_name_is_a_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "params.safetensors"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("data.pkl", b"")
    with pytest.raises(ParamFileMismatchError, match=r"is a zip archive .*, not safetensors"):
        rnnspec.load_params(path)


def header_text(**changes: Any) -> str:
    header = {
        "format": "rnnspec.params",
        "version": 1,
        "structure": "layers",
        "layers": [["w"]],
        "bfloat16": [],
        "op": None,
        "rnnspec": rnnspec.__version__,
        **changes,
    }
    return json.dumps(header)


def one_entry_file(**changes: Any) -> dict[str, np.ndarray]:
    """The members of a file of one entry, ``0/w``, under the header :func:`header_text` writes."""
    return {HEADER: np.array(header_text(**changes)), "0/w": np.zeros(2)}


@pytest.mark.parametrize(
    ("members", "error", "match"),
    [
        pytest.param({"0/w": np.zeros(2)}, ParamFileError, r"has no rnnspec header", id="no-header"),
        pytest.param(
            one_entry_file(version=2),
            ParamFileMismatchError,
            r"has format version 2; this rnnspec reads versions up to 1",
            id="newer-version",
        ),
        pytest.param(
            one_entry_file(format="other"),
            ParamFileMismatchError,
            r"its header is not that of 'rnnspec.params'",
            id="other-format",
        ),
        pytest.param(
            {HEADER: np.array("{not json"), "0/w": np.zeros(2)}, ParamFileError, r"its header is not JSON", id="json"
        ),
        pytest.param(
            one_entry_file(structure="tree"),
            ParamFileError,
            r"its header is malformed",
            id="malformed",
        ),
        pytest.param(
            one_entry_file(layers=[["w", "u"]]),
            ParamFileError,
            r"entries \['0/u'\], listed in its header, are missing",
            id="entry-missing",
        ),
        pytest.param(
            {**one_entry_file(), "1/w": np.zeros(2)},
            ParamFileMismatchError,
            r"entries \['1/w'\] are not listed in its header",
            id="entry-extra",
        ),
        pytest.param(
            one_entry_file(note="hand-added"),
            ParamFileError,
            r"its header has keys \['note'\], which format version 1 does not have",
            id="unknown-key",
        ),
        pytest.param(
            one_entry_file(version=True),
            ParamFileError,
            r"has format version True, where versions are integers from 1",
            id="version-true",
        ),
        pytest.param(
            one_entry_file(version=-7),
            ParamFileError,
            r"has format version -7, where versions are integers from 1",
            id="version-negative",
        ),
        pytest.param(
            one_entry_file(layers=[["w", "w"]]),
            ParamFileError,
            r"its header is malformed",
            id="name-twice",
        ),
        pytest.param(
            one_entry_file(sha256="00ff"),
            ParamFileError,
            r"its header is malformed",
            id="checksum-not-sha256",
        ),
    ],
)
def test_a_header_that_does_not_match_its_file_is_reported(
    tmp_path: Path, members: dict[str, Any], error: type[Exception], match: str
) -> None:
    path = tmp_path / "params.npz"
    np.savez(path, **members)
    with pytest.raises(error, match=match):
        rnnspec.load_params(path)


def test_a_file_of_another_op_is_a_mismatch_naming_both_ops(tmp_path: Path) -> None:
    path = tmp_path / "params.npz"
    rnnspec.save_params(path, rnnspec.init_params("lstm", input_size=3, hidden_size=4), op="lstm")
    with pytest.raises(ParamFileMismatchError, match=r"holds params of op 'lstm', not of op 'gru'"):
        rnnspec.load_params(path, op="gru")


@pytest.mark.parametrize(
    ("op", "match"),
    [
        pytest.param("indrnn", r"layer 0 has key 'w_hh', which op 'indrnn' does not take", id="unknown-key"),
        pytest.param("skip_lstm", r"layer 1 lacks key 'w_gate'", id="missing-key"),
        pytest.param("act", r"2 layers, where op 'act' takes at most 1", id="too-many-layers"),
    ],
)
def test_a_file_saved_without_an_op_is_checked_against_the_op_asked_for(tmp_path: Path, op: str, match: str) -> None:
    path = tmp_path / "params.npz"
    rnnspec.save_params(path, rnnspec.init_params("lstm", input_size=3, hidden_size=4, num_layers=2))
    with pytest.raises(ParamFileMismatchError, match=rf"does not hold params of op '{op}': {match}"):
        rnnspec.load_params(path, op=op)


def test_ranks_and_dtypes_are_checked_against_the_op(tmp_path: Path) -> None:
    params = rnnspec.init_params("lstm", input_size=3, hidden_size=4)
    path = tmp_path / "rank.npz"
    rnnspec.save_params(path, [{**params[0], "b_ih": params[0]["b_ih"][None]}])
    with pytest.raises(
        ParamFileMismatchError, match=r"key 'b_ih' has shape \(1, 16\), where op 'lstm' takes \(4\*H,\)"
    ):
        rnnspec.load_params(path, op="lstm")
    path = tmp_path / "dtypes.npz"
    rnnspec.save_params(path, [{**params[0], "b_ih": params[0]["b_ih"].astype(np.float64)}])
    with pytest.raises(ParamFileMismatchError, match=r"mix dtypes \['float32', 'float64'\]"):
        rnnspec.load_params(path, op="lstm")
    path = tmp_path / "ints.npz"
    rnnspec.save_params(path, [{k: v.astype(np.int32) for k, v in params[0].items()}])
    with pytest.raises(ParamFileMismatchError, match=r"its arrays are int32, where op 'lstm' takes float16 or"):
        rnnspec.load_params(path, op="lstm")


def test_an_unknown_op_or_suffix_is_refused_before_the_file_is_read(tmp_path: Path) -> None:
    with pytest.raises(rnnspec.errors.UnknownArgumentError, match=r"load_params: argument op: expected None or an op"):
        rnnspec.load_params(tmp_path / "missing.npz", op="conv_lstm")
    with pytest.raises(OptionError, match=r"load_params: argument path"):
        rnnspec.load_params(tmp_path / "missing.h5")
    with pytest.raises(FileNotFoundError):
        rnnspec.load_params(tmp_path / "missing.npz")


# -- damaged and hostile files --------------------------------------------------------------------
#
# Found by fuzzing: each file below once cost memory, hung, or escaped as a raw error.


def npy_bytes(array: np.ndarray) -> bytes:
    """``array`` as np.save writes it: an ``.npz`` member's bytes."""
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def npy_declaring(header: dict[str, Any], data: bytes) -> bytes:
    """An ``.npy`` member whose header says ``header``, whatever ``data`` follows."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue() + data


def write_zip(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> None:
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def declare_sizes(path: Path, member: str, *, compressed: int | None = None, uncompressed: int | None = None) -> None:
    """Rewrite the sizes that the central directory declares for ``member`` (the member's bytes stay)."""
    data = bytearray(path.read_bytes())
    start = 0
    while (start := data.find(b"PK\x01\x02", start)) >= 0:
        (name_length,) = struct.unpack_from("<H", data, start + 28)
        if data[start + 46 : start + 46 + name_length] == member.encode():
            if compressed is not None:
                struct.pack_into("<I", data, start + 20, compressed)
            if uncompressed is not None:
                struct.pack_into("<I", data, start + 24, uncompressed)
            path.write_bytes(bytes(data))
            return
        start += 4
    raise AssertionError(f"no member {member!r} in {path}")


def test_an_unlisted_member_is_refused_from_the_header_without_being_decompressed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "params.npz"
    rnnspec.save_params(path, lstm_bits("float32"))
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("junk.npy", npy_bytes(np.zeros(2**20)))  # 8 MB of zeros, 8 KB deflated
    opened: list[str] = []
    open_member = zipfile.ZipFile.open

    def spy(archive: zipfile.ZipFile, name: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(name.filename if isinstance(name, zipfile.ZipInfo) else name)
        return open_member(archive, name, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", spy)
    with pytest.raises(ParamFileMismatchError, match=r"entries \['junk'\] are not listed in its header"):
        rnnspec.load_params(path)
    assert opened == [f"{HEADER}.npy"]


@pytest.mark.parametrize(
    ("member", "match"),
    [
        pytest.param(
            npy_declaring({"descr": "<f8", "fortran_order": False, "shape": (10**12,)}, bytes(16)),
            r"entry '0/w' declares shape \(1000000000000,\) of float64 \(8000000000000 bytes\), but its member "
            r"holds 16",
            id="shape-beyond-its-member",
        ),
        pytest.param(
            npy_declaring({"descr": "<f8", "fortran_order": False, "shape": (2,)}, bytes(32)),
            r"entry '0/w' declares shape \(2,\) of float64 \(16 bytes\), but its member holds 32",
            id="member-beyond-its-shape",
        ),
        pytest.param(
            b"\x93NUMPY\x01\x00" + struct.pack("<H", 20_000) + b" " * 20_000,
            r"entry '0/w' has an .npy header of 20000 bytes, where a params file's are at most 10000",
            id="long-npy-header",
        ),
        pytest.param(
            b"garbage, no array", r"entry '0/w' is no .npy array \(it starts with b'garbag'\)", id="no-npy-magic"
        ),
        pytest.param(b"\x93NU", r"entry '0/w' is no .npy array \(it starts with b'\\x93NU'\)", id="short-member"),
        pytest.param(
            npy_bytes(np.zeros(2, np.complex64)),
            r"entry '0/w' has dtype complex64, where a params file holds bool, integer and float arrays",
            id="complex",
        ),
    ],
)
def test_a_member_that_lies_about_its_size_or_is_no_array_is_refused_before_its_data_is_read(
    tmp_path: Path, member: bytes, match: str
) -> None:
    path = tmp_path / "params.npz"
    write_zip(path, {"0/w.npy": member, f"{HEADER}.npy": npy_bytes(np.array(header_text()))})
    with pytest.raises(ParamFileError, match=match) as info:
        rnnspec.load_params(path)
    assert type(info.value) is ParamFileError  # neither a pickle nor another op's file


def test_a_header_member_without_the_npy_magic_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "params.npz"
    write_zip(path, {"0/w.npy": npy_bytes(np.zeros(2)), f"{HEADER}.npy": header_text().encode()})
    with pytest.raises(ParamFileError, match=r"entry '__rnnspec__' is no .npy array \(it starts with b'\{\"form'\)"):
        rnnspec.load_params(path)


def test_a_deflated_member_declaring_more_than_deflate_can_hold_is_refused_before_allocating(tmp_path: Path) -> None:
    path = tmp_path / "params.npz"
    declared = 200_000_000  # what the central directory says; the member holds 1 KB of zeros, deflated to ~20 bytes
    member = npy_declaring({"descr": "|u1", "fortran_order": False, "shape": (declared,)}, bytes(1000))
    header_length = len(member) - 1000
    write_zip(path, {"0/w.npy": member, f"{HEADER}.npy": npy_bytes(np.array(header_text()))}, zipfile.ZIP_DEFLATED)
    declare_sizes(path, "0/w.npy", uncompressed=header_length + declared)
    with pytest.raises(ParamFileError, match=rf"entry '0/w' declares {header_length + declared} bytes, more than its"):
        rnnspec.load_params(path)


def test_members_declaring_more_compressed_bytes_than_the_file_holds_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "params.npz"
    rnnspec.save_params(path, {"w": np.zeros(4)})
    declare_sizes(path, "0/w.npy", compressed=path.stat().st_size - 1)
    with pytest.raises(ParamFileError, match=r"its members' compressed bytes add up to \d+, more than its \d+ bytes"):
        rnnspec.load_params(path)


def test_a_member_compressed_by_a_method_no_params_file_uses_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "params.npz"
    members = {"0/w.npy": npy_bytes(np.zeros(2)), f"{HEADER}.npy": npy_bytes(np.array(header_text()))}
    write_zip(path, members, zipfile.ZIP_LZMA)
    with pytest.raises(ParamFileError, match=r"entry '__rnnspec__' is compressed by zip method 14, where a params"):
        rnnspec.load_params(path)


def test_a_member_listed_twice_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "params.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("0/w.npy", npy_bytes(np.zeros(2)))
        with pytest.warns(UserWarning, match="Duplicate name"):
            archive.writestr("0/w.npy", npy_bytes(np.ones(2)))
        archive.writestr(f"{HEADER}.npy", npy_bytes(np.array(header_text())))
    with pytest.raises(ParamFileError, match=r"entry '0/w' appears twice in the archive"):
        rnnspec.load_params(path)


def write_with_header(path: Path, text: str, arrays: dict[str, np.ndarray], **metadata: str) -> None:
    """A file of ``arrays`` whose rnnspec header is ``text``, in the format of ``path``'s suffix."""
    if path.suffix == ".npz":
        members: dict[str, Any] = {**arrays, HEADER: np.array(text)}
        np.savez(path, **members)
    else:
        safetensors_numpy = pytest.importorskip("safetensors.numpy")
        safetensors_numpy.save_file(arrays, str(path), metadata={HEADER: text, **metadata})


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_a_header_nested_deeply_is_refused_without_recursing(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"params{suffix}"
    write_with_header(path, "[" * 100_000, {"0/w": np.zeros(2)})
    with pytest.raises(ParamFileError, match=r"its header nests more than 16 deep, where a params file's nests 3 deep"):
        rnnspec.load_params(path)


def test_an_overlong_safetensors_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "params.safetensors"
    write_with_header(path, header_text() + " " * 2**22, {"0/w": np.zeros(2)})  # valid JSON, 4 MiB of it blank
    with pytest.raises(ParamFileError, match=r"its header is \d+ characters long, where a params file's is at most"):
        rnnspec.load_params(path)


def test_an_overlong_npz_header_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "params.npz"
    header = npy_declaring({"descr": "<U100000000", "fortran_order": False, "shape": ()}, b"{}")
    write_zip(path, {"0/w.npy": npy_bytes(np.zeros(2)), f"{HEADER}.npy": header})
    with pytest.raises(ParamFileError, match=r"its header is 100000000 characters long, where a params file's is"):
        rnnspec.load_params(path)


def test_safetensors_metadata_beside_the_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "params.safetensors"
    write_with_header(path, header_text(), {"0/w": np.zeros(2)}, note="hand-added")
    with pytest.raises(ParamFileMismatchError, match=r"its metadata has keys \['note'\] beside '__rnnspec__'"):
        rnnspec.load_params(path)


def load_within(path: Path, seconds: float = 5) -> BaseException | None:
    """What ``load_params(path)`` raises, failing the test if it blocks (unblocking it first)."""
    outcome: list[BaseException | None] = []

    def load() -> None:
        try:
            rnnspec.load_params(path)
            outcome.append(None)
        except BaseException as err:
            outcome.append(err)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))  # a writer that is gone at once: the reader sees EOF
        thread.join()
        pytest.fail(f"load_params blocked on {path}")
    return outcome[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
@pytest.mark.parametrize("suffix", SUFFIXES)
def test_a_named_pipe_under_a_params_name_is_refused_without_blocking(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"x{suffix}"
    os.mkfifo(path)
    error = load_within(path)
    assert isinstance(error, ParamFileError), error
    assert "is not a regular file but a named pipe" in str(error)


def test_a_directory_under_a_params_name_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.npz"
    path.mkdir()
    with pytest.raises(ParamFileError, match=r"is not a regular file but a directory"):
        rnnspec.load_params(path)


def flips(data: bytes) -> Any:
    """``data`` with one bit flipped, for each byte in turn (bit ``i % 8`` of byte ``i``)."""
    for i in range(len(data)):
        flipped = bytearray(data)
        flipped[i] ^= 1 << (i % 8)
        yield i, bytes(flipped)


def test_every_single_bit_flip_in_a_safetensors_file_is_refused(tmp_path: Path) -> None:
    pytest.importorskip("safetensors")
    path = tmp_path / "params.safetensors"
    rnnspec.save_params(path, lstm_bits("float32"), op="lstm")
    loaded = []
    for i, flipped in flips(path.read_bytes()):
        path.write_bytes(flipped)
        try:
            rnnspec.load_params(path)
        except ParamFileError:
            continue
        loaded.append(i)
    assert loaded == []


def test_a_single_bit_flip_in_an_npz_file_is_refused_or_leaves_the_values_exact(tmp_path: Path) -> None:
    path = tmp_path / "params.npz"
    params = lstm_bits("float32", layers=1)
    rnnspec.save_params(path, params, op="lstm")
    for _, flipped in itertools.islice(flips(path.read_bytes()), 0, None, 3):
        path.write_bytes(flipped)
        try:
            loaded = rnnspec.load_params(path)
        except ParamFileError:
            continue
        assert_same_params(loaded, params)  # the bit was one zipfile ignores, such as a local header's time


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_a_value_changed_under_a_kept_header_is_refused_by_the_checksum(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"params{suffix}"
    params = {"w": np.arange(4, dtype=np.float32)}
    rnnspec.save_params(path, params)
    write_with_header(path, read_header_text(path), {"0/w": np.array([0, 1, 2, 4], np.float32)})
    with pytest.raises(ParamFileError, match=r"its entries do not match the SHA-256 its header records"):
        rnnspec.load_params(path)


def read_header_text(path: Path) -> str:
    if path.suffix == ".npz":
        with np.load(path) as archive:
            return str(archive[HEADER])
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        return str(f.metadata()[HEADER])


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_a_file_without_a_checksum_from_an_earlier_rnnspec_still_loads(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"params{suffix}"
    params = [{"w": np.arange(4, dtype=np.float32)}]
    write_with_header(path, header_text(), {"0/w": params[0]["w"]})
    assert "sha256" not in read_header_text(path)
    assert_same_params(rnnspec.load_params(path), params)


def test_a_saved_file_records_the_checksum_of_its_entries(tmp_path: Path) -> None:
    path = tmp_path / "params.npz"
    rnnspec.save_params(path, {"w": np.arange(4, dtype=np.float32)})
    assert re.fullmatch(r"[0-9a-f]{64}", json.loads(read_header_text(path))["sha256"])


# -- PyTorch and JAX ----------------------------------------------------------------------


@pytest.fixture
def torch() -> Any:
    return pytest.importorskip("torch")


@pytest.fixture
def jax() -> Any:
    pytest.importorskip("flax")
    return pytest.importorskip("jax")


def torch_bits(torch: Any, dtype: str, shape: tuple[int, ...], seed: int) -> Any:
    """A torch tensor of ``dtype`` with random bits."""
    if dtype == "bfloat16":
        return torch.from_numpy(random_bits("int16", shape, seed)).view(torch.bfloat16)
    return torch.from_numpy(random_bits(dtype, shape, seed))


def torch_signature(torch: Any, tensor: Any) -> tuple[str, tuple[int, ...], bytes]:
    data = tensor.detach().contiguous()
    raw = data.view(torch.int16) if data.dtype == torch.bfloat16 else data
    return str(data.dtype).removeprefix("torch."), tuple(data.shape), raw.numpy().tobytes()


def jax_signature(jax: Any, array: Any) -> tuple[str, tuple[int, ...], bytes]:
    host = np.asarray(jax.device_get(array))
    raw = host.view(np.int16) if host.dtype.name == "bfloat16" else host
    return host.dtype.name, tuple(host.shape), raw.tobytes()


TORCH_DTYPES = ("float16", "bfloat16", "float32", "float64")
JAX_DTYPES = ("float16", "bfloat16", "float32")  # float64 needs jax_enable_x64


TORCH_DTYPE_CASES = TORCH_DTYPES


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("dtype", TORCH_DTYPE_CASES)
def test_torch_tensors_round_trip_bit_for_bit_found_without_naming_the_backend(
    torch: Any, tmp_path: Path, suffix: str, dtype: str
) -> None:
    params = [{"w": torch_bits(torch, dtype, (4, 3), 1), "p": torch.nn.Parameter(torch_bits(torch, dtype, (2,), 2))}]
    path = tmp_path / f"params{suffix}"
    rnnspec.save_params(path, params)
    as_numpy: Any = rnnspec.load_params(path)
    assert as_numpy[0]["w"].dtype.name == dtype
    loaded: Any = rnnspec.load_params(path, backend="torch")
    assert list(loaded[0]) == ["w", "p"]
    for name, tensor in params[0].items():
        assert torch.is_tensor(loaded[0][name])
        assert torch_signature(torch, loaded[0][name]) == torch_signature(torch, tensor), name


def test_bfloat16_torch_tensors_save_bit_for_bit(torch: Any, tmp_path: Path) -> None:
    ml_dtypes = pytest.importorskip("ml_dtypes")
    tensor = torch_bits(torch, "bfloat16", (4, 3), 1)
    path = tmp_path / "params.npz"
    rnnspec.save_params(path, {"w": tensor})
    loaded: Any = rnnspec.load_params(path)
    loaded = loaded["w"]
    assert loaded.dtype == ml_dtypes.bfloat16
    assert loaded.view(np.int16).tobytes() == torch_signature(torch, tensor)[2]


def test_a_backend_that_cannot_take_an_entry_is_refused_naming_it_and_the_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "params.npz"
    rnnspec.save_params(path, {"w": np.zeros(3, np.float16)})
    implementation = rnnspec.get_backend("numpy").implementation

    def refuse(value: np.ndarray) -> np.ndarray:
        raise TypeError(f"can't convert np.ndarray of type {value.dtype}")

    monkeypatch.setattr(implementation, "asarray", refuse)
    expected = r"load_params: argument backend \(for entry '0/w'\): expected a backend that takes NumPy float16"
    with pytest.raises(DtypeError, match=expected) as info:
        rnnspec.load_params(path, backend="numpy")
    assert "backend 'numpy': can't convert np.ndarray of type float16" in str(info.value)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_jax_arrays_round_trip_bit_for_bit(jax: Any, tmp_path: Path, suffix: str) -> None:
    backend = rnnspec.get_backend("jax")
    host = {
        f"w_{dtype}": random_bits("int16" if dtype == "bfloat16" else dtype, (4, 3), k)
        for k, dtype in enumerate(JAX_DTYPES)
    }
    host["w_bfloat16"] = host["w_bfloat16"].view(pytest.importorskip("ml_dtypes").bfloat16)
    params = {name: backend.implementation.asarray(array) for name, array in host.items()}
    path = tmp_path / f"params{suffix}"
    rnnspec.save_params(path, params, backend=backend)
    loaded: Any = rnnspec.load_params(path, backend="jax")
    assert isinstance(loaded, dict)
    for name, array in params.items():
        assert backend.implementation.is_array(loaded[name])
        assert jax_signature(jax, loaded[name]) == jax_signature(jax, array), name


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_a_file_from_torch_loads_into_jax_and_back_bit_for_bit(
    torch: Any, jax: Any, tmp_path: Path, dtype: str
) -> None:
    params = [{"w_ih": torch_bits(torch, dtype, (8, 3), 1), "b_ih": torch_bits(torch, dtype, (8,), 2)}]
    first, second = tmp_path / "from_torch.npz", tmp_path / "from_jax.safetensors"
    rnnspec.save_params(first, params, backend="torch")
    in_jax: Any = rnnspec.load_params(first, backend="jax")
    rnnspec.save_params(second, in_jax)  # found through the loaded jax backend
    back: Any = rnnspec.load_params(second, backend="torch")
    for name, tensor in params[0].items():
        assert jax_signature(jax, in_jax[0][name])[2] == torch_signature(torch, tensor)[2]
        assert torch_signature(torch, back[0][name]) == torch_signature(torch, tensor)


def test_loading_into_a_backend_that_cannot_keep_the_dtype_is_refused(jax: Any, tmp_path: Path) -> None:
    path = tmp_path / "params.npz"
    rnnspec.save_params(path, {"w": np.zeros(3, np.float64)})
    if jax.config.jax_enable_x64:
        pytest.skip("jax_enable_x64 is on: jax keeps float64")
    with pytest.raises(DtypeError, match=r"float64"):
        rnnspec.load_params(path, backend="jax")


def test_an_array_of_another_backend_than_the_one_named_is_refused(torch: Any, tmp_path: Path) -> None:
    with pytest.raises(DtypeError, match=r"params\[0\]\['w'\]: expected an array of backend 'numpy', got torch.Tensor"):
        rnnspec.save_params(tmp_path / "params.npz", [{"w": torch.zeros(2)}], backend="numpy")


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_a_torch_layer_saves_and_loads_its_params_exactly(torch: Any, tmp_path: Path, suffix: str) -> None:
    from rnnspec.backends.torch import nn as layers

    torch.manual_seed(0)
    source = layers.SkipLSTM(3, 5, num_layers=2)
    path = tmp_path / f"skip_lstm{suffix}"
    source.save_params(path)
    torch.manual_seed(1)
    target = layers.SkipLSTM(3, 5, num_layers=2)
    target.load_params(path)
    assert_same_params(target.numpy_params(), source.numpy_params())
    x = torch.randn(2, 6, 3)
    torch.testing.assert_close(target(x).outputs, source(x).outputs, rtol=0, atol=0)


def test_a_bfloat16_torch_layer_round_trips_exactly(torch: Any, tmp_path: Path) -> None:
    from rnnspec.backends.torch import nn as layers

    source = layers.GRU(3, 4).to(torch.bfloat16)
    path = tmp_path / "gru.npz"
    source.save_params(path)
    target = layers.GRU(3, 4).to(torch.bfloat16)
    target.load_params(path)
    for got, expected in zip(target.canonical_params(), source.canonical_params(), strict=True):
        for name in expected:
            assert torch_signature(torch, got[name]) == torch_signature(torch, expected[name])


def test_a_torch_layer_refuses_a_file_of_another_op_or_size(torch: Any, tmp_path: Path) -> None:
    from rnnspec.backends.torch import nn as layers

    path = tmp_path / "gru.npz"
    layers.GRU(3, 4).save_params(path)
    with pytest.raises(ParamFileMismatchError, match=r"holds params of op 'gru', not of op 'lstm'"):
        layers.LSTM(3, 4).load_params(path)
    with pytest.raises(ParameterError, match=r"GRU: argument params\[0\]\['w_ih'\]: expected shape \(12, 5\)"):
        layers.GRU(5, 4).load_params(path)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_an_nnx_layer_saves_and_loads_its_params_exactly(jax: Any, tmp_path: Path, suffix: str) -> None:
    from flax import nnx

    from rnnspec.backends.jax import nnx as layers

    source = layers.QRNN(3, 4, num_layers=2, window=2, rngs=nnx.Rngs(0))
    path = tmp_path / f"qrnn{suffix}"
    source.save_params(path)
    target = layers.QRNN(3, 4, num_layers=2, window=2, rngs=nnx.Rngs(1))
    target.load_params(path)
    assert_same_params(target.numpy_params(), source.numpy_params())


def test_a_layer_file_moves_between_torch_and_nnx_layers_exactly(torch: Any, jax: Any, tmp_path: Path) -> None:
    from flax import nnx

    from rnnspec.backends.jax import nnx as jax_layers
    from rnnspec.backends.torch import nn as torch_layers

    torch_layer = torch_layers.ACT(3, 4, cell="gru")
    path = tmp_path / "act.safetensors"
    torch_layer.save_params(path)
    nnx_layer = jax_layers.ACT(3, 4, cell="gru", rngs=nnx.Rngs(0))
    nnx_layer.load_params(path)
    assert_same_params(nnx_layer.numpy_params(), torch_layer.numpy_params())
    nnx_layer.save_params(tmp_path / "back.npz")
    again = torch_layers.ACT(3, 4, cell="gru")
    again.load_params(tmp_path / "back.npz")
    assert_same_params(again.numpy_params(), torch_layer.numpy_params())
