"""mutant-compiled: an rnnspec backend wrong on purpose (its compiled lstm scales the outputs by 1.01).

It tests the conformance suite: the suite must fail on it, and only where it is wrong.
See ``impl.py`` for the bug. Never use it for anything else.
"""
