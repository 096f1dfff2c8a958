"""Deterministic evaluation of an actor: returns, success rates where the env reports success, and how often each
expert was chosen."""

from __future__ import annotations

from typing import Callable

import gymnasium as gym
import numpy as np
import torch

from smose.algo.policy import Actor, DeterministicMode

# Evaluation episodes use seeds far from the training seed so the two never share initial states.
EVAL_SEED_OFFSET = 10_000

# Named evaluation protocols, (mode, episodes): ours, and the one of the authors' evaluation scripts (the chosen
# expert's raw linear output, clipped to the action bounds, over 100 episodes).
EVAL_PROTOCOLS: dict[str, tuple[DeterministicMode, int]] = {"smose": ("gated", 10), "authors": ("linear", 100)}

# A router: observation batch [1, n_obs] -> chosen expert [1]; None means the actor's own (neural) router.
RouterFn = Callable[[torch.Tensor], torch.Tensor]

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


def evaluate(
    actor: Actor,
    env: gym.Env,
    episodes: int,
    seed: int,
    mode: DeterministicMode = "gated",
    router: RouterFn | None = None,
) -> dict:
    """Run ``episodes`` deterministic episodes (seeds seed+EVAL_SEED_OFFSET+i) and summarise them."""
    n_experts = getattr(actor, "n_experts", 0)
    usage = np.zeros(n_experts, dtype=np.int64)
    agreeing = 0  # steps on which ``router`` chose what the actor's own router would have
    returns, lengths, successes = [], [], []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + EVAL_SEED_OFFSET + episode)
        done, total, length, success = False, 0.0, 0, None
        while not done:
            obs_t = torch.as_tensor(obs, dtype=torch.float32).unsqueeze(0)
            if router is None:
                action, expert = actor.act(obs_t, mode)
            else:
                expert = router(obs_t)
                action = actor.act_with_experts(obs_t, expert, mode)
                agreeing += int(expert[0] == actor.choose(obs_t)[0])
            if expert is not None:
                usage[int(expert[0])] += 1
            obs, reward, terminated, truncated, info = env.step(action[0].numpy())
            total += float(reward)
            length += 1
            success = episode_success(success, info)
            done = terminated or truncated
        returns.append(total)
        lengths.append(length)
        successes.append(success)
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
    } | success_fields(successes)
    if n_experts:
        result["expert_usage"] = (usage / max(1, usage.sum())).round(6).tolist()
    if router is not None:
        result["router_agreement"] = agreeing / max(1, sum(lengths))
    return result
