"""mutant-param-range: an rnnspec backend wrong on purpose (indrnn clamps u into [-1, 1] in the forward).

It tests the conformance suite: the suite must fail on it, and only where it is wrong.
See ``impl.py`` for the bug. Never use it for anything else.
"""
