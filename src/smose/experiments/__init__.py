"""Experiments: sweeps of many runs, result tables with aggregate statistics, the paper's published numbers,
the throughput benchmark."""
