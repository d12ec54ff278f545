"""Character-level language modelling for ``qrnn_charlm.py``, without a framework.

What is the same in every framework lives here: the corpus (the ``.py`` files of
Python's standard library, read from this machine, no download), its byte
vocabulary, the streams of truncated backpropagation through time, the models'
description (:class:`LMSpec`) and parameter count, the checkpoints of
``--resume`` and the CSV learning curves. Each framework's model and trainer is
in ``lm/torch.py``, ``lm/jax.py`` or ``lm/tensorflow.py``; :func:`make_trainer`
imports only the one asked for.
"""

from __future__ import annotations

import csv
import hashlib
import importlib
import json
import math
import os
import platform
import sysconfig
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

__all__ = [
    "CURVE_FIELDS",
    "OTHER",
    "QRNN_WINDOWS",
    "VOCAB",
    "VOCAB_SIZE",
    "Corpus",
    "CurveWriter",
    "EvalStream",
    "LMSpec",
    "LMTrainer",
    "TrainStream",
    "check_arrays",
    "config_differences",
    "encode",
    "flatten_state",
    "load_checkpoint",
    "load_corpus",
    "make_trainer",
    "matched_hidden",
    "save_checkpoint",
    "stdlib_files",
    "unflatten_state",
]

#: The bytes with an id of their own: tab, newline and printable ASCII (space to ``~``), in this order.
VOCAB: tuple[int, ...] = (9, 10, *range(32, 127))
#: The id of every other byte (carriage returns, form feeds, the bytes of non-ASCII UTF-8 characters).
OTHER = len(VOCAB)
#: Ids 0 to ``OTHER``.
VOCAB_SIZE = OTHER + 1
_TABLE = np.full(256, OTHER, dtype=np.uint8)
_TABLE[list(VOCAB)] = np.arange(len(VOCAB), dtype=np.uint8)

#: The QRNN's convolution windows: 2 on the first layer, 1 above (Bradbury et al. 2016; Salesforce's awd-lstm-lm).
QRNN_WINDOWS = (2, 1)
#: Folders of the standard library's folder that are not the standard library.
_NOT_STDLIB = frozenset({"site-packages", "dist-packages", "__pycache__"})
#: The columns of the learning curves' CSV files, in order.
CURVE_FIELDS = (
    "update",
    "chars_seen",
    "train_bpc",
    "heldout_bpc",
    "train_seconds",
    "train_cpu_seconds",
    "elapsed_seconds",
)


def encode(data: bytes) -> np.ndarray:
    """The ids (uint8) of ``data``'s bytes: :data:`VOCAB`'s index, :data:`OTHER` for any other byte."""
    return _TABLE[np.frombuffer(data, dtype=np.uint8)]


# -- the corpus -------------------------------------------------------------------------------------


def stdlib_files(root: Path | None = None) -> tuple[Path, list[str]]:
    """The standard library's folder and its ``.py`` files, as POSIX paths relative to it, sorted.

    Parameters
    ----------
    root
        The folder to read; ``sysconfig.get_paths()["stdlib"]`` (this Python's standard library) if None.
        Third-party folders inside it (``site-packages``, ``dist-packages``) are left out; links to
        folders are not followed.
    """
    root = Path(sysconfig.get_paths()["stdlib"]) if root is None else root
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in _NOT_STDLIB]
        here = Path(folder).relative_to(root)
        found += [(here / f).as_posix() for f in files if f.endswith(".py")]
    return root, sorted(found)


@dataclass(frozen=True)
class Corpus:
    """The text the models read: training and held-out ids, split by file.

    Attributes
    ----------
    root
        The standard library's folder the files came from.
    python
        The version of the Python whose standard library this is: the text depends on it.
    train, heldout
        The ids (uint8) of the training and held-out files, each split's files concatenated in order.
    train_files, heldout_files
        How many files each split holds (the last one read may be cut at the byte budget).
    other_fraction
        The fraction of bytes mapped to :data:`OTHER`.
    fingerprint
        A hash of both splits' ids: a checkpoint resumes only on the same text.
    """

    root: Path
    python: str
    train: np.ndarray
    heldout: np.ndarray
    train_files: int
    heldout_files: int
    other_fraction: float
    fingerprint: str

    def describe(self) -> str:
        """One line: where the text comes from and how much of it there is."""
        return (
            f"corpus: the .py files of Python {self.python}'s standard library ({self.root}): "
            f"{self.train.size:,} training bytes ({self.train_files} files), {self.heldout.size:,} held-out bytes "
            f"({self.heldout_files} files); {100 * self.other_fraction:.2f}% of bytes outside the "
            f"{len(VOCAB)}-symbol ASCII vocabulary share one id"
        )


def load_corpus(budget: int, heldout_every: int = 20, root: Path | None = None) -> Corpus:
    """Read the first ``budget`` bytes of the standard library's ``.py`` files, in sorted order.

    Parameters
    ----------
    budget
        The number of bytes to read; the last file read is cut there. Fewer if the library is smaller.
    heldout_every
        Every ``heldout_every``-th file (the 20th, the 40th...) goes to the held-out split, the others to
        training.
    root
        The folder to read (see :func:`stdlib_files`).

    Raises
    ------
    SystemExit
        ``budget`` or ``heldout_every`` is below 1, or a split is left empty.
    """
    if budget < 1 or heldout_every < 2:
        raise SystemExit(f"load_corpus: budget >= 1 and heldout_every >= 2 expected, got {budget} and {heldout_every}")
    root, names = stdlib_files(root)
    parts: dict[bool, list[bytes]] = {False: [], True: []}
    left = budget
    for k, name in enumerate(names):
        if left <= 0:
            break
        data = (root / name).read_bytes()[:left]
        left -= len(data)
        parts[k % heldout_every == heldout_every - 1].append(data)
    if not parts[True] or not parts[False]:
        raise SystemExit(
            f"load_corpus: {budget} bytes of {root} make {len(parts[False])} training and {len(parts[True])} "
            "held-out files; both splits need one at least (a larger budget)"
        )
    train, heldout = encode(b"".join(parts[False])), encode(b"".join(parts[True]))
    digest = hashlib.sha256(train.tobytes())
    digest.update(heldout.tobytes())
    other = (np.count_nonzero(train == OTHER) + np.count_nonzero(heldout == OTHER)) / (train.size + heldout.size)
    return Corpus(
        root=root,
        python=platform.python_version(),
        train=train,
        heldout=heldout,
        train_files=len(parts[False]),
        heldout_files=len(parts[True]),
        other_fraction=float(other),
        fingerprint=digest.hexdigest()[:16],
    )


# -- the streams ------------------------------------------------------------------------------------


class TrainStream:
    """The training text as ``batch`` contiguous streams, read ``seq`` characters at a time.

    Stream ``b`` is the ``b``-th of ``batch`` equal slices of the text; update ``n`` reads the chunk after
    update ``n - 1``'s in every stream, so the state at the end of a chunk is the right one to start the
    next from (truncated backpropagation through time). When a chunk would run past the end of the
    streams, reading starts over at their beginning, in a new epoch, from a zero state.

    Parameters
    ----------
    ids
        The training ids.
    batch, seq
        The number of streams and the chunk length.
    """

    def __init__(self, ids: np.ndarray, batch: int, seq: int) -> None:
        length = ids.size // batch
        if length < seq + 1:
            raise SystemExit(
                f"TrainStream: {ids.size} training characters make streams of {length} characters for --batch "
                f"{batch}; at least --seq + 1 = {seq + 1} expected (a larger corpus, or a smaller batch or seq)"
            )
        self.streams = ids[: batch * length].reshape(batch, length)
        self.seq = seq
        self.position = 0
        self.epoch = 0

    def next(self) -> tuple[np.ndarray, np.ndarray, bool]:
        """The next chunk's inputs and targets, ``(batch, seq)`` int32 each, and whether a new epoch began."""
        restart = self.position + self.seq + 1 > self.streams.shape[1]
        if restart:
            self.position, self.epoch = 0, self.epoch + 1
        chunk = self.streams[:, self.position : self.position + self.seq + 1].astype(np.int32)
        self.position += self.seq
        return chunk[:, :-1], chunk[:, 1:], restart


@dataclass(frozen=True)
class EvalStream:
    """A fixed held-out text: ``batch`` streams of ``chunks * seq`` predicted characters, read from a zero state.

    Attributes
    ----------
    inputs, targets
        ``(batch, chunks * seq)`` int32 each: every stream predicts its characters 1 to ``chunks * seq``.
    seq
        The chunk length; the state is carried from chunk to chunk.
    """

    inputs: np.ndarray
    targets: np.ndarray
    seq: int

    @classmethod
    def from_ids(cls, ids: np.ndarray, chars: int, batch: int, seq: int) -> EvalStream:
        """About ``chars`` held-out characters, from ``batch`` places spread evenly over ``ids``.

        Stream ``b`` starts at ``b * (ids.size // batch)``, so that the evaluation samples every part of
        the held-out files rather than the first few; each stream is a whole number of ``seq`` chunks
        (``chars`` is rounded down to one, and cut to what ``ids`` holds).
        """
        stride = ids.size // batch
        chunks = min(chars // (batch * seq), (stride - 1) // seq)
        if chunks < 1:
            raise SystemExit(
                f"EvalStream: {ids.size} held-out characters (--eval-chars {chars}) make no chunk of --batch {batch} "
                f"x --seq {seq}; a larger corpus or --eval-chars expected"
            )
        length = chunks * seq + 1
        streams = np.stack([ids[b * stride : b * stride + length] for b in range(batch)]).astype(np.int32)
        return cls(streams[:, :-1], streams[:, 1:], seq)

    @property
    def chars(self) -> int:
        """The number of characters predicted."""
        return int(self.targets.size)


# -- the models -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LMSpec:
    """A character language model: embedding, ``num_layers`` recurrent layers, a linear readout at every step.

    Parameters
    ----------
    name
        The name the reports and plots use.
    op
        ``"qrnn"`` (fo-pooling, windows :data:`QRNN_WINDOWS`) or ``"lstm"``.
    hidden_size, embed_size, vocab_size, num_layers
        The sizes.
    zoneout
        The QRNN's zoneout probability in training (0: none; the LSTM takes none).
    learning_rate, clip_norm
        Adam's step size; the global gradient norm is clipped to ``clip_norm``.
    """

    name: str
    op: str
    hidden_size: int
    embed_size: int
    vocab_size: int = VOCAB_SIZE
    num_layers: int = 2
    zoneout: float = 0.0
    learning_rate: float = 2e-3
    clip_norm: float = 1.0

    def layer_input(self, k: int) -> int:
        """The input size of layer ``k``."""
        return self.embed_size if k == 0 else self.hidden_size

    def layer_options(self, k: int) -> dict[str, Any]:
        """The options of layer ``k``'s rnnspec layer, by the names every framework's layer takes."""
        if self.op == "qrnn":
            return {"window": QRNN_WINDOWS[min(k, len(QRNN_WINDOWS) - 1)], "mode": "fo"}
        return {}

    def parameter_count(self) -> int:
        """The number of trainable numbers: embedding, layers (from :func:`rnnspec.init_params`), readout."""
        import rnnspec

        total = self.vocab_size * self.embed_size + (self.hidden_size + 1) * self.vocab_size
        for k in range(self.num_layers):
            arrays = rnnspec.init_params(
                self.op, input_size=self.layer_input(k), hidden_size=self.hidden_size, **self.layer_options(k)
            )
            total += sum(int(a.size) for layer in arrays for a in layer.values())
        return total

    def config(self) -> dict[str, Any]:
        """The fields, for checkpoints and reports."""
        return asdict(self)


def matched_hidden(spec: LMSpec, target: int, multiple: int = 8) -> int:
    """The multiple of ``multiple`` for ``hidden_size`` that brings ``spec``'s parameter count nearest to ``target``.

    Ties go to the smaller width. Widths that are multiples of 8 keep the layers' matrix products on the
    BLAS's fast kernels: on an AVX-512 CPU, torch's (MKL's) products of a QRNN's shapes ran about 1.5x
    faster at 464 or 472 units than at 467.
    """

    def count(hidden: int) -> int:
        return LMSpec(**{**spec.config(), "hidden_size": hidden * multiple}).parameter_count()

    low, high = 1, 2
    while count(high) < target:
        low, high = high, 2 * high
    while high - low > 1:  # count(low) < target <= count(high), the count growing with the size (or low == 1)
        mid = (low + high) // 2
        low, high = (mid, high) if count(mid) < target else (low, mid)
    return multiple * (low if abs(target - count(low)) <= abs(count(high) - target) else high)


class LMTrainer(Protocol):
    """A model of one framework, built from an :class:`LMSpec`, with its Adam and its carried state."""

    spec: LMSpec

    def step(self, x: np.ndarray, y: np.ndarray) -> float:
        """One update on the chunk ``x`` -> ``y`` ``(batch, seq)``, from the state the last chunk left.

        Returns the mean cross-entropy in nats; keeps the final state (no gradient flows back through it).
        """
        ...

    def reset_state(self) -> None:
        """Start the next chunk from a zero state (a new epoch)."""
        ...

    def evaluate(self, stream: EvalStream) -> float:
        """The mean cross-entropy in nats over ``stream``, from a zero state, carried chunk to chunk (no update)."""
        ...

    def parameter_count(self) -> int:
        """The number of trainable numbers the framework holds."""
        ...

    def arrays(self) -> dict[str, np.ndarray]:
        """Everything a resumed run needs: weights, Adam's moments and step, the carried state, random streams."""
        ...

    def load_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Restore what :meth:`arrays` gave, into a trainer built from the same spec and batch."""
        ...


def make_trainer(backend: str, spec: LMSpec, seed: int, batch: int) -> LMTrainer:
    """Build ``spec`` with ``backend``'s framework (``torch``, ``jax`` or ``tensorflow``), imported now."""
    module = importlib.import_module(f"lm.{backend}")
    trainer: LMTrainer = module.make_trainer(spec, seed, batch)
    return trainer


def check_arrays(owner: str, expected: Mapping[str, tuple[int, ...]], given: Mapping[str, np.ndarray]) -> None:
    """Refuse checkpoint arrays whose names or shapes differ from a trainer's (another model or size)."""
    missing = sorted(set(expected) - set(given))
    extra = sorted(set(given) - set(expected))
    if missing or extra:
        raise SystemExit(
            f"{owner}: checkpoint arrays differ from the model's: missing {missing[:5]}, extra {extra[:5]}"
        )
    for key, shape in expected.items():
        if tuple(given[key].shape) != tuple(shape):
            raise SystemExit(
                f"{owner}: checkpoint array {key!r}: shape {tuple(shape)} expected, {given[key].shape} given"
            )


# -- checkpoints and learning curves ------------------------------------------------------------------

#: The key of a checkpoint's metadata (JSON), beside the trainer's arrays (under ``"a/"``).
_META = "meta"


def save_checkpoint(path: Path, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``meta`` (JSON-able) and ``arrays`` to ``path`` (``.npz``, no pickles), replacing it at once.

    The file is written beside ``path`` first and renamed over it, so an interrupted write leaves the
    previous checkpoint whole.
    """
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as f:
        np.savez(f, **{_META: np.array(json.dumps(dict(meta)))}, **{f"a/{k}": v for k, v in arrays.items()})
    os.replace(partial, path)


def load_checkpoint(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The metadata and arrays :func:`save_checkpoint` wrote to ``path``."""
    with np.load(path, allow_pickle=False) as data:
        meta: dict[str, Any] = json.loads(str(data[_META]))
        arrays = {k.removeprefix("a/"): data[k] for k in data.files if k.startswith("a/")}
    return meta, arrays


def config_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """``"key: saved -> current"`` for each setting that differs between a checkpoint and this run."""
    keys = sorted(set(saved) | set(current))
    return [
        f"{k}: {saved.get(k)!r} in the checkpoint, {current.get(k)!r} now"
        for k in keys
        if saved.get(k) != current.get(k)
    ]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return str(value)


class CurveWriter:
    """A learning curve's CSV file (:data:`CURVE_FIELDS`), one row per evaluation, flushed as it is written.

    Parameters
    ----------
    path
        The file, (re)written with the header and ``rows`` (those a resumed run had already recorded).
    rows
        Rows to write first, each a mapping of :data:`CURVE_FIELDS`.
    """

    def __init__(self, path: Path, rows: Iterable[Mapping[str, Any]] = ()) -> None:
        self.path = path
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(CURVE_FIELDS)
            writer.writerows([_cell(row[k]) for k in CURVE_FIELDS] for row in rows)

    def append(self, row: Mapping[str, Any]) -> None:
        """Add one row at the end of the file."""
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([_cell(row[k]) for k in CURVE_FIELDS])


def flatten_state(prefix: str, state: Sequence[Sequence[Mapping[str, Any]]] | None) -> dict[str, Any]:
    """``{f"{prefix}/{module}/{layer}/{name}": array}`` of a carried state (one op state per layer module)."""
    if state is None:
        return {}
    return {
        f"{prefix}/{m}/{k}/{name}": value
        for m, module in enumerate(state)
        for k, layer in enumerate(module)
        for name, value in layer.items()
    }


def unflatten_state(prefix: str, arrays: Mapping[str, Any], modules: int) -> list[list[dict[str, Any]]] | None:
    """The carried state :func:`flatten_state` flattened (None if ``arrays`` holds none)."""
    keys = [k for k in arrays if k.startswith(prefix + "/")]
    if not keys:
        return None
    state: list[list[dict[str, Any]]] = [[] for _ in range(modules)]
    for key in sorted(keys):
        m, k, name = key.removeprefix(prefix + "/").split("/")
        layers = state[int(m)]
        while len(layers) <= int(k):
            layers.append({})
        layers[int(k)][name] = arrays[key]
    return state
