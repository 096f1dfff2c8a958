"""A short real training run must learn (about a minute on one core of the 2-core CI machine).

Budget chosen from measurement: SMOSE (defaults, warm-up 1,000) on Pendulum-v1 reached deterministic evaluations of
-261 (seed 0) and -198 (seed 1) at 6,000 steps, from about -1,400 at the start; an untrained or broken update stays
near -1,200 to -1,500.
"""

import pytest

from smose import SMOSE
from smose.envs import make_env
from smose.evaluate import evaluate

pytestmark = pytest.mark.slow


def test_smose_learns_pendulum():
    model = SMOSE("Pendulum-v1", seed=0, learning_starts=1000, eval_every=0)
    env = make_env("Pendulum-v1")
    before = evaluate(model.actor, env, episodes=10, seed=123)["mean"]
    model.learn(6000)
    after = evaluate(model.actor, env, episodes=10, seed=123)
    assert after["mean"] > -600, f"SMOSE did not learn Pendulum: {before:.0f} -> {after['mean']:.0f}"
    assert after["mean"] - before > 500
    # More than one expert carries the swing-up (load balancing keeps the router from collapsing).
    assert sum(u > 0.05 for u in after["expert_usage"]) >= 2
