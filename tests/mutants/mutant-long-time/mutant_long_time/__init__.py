"""mutant-long-time: an rnnspec backend wrong on purpose (lstm zeroes its cell state every 64 steps).

It tests the conformance suite: the suite must fail on it, and only where it is wrong.
See ``impl.py`` for the bug. Never use it for anything else.
"""
