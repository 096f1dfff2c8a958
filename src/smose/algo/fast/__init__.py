"""The fast path of the SAC update: hand-written forward/backward passes and a fused Adam step.

It computes the same update as smose.algo.sac (tests/test_sac.py proves it in float64); the private torch calls
it needs, and the exact torch pin they force, stay in this folder."""
