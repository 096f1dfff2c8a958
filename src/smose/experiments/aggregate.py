"""The results table's groups: runs grouped by configuration (env, algo, M, λ, budget and other non-default
settings), the seeds of a group being its samples; per group the statistics over seeds (mean, std, IQM and its CI,
usage balance, the means of the last evaluations), the learning curves, and the pairs of SMOSE and baseline groups.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from smose.experiments.grid import DEFAULTS, format_float
from smose.experiments.paper import PAPER_EXPERTS, PAPER_LB_WEIGHT, PAPER_RESULTS, task_name
from smose.experiments.records import RunRecord, StaleTrees, TreeRecord
from smose.experiments.run_state import USES_EXPERTS, USES_LB, result_key
from smose.experiments.stats import iqm, iqm_ci
from smose.tasks.envs import format_env_kwargs
from smose.training.config import TrainConfig

ALGO_ORDER = ("smose", "sac-s", "sac-m", "sac-l")
BASELINES = ALGO_ORDER[1:]
MIN_SEEDS_FOR_CI = 3  # with two seeds the percentile interval is just [min, max]: not shown
# Config fields the table has columns for; any other result-affecting field that differs from the default is listed
# under "settings" and keeps the runs out of the default groups.
LABELLED_FIELDS = ("env", "algo", "seed", "steps", "experts", "lb_weight", "lb_loss")


def lb_label(config: TrainConfig) -> str | None:
    """λ as the table shows it: "0.1" for the default CV² loss, "z:0.001", "z-noisy:0.001", "none" or "none-noisy" for
    the other losses."""
    if config.algo not in USES_LB:
        return None
    if config.lb_loss in ("none", "none-noisy"):
        return config.lb_loss
    weight = format_float(config.effective_lb_weight)
    return weight if config.lb_loss == "cv2" else f"{config.lb_loss}:{weight}"


def other_settings(config: TrainConfig) -> str:
    """The fields that change the result and differ from the defaults, besides those the table has columns for:
    "batch_size=64, learning_starts=100" ("" when there are none). Env constructor arguments read as the KEY=VALUE
    words of that option ("--env-kwargs env_name=reach-v3"), each value written as it reads it back, so different
    values never share a label."""
    ours = json.loads(result_key(config))
    defaults = json.loads(result_key(dataclasses.replace(DEFAULTS, env=config.env, algo=config.algo)))
    words = []
    for name in sorted(ours):
        if name in LABELLED_FIELDS or ours[name] == defaults.get(name):
            continue
        if name == "env_kwargs":
            words.append(f"--env-kwargs {' '.join(format_env_kwargs(dict(sorted(ours[name].items()))))}")
        else:
            words.append(f"{name}={ours[name]}")
    return ", ".join(words)


GroupKey = tuple[str, str, "int | None", "str | None", int, str]


def group_key(record: RunRecord) -> GroupKey:
    c = record.config
    return (c.env, c.algo, c.experts if c.algo in USES_EXPERTS else None, lb_label(c), record.steps,
            other_settings(c))


def _sort_key(key: GroupKey) -> tuple:
    env, algo, experts, lb, steps, settings = key
    algo_rank = ALGO_ORDER.index(algo) if algo in ALGO_ORDER else len(ALGO_ORDER)
    try:
        lb_value = float(lb) if lb is not None else -1.0
    except ValueError:  # "none" or "z:0.001": after the numeric weights
        lb_value = math.inf
    return env, settings, algo_rank, experts or 0, lb_value, lb or "", steps


@dataclass
class Row:
    env: str
    algo: str
    experts: int | None
    lb: str | None
    steps: int
    seeds: list[int]
    returns: list[float]
    balances: list[float] = field(default_factory=list)
    settings: str = ""  # other_settings() of the group's runs
    tail_returns: list[float] = field(default_factory=list)  # RunRecord.tail_return per seed
    trees: list[tuple[int, TreeRecord]] = field(default_factory=list)  # (seed, its distillation) of distilled seeds
    stale_trees: list[tuple[int, Path]] = field(default_factory=list)  # (seed, run directory) of stale distillations
    linear_returns: list[float] = field(default_factory=list)  # the seeds' eval-linear.json means, where they exist
    success_rates: list[float] = field(default_factory=list)  # the seeds' eval.json success rates, where reported

    @property
    def key(self) -> GroupKey:
        return self.env, self.algo, self.experts, self.lb, self.steps, self.settings

    @property
    def mean(self) -> float:
        return float(np.mean(self.returns))

    @property
    def std(self) -> float:
        """Sample standard deviation over seeds (ddof = 1); NaN for one seed."""
        return self.std_of(self.returns)

    @property
    def iqm(self) -> float:
        return iqm(self.returns)

    @property
    def ci(self) -> tuple[float, float]:
        """The IQM's bootstrap CI; NaN with fewer than MIN_SEEDS_FOR_CI seeds."""
        return self.ci_of(self.returns)

    @staticmethod
    def std_of(values: Sequence[float]) -> float:
        return float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")

    @staticmethod
    def iqm_of(values: Sequence[float]) -> float:
        return iqm(values)

    @staticmethod
    def ci_of(values: Sequence[float]) -> tuple[float, float]:
        """The IQM's bootstrap CI of ``values``; NaN with fewer than MIN_SEEDS_FOR_CI seeds."""
        if len(values) < MIN_SEEDS_FOR_CI:
            return float("nan"), float("nan")
        return iqm_ci(values)

    @property
    def paper_settings(self) -> bool:
        """The group uses the paper's M and λ (where the algorithm has them) and no other non-default setting."""
        return not self.settings and paper_config(self)

    @property
    def tail_mean(self) -> float:
        return float(np.mean(self.tail_returns)) if self.tail_returns else float("nan")

    @property
    def balance(self) -> float:
        finite = [b for b in self.balances if math.isfinite(b)]
        return float(np.mean(finite)) if finite else float("nan")

    @property
    def paper(self) -> float | None:
        """The paper's number when this group used the paper's settings (M = 8, λ = 0.1 with CV², the defaults)."""
        if not self.paper_settings:
            return None
        return PAPER_RESULTS.get(task_name(self.env), {}).get(self.algo)


def paper_config(row: Row) -> bool:
    """The group uses the paper's M and λ (where the algorithm has them); other settings may differ."""
    return ((row.algo not in USES_EXPERTS or row.experts == PAPER_EXPERTS)
            and (row.algo not in USES_LB or row.lb == format_float(PAPER_LB_WEIGHT)))


def aggregate(records: list[RunRecord]) -> list[Row]:
    groups: dict[GroupKey, Row] = {}
    for record in sorted(records, key=lambda r: r.config.seed):
        key = group_key(record)
        row = groups.setdefault(key, Row(*key[:5], seeds=[], returns=[], settings=key[5]))
        row.seeds.append(record.config.seed)
        row.returns.append(record.final_return)
        row.balances.append(record.balance)
        row.tail_returns.append(record.tail_return)
        if isinstance(record.trees, TreeRecord):
            row.trees.append((record.config.seed, record.trees))
        elif isinstance(record.trees, StaleTrees):
            row.stale_trees.append((record.config.seed, record.path))
        if record.linear_return is not None:
            row.linear_returns.append(record.linear_return)
        if record.success_rate is not None:
            row.success_rates.append(record.success_rate)
    return [groups[k] for k in sorted(groups, key=_sort_key)]


def versus(rows: list[Row]) -> list[tuple[Row, Row]]:
    """(SMOSE, baseline) pairs: each SMOSE group with the default load balancing (CV², λ = 0.1) beside each dense
    baseline of the same task, budget and other settings; SAC-S and SAC-M only when sized for the same M."""
    by_key = {r.key: r for r in rows}
    pairs = []
    for row in rows:
        if row.algo != "smose" or row.lb != format_float(PAPER_LB_WEIGHT):
            continue
        for algo in BASELINES:
            other = by_key.get((row.env, algo, row.experts if algo in USES_EXPERTS else None, None, row.steps,
                                row.settings))
            if other is not None:
                pairs.append((row, other))
    return pairs


def curves(records: list[RunRecord]) -> dict[GroupKey, tuple[np.ndarray, np.ndarray, np.ndarray, int]]:
    """Per group: (steps, mean, std over seeds, number of seeds) at the evaluation steps all its seeds share."""
    by_group: dict[GroupKey, list[dict[int, float]]] = {}
    for record in records:
        if record.curve:
            by_group.setdefault(group_key(record), []).append(record.curve)
    result = {}
    for key in sorted(by_group, key=_sort_key):
        runs = by_group[key]
        steps = sorted(set.intersection(*(set(c) for c in runs)))
        if not steps:
            continue
        values = np.array([[c[s] for s in steps] for c in runs])
        std = values.std(axis=0, ddof=1) if len(runs) > 1 else np.zeros(len(steps))
        result[key] = (np.array(steps), values.mean(axis=0), std, len(runs))
    return result


def tree_groups(rows: list[Row]) -> list[tuple[Row, tuple[int, int], list[TreeRecord]]]:
    """(group, (tree depth, DAgger rounds), its seeds' distillations made so) for every group with distilled seeds."""
    result = []
    for row in rows:
        for how in sorted({(t.depth, t.dagger) for _, t in row.trees}):
            result.append((row, how, [t for _, t in row.trees if (t.depth, t.dagger) == how]))
    return result
