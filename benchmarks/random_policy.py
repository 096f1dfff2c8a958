"""Return of the uniform random policy on the paper's six tasks: the zero point of the normalised scores that
`smose table` aggregates across tasks (score − random) / (the poster's SAC-L − random).

    python benchmarks/random_policy.py --episodes 100 --out benchmarks/results/random_policy.json

Episodes use the evaluation seeds of `smose eval` (10,000 + i); the action space is seeded with the same number.
"""

from __future__ import annotations

import argparse
import json
import platform

import gymnasium as gym
import numpy as np

from record import header
from smose.evaluate import EVAL_SEED_OFFSET

TASKS = ("Walker2d-v4", "Hopper-v4", "Ant-v4", "HalfCheetah-v4", "Reacher-v4", "Swimmer-v4")


def random_returns(env_id: str, episodes: int) -> list[float]:
    env = gym.make(env_id)
    returns = []
    for episode in range(episodes):
        seed = EVAL_SEED_OFFSET + episode
        env.reset(seed=seed)
        env.action_space.seed(seed)
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return returns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    results = {}
    for env_id in TASKS:
        r = np.asarray(random_returns(env_id, args.episodes))
        results[env_id] = {"mean": float(r.mean()), "std": float(r.std()), "episodes": args.episodes}
        print(env_id, f"{r.mean():.2f} ± {r.std():.2f}", flush=True)
    # no note: the returns do not depend on what else runs on the machine
    record = {**header("random_policy.py", ""), "python": platform.python_version(), "gymnasium": gym.__version__,
              "results": results}
    with open(args.out, "w") as fh:
        json.dump(record, fh, indent=1)
        fh.write("\n")


if __name__ == "__main__":
    main()
