"""The SAC update against a straightforward CleanRL-style reference, and its determinism.

The learner computes the critic's passes by hand and skips work whose result is known (zero gradients); the
reference below is the textbook form: two independent nn.Linear critics, autograd everywhere, torch's Adam. Both run
in float64 so that rounding differences stay far below the tolerance: in float32 a ULP can move a ReLU or an
argmax across its threshold, and the two runs would then part ways for reasons unrelated to correctness.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from smose.buffer import Batch, ReplayBuffer
from smose.losses import balance_loss, router_noise
from smose.policy import SMOSEActor, make_actor
from smose.sac import FusedAdam, SACHyperParams, SACLearner

N_OBS, N_ACT = 5, 2


class ReferenceSAC:
    """CleanRL's sac_continuous_action.py update, with the SMOSE load-balancing term in the actor loss."""

    def __init__(self, actor, learner: SACLearner, hp: SACHyperParams):
        self.hp = hp
        self.actor = copy.deepcopy(actor)
        self.qf = [self._linear_stack(learner.critic, c) for c in range(2)]
        self.qf_target = [self._linear_stack(learner.critic_target, c) for c in range(2)]
        self.q_optimizer = torch.optim.Adam([p for q in self.qf for p in q.parameters()], lr=hp.critic_lr)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=hp.actor_lr)
        self.log_alpha = torch.zeros(1, requires_grad=True)
        self.a_optimizer = torch.optim.Adam([self.log_alpha], lr=hp.alpha_lr)
        self.alpha = self.log_alpha.exp().item()
        self.target_entropy = -float(N_ACT)
        self.step = 0

    @staticmethod
    def _linear_stack(twin, c: int) -> nn.Sequential:
        layers = [nn.Linear(w.shape[1], w.shape[2]) for w in twin.weights]
        with torch.no_grad():
            for layer, w, b in zip(layers, twin.weights, twin.biases):
                layer.weight.copy_(w[c].T)
                layer.bias.copy_(b[c, 0])
        return nn.Sequential(layers[0], nn.ReLU(), layers[1], nn.ReLU(), layers[2])

    @staticmethod
    def q(net, obs, action):
        return net(torch.cat([obs, action], 1)).view(-1)

    def update(self, data: Batch) -> dict[str, float]:
        hp, q = self.hp, self.q
        self.step += 1
        with torch.no_grad():
            next_actions, next_log_pi, _ = self.actor.sample(data.next_obs)
            min_qf_next = torch.min(q(self.qf_target[0], data.next_obs, next_actions),
                                    q(self.qf_target[1], data.next_obs, next_actions)) - self.alpha * next_log_pi
            next_q_value = data.rewards + (1 - data.dones) * hp.gamma * min_qf_next
        qf_loss = sum(F.mse_loss(q(net, data.obs, data.actions), next_q_value) for net in self.qf)
        self.q_optimizer.zero_grad()
        qf_loss.backward()
        self.q_optimizer.step()
        stats = {"qf_loss": qf_loss.item()}

        if self.step % hp.policy_frequency == 0:
            for _ in range(hp.policy_frequency):
                noise = None
                if isinstance(self.actor, SMOSEActor) and hp.lb_loss != "none":  # "none" alone drops the noise
                    noise = router_noise(data.obs.shape[0], self.actor.n_experts, hp.lb_noise)
                pi, log_pi, out = self.actor.sample(data.obs, noise)
                min_qf_pi = torch.min(q(self.qf[0], data.obs, pi), q(self.qf[1], data.obs, pi))
                actor_loss = (self.alpha * log_pi - min_qf_pi).mean()
                if noise is not None:
                    actor_loss = actor_loss + hp.lb_weight * balance_loss(hp.lb_loss, out.logits - noise, out.logits)
                self.actor_optimizer.zero_grad()
                actor_loss.backward()
                self.actor_optimizer.step()
                with torch.no_grad():
                    _, log_pi, _ = self.actor.sample(data.obs)
                alpha_loss = (-self.log_alpha.exp() * (log_pi + self.target_entropy)).mean()
                self.a_optimizer.zero_grad()
                alpha_loss.backward()
                self.a_optimizer.step()
                self.alpha = self.log_alpha.exp().item()
                stats |= {"actor_loss": actor_loss.item(), "alpha_loss": alpha_loss.item()}

        if self.step % hp.target_frequency == 0:
            for net, target in zip(self.qf, self.qf_target):
                for param, target_param in zip(net.parameters(), target.parameters()):
                    target_param.data.copy_(hp.tau * param.data + (1 - hp.tau) * target_param.data)
        return stats


def random_batches(n: int, batch: int, seed: int, dtype=torch.float64) -> list[Batch]:
    buffer = ReplayBuffer(1000, N_OBS, N_ACT)
    rng = np.random.default_rng(seed)
    for _ in range(1000):
        buffer.add(rng.normal(size=N_OBS), rng.uniform(-1, 1, N_ACT), rng.normal(), rng.normal(size=N_OBS),
                   rng.random() < 0.1)
    return [Batch(*(t.to(dtype) for t in buffer.sample(batch, rng))) for _ in range(n)]


def assert_same_networks(learner: SACLearner, ref: ReferenceSAC, atol: float) -> None:
    for a, b in zip(learner.actor.parameters(), ref.actor.parameters()):
        torch.testing.assert_close(a, b, atol=atol, rtol=0)
    for twin, nets in ((learner.critic, ref.qf), (learner.critic_target, ref.qf_target)):
        for c, net in enumerate(nets):
            linears = [m for m in net if isinstance(m, nn.Linear)]
            for layer, w, b in zip(linears, twin.weights, twin.biases):
                torch.testing.assert_close(w[c].T, layer.weight, atol=atol, rtol=0)
                torch.testing.assert_close(b[c, 0], layer.bias, atol=atol, rtol=0)
    torch.testing.assert_close(learner.log_alpha, ref.log_alpha, atol=atol, rtol=0)


@pytest.mark.parametrize("algo,hp,n_experts", [
    ("smose", SACHyperParams(), 4),
    ("smose", SACHyperParams(lb_noise="state", policy_frequency=1, target_frequency=2), 4),
    ("smose", SACHyperParams(lb_loss="z", lb_weight=0.01), 4),
    ("smose", SACHyperParams(lb_loss="z-noisy", lb_weight=0.01), 4),  # the authors' z-loss, on the noisy logits
    ("smose", SACHyperParams(lb_loss="none"), 4),  # no noise, no loss
    ("smose", SACHyperParams(lb_loss="none-noisy"), 4),  # the authors' "no balancing": noise, no loss
    ("smose", SACHyperParams(), 1),  # one expert: nothing to balance, L_aux = 0 (an unbiased std of one value is NaN)
    ("sac-l", SACHyperParams(), 4),
])
def test_update_equals_the_reference_implementation(float64, algo, hp, n_experts):
    torch.manual_seed(0)
    actor = make_actor(algo, N_OBS, N_ACT, -np.ones(N_ACT), np.full(N_ACT, 2.0), n_experts=n_experts)
    learner = SACLearner(actor, hp)
    ref = ReferenceSAC(actor, learner, hp)
    trained = {name: p.detach().clone() for name, p in learner.critic.named_parameters()}
    for i, batch in enumerate(random_batches(6, 64, seed=1)):
        torch.manual_seed(100 + i)  # both consume the same random numbers in the same order
        stats = learner.update(batch)
        torch.manual_seed(100 + i)
        ref_stats = ref.update(batch)
        assert set(ref_stats) <= set(stats)
        for key, value in ref_stats.items():
            assert float(stats[key]) == pytest.approx(value, rel=1e-9, abs=1e-12), key
    assert_same_networks(learner, ref, atol=1e-10)
    # The comparison is not vacuous: training moved every critic parameter by far more than the tolerance.
    for name, p in learner.critic.named_parameters():
        assert (p - trained[name]).abs().max() > 1e-5, name


def test_float32_update_stays_close_to_the_reference():
    torch.manual_seed(0)
    actor = make_actor("sac-l", N_OBS, N_ACT, -np.ones(N_ACT), np.ones(N_ACT))
    learner = SACLearner(actor, SACHyperParams())
    ref = ReferenceSAC(actor, learner, SACHyperParams())
    for i, batch in enumerate(random_batches(2, 256, seed=2, dtype=torch.float32)):
        torch.manual_seed(i)
        learner.update(batch)
        torch.manual_seed(i)
        ref.update(batch)
    assert_same_networks(learner, ref, atol=1e-5)


@pytest.mark.parametrize("algo", ["smose", "sac-l"])
def test_fixed_seed_is_bitwise_reproducible(algo):
    def run() -> dict[str, torch.Tensor]:
        torch.manual_seed(3)
        learner = SACLearner(make_actor(algo, N_OBS, N_ACT, -np.ones(N_ACT), np.ones(N_ACT)), SACHyperParams())
        for batch in random_batches(6, 128, seed=4, dtype=torch.float32):
            learner.update(batch)
        state = learner.state_dict()
        return {f"{m}.{k}": v for m in ("actor", "critic", "critic_target") for k, v in state[m].items()} | {
            "log_alpha": state["log_alpha"]}

    first, second = run(), run()
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key


def test_fast_adam_step_equals_torch_adam_step():
    torch.manual_seed(0)
    params = [nn.Parameter(torch.randn(3, 4)), nn.Parameter(torch.randn(4))]
    twins = [nn.Parameter(p.detach().clone()) for p in params]
    fast, slow = FusedAdam(params, lr=1e-2), torch.optim.Adam(twins, lr=1e-2, fused=True)
    for step in range(5):
        grads = [torch.randn_like(p) for p in params]
        for p, q, g in zip(params, twins, grads):
            p.grad, q.grad = g.clone(), g.clone()
        fast.fast_step()
        slow.step()
        if step == 2:  # a state loaded from a checkpoint replaces the state tensors
            fast.load_state_dict(copy.deepcopy(slow.state_dict()))
    for p, q in zip(params, twins):
        assert torch.equal(p, q)
    assert torch.equal(fast.state[params[0]]["step"], slow.state[twins[0]]["step"])
