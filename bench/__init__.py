"""rnnspec's benchmark suite: each op against the tool users would otherwise pick, side by side.

Run ``python -m rnnspec.bench`` (``--quick`` for the small subset CI runs; ``--help`` for the
options). :mod:`.cli` starts one :mod:`.worker` process per framework backend, which runs the
sections of :mod:`.cases` through that framework's adapter (:mod:`.framework`) and times them
with :mod:`.timing`; :mod:`.report` and :mod:`.plot` write the table, the JSON and the plot.
The modules ``torch_paths``, ``torch_recurrences``, ``torch_skip_inference``,
``tensorflow_paths`` and ``jax_recurrences`` are the earlier, finer-grained scripts behind the
backends' path choices, runnable on their own (``python -m rnnspec.bench.torch_paths``).
"""

__all__: list[str] = []
