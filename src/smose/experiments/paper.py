"""Published reference numbers, in one place: the paper's poster table (docs/method.md, "Reference results") and
CleanRL's published SAC results, plus the random policy's return that anchors normalised scores.

Keys are task names without version ("Hopper"); the poster's runs are on the -v4 tasks after 1M steps, with no ±
published. SAC-M and SAC-S are sized for M = 8.
"""

from __future__ import annotations

from smose.tasks.env_id import parse_env_id


def task_name(env_id: str) -> str:
    """"Hopper-v4" -> "Hopper" (the key of the tables below): Gymnasium's own parse of the id, without namespace and
    version; an id it cannot parse is returned as it is."""
    return parse_env_id(env_id).name


PAPER_STEPS = 1_000_000
PAPER_EXPERTS = 8
PAPER_LB_WEIGHT = 0.1
TASKS = ("Walker2d", "Hopper", "Ant", "HalfCheetah", "Reacher", "Swimmer")  # the poster's column order

# The poster's rows, as published. Methods we can train have our algorithm names; the others are the poster's
# comparisons (Metric-40 has no Reacher and Swimmer numbers).
POSTER: dict[str, dict[str, float]] = {
    "smose": {"Walker2d": 4224.29, "Hopper": 2816.08, "Ant": 3245.43, "HalfCheetah": 7310.17, "Reacher": -5.49,
              "Swimmer": 45.4},
    "sac-l": {"Walker2d": 4358.06, "Hopper": 2636.49, "Ant": 5255.46, "HalfCheetah": 11809.87, "Reacher": -3.75,
              "Swimmer": 68.59},
    "sac-m": {"Walker2d": 4020.51, "Hopper": 3224.25, "Ant": 4894.18, "HalfCheetah": 8992.22, "Reacher": -4.02,
              "Swimmer": 71.94},
    "sac-s": {"Walker2d": 2967.14, "Hopper": 3076.09, "Ant": 4162.97, "HalfCheetah": 7214.30, "Reacher": -4.82,
              "Swimmer": 59.42},
    "PPO": {"Walker2d": 3362.16, "Hopper": 2311.90, "Ant": 2327.12, "HalfCheetah": 2308.29, "Reacher": -6.57,
            "Swimmer": 93.26},
    "CGP (interpretable)": {"Walker2d": 1090, "Hopper": 1150, "Ant": 1130, "HalfCheetah": 6375, "Reacher": -68.5,
                            "Swimmer": 280},
    "LGP (interpretable)": {"Walker2d": 1080, "Hopper": 1120, "Ant": 1210, "HalfCheetah": 6388.5, "Reacher": -58.5,
                            "Swimmer": 278.5},
    "Metric-40 (interpretable)": {"Walker2d": 775, "Hopper": 2005, "Ant": 2210.5, "HalfCheetah": 2210.5},
}
# Our algorithms' numbers by task, then algorithm (what the tables compare a group with).
PAPER_RESULTS: dict[str, dict[str, float]] = {
    task: {algo: POSTER[algo][task] for algo in ("sac-l", "sac-m", "sac-s", "smose")} for task in TASKS}

# CleanRL's `sac_continuous_action.py`, "Experiment results" of its SAC documentation (docs/rl-algorithms/sac.md,
# docs.cleanrl.dev/rl-algorithms/sac/): mean ± std over seeds at 1M steps, on the -v2 tasks, of the *training*
# episodic return (stochastic policy), not a deterministic evaluation. A 256-256 MLP SAC with the settings of our
# SAC-L, except learning_starts = 5,000.
CLEANRL_SAC: dict[str, tuple[float, float]] = {
    "HalfCheetah": (9634.89, 1423.73),
    "Walker2d": (3591.45, 911.33),
    "Hopper": (2310.46, 342.82),
}
CLEANRL_SOURCE = "CleanRL SAC documentation (docs.cleanrl.dev/rl-algorithms/sac/), -v2 tasks, training return"

# The uniform random policy's mean return over 100 evaluation episodes of each -v4 task: the zero point of the
# normalised scores. Measured by `python benchmarks/random_policy.py --episodes 100 --out
# benchmarks/results/random_policy.json` (that file holds the command, date and spread).
RANDOM_POLICY: dict[str, float] = {
    "Walker2d": 2.47, "Hopper": 16.75, "Ant": -40.55, "HalfCheetah": -279.40, "Reacher": -42.90, "Swimmer": 0.37,
}
