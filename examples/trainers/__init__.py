"""One trainer per framework, each building a :class:`models.ModelSpec` from its framework's rnnspec layers.

``trainers.torch`` (``torch.nn`` + ``torch.optim``), ``trainers.jax`` (Flax NNX + optax)
and ``trainers.tensorflow`` (Keras 3 + ``tf.GradientTape``) each define
``make_trainer(spec, seed)``; import only the one you use.
"""
