import math

import numpy as np
import pytest
import torch
from torch.distributions import Normal, TransformedDistribution
from torch.distributions.transforms import AffineTransform, TanhTransform

from smose.algo.policy import (
    LOG_STD_MAX,
    LOG_STD_MIN,
    MLPActor,
    SMOSEActor,
    TwinQ,
    dense_hidden_size,
    make_actor,
    squashed_gaussian_sample,
)


def smose_actor(n_obs=5, n_act=2, m=4, seed=0, low=-2.0, high=1.0):
    torch.manual_seed(seed)
    return SMOSEActor(n_obs, n_act, np.full(n_act, low), np.full(n_act, high), m)


def test_exactly_one_expert_and_gate_is_the_chosen_softmax_probability():
    actor = smose_actor()
    obs = torch.randn(64, 5)
    out = actor(obs)
    probs = torch.softmax(actor.router(obs), dim=-1)
    assert out.expert.shape == (64,)
    torch.testing.assert_close(out.expert, probs.argmax(-1))
    torch.testing.assert_close(out.gate, probs.max(-1).values)
    # The gate is the raw softmax probability (< 1), not renormalised over the single chosen expert.
    assert (out.gate < 1).all()
    # The mean equals gate · (W_k s + b_k) of the chosen expert only.
    for i in range(64):
        k = int(out.expert[i])
        w, b = actor.expert_weight[k, :2], actor.expert_bias[k, :2]
        torch.testing.assert_close(out.mean[i], out.gate[i] * (w @ obs[i] + b))
        raw = out.gate[i] * (actor.expert_weight[k, 2:] @ obs[i] + actor.expert_bias[k, 2:])
        torch.testing.assert_close(out.log_std[i], -5 + 3.5 * (torch.tanh(raw) + 1))


def test_gradient_reaches_only_the_chosen_expert_and_the_router():
    actor = smose_actor(m=6)
    obs = torch.randn(1, 5)
    out = actor(obs)
    (out.mean.sum() + out.log_std.sum()).backward()
    k = int(out.expert[0])
    grad_w, grad_b = actor.expert_weight.grad, actor.expert_bias.grad
    for m in range(6):
        has_grad = grad_w[m].abs().sum() > 0 and grad_b[m].abs().sum() > 0
        assert has_grad == (m == k), f"expert {m} gradient presence wrong (chosen {k})"
    assert actor.router.weight.grad.abs().sum() > 0, "router must get gradient through the gate"
    assert actor.router.bias.grad.abs().sum() > 0


def test_log_std_is_squashed_into_bounds():
    actor = smose_actor()
    with torch.no_grad():
        actor.expert_weight.mul_(1000)
    out = actor(torch.randn(256, 5) * 10)
    assert out.log_std.min() >= LOG_STD_MIN and out.log_std.max() <= LOG_STD_MAX


def test_squashed_gaussian_log_prob_matches_torch_distributions():
    torch.manual_seed(1)
    mean, log_std = torch.randn(500, 3), torch.rand(500, 3) * 2 - 1.5
    scale, bias = torch.tensor([2.0, 0.5, 1.0]), torch.tensor([0.0, 1.0, -0.5])
    action, log_prob = squashed_gaussian_sample(mean, log_std, scale, bias)
    dist = TransformedDistribution(
        Normal(mean, log_std.exp()), [TanhTransform(cache_size=1), AffineTransform(bias, scale)]
    )
    # Keep away from the tanh saturation where the 1e-6 regulariser of log π (docs/method.md §1) matters.
    inner = ((action - bias) / scale).abs() < 0.99
    reference = dist.log_prob(action.clamp(bias - scale * 0.999999, bias + scale * 0.999999))
    ours = log_prob
    rows = inner.all(-1)
    assert rows.sum() > 100
    torch.testing.assert_close(ours[rows], reference[rows].sum(-1), atol=2e-3, rtol=1e-4)
    assert ((action >= bias - scale) & (action <= bias + scale)).all()


def test_deterministic_modes():
    actor = smose_actor(low=-1.0, high=1.0)
    obs = torch.randn(32, 5) * 5
    gated, experts = actor.act(obs, "gated")
    out = actor(obs)
    torch.testing.assert_close(gated, torch.tanh(out.mean))
    linear, experts_linear = actor.act(obs, "linear")
    torch.testing.assert_close(experts, experts_linear)
    raw = torch.stack([actor.expert_weight[k, :2] @ obs[i] + actor.expert_bias[k, :2] for i, k in enumerate(experts)])
    torch.testing.assert_close(linear, raw.clamp(-1.0, 1.0))
    with pytest.raises(ValueError):
        actor.act(obs, "softmax")


@pytest.mark.parametrize(
    "n_obs,n_act,train,deploy,active",
    [(17, 6, 1872, 1008, 252), (11, 3, 672, 384, 132)],  # Walker2d-v4 and Hopper, M = 8 (docs/method.md §1)
)
def test_smose_parameter_counts_match_the_spec(n_obs, n_act, train, deploy, active):
    actor = make_actor("smose", n_obs, n_act, -np.ones(n_act), np.ones(n_act), 8)
    counts = actor.parameter_counts()
    assert counts == {"train": train, "deploy": deploy, "active": active}
    assert sum(p.numel() for p in actor.parameters() if p.requires_grad) == 8 * (n_obs + 1) * (1 + 2 * n_act)


@pytest.mark.parametrize("n_obs,n_act", [(17, 6), (11, 3), (27, 8), (105, 8), (8, 2)])
def test_dense_baseline_sizes_match_the_spec(n_obs, n_act):
    m = 8
    assert dense_hidden_size("sac-l", n_obs, n_act, m) == (256, 256)
    h_m = math.ceil(m * n_obs * (1 + 2 * n_act) / (n_obs + 2 * n_act))
    h_s = math.ceil(n_obs * (m + 2 * n_act) / (n_obs + 2 * n_act))
    assert dense_hidden_size("sac-m", n_obs, n_act, m) == (h_m,)
    assert dense_hidden_size("sac-s", n_obs, n_act, m) == (h_s,)
    one_hidden = lambda h: (n_obs + 1) * h + 2 * (h + 1) * n_act  # noqa: E731
    sac_m = make_actor("sac-m", n_obs, n_act, -np.ones(n_act), np.ones(n_act), m)
    assert sac_m.parameter_counts()["train"] == one_hidden(h_m)
    # SAC-M has about as many parameters as SMOSE (within one hidden unit's worth).
    smose_train = m * (n_obs + 1) * (1 + 2 * n_act)
    assert abs(one_hidden(h_m) - smose_train) <= (n_obs + 1 + 2 * n_act) + m * (1 + 2 * n_act)
    sac_l = make_actor("sac-l", n_obs, n_act, -np.ones(n_act), np.ones(n_act), m)
    assert sac_l.parameter_counts()["train"] == (n_obs + 1) * 256 + 257 * 256 + 2 * 257 * n_act
    assert isinstance(sac_l, MLPActor)


def test_twin_q_equals_two_independent_linear_stacks():
    torch.manual_seed(0)
    q = TwinQ(4, 2, hidden=16)
    obs, act = torch.randn(10, 4), torch.randn(10, 2)
    values = q(obs, act)
    assert values.shape == (2, 10)
    x = torch.cat([obs, act], -1)
    for c in range(2):
        h = x
        for i, (w, b) in enumerate(zip(q.weights, q.biases)):
            h = h @ w[c] + b[c, 0]
            if i < 2:
                h = torch.relu(h)
        torch.testing.assert_close(values[c], h.squeeze(-1))
    # The two critics are initialised independently.
    assert not torch.equal(q.weights[1][0], q.weights[1][1])
