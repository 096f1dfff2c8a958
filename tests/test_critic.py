"""The hand-written twin-critic passes give autograd's values and gradients (float32, the training precision)."""

from __future__ import annotations

import copy

import torch

from smose.algo.fast.critic_passes import TwinQPasses
from smose.algo.policy import TwinQ

N_OBS, N_ACT, BATCH = 6, 3, 200


def twin_and_data(seed: int):
    torch.manual_seed(seed)
    critic = TwinQ(N_OBS, N_ACT)
    return critic, torch.randn(BATCH, N_OBS), torch.rand(BATCH, N_ACT) * 2 - 1


def test_forward_equals_autograd_module_and_target_pass_uses_the_other_weights():
    critic, obs, act = twin_and_data(0)
    target = TwinQ(N_OBS, N_ACT)
    passes = TwinQPasses(critic)
    x = torch.cat([obs, act], -1)
    with torch.no_grad():
        torch.testing.assert_close(passes.forward(x).clone(), critic(obs, act))
        torch.testing.assert_close(passes.forward(x, net=target).clone(), target(obs, act))


def test_td_gradients_equal_autograd():
    critic, obs, act = twin_and_data(1)
    reference = copy.deepcopy(critic)
    y = torch.randn(BATCH)
    passes = TwinQPasses(critic)
    x = torch.cat([obs, act], -1)
    for _ in range(2):  # the second call overwrites the gradients of the first (no accumulation)
        q = passes.forward(x)
        passes.backward_to_params(x, (q - y) * (4.0 / q.numel()))
    q_ref = reference(obs, act)
    (2.0 * torch.nn.functional.mse_loss(q_ref, y.expand_as(q_ref))).backward()
    for (name, p), r in zip(critic.named_parameters(), reference.parameters()):
        assert r.grad.abs().max() > 0, name
        torch.testing.assert_close(p.grad, r.grad, rtol=1e-5, atol=1e-7, msg=name)


def test_min_q_value_and_action_gradient_equal_autograd():
    critic, obs, act = twin_and_data(2)
    with torch.no_grad():  # make each twin the minimum for part of the batch
        critic.biases[2][0] -= critic(obs, act)[0].median() - critic(obs, act)[1].median()
    passes = TwinQPasses(critic)
    weights = torch.randn(BATCH)

    value, action_grad = passes.min_q_with_grad(obs, act)
    grad_action = action_grad(weights)
    assert all(p.grad is None for p in critic.parameters())  # the actor step's passes leave the critic alone

    ref_action = act.clone().requires_grad_(True)
    q = critic(obs, ref_action)
    which = q.argmin(0)
    assert 0 < int(which.sum()) < BATCH, "both twins should be the minimum somewhere"
    ref_value = q.min(0).values
    (ref_value * weights).sum().backward()

    torch.testing.assert_close(value, ref_value)
    torch.testing.assert_close(grad_action, ref_action.grad, rtol=1e-5, atol=1e-7)
