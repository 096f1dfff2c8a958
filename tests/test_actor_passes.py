"""The actors' hand-written passes give what autograd through the actor modules gives."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from smose.algo.fast.actor_passes import MixturePasses, MLPPasses, make_passes
from smose.algo.fast.critic_passes import TwinQPasses
from smose.algo.losses import balance_loss, router_noise
from smose.algo.policy import MLPActor, SMOSEActor, TwinQ
from smose.interpret.fit import fit_multiclass, fit_per_expert
from smose.interpret.tree_policy import TreeRoutedActor

N_OBS, N_ACT, N_EXPERTS, BATCH = 7, 3, 5, 300
LOW, HIGH = [-1.0, -2.0, -0.5], [1.0, 3.0, 0.5]  # unequal scales and a non-zero bias exercise the action bounds
DENSE = {"sac-l": (64, 32), "sac-s": (9,), "linear": ()}  # two hidden layers, one, and none


def smose_and_obs(seed: int) -> tuple[SMOSEActor, torch.Tensor]:
    torch.manual_seed(seed)
    actor = SMOSEActor(N_OBS, N_ACT, LOW, HIGH, N_EXPERTS)
    with torch.no_grad():  # larger weights than at initialisation: every expert is chosen and the log-std varies
        actor.router.weight.mul_(4.0)
        actor.expert_weight.mul_(3.0)
    return actor, torch.randn(BATCH, N_OBS) * 2.0


def mlp_and_obs(seed: int, kind: str) -> tuple[MLPActor, torch.Tensor]:
    torch.manual_seed(seed)
    return MLPActor(N_OBS, N_ACT, LOW, HIGH, DENSE[kind], kind), torch.randn(BATCH, N_OBS) * 2.0


@pytest.mark.parametrize("noise_kind", [None, "batch", "state"])
def test_mixture_sample_equals_the_actor_sample(float64, noise_kind):
    actor, obs = smose_and_obs(0)
    noise = None if noise_kind is None else router_noise(BATCH, N_EXPERTS, noise_kind)
    torch.manual_seed(7)
    with torch.no_grad():
        action, log_prob, out = actor.sample(obs, noise)
    torch.manual_seed(7)
    s = MixturePasses(actor).sample(obs, noise)
    assert torch.equal(s.expert, out.expert)
    assert len(s.expert.unique()) == N_EXPERTS
    torch.testing.assert_close(s.gaussian.action, action)
    torch.testing.assert_close(s.gaussian.log_prob, log_prob)
    torch.testing.assert_close(s.gate.squeeze(1), out.gate)
    assert (s.gaussian.action >= torch.tensor(LOW)).all() and (s.gaussian.action <= torch.tensor(HIGH)).all()


@pytest.mark.parametrize("kind", list(DENSE))
def test_mlp_sample_equals_the_actor_sample(float64, kind):
    actor, obs = mlp_and_obs(0, kind)
    torch.manual_seed(7)
    with torch.no_grad():
        action, log_prob, _ = actor.sample(obs)
    torch.manual_seed(7)
    s = make_passes(actor).sample(obs)
    assert isinstance(make_passes(actor), MLPPasses) and s.expert is None
    torch.testing.assert_close(s.gaussian.action, action)
    torch.testing.assert_close(s.gaussian.log_prob, log_prob)


def assert_gradients_equal_autograd(actor, obs, noise, lb_loss: str) -> None:
    """Actor loss, L_aux and every parameter gradient of the passes against autograd through a copy of the actor."""
    reference = copy.deepcopy(actor)
    critic = TwinQ(N_OBS, N_ACT)
    alpha, weight = torch.tensor([0.3]), 0.7

    torch.manual_seed(3)
    loss, lb = make_passes(actor).actor_loss_backward(
        obs, noise, alpha, TwinQPasses(critic).min_q_with_grad, lb_loss, weight)
    assert all(p.grad is None for p in critic.parameters())  # the actor step leaves the critic alone

    torch.manual_seed(3)
    action, log_prob, out = reference.sample(obs, noise)
    ref_loss = (alpha * log_prob - critic(obs, action).min(0).values).mean()
    ref_lb = torch.zeros(())
    if noise is not None:
        ref_lb = balance_loss(lb_loss, out.logits - noise, out.logits)
        ref_loss = ref_loss + weight * ref_lb
    ref_loss.backward()

    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(lb, ref_lb, rtol=1e-12, atol=1e-12)
    for (name, p), r in zip(actor.named_parameters(), reference.parameters()):
        assert r.grad.abs().max() > 0, name
        torch.testing.assert_close(p.grad, r.grad, rtol=1e-7, atol=1e-10, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("lb_loss, noise_kind", [("cv2", "batch"), ("cv2", "state"), ("z", "batch"),
                                                 ("z-noisy", "batch"), ("z-noisy", "state"),
                                                 ("none-noisy", "batch"), ("none", None)])
def test_mixture_loss_and_gradients_equal_autograd(float64, lb_loss, noise_kind):
    actor, obs = smose_and_obs(1)
    noise = None if noise_kind is None else router_noise(BATCH, N_EXPERTS, noise_kind)
    assert_gradients_equal_autograd(actor, obs, noise, lb_loss)


def tree_routed_and_obs(seed: int, kind: str) -> tuple[TreeRoutedActor, torch.Tensor]:
    """A SMOSE actor routed by depth-3 trees fitted to a rule of the state's signs, not to the router's argmax: the
    trees' choice differs from the argmax on many states, so the passes cannot lean on the argmax."""
    actor, obs = smose_and_obs(seed)
    states = obs.numpy().astype(np.float32)
    labels = ((states[:, 0] > 0).astype(np.int64) + 2 * (states[:, 1] > 0)) % N_EXPERTS
    fit = {"per-expert": fit_per_expert, "multiclass": fit_multiclass}[kind]
    return TreeRoutedActor.from_smose(actor, fit(actor, states, labels, depth=3, env_id="Synthetic-v0")), obs


@pytest.mark.parametrize("kind", ["per-expert", "multiclass"])
def test_tree_routed_sample_takes_the_trees_choice(float64, kind):
    actor, obs = tree_routed_and_obs(0, kind)
    passes = make_passes(actor)
    assert type(passes) is MixturePasses
    torch.manual_seed(7)
    with torch.no_grad():
        action, log_prob, out = actor.sample(obs)
    torch.manual_seed(7)
    s = passes.sample(obs)
    assert torch.equal(s.expert, actor.tree_router(obs)) and torch.equal(s.expert, out.expert)
    assert (s.expert != s.top_expert).float().mean() > 0.3  # the trees overrule the argmax on many states
    torch.testing.assert_close(s.gate.squeeze(1), out.gate)
    torch.testing.assert_close(s.gaussian.action, action)
    torch.testing.assert_close(s.gaussian.log_prob, log_prob)


@pytest.mark.parametrize("kind, lb_loss, noise_kind", [("per-expert", "none", None), ("multiclass", "none", None),
                                                       ("multiclass", "cv2", "batch"), ("per-expert", "cv2", "state"),
                                                       ("multiclass", "z", "batch"), ("per-expert", "z-noisy", "state"),
                                                       ("multiclass", "none-noisy", "batch")])
def test_tree_routed_loss_and_gradients_equal_autograd(float64, kind, lb_loss, noise_kind):
    """What ``smose finetune`` trains (no balancing) and, for completeness, the balancing losses, whose load term
    takes the noisy argmax even where the trees choose another expert."""
    actor, obs = tree_routed_and_obs(1, kind)
    noise = None if noise_kind is None else router_noise(BATCH, N_EXPERTS, noise_kind)
    s = make_passes(actor).sample(obs, noise)
    assert (s.expert != s.top_expert).float().mean() > 0.3  # the trees overrule the (noisy) argmax on many states
    assert_gradients_equal_autograd(actor, obs, noise, lb_loss)


@pytest.mark.parametrize("kind", list(DENSE))
def test_mlp_loss_and_gradients_equal_autograd(float64, kind):
    actor, obs = mlp_and_obs(1, kind)
    assert_gradients_equal_autograd(actor, obs, None, "none")


def test_load_balancing_gradient_is_not_negligible(float64):
    """Guard for the tests above: with these sizes the L_aux part of the router gradient is large enough to check."""
    actor, obs = smose_and_obs(1)
    critic = TwinQ(N_OBS, N_ACT)
    noise = router_noise(BATCH, N_EXPERTS, "batch")
    grads = []
    for weight in (0.0, 0.7):
        torch.manual_seed(3)
        MixturePasses(actor).actor_loss_backward(
            obs, noise, torch.tensor([0.3]), TwinQPasses(critic).min_q_with_grad, "cv2", weight)
        grads.append(actor.router.weight.grad.clone())
    assert (grads[1] - grads[0]).abs().max() > 1e-3 * grads[0].abs().max()
