import math
import statistics

import numpy as np
import pytest
import torch

from smose.algo.fast.fused import SACLearner
from smose.algo.losses import balance_loss, cv2_balance_loss, cv_squared, importance, load, router_noise, z_loss
from smose.algo.policy import SMOSEActor
from smose.training.buffer import ReplayBuffer
from smose.training.config import SACHyperParams


def phi(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def softmax(row):
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


def hand_cv2(values):
    return (statistics.stdev(values) / statistics.fmean(values)) ** 2


def test_cv2_importance_and_load_against_hand_computation():
    clean = [[1.0, 0.0, -0.5], [0.2, 2.0, 0.1], [0.0, 0.0, 0.3]]
    eps = [0.1, -0.2, 0.05]  # one noise vector for the batch, std 1/M = 1/3
    noisy = [[z + e for z, e in zip(row, eps)] for row in clean]
    m = 3
    imp = [sum(softmax(row)[j] for row in noisy) for j in range(m)]
    ld = [sum(1 - phi((max(noisy[s]) - clean[s][j]) / (1 / m)) for s in range(3)) for j in range(m)]
    expected = 0.5 * hand_cv2(imp) + 0.5 * hand_cv2(ld)

    clean_t, noisy_t = torch.tensor(clean), torch.tensor(noisy)
    torch.testing.assert_close(importance(noisy_t), torch.tensor(imp))
    torch.testing.assert_close(load(clean_t, noisy_t, 1 / m), torch.tensor(ld))
    torch.testing.assert_close(cv_squared(torch.tensor(imp)), torch.tensor(hand_cv2(imp)))
    torch.testing.assert_close(cv2_balance_loss(clean_t, noisy_t), torch.tensor(expected))


def test_a_single_expert_has_nothing_to_balance():
    assert cv_squared(torch.tensor([3.0])) == 0
    clean = torch.randn(16, 1)
    assert cv2_balance_loss(clean, clean + router_noise(16, 1, "batch")) == 0


def test_balanced_router_has_lower_loss_than_collapsed_one():
    torch.manual_seed(0)
    noise = router_noise(256, 4, "batch")
    balanced = torch.randn(256, 4)
    collapsed = balanced.clone()
    collapsed[:, 0] += 10
    assert cv2_balance_loss(balanced, balanced + noise) < 0.1 * cv2_balance_loss(collapsed, collapsed + noise)


def test_z_loss_and_none():
    z = torch.tensor([[0.0, math.log(2.0)], [math.log(3.0), 0.0]])
    torch.testing.assert_close(z_loss(z), torch.tensor(((1 + 2) ** 2 + (3 + 1) ** 2) / 2))
    assert balance_loss("none", z, z) == 0
    assert balance_loss("none-noisy", z, z + 1.0) == 0
    # our z-loss reads the clean logits, the authors' variant the noisy ones
    torch.testing.assert_close(balance_loss("z", z, z + math.log(2.0)), z_loss(z))
    torch.testing.assert_close(balance_loss("z-noisy", z, z + math.log(2.0)), 4 * z_loss(z))
    with pytest.raises(ValueError):
        balance_loss("l2", z, z)


def test_router_noise_shapes_and_scale():
    torch.manual_seed(0)
    assert router_noise(32, 8, "batch").shape == (1, 8)
    per_state = router_noise(20000, 8, "state")
    assert per_state.shape == (20000, 8)
    assert abs(per_state.std().item() - 1 / 8) < 0.005


def recording_learner(hp: SACHyperParams) -> tuple[SACLearner, list[torch.Tensor | None]]:
    """A SMOSE learner whose actor passes record the router noise of every sample they draw."""
    learner = SACLearner(SMOSEActor(4, 2, -np.ones(2), np.ones(2), 4), hp)
    noise_seen: list[torch.Tensor | None] = []
    sample = learner.actor_passes.sample

    def recording_sample(obs, router_noise=None):
        noise_seen.append(router_noise)
        return sample(obs, router_noise)

    learner.actor_passes.sample = recording_sample
    return learner, noise_seen


@pytest.mark.parametrize("kind,rows", [("batch", 1), ("state", 64)])
def test_noise_only_in_the_actor_update(kind, rows):
    torch.manual_seed(0)
    learner, noise_seen = recording_learner(SACHyperParams(lb_noise=kind, policy_frequency=2))
    buffer = ReplayBuffer(100, 4, 2)
    rng = np.random.default_rng(0)
    for _ in range(100):
        buffer.add(rng.normal(size=4), rng.uniform(-1, 1, 2), 1.0, rng.normal(size=4), False)
    batch = buffer.sample(64, rng)
    learner.update(batch)  # critic step only: target action without noise
    assert noise_seen == [None]
    noise_seen.clear()
    learner.update(batch)  # critic + 2 × (actor with noise, alpha without)
    noisy = [n for n in noise_seen if n is not None]
    assert len(noise_seen) == 5 and len(noisy) == 2
    assert noise_seen[0] is None and noise_seen[2] is None and noise_seen[4] is None
    assert all(n.shape == (rows, 4) for n in noisy)


@pytest.mark.parametrize("lb_loss,noisy_actor_steps", [("none", 0), ("none-noisy", 1)])
def test_lb_loss_none_adds_no_noise_and_none_noisy_keeps_it(lb_loss, noisy_actor_steps):
    """Ours ("none") drops the noise with the loss; the authors' analogue ("none-noisy") keeps it in the actor step."""
    learner, noise_seen = recording_learner(SACHyperParams(lb_loss=lb_loss, policy_frequency=1))
    buffer = ReplayBuffer(10, 4, 2)
    for _ in range(10):
        buffer.add(np.ones(4), np.zeros(2), 0.0, np.ones(4), False)
    stats = learner.update(buffer.sample(8, np.random.default_rng(0)))
    assert len(noise_seen) == 3 and sum(n is not None for n in noise_seen) == noisy_actor_steps
    assert noise_seen[0] is None and noise_seen[2] is None  # the target and the α sample never see noise
    assert stats["lb_loss"] == 0
