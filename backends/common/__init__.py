"""The framework-free core of the framework backends, driven by the op records.

What is the same in every framework is written here once; a framework backend
(``backends/torch``, ``backends/jax``, ``backends/tensorflow``) holds only its
cells, fast paths, kernels and autodiff glue, and hands this core its array
operations as one :class:`~.arrays.ArrayOps`.

- :mod:`.ops`: the op table of a backend, made from the records: each op's
  function of the normalised arguments (:class:`~.ops.SequenceCall` for
  sequence ops), found in the module that the record names;
- :mod:`.arrays`: the array operations a framework provides to the core;
- :mod:`.state`: a layer's sizes (through the spec's shape solver), the start
  state, initial states and the stack of layers;
- :mod:`.cells`: which cells there are, their state and options, from the records;
- :mod:`.segments`: the time segments of ``checkpoint_every``;
- :mod:`.layers`: the layer core that ``torch.nn``, Flax NNX and Keras layers adapt.

Nothing here imports a framework.
"""

__all__: list[str] = []  # the modules are imported by name, each with its own __all__
