"""The SAC update with autograd: the reference implementation (docs/method.md §3), readable top to bottom.

``SAC.update`` follows CleanRL's ``sac_continuous_action.py`` line for line (``qf_loss``, ``actor_loss``,
``alpha_loss``, ``.backward()``, ``optimizer.step()``), with the router's load balancing (§2, ``smose.algo.losses``)
added to the actor loss. The actors' own ``sample``/``forward`` (``smose.algo.policy``) give actions and
log-probabilities.

``smose.algo.fast.fused.SACLearner`` is the fast path: the same state (networks, optimisers, temperature) and the
same update, with hand-written passes and a fused Adam step (``smose train --update fused``, the default). It draws
the same random numbers in the same order, so in float64 both paths agree to rounding (``tests/test_sac.py``);
checkpoints of either resume with either. Any actor trains here, including one without hand-written passes;
``smose.algo.learner`` chooses the path.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from smose.algo.losses import balance_loss, router_noise, uses_router_noise
from smose.algo.policy import Actor, SMOSEActor, TwinQ
from smose.training.buffer import Batch

if TYPE_CHECKING:
    from smose.training.config import SACHyperParams


# What the learner's state dict holds besides log α and the update count: its networks and its Adam optimisers.
MODULES = ("actor", "critic", "critic_target")
OPTIMIZERS = ("actor_opt", "critic_opt", "alpha_opt")


def actor_router_noise(actor: Actor, obs: torch.Tensor, hp: SACHyperParams) -> torch.Tensor | None:
    """The router noise of one actor update: ε for a SMOSE actor whose loss kind uses it, None otherwise."""
    if isinstance(actor, SMOSEActor) and uses_router_noise(hp.lb_loss):
        return router_noise(obs.shape[0], actor.n_experts, hp.lb_noise)
    return None


def load_moments(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Adam's per-parameter state from ``state``; the hyper-parameters stay this optimiser's own (so a fused Adam's
    state loads into a plain one and back, as a checkpoint does). Each moment must have its parameter's shape (Adam's
    own ``load_state_dict`` does not check it): ValueError otherwise."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for index, entries in state["state"].items():
        if not 0 <= index < len(params):
            raise ValueError(f"optimizer state for parameter {index} of an optimiser of {len(params)}")
        for key, value in entries.items():
            shape = () if key == "step" else tuple(params[index].shape)
            if tuple(value.shape) != shape:
                raise ValueError(f"optimizer state {key} of parameter {index} has shape {tuple(value.shape)}, "
                                 f"expected {shape}")
    optimizer.load_state_dict({"state": state["state"], "param_groups": optimizer.state_dict()["param_groups"]})


class SAC:
    """Networks, target networks, optimisers and the temperature; ``update`` performs one learning step."""

    def __init__(self, actor: Actor, hp: SACHyperParams, optimizer: type[torch.optim.Adam] = torch.optim.Adam):
        self.hp = hp
        self.actor = actor
        self.critic = TwinQ(actor.n_obs, actor.n_act)  # both Q networks: [2, B] values from (s, a)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_opt = optimizer(actor.parameters(), lr=hp.actor_lr)
        self.critic_opt = optimizer(self.critic.parameters(), lr=hp.critic_lr)
        self.target_entropy = -float(actor.n_act)
        self.log_alpha = torch.zeros(1, requires_grad=hp.autotune)
        if not hp.autotune:
            self.log_alpha.data.fill_(torch.log(torch.tensor(hp.alpha)).item())
        self.alpha_opt = optimizer([self.log_alpha], lr=hp.alpha_lr)
        self.alpha = self.log_alpha.detach().exp()
        self.n_updates = 0

    def update(self, data: Batch) -> dict[str, torch.Tensor]:
        """One gradient step on the critics; every ``policy_frequency`` steps as many actor and α steps (TD3 delay)."""
        hp = self.hp
        self.n_updates += 1
        with torch.no_grad():
            next_state_actions, next_state_log_pi, _ = self.actor.sample(data.next_obs)
            qf_next_target = self.critic_target(data.next_obs, next_state_actions)
            min_qf_next_target = qf_next_target.min(dim=0).values - self.alpha * next_state_log_pi
            next_q_value = data.rewards + (1.0 - data.dones) * hp.gamma * min_qf_next_target
        qf_a_values = self.critic(data.obs, data.actions)
        qf_loss = sum(F.mse_loss(qf_values, next_q_value) for qf_values in qf_a_values)  # qf1_loss + qf2_loss
        self.critic_opt.zero_grad()
        qf_loss.backward()
        self.critic_opt.step()
        stats = {"qf_loss": qf_loss.detach(), "qf_values": qf_a_values.detach().mean()}

        if self.n_updates % hp.policy_frequency == 0:
            for _ in range(hp.policy_frequency):
                # Router noise only in this pass: the load-balancing loss reads the noisy and the clean logits.
                noise = actor_router_noise(self.actor, data.obs, hp)
                pi, log_pi, out = self.actor.sample(data.obs, noise)
                min_qf_pi = self.critic(data.obs, pi).min(dim=0).values
                actor_loss = (self.alpha * log_pi - min_qf_pi).mean()
                lb_loss = data.obs.new_zeros(())
                if noise is not None:
                    lb_loss = balance_loss(hp.lb_loss, out.logits - noise, out.logits)
                    actor_loss = actor_loss + hp.lb_weight * lb_loss
                self.actor_opt.zero_grad()
                actor_loss.backward()
                self.actor_opt.step()
                stats |= {"actor_loss": actor_loss.detach(), "lb_loss": lb_loss.detach()}

                if hp.autotune:
                    with torch.no_grad():
                        _, log_pi, _ = self.actor.sample(data.obs)  # a fresh sample from the clean router
                    alpha_loss = (-self.log_alpha.exp() * (log_pi + self.target_entropy)).mean()
                    self.alpha_opt.zero_grad()
                    alpha_loss.backward()
                    self.alpha_opt.step()
                    self.alpha = self.log_alpha.detach().exp()
                    stats["alpha_loss"] = alpha_loss.detach()

        if self.n_updates % hp.target_frequency == 0:
            with torch.no_grad():  # θ_target ← τ θ + (1 − τ) θ_target
                for param, target_param in zip(self.critic.parameters(), self.critic_target.parameters()):
                    target_param.lerp_(param, hp.tau)
        return stats

    def sample(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """a ~ π(·|s) and log π(a|s) from the clean router, without a graph."""
        with torch.no_grad():
            action, log_prob, _ = self.actor.sample(obs)
        return action, log_prob

    def explore(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The rollout's stochastic action and the chosen expert (None for dense actors)."""
        with torch.no_grad():
            action, _, out = self.actor.sample(obs)
        return action, out.expert

    def state_dict(self) -> dict:
        """The networks' and the optimisers' state dicts (MODULES, OPTIMIZERS), log α and the update count."""
        return {name: getattr(self, name).state_dict() for name in (*MODULES, *OPTIMIZERS)} | {
            "log_alpha": self.log_alpha.detach().clone(),
            "n_updates": self.n_updates,
        }

    def load_state_dict(self, state: dict) -> None:
        for name in MODULES:
            getattr(self, name).load_state_dict(state[name])
        for name in OPTIMIZERS:
            load_moments(getattr(self, name), state[name])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.alpha = self.log_alpha.detach().exp()
        self.n_updates = int(state["n_updates"])
