"""mutant-threshold: an rnnspec backend wrong on purpose (act halts on > 1 - epsilon, not >=).

It tests the conformance suite: the suite must fail on it, and only where it is wrong.
See ``impl.py`` for the bug. Never use it for anything else.
"""
