"""mutant-half-accumulation: an rnnspec backend wrong on purpose (linear_recurrence carries float16 state).

It tests the conformance suite: the suite must fail on it, and only where it is wrong.
See ``impl.py`` for the bug. Never use it for anything else.
"""
