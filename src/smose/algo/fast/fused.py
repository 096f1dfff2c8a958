"""The fast SAC update (``smose train --update fused``, the default): hand-written passes and a fused Adam step.

``SACLearner`` holds the state of ``smose.algo.sac.SAC``, the reference implementation, and applies the same
learning step in the same order, drawing the same random numbers. The twin critic's passes
(``smose.algo.fast.critic_passes``) and the actors' (``smose.algo.fast.actor_passes``) are written out by hand: for
networks this small, autograd's bookkeeping costs more than the arithmetic (see docs/performance.md).
``tests/test_sac.py`` checks whole updates of the two against each other in float64. ``smose.algo.learner`` picks the
path; actors without hand-written passes take the autograd one.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

import torch

from smose.algo.fast.actor_passes import make_passes
from smose.algo.fast.critic_passes import TwinQPasses
from smose.algo.policy import Actor
from smose.algo.sac import SAC, actor_router_noise
from smose.training.buffer import Batch

if TYPE_CHECKING:
    from smose.training.config import SACHyperParams


PolicySample = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]  # obs -> (action, log π), no graph


def td_target(
    sample: PolicySample, target_q: Callable[[torch.Tensor], torch.Tensor], batch: Batch, alpha: torch.Tensor,
    gamma: float,
) -> torch.Tensor:
    """r + γ (1 − d) (min of the target twins at (s', a') − α log π(a'|s')), with a' ~ π(s') from the clean router."""
    with torch.no_grad():
        next_action, next_log_prob = sample(batch.next_obs)
        next_q = target_q(torch.cat([batch.next_obs, next_action], dim=-1)).min(dim=0).values - alpha * next_log_prob
        return batch.rewards + (1.0 - batch.dones) * gamma * next_q


def alpha_loss_and_grad(
    log_prob: torch.Tensor, log_alpha: torch.Tensor, target_entropy: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Temperature loss −α mean(log π + H̄) on a fresh clean-router sample, and its gradient with respect to log α.

    d/d log α of −e^(log α) c is −e^(log α) c again: the loss is its own gradient, so no graph is recorded.
    """
    with torch.no_grad():
        loss = -log_alpha.exp() * (log_prob + target_entropy).mean()
    return loss.reshape(()), loss


class FusedAdam(torch.optim.Adam):
    """``torch.optim.Adam(fused=True)`` with ``fast_step``: the same fused kernel without ``step``'s bookkeeping.

    For networks this small ``step`` spends more time in Python (hooks, profiler ranges, grouping tensors by device)
    than in its kernel. ``fast_step`` makes the very calls ``step`` makes for CPU tensors; the state, and therefore
    ``state_dict`` and checkpoints, are those of torch's Adam.
    """

    def __init__(self, params, lr: float):
        super().__init__(params, lr=lr, fused=True)
        self._params: list[torch.Tensor] = [p for group in self.param_groups for p in group["params"]]
        (self._group,) = self.param_groups

    def fast_step(self) -> None:
        if not self.state:  # the first step creates the state tensors
            self.step()
            return
        group, states = self._group, [self.state[p] for p in self._params]
        steps = [s["step"] for s in states]
        with torch.no_grad():
            torch._foreach_add_(steps, 1)
            torch._fused_adam_(
                self._params, [p.grad for p in self._params], [s["exp_avg"] for s in states],
                [s["exp_avg_sq"] for s in states], [], steps, amsgrad=False, lr=group["lr"], beta1=group["betas"][0],
                beta2=group["betas"][1], weight_decay=group["weight_decay"], eps=group["eps"], maximize=False,
                grad_scale=None, found_inf=None,
            )


class SACLearner(SAC):
    """``SAC``'s networks, optimisers and temperature; ``update`` performs the same step through hand-written passes.
    """

    def __init__(self, actor: Actor, hp: SACHyperParams):
        actor_passes = make_passes(actor)  # TypeError for an actor without them, before any state is built
        super().__init__(actor, hp, FusedAdam)
        self.critic_passes = TwinQPasses(self.critic)
        self.actor_passes = actor_passes
        self._critic_params = list(self.critic.parameters())
        self._target_params = list(self.critic_target.parameters())

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One gradient step on the critics; every ``policy_frequency`` steps as many actor and α steps (TD3 delay)."""
        hp = self.hp
        self.n_updates += 1
        stats: dict[str, torch.Tensor] = {}
        stats["qf_loss"], stats["qf_values"] = self.critic_step(batch)

        if self.n_updates % hp.policy_frequency == 0:
            for _ in range(hp.policy_frequency):
                pi_loss, lb = self.actor_step(batch.obs)
                stats["actor_loss"] = pi_loss.detach()
                stats["lb_loss"] = lb.detach()
                if hp.autotune:
                    _, log_prob = self.sample(batch.obs)
                    a_loss, self.log_alpha.grad = alpha_loss_and_grad(log_prob, self.log_alpha, self.target_entropy)
                    self.alpha_opt.fast_step()
                    self.alpha = self.log_alpha.detach().exp()
                    stats["alpha_loss"] = a_loss

        if self.n_updates % hp.target_frequency == 0:
            with torch.no_grad():
                torch._foreach_lerp_(self._target_params, self._critic_params, hp.tau)
        return stats

    def critic_step(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """One Adam step on the sum of the twins' TD MSEs (CleanRL's qf1_loss + qf2_loss); returns (loss, mean Q).

        The gradient of that loss with respect to Q is 4 (Q − y) / (2B); the passes carry it back to the weights.
        """
        passes = self.critic_passes
        y = td_target(self.sample, partial(passes.forward, net=self.critic_target), batch, self.alpha, self.hp.gamma)
        x = torch.cat([batch.obs, batch.actions], dim=-1)
        q = passes.forward(x)
        error = q - y
        passes.backward_to_params(x, error * (4.0 / error.numel()))
        self.critic_opt.fast_step()
        return 2.0 * error.square().mean(), q.mean()

    def actor_step(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One Adam step on mean(α log π − min Q) + λ L_aux, with router noise only in this pass; returns (loss, L_aux).
        """
        hp = self.hp
        noise = actor_router_noise(self.actor, obs, hp)
        loss, lb = self.actor_passes.actor_loss_backward(
            obs, noise, self.alpha, self.critic_passes.min_q_with_grad, hp.lb_loss, hp.lb_weight)
        self.actor_opt.fast_step()
        return loss, lb

    def sample(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """a ~ π(·|s) and log π(a|s) from the clean router, without a graph."""
        g = self.actor_passes.sample(obs).gaussian
        return g.action, g.log_prob

    def explore(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The rollout's stochastic action and the chosen expert (None for dense actors)."""
        s = self.actor_passes.sample(obs)
        return s.gaussian.action, s.expert
