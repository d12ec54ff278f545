"""mutant-act-weights: an rnnspec backend wrong on purpose (act's halting weights sum to 0.97).

It tests the conformance suite: the suite must fail on it, and only where it is wrong.
See ``impl.py`` for the bug. Never use it for anything else.
"""
