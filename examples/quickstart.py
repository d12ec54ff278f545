"""Quick start: run an LSTM through the NumPy reference, continue it, differentiate it.

python examples/quickstart.py
"""

from __future__ import annotations

import numpy as np

import rnnspec
from rnnspec.reference import vjp

B = rnnspec.get_backend("numpy")
params = rnnspec.init_params("lstm", input_size=3, hidden_size=8, num_layers=2, seed=0)
x = np.random.default_rng(0).standard_normal((4, 10, 3)).astype(np.float32)
lengths = np.array([10, 7, 3, 0])

result = B.lstm(x, params, lengths=lengths)
print(f"outputs {result.outputs.shape} {result.outputs.dtype}")
print(f"state: {len(result.state)} layers, entries {sorted(result.state[0])}")

# Truncated BPTT: the state of one chunk is the initial state of the next.
first = B.lstm(x[:, :6], params, lengths=np.minimum(lengths, 6))
second = B.lstm(x[:, 6:], params, lengths=np.clip(lengths - 6, 0, 4), initial_state=first.state)
chunked = np.concatenate([first.outputs, second.outputs], axis=1)
print(f"chunked run == whole run: max |difference| = {np.abs(chunked - result.outputs).max():.2e}")

# Reverse mode: cotangents for the result fields, gradients for x, params and the initial state.
grads = vjp("lstm", {"outputs": np.ones_like(result.outputs)}, x, params, lengths=lengths)
print(f"d x {grads['x'].shape}; d params[0] keys {sorted(grads['params'][0])}")
print(f"gradient past each row's length is zero: {bool(np.all(grads['x'][3] == 0))}")

# Bad calls fail early, naming the op, the argument, the expected and the actual value.
try:
    B.lstm(x[0], params)
except rnnspec.RnnspecError as err:
    print(f"error: {err}")
