"""mutant-batch-order: an rnnspec backend wrong on purpose (gru's final state left sorted by length).

It tests the conformance suite: the suite must fail on it, and only where it is wrong.
See ``impl.py`` for the bug. Never use it for anything else.
"""
