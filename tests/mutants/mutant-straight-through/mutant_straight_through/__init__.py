"""mutant-straight-through: an rnnspec backend wrong on purpose (skip_* lack the straight-through gradient).

It tests the conformance suite: the suite must fail on it, and only where it is wrong.
See ``impl.py`` for the bug. Never use it for anything else.
"""
