"""Tasks: making envs (Gymnasium, DeepMind Control, Meta-World), reading their ids, their versions and constructor
arguments, saving and restoring their mid-episode state, and the names of their observation features and actions
(numpy only)."""
