"""The actors' passes for the SAC update written out by hand: sampling, and the actor step's gradient.

Our actors are small (the SMOSE router and linear experts; the dense baselines' MLPs), so under autograd their cost
is not arithmetic but the ~100 small operations autograd records and then replays backwards, a few µs each. Here the
forward is the same maths as ``Actor.sample`` with fewer operations, and the backward of the actor loss

    mean_s(α log π(a|s) − min(Q1, Q2)(s, a)) + λ L_aux        (L_aux: SMOSE's load balancing, docs/method.md §2)

is written out from the values the forward kept: first through the tanh-squashed Gaussian (shared by all actors),
then through the actor's own layers. ``tests/test_actor_passes.py`` checks samples and every gradient against
autograd through the actors; ``tests/test_sac.py`` checks whole updates against a plain CleanRL-style implementation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from smose.algo.fast.critic_passes import relu_backward_
from smose.algo.losses import LBLoss
from smose.algo.policy import LOG_STD_MAX, LOG_STD_MIN, Actor, MLPActor, SMOSEActor

LOG_STD_HALF_RANGE = 0.5 * (LOG_STD_MAX - LOG_STD_MIN)
HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)

# (obs, action) -> (min over the twins of Q [B], function from d loss / d min Q [B] to d loss / d action [B, n_act])
MinQWithGrad = Callable[[torch.Tensor, torch.Tensor],
                        tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]]


@dataclass
class GaussianSample:
    """a = tanh(mean + std·noise)·scale + bias with log π(a|s), and what the backward needs."""

    action: torch.Tensor  # [B, n_act] in env units
    log_prob: torch.Tensor  # [B]
    log_std_tanh: torch.Tensor  # [B, n_act] tanh of the raw log-std head
    std: torch.Tensor  # [B, n_act]
    noise: torch.Tensor  # [B, n_act] standard normal draw
    squashed: torch.Tensor  # [B, n_act] tanh of the Gaussian sample


def squashed_gaussian(mean: torch.Tensor, raw_log_std: torch.Tensor, actor: Actor) -> GaussianSample:
    """policy.squash_log_std and policy.squashed_gaussian_sample in one pass, with the same random draw."""
    log_std_tanh = torch.tanh(raw_log_std)
    log_std = (log_std_tanh + 1.0).mul_(LOG_STD_HALF_RANGE).add_(LOG_STD_MIN)
    std = log_std.exp()
    noise = torch.randn_like(mean)
    squashed = torch.tanh(mean + std * noise)
    action = squashed * actor.action_scale + actor.action_bias
    # log N(x; mean, std) + the tanh·scale change of variables
    log_det = torch.log(actor.action_scale * (1.0 - squashed.square()) + 1e-6)
    log_prob = (noise.square().mul_(-0.5).sub_(log_std).sub_(HALF_LOG_2PI).sub_(log_det)).sum(-1)
    return GaussianSample(action, log_prob, log_std_tanh, std, noise, squashed)


def squashed_gaussian_backward(
    g: GaussianSample, actor: Actor, d_action: torch.Tensor, d_log_prob: torch.Tensor
) -> torch.Tensor:
    """d loss / d [mean | raw log-std] ([B, 2 n_act]) from d loss / d action and d loss / d log π (per state)."""
    # a = tanh(x)·scale + bias and log π ∋ −log(scale (1 − tanh(x)²) + 1e-6): back to x = mean + std·noise
    scale = actor.action_scale
    one_minus_sq = 1.0 - g.squashed.square()
    d_squashed = d_action * scale + d_log_prob * (2.0 * scale * g.squashed) / (scale * one_minus_sq + 1e-6)
    d_x = d_squashed * one_minus_sq
    # log std enters x (through std) and log π (−log std); the raw head passed through LOG_STD_MIN + c (tanh + 1)
    d_log_std = d_x * g.noise * g.std - d_log_prob
    return torch.cat([d_x, d_log_std * LOG_STD_HALF_RANGE * (1.0 - g.log_std_tanh.square())], dim=1)


def _set_grad(param: torch.Tensor, grad: torch.Tensor) -> None:
    param.grad = grad.contiguous()


class ActorPasses:
    """Common part of the actor step: the SAC loss through the critic and the squashed Gaussian."""

    actor: Actor

    def sample(self, obs: torch.Tensor, router_noise: torch.Tensor | None = None):
        raise NotImplementedError

    @torch.no_grad()
    def actor_loss_backward(
        self, obs: torch.Tensor, router_noise: torch.Tensor | None, alpha: torch.Tensor, min_q: MinQWithGrad,
        lb_loss: LBLoss, lb_weight: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The actor loss (see the module docstring) and its gradient written into the actor's ``.grad``.

        ``router_noise`` is None exactly when there is no load-balancing term. Returns (loss, L_aux).
        """
        batch = obs.shape[0]
        s = self.sample(obs, router_noise)
        q, action_grad = min_q(obs, s.gaussian.action)
        loss = (alpha * s.gaussian.log_prob - q).mean()
        d_action = action_grad(q.new_full((batch,), -1.0 / batch))
        d_head = squashed_gaussian_backward(s.gaussian, self.actor, d_action, alpha / batch)
        lb = self._backward(obs, s, d_head, router_noise, lb_loss, lb_weight)
        return (loss if router_noise is None else loss + lb_weight * lb), lb

    def _backward(self, obs, s, d_head, router_noise, lb_loss, lb_weight) -> torch.Tensor:
        """Gradients from d loss / d [mean | raw log-std] into ``.grad``; returns L_aux (0 without one)."""
        raise NotImplementedError


@dataclass
class MixtureSample:
    gaussian: GaussianSample
    expert: torch.Tensor  # [B] chosen expert (argmax of the possibly noisy logits, or the actor's ``select``)
    top_expert: torch.Tensor  # [B] argmax of ``logits`` (the same tensor as ``expert`` when that is the choice)
    logits: torch.Tensor  # [B, M] logits the choice was made on (noisy in the actor step)
    probs: torch.Tensor  # [B, M] softmax of ``logits``
    gate: torch.Tensor  # [B, 1] probability of the chosen expert, not renormalised
    chosen: torch.Tensor  # [B, 2 n_act] the chosen expert's output before gating: mean head | log-std head


class MixturePasses(ActorPasses):
    """Passes through an ``SMOSEActor``: linear router, top-1 gate, the chosen linear expert; the choice is the
    argmax of the logits, or the actor's own ``select`` where a subclass overrides it (fixed distilled trees)."""

    def __init__(self, actor: SMOSEActor):
        self.actor = actor
        self._rows = torch.arange(0)
        self._selects_argmax = type(actor).select is SMOSEActor.select

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
        top, top_expert = logits.max(dim=-1, keepdim=True)
        top_expert = top_expert.squeeze(1)
        exp = (logits - top).exp_()
        total = exp.sum(-1, keepdim=True)
        probs = exp.div_(total)
        if self._selects_argmax:
            gate = total.reciprocal_()
            expert = top_expert
        else:
            expert = actor.select(obs, logits)
            gate = probs.gather(1, expert.unsqueeze(1))
        experts = torch.addmm(actor.expert_bias.reshape(-1), obs, actor.expert_weight.reshape(-1, actor.n_obs).T)
        chosen = experts.view(batch, actor.n_experts, 2 * n_act)[self._row_index(batch), expert]
        gated = chosen * gate
        return MixtureSample(squashed_gaussian(gated[:, :n_act], gated[:, n_act:], actor),
                             expert, top_expert, logits, probs, gate, chosen)

    def _backward(self, obs, s: MixtureSample, d_gated, router_noise, lb_loss, lb_weight) -> torch.Tensor:
        actor, batch = self.actor, obs.shape[0]
        # gated = gate · chosen
        d_chosen = d_gated * s.gate
        d_gate = (d_gated * s.chosen).sum(-1, keepdim=True)
        # gate = softmax(logits)[expert]: d gate / d logits_j = gate (1[j = expert] − p_j)
        one_hot = torch.zeros_like(s.probs).scatter_(1, s.expert.unsqueeze(1), 1.0)
        d_logits = (one_hot - s.probs).mul_(d_gate * s.gate)

        lb = d_gated.new_zeros(())
        if router_noise is not None:
            clean = s.logits - router_noise
            lb, d_clean = self._balance_loss_backward(lb_loss, clean, s, one_hot, lb_weight, d_logits)
        else:
            d_clean = d_logits  # the choice was made on the clean logits

        # Only the chosen expert of each state gets a gradient: spread rows over [B, M·2A], then one small GEMM.
        d_experts = (one_hot.unsqueeze(2) * d_chosen.unsqueeze(1)).view(batch, -1)
        _set_grad(actor.expert_weight, (d_experts.T @ obs).view_as(actor.expert_weight))
        _set_grad(actor.expert_bias, d_experts.sum(0).view_as(actor.expert_bias))
        _set_grad(actor.router.weight, d_clean.T @ obs)
        _set_grad(actor.router.bias, d_clean.sum(0))
        return lb

    @staticmethod
    def _balance_loss_backward(
        kind: LBLoss, clean: torch.Tensor, s: MixtureSample, one_hot: torch.Tensor, weight: float,
        d_noisy: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """L_aux (smose.algo.losses) and d (loss) / d clean logits, given d loss / d noisy logits from the policy
        term."""
        if kind in ("z", "z-noisy"):  # mean_s (Σ_m e^{z_m})², on the clean or the noisy logits
            # z̃ = z + ε with ε constant: a gradient with respect to the noisy logits is one with respect to the clean
            exp = (clean if kind == "z" else s.logits).exp()
            total = exp.sum(-1, keepdim=True)
            lb = total.square().mean()
            return lb, d_noisy + exp * total * (2.0 * weight / clean.shape[0])
        if kind == "none-noisy":  # the noise steers the choice, no loss
            return d_noisy.new_zeros(()), d_noisy
        if kind != "cv2":
            raise ValueError(f"no hand-written gradient for load-balancing loss {kind!r}")
        n_experts = clean.shape[1]
        noise_std = 1.0 / n_experts
        importance = s.probs.sum(0)
        # Load_m = Σ_s (1 − Φ(z)), z = (max_m noisy − clean_m) / σ; the max of the noisy logits is the chosen one's
        # unless the actor chooses otherwise (fixed trees)
        if s.top_expert is not s.expert:
            one_hot = torch.zeros_like(one_hot).scatter_(1, s.top_expert.unsqueeze(1), 1.0)
        threshold = s.logits.gather(1, s.top_expert.unsqueeze(1))
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


def _cv_squared_and_grad(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """losses.cv_squared (unbiased variance over mean², ε = 1e-10; 0 for a single value) and its gradient with
    respect to ``values``."""
    n = values.numel()
    if n < 2:
        return values.new_zeros(()), torch.zeros_like(values)
    mean = values.mean()
    centred = values - mean
    var = centred.square().sum() / (n - 1)
    denom = mean.square() + 1e-10
    grad = centred * (2.0 / ((n - 1) * denom)) - var * (2.0 * mean / (n * denom.square()))
    return var / denom, grad


@dataclass
class MLPSample:
    gaussian: GaussianSample
    hidden: list[torch.Tensor]  # the ReLU outputs of the trunk, first layer first
    expert = None  # dense actors have no experts


class MLPPasses(ActorPasses):
    """Passes through an ``MLPActor``: ReLU trunk, then the mean and log-std heads."""

    def __init__(self, actor: MLPActor):
        self.actor = actor
        self.layers = [layer for layer in actor.trunk if isinstance(layer, torch.nn.Linear)]

    @torch.no_grad()
    def sample(self, obs: torch.Tensor, router_noise: torch.Tensor | None = None) -> MLPSample:
        """What ``MLPActor.sample(obs)`` computes, drawing the same random numbers."""
        hidden, h = [], obs
        for layer in self.layers:
            h = torch.addmm(layer.bias, h, layer.weight.T).relu_()
            hidden.append(h)
        actor = self.actor
        mean = torch.addmm(actor.mean_head.bias, h, actor.mean_head.weight.T)
        raw_log_std = torch.addmm(actor.log_std_head.bias, h, actor.log_std_head.weight.T)
        return MLPSample(squashed_gaussian(mean, raw_log_std, actor), hidden)

    def _backward(self, obs, s: MLPSample, d_head, router_noise, lb_loss, lb_weight) -> torch.Tensor:
        actor, n_act = self.actor, self.actor.n_act
        d_mean, d_raw = d_head[:, :n_act], d_head[:, n_act:]
        h = s.hidden[-1] if s.hidden else obs
        for head, d in ((actor.mean_head, d_mean), (actor.log_std_head, d_raw)):
            _set_grad(head.weight, d.T @ h)
            _set_grad(head.bias, d.sum(0))
        d_h = d_mean @ actor.mean_head.weight + d_raw @ actor.log_std_head.weight
        for i in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[i]
            d_h = relu_backward_(d_h, s.hidden[i])
            _set_grad(layer.weight, d_h.T @ (s.hidden[i - 1] if i > 0 else obs))
            _set_grad(layer.bias, d_h.sum(0))
            if i > 0:
                d_h = d_h @ layer.weight
        return d_head.new_zeros(())


def make_passes(actor: Actor) -> ActorPasses:
    """The passes written for the actor's class. A subclass of SMOSEActor that changes only ``select`` (the tree-routed
    controller) has them; one that changes ``forward`` or ``mixture`` (say, top-2 gating) has none, as the passes
    would not follow, and trains with autograd."""
    if (isinstance(actor, SMOSEActor) and type(actor).forward is SMOSEActor.forward
            and type(actor).mixture is SMOSEActor.mixture):
        return MixturePasses(actor)
    if type(actor) is MLPActor:
        return MLPPasses(actor)
    raise TypeError(f"no hand-written passes for {type(actor).__name__}")
