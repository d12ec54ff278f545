"""mutant-aliasing: an rnnspec backend wrong on purpose (skip_rnn with T = 0 returns initial_state's arrays).

It tests the conformance suite: the suite must fail on it, and only where it is wrong.
See ``impl.py`` for the bug. Never use it for anything else.
"""
