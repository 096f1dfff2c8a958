"""Soft Actor-Critic update for any of our actors (spec §3), with the router's load balancing in the actor step (§2).

The maths lives in three pure loss functions; ``SACLearner`` owns the networks and optimisers and applies one
learning step in the order of CleanRL's ``sac_continuous_action.py``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from smose.buffer import Batch
from smose.losses import LBLoss, NoiseKind, balance_loss, router_noise
from smose.policy import Actor, SMOSEActor, TwinQ


@dataclass(frozen=True)
class SACHyperParams:
    gamma: float = 0.99
    tau: float = 0.005
    actor_lr: float = 3e-4
    critic_lr: float = 1e-3
    alpha_lr: float = 1e-3
    policy_frequency: int = 2
    target_frequency: int = 1
    autotune: bool = True
    alpha: float = 0.2  # used only when autotune is off
    lb_loss: LBLoss = "cv2"
    lb_weight: float = 0.1
    lb_noise: NoiseKind = "batch"


def critic_loss(
    actor: Actor, critic: TwinQ, target: TwinQ, batch: Batch, alpha: torch.Tensor, gamma: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Twin-Q TD loss against the min of the target twins; returns (loss, Q values [2, B])."""
    with torch.no_grad():
        next_action, next_log_prob, _ = actor.sample(batch.next_obs)
        next_q = target(batch.next_obs, next_action).min(dim=0).values - alpha * next_log_prob
        td_target = batch.rewards + (1.0 - batch.dones) * gamma * next_q
    q = critic(batch.obs, batch.actions)
    # Sum of the two critics' MSEs, as CleanRL does (qf1_loss + qf2_loss).
    return 2.0 * F.mse_loss(q, td_target.expand_as(q)), q


def actor_loss(
    actor: Actor, critic: TwinQ, obs: torch.Tensor, alpha: torch.Tensor, hp: SACHyperParams
) -> tuple[torch.Tensor, torch.Tensor]:
    """mean(α log π − min Q) + λ L_aux, with router noise only in this pass; returns (loss, load-balancing term)."""
    noise = None
    if isinstance(actor, SMOSEActor) and hp.lb_loss != "none":
        noise = router_noise(obs.shape[0], actor.n_experts, hp.lb_noise)
    action, log_prob, out = actor.sample(obs, noise)
    q = critic(obs, action).min(dim=0).values
    loss = (alpha * log_prob - q).mean()
    lb = loss.new_zeros(())
    if noise is not None:
        clean_logits = out.logits - noise
        lb = balance_loss(hp.lb_loss, clean_logits, out.logits)
        loss = loss + hp.lb_weight * lb
    return loss, lb


def alpha_loss(actor: Actor, log_alpha: torch.Tensor, obs: torch.Tensor, target_entropy: float) -> torch.Tensor:
    """Temperature loss on a fresh sample from the (clean-router) policy."""
    with torch.no_grad():
        _, log_prob, _ = actor.sample(obs)
    return (-log_alpha.exp() * (log_prob + target_entropy)).mean()


def make_adam(params, lr: float) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=lr, fused=True)


class SACLearner:
    """Networks, target networks, optimisers and the temperature; ``update`` performs one learning step."""

    def __init__(self, actor: Actor, hp: SACHyperParams):
        self.hp = hp
        self.actor = actor
        self.critic = TwinQ(actor.n_obs, actor.n_act)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_opt = make_adam(actor.parameters(), hp.actor_lr)
        self.critic_opt = make_adam(self.critic.parameters(), hp.critic_lr)
        self.target_entropy = -float(actor.n_act)
        self.log_alpha = torch.zeros(1, requires_grad=hp.autotune)
        if not hp.autotune:
            self.log_alpha.data.fill_(torch.log(torch.tensor(hp.alpha)).item())
        self.alpha_opt = make_adam([self.log_alpha], hp.alpha_lr)
        self.alpha = self.log_alpha.detach().exp()
        self._critic_params = list(self.critic.parameters())
        self._target_params = list(self.critic_target.parameters())
        self.n_updates = 0

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One gradient step on the critics; every ``policy_frequency`` steps as many actor and α steps (TD3 delay)."""
        hp = self.hp
        self.n_updates += 1
        stats: dict[str, torch.Tensor] = {}
        qf_loss, q = critic_loss(self.actor, self.critic, self.critic_target, batch, self.alpha, hp.gamma)
        self.critic_opt.zero_grad(set_to_none=True)
        qf_loss.backward()
        self.critic_opt.step()
        stats["qf_loss"] = qf_loss.detach()
        stats["qf_values"] = q.detach().mean()

        if self.n_updates % hp.policy_frequency == 0:
            # The critics only pass gradient through to the action here; freezing them skips their weight gradients.
            self.critic.requires_grad_(False)
            for _ in range(hp.policy_frequency):
                pi_loss, lb = actor_loss(self.actor, self.critic, batch.obs, self.alpha, hp)
                self.actor_opt.zero_grad(set_to_none=True)
                pi_loss.backward()
                self.actor_opt.step()
                stats["actor_loss"] = pi_loss.detach()
                stats["lb_loss"] = lb.detach()
                if hp.autotune:
                    a_loss = alpha_loss(self.actor, self.log_alpha, batch.obs, self.target_entropy)
                    self.alpha_opt.zero_grad(set_to_none=True)
                    a_loss.backward()
                    self.alpha_opt.step()
                    self.alpha = self.log_alpha.detach().exp()
                    stats["alpha_loss"] = a_loss.detach()
            self.critic.requires_grad_(True)

        if self.n_updates % hp.target_frequency == 0:
            with torch.no_grad():
                torch._foreach_lerp_(self._target_params, self._critic_params, hp.tau)
        return stats

    def state_dict(self) -> dict:
        return {
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "actor_opt": self.actor_opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "alpha_opt": self.alpha_opt.state_dict(),
            "log_alpha": self.log_alpha.detach().clone(),
            "n_updates": self.n_updates,
        }

    def load_state_dict(self, state: dict) -> None:
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.critic_target.load_state_dict(state["critic_target"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        self.alpha_opt.load_state_dict(state["alpha_opt"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.alpha = self.log_alpha.detach().exp()
        self.n_updates = int(state["n_updates"])
