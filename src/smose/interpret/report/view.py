"""What the report reads about a run: deterministic rollouts of its policy, its training curve (metrics.csv) and
the model, gathered in a RunView; and the number formats every section uses."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from smose import run
from smose.algo.policy import Actor, SMOSEActor
from smose.evaluate import EpisodeResults
from smose.interpret.tree_policy import TreeRoutedActor
from smose.rollout import EVAL_SEED_OFFSET, rollout
from smose.run import SUCCESS_COLUMN

# ----------------------------------------------------------------------------------------------------------------------
# Data: deterministic rollouts of the policy and the training curve


@dataclass
class Rollouts:
    states: np.ndarray  # [N, n_obs]
    actions: np.ndarray  # [N, n_act], env units
    experts: np.ndarray | None  # [N] chosen expert; None for dense actors
    gates: np.ndarray | None  # [N] softmax probability of the chosen expert
    episode: np.ndarray  # [N] episode index of each step
    returns: list[float]
    successes: list[bool | None]  # per episode; None where the env reports no success

    def first_episode(self) -> np.ndarray:
        return np.flatnonzero(self.episode == 0)


def collect_rollouts(actor: Actor, env, episodes: int, seed: int) -> Rollouts:
    """States, actions and expert choices of ``episodes`` deterministic episodes with evaluate's reset seeds."""
    states, actions, experts, gates, episode_ids = [], [], [], [], []
    results = EpisodeResults()
    for step in rollout(actor, env, episodes, seed, EVAL_SEED_OFFSET):
        if step.expert is not None:
            with torch.no_grad():
                gates.append(float(torch.softmax(actor.route(step.obs), dim=-1)[0, step.expert[0]]))
            experts.append(int(step.expert[0]))
        states.append(step.obs[0].numpy())
        actions.append(step.action[0].numpy())
        episode_ids.append(step.episode)
        results.add(step)
    return Rollouts(
        states=np.stack(states).astype(np.float64),
        actions=np.stack(actions).astype(np.float64),
        experts=np.asarray(experts, dtype=np.int64) if experts else None,
        gates=np.asarray(gates) if gates else None,
        episode=np.asarray(episode_ids, dtype=np.int64),
        returns=results.returns,
        successes=results.successes,
    )


@dataclass
class Metrics:
    """metrics.csv: (step, episodic return) of training episodes, (step, mean, std) of evaluations, and (step,
    success rate) of both where the env reports success."""

    episodes: list[tuple[int, float]] = field(default_factory=list)
    evals: list[tuple[int, float, float]] = field(default_factory=list)
    episode_success: list[tuple[int, float]] = field(default_factory=list)
    eval_success: list[tuple[int, float]] = field(default_factory=list)


def read_curve(path: Path) -> Metrics:
    """The training curve in metrics.csv (files from before the success column read as without success)."""
    metrics = Metrics()
    for row in run.read_metrics(path):
        try:
            success = row.get(SUCCESS_COLUMN)
            if row.get("event") == "episode" and row.get("episodic_return"):
                metrics.episodes.append((int(row["step"]), float(row["episodic_return"])))
                if success:
                    metrics.episode_success.append((int(row["step"]), float(success)))
            elif row.get("event") == "eval" and row.get("eval_return_mean"):
                metrics.evals.append((int(row["step"]), float(row["eval_return_mean"]),
                                      float(row.get("eval_return_std") or 0.0)))
                if success:
                    metrics.eval_success.append((int(row["step"]), float(success)))
        except (TypeError, ValueError):
            continue  # a truncated last line of a run that is still writing
    return metrics


# ----------------------------------------------------------------------------------------------------------------------
# Numbers in words


def fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}g}" if abs(value) < 10 ** digits else f"{value:,.0f}"


def fmt_score(value: float | None) -> str:
    """Accuracy, precision, recall: always three decimals so a column reads at a glance; n/a when undefined."""
    return "n/a" if value is None else f"{value:.3f}"


def fmt_pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def segments(labels: np.ndarray) -> list[tuple[int, int, int]]:
    """Runs of a constant label: (start, end exclusive, label)."""
    if labels.size == 0:
        return []
    cuts = np.flatnonzero(np.diff(labels)) + 1
    starts = np.concatenate([[0], cuts])
    ends = np.concatenate([cuts, [labels.size]])
    return [(int(s), int(e), int(labels[s])) for s, e in zip(starts, ends)]


def grows(weight: float) -> str:
    return "grows" if weight > 0 else "falls"


# ----------------------------------------------------------------------------------------------------------------------
# The run


@dataclass
class RunView:
    """Everything the sections read about one run."""

    run_dir: Path
    actor: Actor
    meta: dict
    config: dict | None
    evaluation: dict | None
    obs_names: list[str]
    act_names: list[str]
    rollouts: Rollouts
    sigma: np.ndarray  # [n_obs] standard deviation of each state variable over the rollouts
    seed: int  # rollouts reset with seed + EVAL_SEED_OFFSET + episode, like smose.evaluate

    @property
    def algo(self) -> str:
        return self.meta["architecture"]["algo"]

    @property
    def smose(self) -> SMOSEActor | None:
        return self.actor if isinstance(self.actor, SMOSEActor) else None

    @property
    def fixed_trees(self) -> TreeRoutedActor | None:
        """The controller when it was fine-tuned under fixed trees (they choose its expert), else None."""
        return self.actor if isinstance(self.actor, TreeRoutedActor) else None

    @property
    def finetune(self) -> dict:
        """config.json's record of the fine-tuning (source run, tree kind, returns before); {} for other runs."""
        record = (self.config or {}).get("finetune")
        return record if isinstance(record, dict) else {}

    @property
    def finetune_kept(self) -> str | None:
        """Which controller a fine-tuned run holds ("fine-tuned" or "as distilled"); None for other runs and while
        the end of fine-tuning is still to be completed by `smose finetune --resume` (smose.training.finetune.kept)."""
        from smose.training.finetune import kept

        return kept(self.run_dir, self.finetune) if self.finetune else None

    @property
    def finetune_source(self) -> str:
        """Where the run it was fine-tuned from is (smose.training.finetune.source_dir), as an absolute path: the
        report is read from anywhere."""
        from smose.training.finetune import source_dir

        return str(source_dir(self.run_dir, self.finetune).resolve()) if "source_run" in self.finetune \
            else "its source run"

    def used_experts(self) -> list[int]:
        if self.rollouts.experts is None:
            return []
        return sorted(int(m) for m in np.unique(self.rollouts.experts))

    def usage(self) -> np.ndarray:
        assert self.smose is not None and self.rollouts.experts is not None
        counts = np.bincount(self.rollouts.experts, minlength=self.smose.n_experts)
        return counts / max(1, counts.sum())


def router_influence(view: RunView) -> np.ndarray:
    """How much each state variable moves the router's choice: spread of Θ across experts times its σ."""
    theta = view.smose.router.weight.detach().numpy().astype(np.float64)
    return (theta.max(axis=0) - theta.min(axis=0)) * view.sigma


def key_variables(view: RunView, count: int) -> list[int]:
    """The ``count`` state variables that move the router's choice most (router_influence)."""
    return [int(f) for f in np.argsort(-router_influence(view))[:count]]
