"""mutant-lengths: an rnnspec backend wrong on purpose (gru stops one step short of each row's length).

It tests the conformance suite: the suite must fail on it, and only where it is wrong.
See ``impl.py`` for the bug. Never use it for anything else.
"""
