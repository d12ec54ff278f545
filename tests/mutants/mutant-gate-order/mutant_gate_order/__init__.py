"""mutant-gate-order: an rnnspec backend wrong on purpose (lstm gate blocks i and f swapped).

It tests the conformance suite: the suite must fail on it, and only where it is wrong.
See ``impl.py`` for the bug. Never use it for anything else.
"""
