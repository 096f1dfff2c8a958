"""The algorithm: actors, losses and the SAC update (the autograd reference in sac.py; the fast path in fast/;
learner.py picks one)."""
