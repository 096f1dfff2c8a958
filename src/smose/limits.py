"""Upper bounds of the numbers a user gives, and the argparse type that holds command-line counts to them.

The bounds are far above any sensible run; they exist so that a typo (``--episodes 1000000000000000000000``) or a
tampered config.json is refused at once instead of asking for absurd amounts of memory, threads or time.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

MAX_STEPS = 10 ** 9  # environment steps, and intervals counted in steps: a thousand times the paper's runs
MAX_EPISODES = 10_000  # episodes of one evaluation, distillation or report
MAX_BATCH_SIZE = 65_536
MAX_UPDATE_INTERVAL = 1_000  # --policy-frequency and --target-frequency (the actor step repeats that many times)
MAX_EXPERTS = 1024
MAX_THREADS = 1024
MAX_WORKERS = 1024  # runs of a sweep at a time
MAX_SEED = 2 ** 63 - 1  # torch.manual_seed's limit
MAX_TREE_DEPTH = 64  # far beyond a readable tree (the paper reads depth 3)
MAX_DAGGER_ROUNDS = 100
MAX_CMA_ITERATIONS = 100_000  # CMA-ES generations of one oblique fit
MAX_REPEATS = 100  # repeats of a benchmark measurement


@dataclass(frozen=True)
class Count:
    """argparse type for an integer from ``low`` to ``high`` (a count, a seed, a depth): ``type=Count(1, 100)``."""

    low: int
    high: int

    def __call__(self, text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not self.low <= value <= self.high:
            raise argparse.ArgumentTypeError(f"expected an integer from {self.low} to {self.high:,}, got {value}")
        return value
