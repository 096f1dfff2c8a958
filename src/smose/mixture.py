"""The SMOSE actor's passes for the SAC update written out by hand: sampling, and the actor step's gradient.

The actor is tiny (a [n_obs → M] router and M linear experts), so under autograd its cost is not arithmetic but the
~100 small operations autograd records and then replays backwards, a few µs each. Here the forward is the same maths
as ``SMOSEActor.sample`` with fewer operations, and the backward of the actor loss

    mean_s(α log π(a|s) − min(Q1, Q2)(s, a)) + λ L_aux

is written out as a handful of tensor expressions from the values the forward kept. ``tests/test_mixture.py``
checks the samples and every gradient against autograd through ``SMOSEActor``, for each load-balancing loss and both
kinds of router noise; ``tests/test_sac.py`` checks whole updates against a plain CleanRL-style implementation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from smose.losses import LBLoss
from smose.policy import LOG_STD_MAX, LOG_STD_MIN, SMOSEActor

LOG_STD_HALF_RANGE = 0.5 * (LOG_STD_MAX - LOG_STD_MIN)
HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)

# (obs, action) -> (min over the twins of Q [B], function from d loss / d min Q [B] to d loss / d action [B, n_act])
MinQWithGrad = Callable[[torch.Tensor, torch.Tensor],
                        tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]]


@dataclass
class MixtureSample:
    """A reparameterised sample and the intermediate values its backward needs."""

    action: torch.Tensor  # [B, n_act] in env units
    log_prob: torch.Tensor  # [B]
    expert: torch.Tensor  # [B] chosen expert (argmax of the possibly noisy logits)
    logits: torch.Tensor  # [B, M] logits the choice was made on (noisy in the actor step)
    probs: torch.Tensor  # [B, M] softmax of ``logits``
    gate: torch.Tensor  # [B, 1] probability of the chosen expert, not renormalised
    chosen: torch.Tensor  # [B, 2 n_act] the chosen expert's output before gating: mean head | log-std head
    log_std_tanh: torch.Tensor  # [B, n_act] tanh of the gated log-std head
    std: torch.Tensor  # [B, n_act]
    noise: torch.Tensor  # [B, n_act] standard normal draw
    squashed: torch.Tensor  # [B, n_act] tanh of the Gaussian sample


class MixturePasses:
    """Forward and backward passes through ``actor`` (an ``SMOSEActor``) without autograd."""

    def __init__(self, actor: SMOSEActor):
        self.actor = actor
        self._rows = torch.arange(0)

    def _row_index(self, batch: int) -> torch.Tensor:
        if self._rows.numel() != batch:
            self._rows = torch.arange(batch)
        return self._rows

    @torch.no_grad()
    def sample(self, obs: torch.Tensor, router_noise: torch.Tensor | None = None) -> MixtureSample:
        """What ``SMOSEActor.sample(obs, router_noise)`` computes, drawing the same random numbers in the same order."""
        actor, n_act, batch = self.actor, self.actor.n_act, obs.shape[0]
        logits = torch.addmm(actor.router.bias, obs, actor.router.weight.T)
        if router_noise is not None:
            logits = logits + router_noise
        # softmax written out: torch.softmax over 8 logits costs ~10 times more, and the top logit's probability,
        # the gate, is then 1 / Σ exp(z − z_top)
        top, expert = logits.max(dim=-1, keepdim=True)
        exp = (logits - top).exp_()
        total = exp.sum(-1, keepdim=True)
        probs = exp.div_(total)
        gate = total.reciprocal_()
        expert = expert.squeeze(1)
        experts = torch.addmm(actor.expert_bias.reshape(-1), obs, actor.expert_weight.reshape(-1, actor.n_obs).T)
        chosen = experts.view(batch, actor.n_experts, 2 * n_act)[self._row_index(batch), expert]
        gated = chosen * gate
        mean = gated[:, :n_act]
        log_std_tanh = torch.tanh(gated[:, n_act:])
        log_std = (log_std_tanh + 1.0).mul_(LOG_STD_HALF_RANGE).add_(LOG_STD_MIN)
        std = log_std.exp()
        noise = torch.randn_like(mean)
        squashed = torch.tanh(mean + std * noise)
        action = squashed * actor.action_scale + actor.action_bias
        # log N(x; mean, std) + the tanh·scale change of variables, as in policy.squashed_gaussian_sample
        log_det = torch.log(actor.action_scale * (1.0 - squashed.square()) + 1e-6)
        log_prob = (noise.square().mul_(-0.5).sub_(log_std).sub_(HALF_LOG_2PI).sub_(log_det)).sum(-1)
        return MixtureSample(action, log_prob, expert, logits, probs, gate, chosen, log_std_tanh, std, noise, squashed)

    @torch.no_grad()
    def actor_loss_backward(
        self, obs: torch.Tensor, router_noise: torch.Tensor | None, alpha: torch.Tensor, min_q: MinQWithGrad,
        lb_loss: LBLoss, lb_weight: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The actor loss (see the module docstring) and its gradient written into the actor's ``.grad``.

        ``router_noise`` is None exactly when there is no load-balancing term. Returns (loss, L_aux).
        """
        actor, batch = self.actor, obs.shape[0]
        s = self.sample(obs, router_noise)
        q, action_grad = min_q(obs, s.action)
        loss = (alpha * s.log_prob - q).mean()

        # d loss / d log π and d loss / d min Q per state
        d_log_prob = alpha / batch
        d_action = action_grad(q.new_full((batch,), -1.0 / batch))

        # a = tanh(x)·scale + bias, log π ∋ −log(scale (1 − tanh(x)²) + 1e-6): back to x = mean + std·noise
        one_minus_sq = 1.0 - s.squashed.square()
        scale = actor.action_scale
        d_squashed = d_action * scale + d_log_prob * (2.0 * scale * s.squashed) / (scale * one_minus_sq + 1e-6)
        d_x = d_squashed * one_minus_sq
        # log std enters x (through std) and log π (−log std); its head passed through LOG_STD_MIN + c (tanh + 1)
        d_log_std = d_x * s.noise * s.std - d_log_prob
        d_gated = torch.cat([d_x, d_log_std * LOG_STD_HALF_RANGE * (1.0 - s.log_std_tanh.square())], dim=1)

        # gated = gate · chosen
        d_chosen = d_gated * s.gate
        d_gate = (d_gated * s.chosen).sum(-1, keepdim=True)
        # gate = softmax(logits)[expert]: d gate / d logits_j = gate (1[j = expert] − p_j)
        one_hot = torch.zeros_like(s.probs).scatter_(1, s.expert.unsqueeze(1), 1.0)
        d_logits = (one_hot - s.probs).mul_(d_gate * s.gate)

        lb = loss.new_zeros(())
        if router_noise is not None:
            clean = s.logits - router_noise
            lb, d_clean = self._balance_loss_backward(lb_loss, clean, s, one_hot, lb_weight, d_logits)
            loss = loss + lb_weight * lb
        else:
            d_clean = d_logits  # the choice was made on the clean logits

        # Only the chosen expert of each state gets a gradient: spread rows over [B, M·2A], then one small GEMM.
        d_experts = (one_hot.unsqueeze(2) * d_chosen.unsqueeze(1)).view(batch, -1)
        self._set_grad(actor.expert_weight, (d_experts.T @ obs).view_as(actor.expert_weight))
        self._set_grad(actor.expert_bias, d_experts.sum(0).view_as(actor.expert_bias))
        self._set_grad(actor.router.weight, d_clean.T @ obs)
        self._set_grad(actor.router.bias, d_clean.sum(0))
        return loss, lb

    @staticmethod
    def _balance_loss_backward(
        kind: LBLoss, clean: torch.Tensor, s: MixtureSample, one_hot: torch.Tensor, weight: float,
        d_noisy: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """L_aux (smose.losses) and d (loss) / d clean logits, given d loss / d noisy logits from the policy term."""
        if kind == "z":  # mean_s (Σ_m e^{z_m})², on the clean logits
            exp = clean.exp()
            total = exp.sum(-1, keepdim=True)
            lb = total.square().mean()
            return lb, d_noisy + exp * total * (2.0 * weight / clean.shape[0])
        if kind != "cv2":
            raise ValueError(f"no hand-written gradient for load-balancing loss {kind!r}")
        n_experts = clean.shape[1]
        noise_std = 1.0 / n_experts
        importance = s.probs.sum(0)
        # Load_m = Σ_s (1 − Φ(z)), z = (max_m noisy − clean_m) / σ; the max of the noisy logits is the chosen one's.
        threshold = s.logits.gather(1, s.expert.unsqueeze(1))
        z = (threshold - clean) / noise_std
        load = (0.5 * torch.erfc(z / math.sqrt(2.0))).sum(0)
        cv_imp, d_imp = _cv_squared_and_grad(importance)
        cv_load, d_load = _cv_squared_and_grad(load)
        lb = 0.5 * cv_imp + 0.5 * cv_load
        d_imp, d_load = d_imp * (0.5 * weight), d_load * (0.5 * weight)
        # importance = Σ_s softmax(noisy): softmax backward, row by row
        d_noisy = d_noisy + s.probs * (d_imp - (s.probs * d_imp).sum(-1, keepdim=True))
        # d(1 − Φ(z))/dz = −φ(z); z falls with clean_m and rises with the chosen noisy logit
        d_z = -d_load * (torch.exp(-0.5 * z.square()) * INV_SQRT_2PI)
        d_clean = d_noisy + (one_hot * d_z.sum(-1, keepdim=True) - d_z) / noise_std
        return lb, d_clean

    @staticmethod
    def _set_grad(param: torch.Tensor, grad: torch.Tensor) -> None:
        param.grad = grad.contiguous()


def _cv_squared_and_grad(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """losses.cv_squared (unbiased variance over mean², ε = 1e-10) and its gradient with respect to ``values``."""
    n = values.numel()
    mean = values.mean()
    centred = values - mean
    var = centred.square().sum() / (n - 1)
    denom = mean.square() + 1e-10
    grad = centred * (2.0 / ((n - 1) * denom)) - var * (2.0 * mean / (n * denom.square()))
    return var / denom, grad
