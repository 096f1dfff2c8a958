"""Deterministic evaluation of an actor: returns, success rates where the env reports success, and how often each
expert was chosen."""

from __future__ import annotations

from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np

from smose.algo.policy import Actor, DeterministicMode
from smose.rollout import EVAL_SEED_OFFSET, RouterFn, Step, rollout

# Named evaluation protocols, (mode, episodes): ours, and the one of the authors' evaluation scripts (the chosen
# expert's raw linear output, clipped to the action bounds, over 100 episodes).
EVAL_PROTOCOLS: dict[str, tuple[DeterministicMode, int]] = {"smose": ("gated", 10), "authors": ("linear", 100)}

# Step-info keys under which envs say the task is solved (Meta-World's, then Gymnasium-Robotics'). An episode
# succeeds when any of its steps reports success, as in Meta-World's own evaluation.
SUCCESS_KEYS = ("success", "is_success")


def step_success(info: dict) -> bool | None:
    """Whether a step's info reports the task solved; None when the env reports no success at all."""
    for key in SUCCESS_KEYS:
        if key in info:
            return bool(np.any(info[key]))
    return None


def episode_success(so_far: bool | None, info: dict) -> bool | None:
    """An episode's success after one more step: None while no step has reported any."""
    step = step_success(info)
    return so_far if step is None else bool(so_far) or step


def success_fields(successes: list[bool | None]) -> dict:
    """eval.json's ``success_rate`` and per-episode ``successes``; nothing for an env that reports no success."""
    if all(s is None for s in successes):
        return {}
    flags = [bool(s) for s in successes]
    return {"success_rate": float(np.mean(flags)), "successes": flags}


@dataclass
class EpisodeResults:
    """Return, length and success of each finished episode of a rollout, fed its steps in order."""

    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    successes: list[bool | None] = field(default_factory=list)  # None where the env reports no success
    _return: float = 0.0
    _length: int = 0
    _success: bool | None = None

    def add(self, step: Step) -> None:
        self._return += float(step.reward)
        self._length += 1
        self._success = episode_success(self._success, step.info)
        if step.done:
            self.returns.append(self._return)
            self.lengths.append(self._length)
            self.successes.append(self._success)
            self._return, self._length, self._success = 0.0, 0, None


def evaluate(
    actor: Actor,
    env: gym.Env,
    episodes: int,
    seed: int,
    mode: DeterministicMode = "gated",
    router: RouterFn | None = None,
    offset: int = EVAL_SEED_OFFSET,
) -> dict:
    """Run ``episodes`` deterministic episodes (reset seeds seed+offset+i; evaluation's by default) and summarise
    them."""
    n_experts = getattr(actor, "n_experts", 0)
    usage = np.zeros(n_experts, dtype=np.int64)
    agreeing = 0  # steps on which ``router`` chose what the actor's own router would have
    results = EpisodeResults()
    for step in rollout(actor, env, episodes, seed, offset, mode, router):
        if router is not None:
            agreeing += int(step.expert[0] == actor.choose(step.obs)[0])
        if step.expert is not None:
            usage[int(step.expert[0])] += 1
        results.add(step)
    returns, lengths = results.returns, results.lengths
    r = np.asarray(returns)
    result = {
        "mean": float(r.mean()),
        "std": float(r.std()),
        "min": float(r.min()),
        "max": float(r.max()),
        "episodes": episodes,
        "mean_length": float(np.mean(lengths)),
        "mode": mode,
        "seed": seed,
        "returns": [float(x) for x in returns],
    } | success_fields(results.successes)
    if n_experts:
        result["expert_usage"] = (usage / max(1, usage.sum())).round(6).tolist()
    if router is not None:
        result["router_agreement"] = agreeing / max(1, sum(lengths))
    return result
