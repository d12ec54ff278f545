"""mutant-qrnn-window: an rnnspec backend wrong on purpose (qrnn's window (K > 1) lags one step).

It tests the conformance suite: the suite must fail on it, and only where it is wrong.
See ``impl.py`` for the bug. Never use it for anything else.
"""
