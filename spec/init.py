"""``init_params``: reproducible parameter initialisation for every sequence op.

Each op's parameters are initialised as its paper or reference framework does;
the shapes come from the op's record, so they always match what the op
accepts. Sizes the record's shapes use beyond ``I`` and ``H`` come from the
op's options (``G`` from ``fixed_dims``) or from its init options (qrnn's ``K``
from ``window``, see :class:`rnnspec.ops.InitScheme`). The primitives take arrays, not
parameters, and are refused. The result is plain NumPy (convert with
``Backend.from_numpy``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np

from .constraints import check_mag, check_seq_len, indrnn_bound
from .errors import OptionError, ShapeError, UnknownArgumentError
from .ops import ACT_CELLS, OPS, InitScheme, OpSpec
from .shapes import evaluate

__all__ = ["init_options", "init_params"]


def _uniform_fan_in(
    rng: np.random.Generator, name: str, shape: tuple[int, ...], dims: Mapping[str, int], options: Mapping[str, Any]
) -> np.ndarray:
    # PyTorch's nn.RNN/LSTM/GRU: every weight and bias ~ U(-1/sqrt(H), 1/sqrt(H)).
    bound = 1.0 / np.sqrt(dims["H"])
    return rng.uniform(-bound, bound, size=shape)


#: The values of the classic cells' init option ``init_style``: PyTorch's layers' init, or TF1's cells'.
_INIT_STYLES = ("torch", "tf1")


def _tf1(
    rng: np.random.Generator,
    name: str,
    shape: tuple[int, ...],
    dims: Mapping[str, int],
    kernels: tuple[int, ...] | None,
    unit_bias: tuple[int, ...],
) -> np.ndarray:
    # TF1's BasicRNNCell, BasicLSTMCell and GRUCell: each kernel, of shape (I + H, k*H) over concat([x, h]), is
    # glorot-uniform on its own shape; w_ih and w_hh are its rows for x and for h, transposed, so each of their
    # entries is U(-a, a) with a = sqrt(6 / (I + H + k*H)) for the kernel its row belongs to. Biases are zero
    # except the blocks unit_bias of b_ih, at 1 (GRUCell's gate bias, BasicLSTMCell's forget_bias folded in).
    size_i, size_h = dims["I"], dims["H"]
    if name in ("w_ih", "w_hh"):
        blocks = kernels if kernels is not None else (shape[0] // size_h,)
        if sum(blocks) * size_h != shape[0]:
            raise ShapeError("init_params", name, f"{sum(blocks) * size_h} rows for TF1's kernels", repr(shape))
        bounds = [np.sqrt(6.0 / (size_i + size_h + k * size_h)) for k in blocks]
        bound = np.repeat(bounds, [k * size_h for k in blocks])[:, None]
        return rng.uniform(-bound, bound, size=shape)
    if name not in ("b_ih", "b_hh"):
        raise OptionError("init_params", "init_style", f"'torch' (TF1 has no parameter {name!r})", repr("tf1"))
    bias = np.zeros(shape)
    if name == "b_ih":
        for block in unit_bias:
            bias[block * size_h : (block + 1) * size_h] = 1.0
    return bias


def _style_dims(options: Mapping[str, Any], given: frozenset[str]) -> dict[str, int]:
    style = options["init_style"]
    if not (isinstance(style, str) and style in _INIT_STYLES):
        raise OptionError("init_params", "init_style", " or ".join(map(repr, _INIT_STYLES)), repr(style))
    return {}


def _classic(kernels: tuple[int, ...] | None = None, unit_bias: tuple[int, ...] = ()) -> InitScheme:
    """The scheme of a classic cell (rnn, lstm, gru): PyTorch's init, or TF1's with ``init_style="tf1"``.

    ``kernels`` counts the ``H``-row blocks of each of TF1's kernels in the order of ``w_ih``'s rows
    (``None``: one kernel of every row); ``unit_bias`` lists the blocks of ``b_ih`` TF1 starts at 1.
    """

    def draw(
        rng: np.random.Generator, name: str, shape: tuple[int, ...], dims: Mapping[str, int], options: Mapping[str, Any]
    ) -> np.ndarray:
        if options["init_style"] == "tf1":
            return _tf1(rng, name, shape, dims, kernels, unit_bias)
        return _uniform_fan_in(rng, name, shape, dims, options)

    return InitScheme(draw, {"init_style": "torch"}, _style_dims)


#: Standard deviation of IndRNN's input weights: the authors' plain (unnormalised) IndRNN, Lasagne Normal(0.001).
INDRNN_INPUT_STD = 0.001


def _indrnn(
    rng: np.random.Generator, name: str, shape: tuple[int, ...], dims: Mapping[str, int], options: Mapping[str, Any]
) -> np.ndarray:
    # Li et al. 2018 (authors' code): w_ih ~ N(0, 0.001^2), b_ih = 0, u ~ U(0, U) with U = mag ** (1/seq_len)
    # (U(0, 1) without seq_len), the top layer's u ~ U(1/U, U) with last_layer_init.
    if name == "w_ih":
        return rng.normal(0.0, INDRNN_INPUT_STD, size=shape)
    if name == "b_ih":
        return np.zeros(shape)
    seq_len = options["seq_len"]
    if seq_len is None:
        return rng.uniform(0.0, 1.0, size=shape)
    high = indrnn_bound(seq_len, options["mag"])
    top = dims["layer"] == dims["num_layers"] - 1
    low = 1.0 / high if top and options["last_layer_init"] else 0.0
    return rng.uniform(low, high, size=shape)


def _indrnn_dims(options: Mapping[str, Any], given: frozenset[str]) -> dict[str, int]:
    seq_len = options["seq_len"]
    if seq_len is not None:
        check_seq_len("init_params", seq_len)
    check_mag("init_params", options["mag"])
    last = options["last_layer_init"]
    if not isinstance(last, bool | np.bool_):
        raise OptionError("init_params", "last_layer_init", "True or False", repr(last))
    if seq_len is None:
        if "mag" in given:
            expected = "only together with seq_len (the bound is mag ** (1/seq_len))"
            raise OptionError("init_params", "mag", expected, repr(options["mag"]))
        if last:
            expected = "False when seq_len is None (the range is mag ** (-1/seq_len) to mag ** (1/seq_len))"
            raise OptionError("init_params", "last_layer_init", expected, repr(last))
    return {}


def _qrnn_dims(options: Mapping[str, Any], given: frozenset[str]) -> dict[str, int]:
    window = options["window"]
    if isinstance(window, bool | np.bool_) or not isinstance(window, int | np.integer) or window < 1:
        raise OptionError("init_params", "window", "an integer >= 1 (the convolution width K)", repr(window))
    return {"K": int(window)}


def _uniform_conv_fan_in(
    rng: np.random.Generator, name: str, shape: tuple[int, ...], dims: Mapping[str, int], options: Mapping[str, Any]
) -> np.ndarray:
    # PyTorch's nn.Conv1d(I, G*H, K) (and Salesforce's nn.Linear(K*I, G*H)): w, b ~ U(-1/sqrt(I*K), 1/sqrt(I*K)).
    bound = 1.0 / np.sqrt(dims["I"] * dims["K"])
    return rng.uniform(-bound, bound, size=shape)


def _skip(
    rng: np.random.Generator, name: str, shape: tuple[int, ...], dims: Mapping[str, int], options: Mapping[str, Any]
) -> np.ndarray:
    # Campos et al. 2018: the gate bias starts at 1 "so that all samples are used at the beginning"; the learnt
    # initial state at zero, or N(0, initial_state_std^2) (the authors' code: N(0, 1)). The base cell's arrays are
    # drawn by the base's scheme (see _scheme); w_gate as PyTorch draws a weight, or with init_style="tf1" as the
    # authors' TF1 code draws its (H, 1) state_update_prob kernel: glorot-uniform.
    if name == "b_gate":
        return np.ones(shape)
    if name in ("h0", "c0"):
        std = float(options["initial_state_std"])
        return rng.normal(0.0, std, size=shape) if std > 0 else np.zeros(shape)
    if name == "w_gate" and options["init_style"] == "tf1":
        bound = np.sqrt(6.0 / (dims["H"] + 1))
        return rng.uniform(-bound, bound, size=shape)
    return _uniform_fan_in(rng, name, shape, dims, options)


def _skip_dims(options: Mapping[str, Any], given: frozenset[str]) -> dict[str, int]:
    flag = options["trainable_initial_state"]
    if not isinstance(flag, bool | np.bool_):
        raise OptionError("init_params", "trainable_initial_state", "True or False", repr(flag))
    std = options["initial_state_std"]
    real = not isinstance(std, bool | np.bool_) and isinstance(std, numbers.Real)
    if not (real and math.isfinite(float(std)) and float(std) >= 0.0):
        expected = "a finite real number >= 0 (the standard deviation of h0 and c0)"
        raise OptionError("init_params", "initial_state_std", expected, repr(std))
    if float(std) > 0.0 and not flag:
        expected = "0.0 unless trainable_initial_state=True (it draws the learnt h0 and c0)"
        raise OptionError("init_params", "initial_state_std", expected, repr(std))
    return {}


def _act(
    rng: np.random.Generator, name: str, shape: tuple[int, ...], dims: Mapping[str, int], options: Mapping[str, Any]
) -> np.ndarray:
    # Graves 2016 (seed code): halting bias 1; the cell as its own init (IndRNN without seq_len).
    if name == "b_halt":
        return np.ones(shape)
    cell = _scheme(ACT_CELLS[options["cell"]])
    if name == "w_halt":
        return _uniform_fan_in(rng, name, shape, dims, options)
    return np.asarray(cell.draw(rng, name, shape, dims, {**options, **cell.defaults}), dtype=np.float64)


#: The initialisation schemes, by the name an op's record gives in ``init``.
_INITIALISERS: dict[str, InitScheme] = {
    # TF1's cells: BasicRNNCell's one kernel; BasicLSTMCell's one kernel, forget_bias=1 (block f of i, f, g, o);
    # GRUCell's gate kernel (blocks r, z) and candidate kernel (n), gate bias 1.
    "uniform_fan_in": _classic(),
    "lstm": _classic(unit_bias=(1,)),
    "gru": _classic(kernels=(2, 1), unit_bias=(0, 1)),
    "indrnn": InitScheme(_indrnn, {"seq_len": None, "mag": 2.0, "last_layer_init": False}, _indrnn_dims),
    "uniform_conv_fan_in": InitScheme(_uniform_conv_fan_in, {"window": 1}, _qrnn_dims),
    "act": InitScheme(_act),
    "skip": InitScheme(
        _skip,
        {"trainable_initial_state": False, "initial_state_std": 0.0},
        _skip_dims,
        lambda o: bool(o["trainable_initial_state"]),
    ),
}
#: The ops ``init_params`` initialises: every sequence op.
_SEQUENCE_OPS = sorted(name for name, spec in OPS.items() if spec.kind == "sequence")


def _scheme(spec: OpSpec) -> InitScheme:
    """The op's init scheme: its record's own, or the one of this module it names.

    An op that wraps another (a record with ``base``: skip_gru's gru) draws the base's parameters with
    the base's scheme, in the order of its record, and takes the base's init options too.
    """
    own = spec.init if isinstance(spec.init, InitScheme) else _INITIALISERS[spec.init]
    if spec.base is None:
        return own
    base = _scheme(OPS[spec.base])
    base_params = frozenset(p.name for p in OPS[spec.base].params)

    def draw(
        rng: np.random.Generator, name: str, shape: tuple[int, ...], dims: Mapping[str, int], options: Mapping[str, Any]
    ) -> np.ndarray:
        return np.asarray((base if name in base_params else own).draw(rng, name, shape, dims, options))

    def dims(options: Mapping[str, Any], given: frozenset[str]) -> dict[str, int]:
        return {**base.dims(options, given), **own.dims(options, given)}

    return InitScheme(draw, {**base.defaults, **own.defaults}, dims, own.optional)


def _check_size(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ShapeError("init_params", name, "a positive integer", repr(value))
    return int(value)


def init_options(op: str) -> dict[str, Any]:
    """The options :func:`init_params` takes for ``op`` besides the op's own (``init_style``,
    ``trainable_initial_state``, ``initial_state_std``, IndRNN's ``seq_len``/``mag``/``last_layer_init``,
    qrnn's ``window``), with their defaults."""
    return dict(_scheme(OPS[op]).defaults)


def init_params(
    op: str,
    *,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    seed: int = 0,
    dtype: str = "float32",
    **options: Any,
) -> list[dict[str, np.ndarray]]:
    """Initial parameters for ``op``: one dict of NumPy arrays per layer.

    Parameters
    ----------
    op
        The op's name, such as ``"lstm"``.
    input_size, hidden_size, num_layers
        Sizes I and H of the first layer (later layers read H) and the depth.
    seed
        Seed of the generator; the same arguments give the same arrays.
    dtype
        ``"float32"`` (the default, what frameworks train in) or ``"float64"``.
    **options
        The op's keyword options that take a value from a fixed set (``mode``,
        ``activation``, ...), and the op's init options (listed on its spec page):

        - ``rnn``, ``lstm``, ``gru`` and the skip ops: ``init_style="torch"``, every
          weight and bias ``U(-1/sqrt(H), 1/sqrt(H))`` as PyTorch's layers draw them. With
          ``"tf1"``, TF1's ``BasicRNNCell``/``BasicLSTMCell``/``GRUCell``: each kernel over
          ``concat([x, h])`` glorot-uniform on its own shape (one kernel ``(I+H, G*H)``; the
          GRU's gate kernel ``(I+H, 2H)`` for blocks r, z and candidate kernel ``(I+H, H)``
          for n), split into ``w_ih``/``w_hh``; biases 0, but ``b_ih``'s r and z blocks (the
          GRU) and f block (the LSTM's ``forget_bias=1.0``, folded in) at 1.
        - ``indrnn``: ``seq_len=None``, ``mag=2.0``, ``last_layer_init=False``.
          ``u ~ U(0, mag ** (1/seq_len))`` in every layer, or ``U(0, 1)`` without
          ``seq_len``; with ``last_layer_init=True`` the top layer's
          ``u ~ U(mag ** (-1/seq_len), mag ** (1/seq_len))``. ``w_ih ~ N(0, 0.001**2)``
          and ``b_ih = 0``.
        - ``qrnn``: ``window=1``, the convolution width ``K >= 1``.
        - ``skip_rnn``, ``skip_lstm``, ``skip_gru``: the base cell's ``init_style``,
          ``trainable_initial_state=False`` and ``initial_state_std=0.0``; with True every
          layer gets ``h0`` (and ``c0``), at zero or ``N(0, initial_state_std**2)``.
          ``b_gate = 1``, ``w_gate ~ U(-1/sqrt(H), 1/sqrt(H))`` in either style.
        - ``act``: the ``cell`` option picks the layout; ``b_halt = 1``. One layer.

    Raises
    ------
    rnnspec.errors.UnknownArgumentError
        An unknown op, a primitive (it has no parameters), or an unknown option.
    rnnspec.errors.OptionError
        An option outside its allowed values (such as ``window=0``, ``init_style="keras"``,
        or ``initial_state_std`` non-zero without ``trainable_initial_state=True``), or a
        dtype other than float32 and float64.
    rnnspec.errors.ShapeError
        A size that is not a positive integer.

    Examples
    --------
    >>> import rnnspec
    >>> params = rnnspec.init_params("lstm", input_size=3, hidden_size=8, num_layers=2)
    >>> [p["w_ih"].shape for p in params]
    [(32, 3), (32, 8)]
    """
    if op in OPS and OPS[op].kind == "primitive":
        expected = f"a sequence op among {_SEQUENCE_OPS}; {op!r} is a primitive: its arguments are arrays"
        raise UnknownArgumentError("init_params", "op", expected + " and it has no parameters to initialise", repr(op))
    if op not in _SEQUENCE_OPS:
        raise UnknownArgumentError("init_params", "op", f"one of {_SEQUENCE_OPS}", repr(op))
    spec: OpSpec = OPS[op]
    init = _scheme(spec)
    # Array options (qrnn's zoneout_mask) are inputs of a call; they shape no parameter.
    op_defaults = {opt.name: opt.default for opt in spec.value_options}
    for key in options:
        if key not in op_defaults and key not in init.defaults:
            known = sorted({*op_defaults, *init.defaults})
            raise UnknownArgumentError("init_params", key, f"an option of {op!r} among {known}", f"{key!r}")
    merged = {**op_defaults, **init.defaults, **options}
    for opt in spec.value_options:
        if not opt.accepts(merged[opt.name]):
            raise OptionError("init_params", opt.name, opt.describe_allowed(), repr(merged[opt.name]))
    extra_dims = init.dims(merged, frozenset(options))
    if dtype not in ("float32", "float64"):
        raise OptionError("init_params", "dtype", "'float32' or 'float64'", repr(dtype))
    sizes = {
        "input_size": _check_size("input_size", input_size),
        "hidden_size": _check_size("hidden_size", hidden_size),
        "num_layers": _check_size("num_layers", num_layers),
    }
    if spec.max_layers is not None and sizes["num_layers"] > spec.max_layers:
        raise ShapeError("init_params", "num_layers", f"at most {spec.max_layers} for {op!r}", repr(num_layers))
    rng = np.random.default_rng(seed)
    layers = []
    for k in range(sizes["num_layers"]):
        dims = {
            **spec.fixed_dims(merged),
            **extra_dims,
            "I": sizes["input_size"] if k == 0 else sizes["hidden_size"],
            "H": sizes["hidden_size"],
            "layer": k,
            "num_layers": sizes["num_layers"],
        }
        layer = {}
        for p in spec.layer_params(top=k == sizes["num_layers"] - 1, options=merged):
            if not p.required and not init.optional(merged):
                continue
            shape = tuple(evaluate(e, dims) for e in p.shape)
            layer[p.name] = init.draw(rng, p.name, shape, dims, merged).astype(dtype)
        layers.append(layer)
    return layers
