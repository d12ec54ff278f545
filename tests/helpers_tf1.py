"""Random variables of TensorFlow 1's ``tf.contrib.rnn.PhasedLSTMCell``, named and shaped as TF1 stores them.

Shared by the tests of ``rnnspec.convert.from_tf1_phased_lstm`` with and without TensorFlow. The
names are those of the cell's variable scope: three dense maps of ``[x, h_prev]`` (``mask_gates``
with ``2H`` columns, ``new_input`` and ``output_gate`` with ``H``), each a ``kernel`` ``(rows, n)``
and a ``bias`` ``(n,)`` (``weights`` and ``biases`` in TF 1.0 and 1.1), then ``period``, ``phase``
and ``ratio_on`` ``(H,)``. With ``use_peepholes=True`` the mask gates' and the output gate's kernels
have ``H`` more rows, for the cell state.
"""

from __future__ import annotations

import numpy as np

#: The scope of a cell run by ``tf.nn.dynamic_rnn`` in TF >= 1.2.
SCOPE = "rnn/phased_lstm_cell/"


def tf1_variables(
    rng: np.random.Generator,
    inputs: int,
    hidden: int,
    *,
    scope: str = SCOPE,
    peepholes: bool = False,
    diagonal: bool = False,
    legacy_names: bool = False,
    dtype: str = "float64",
    gate_dtype: str | None = None,
) -> dict[str, np.ndarray]:
    """One cell's variables under ``scope``, weights and biases from ``U(-1, 1)``.

    ``period`` is drawn from ``exp(U(log 0.5, log 4))``, ``phase`` from ``U(0, period)`` and ``ratio_on``
    from ``U(0.2, 0.8)``: periods of a few time units, so that timestamps a few units apart open and
    close every gate. With ``peepholes``, the cell-state rows are full matrices, or diagonal ones if
    ``diagonal``. ``gate_dtype`` is the time gate's dtype (TF1's is float32 in any model), else ``dtype``.
    """
    kernel, bias = ("weights", "biases") if legacy_names else ("kernel", "bias")
    extra = hidden if peepholes else 0
    variables: dict[str, np.ndarray] = {}
    for linear, columns, cell_rows in (
        ("mask_gates", 2 * hidden, extra),
        ("new_input", hidden, 0),
        ("output_gate", hidden, extra),
    ):
        weights = rng.uniform(-1.0, 1.0, (inputs + hidden + cell_rows, columns))
        if cell_rows and diagonal:
            for block in range(columns // hidden):
                cells = weights[inputs + hidden :, block * hidden : (block + 1) * hidden]
                cells[~np.eye(hidden, dtype=bool)] = 0.0
        variables[f"{scope}{linear}/{kernel}"] = weights.astype(dtype)
        variables[f"{scope}{linear}/{bias}"] = rng.uniform(-1.0, 1.0, columns).astype(dtype)
    period = np.exp(rng.uniform(np.log(0.5), np.log(4.0), hidden))
    gate = gate_dtype or dtype
    variables[f"{scope}period"] = period.astype(gate)
    variables[f"{scope}phase"] = (rng.uniform(0.0, 1.0, hidden) * period).astype(gate)
    variables[f"{scope}ratio_on"] = rng.uniform(0.2, 0.8, hidden).astype(gate)
    return variables
