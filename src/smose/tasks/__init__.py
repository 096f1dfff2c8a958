"""Tasks: making envs (Gymnasium, DeepMind Control, Meta-World), their versions and constructor arguments, and the
names of their observation features and actions (numpy only)."""
