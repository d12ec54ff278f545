"""The conformance suite: checks any backend against the spec's reference.

Run it on a backend (yours or a built-in one)::

    pip install -e ".[conformance]"
    pytest --pyargs rnnspec.conformance --rnnspec-backend=NAME

(or set ``RNNSPEC_BACKEND=NAME``). The suite is a pytest plugin that does
nothing unless a backend is named. Its pieces are reusable: :mod:`.cases`
(reproducible calls), :mod:`.strategies` (hypothesis strategies of cases),
:mod:`.tolerances` (the tolerance policy) and :mod:`.assertions`.
"""

__all__: list[str] = []  # the suite's modules are imported by name, each with its own __all__
