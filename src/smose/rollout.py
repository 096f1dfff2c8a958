"""Deterministic episodes of a trained actor: the one episode loop, and the reset seeds of everything that runs it.

Evaluation (``smose eval``, training's evaluations), distillation (the fitting, held-out and DAgger episodes), the
report and the video all roll out the policy through :func:`rollout`. Episode ``i`` of a rollout resets the env with
seed ``seed + offset + i``: ``seed`` is the one the user gives, ``offset`` says which kind of episode it is, so that
the kinds never share initial states.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import gymnasium as gym
import torch

from smose.algo.policy import Actor, DeterministicMode

# Offsets of the reset seeds, one per kind of episode. Fitting episodes of `smose distill` start at the seed itself.
FIT_SEED_OFFSET = 0
# Held-out scoring episodes of `smose distill` start this far from the fitting episodes' seeds (and from EVAL's).
HOLDOUT_SEED_OFFSET = 5_000
# Evaluation episodes use seeds far from the training seed so the two never share initial states; the report and the
# video show the same episodes.
EVAL_SEED_OFFSET = 10_000
# DAgger round r rolls out the trees from reset seeds seed + DAGGER_SEED_OFFSET + r·episodes + i.
DAGGER_SEED_OFFSET = 20_000
# `smose finetune` chooses between the controller as distilled and as fine-tuned on episodes of their own: never the
# evaluation's (on which its result is reported), nor at distill's defaults the ones the trees were fitted to.
SELECTION_SEED_OFFSET = 30_000

# A router: observation batch [1, n_obs] -> chosen expert [1]; None means the actor's own (neural) router.
RouterFn = Callable[[torch.Tensor], torch.Tensor]


def dagger_seed_offset(round_index: int, episodes: int) -> int:
    """The seed offset of DAgger round ``round_index`` (from 0) when each round rolls out ``episodes`` episodes."""
    return DAGGER_SEED_OFFSET + round_index * episodes


@dataclass
class Step:
    """One step of a rollout: the state acted on, what acted and what the env answered."""

    episode: int  # index of the episode in the rollout (0 for the first)
    obs: torch.Tensor  # [1, n_obs] float32, the state acted on
    action: torch.Tensor  # [1, n_act] in env units
    expert: torch.Tensor | None  # [1] the expert that acted; None for dense actors
    reward: float
    info: dict
    done: bool  # the episode ended (terminated or truncated) with this step


def rollout(
    actor: Actor,
    env: gym.Env,
    episodes: int,
    seed: int,
    offset: int,
    mode: DeterministicMode = "gated",
    router: RouterFn | None = None,
    before_step: Callable[[torch.Tensor | None], None] | None = None,
) -> Iterator[Step]:
    """The steps of ``episodes`` deterministic episodes, episode i reset with seed ``seed + offset + i``.

    ``router`` (e.g. distilled trees) chooses the expert that acts instead of the actor's own router.
    ``before_step(expert)`` is called after the decision and before the env steps, while the env still shows the
    state acted on (the video renders its frame there); steps are yielded after the env stepped. The loop is lazy:
    stopping the iteration stops the episode.
    """
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + offset + episode)
        done = False
        while not done:
            # A copy: the step is read after the env has moved on, and an env may reuse its observation array.
            obs_t = torch.tensor(obs, dtype=torch.float32).unsqueeze(0)
            if router is None:
                action, expert = actor.act(obs_t, mode)
            else:
                expert = router(obs_t)
                action = actor.act_with_experts(obs_t, expert, mode)
            if before_step is not None:
                before_step(expert)
            obs, reward, terminated, truncated, info = env.step(action[0].numpy())
            done = terminated or truncated
            yield Step(episode, obs_t, action, expert, reward, info, done)
