"""The fused SAC update against the autograd reference (``smose.algo.sac``), and its determinism.

The fused learner computes the passes by hand and skips work whose result is known (zero gradients); the reference
is the textbook form: CleanRL's update, autograd everywhere, torch's Adam. Both run
in float64 so that rounding differences stay far below the tolerance: in float32 a ULP can move a ReLU or an
argmax across its threshold, and the two runs would then part ways for reasons unrelated to correctness.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from smose.algo.fast.fused import FusedAdam, SACLearner
from smose.algo.learner import make_learner
from smose.algo.policy import Actor, ActorOutput, SMOSEActor, TwinQ, make_actor, squash_log_std
from smose.algo.sac import SAC
from smose.interpret.fit import fit_multiclass
from smose.interpret.tree_policy import TreeRoutedActor
from smose.training.buffer import Batch, ReplayBuffer
from smose.training.config import SACHyperParams

N_OBS, N_ACT = 5, 2


def learner_pair(algo: str, hp: SACHyperParams, n_experts: int = 4, seed: int = 0) -> tuple[SACLearner, SAC]:
    """A fused learner and the autograd reference built from the same seed, as ``smose train`` builds either."""
    def build(update: str):
        torch.manual_seed(seed)
        actor = make_actor(algo, N_OBS, N_ACT, -np.ones(N_ACT), np.full(N_ACT, 2.0), n_experts=n_experts)
        return make_learner(actor, hp, update)

    learner, ref = build("fused"), build("autograd")
    assert type(learner) is SACLearner and type(ref) is SAC
    assert_same_networks(learner, ref, atol=0)  # the same initial state: the paths differ only in the update
    return learner, ref


def linear_stack(twin, c: int) -> nn.Sequential:
    """Twin ``c`` of a TwinQ as the textbook nn.Linear stack (CleanRL's SoftQNetwork)."""
    layers = [nn.Linear(w.shape[1], w.shape[2]) for w in twin.weights]
    with torch.no_grad():
        for layer, w, b in zip(layers, twin.weights, twin.biases):
            layer.weight.copy_(w[c].T)
            layer.bias.copy_(b[c, 0])
    return nn.Sequential(layers[0], nn.ReLU(), layers[1], nn.ReLU(), layers[2])


def random_batches(n: int, batch: int, seed: int, dtype=torch.float64) -> list[Batch]:
    buffer = ReplayBuffer(1000, N_OBS, N_ACT)
    rng = np.random.default_rng(seed)
    for _ in range(1000):
        buffer.add(rng.normal(size=N_OBS), rng.uniform(-1, 1, N_ACT), rng.normal(), rng.normal(size=N_OBS),
                   rng.random() < 0.1)
    return [Batch(*(t.to(dtype) for t in buffer.sample(batch, rng))) for _ in range(n)]


def assert_same_networks(learner: SAC, ref: SAC, atol: float) -> None:
    for a, b in zip(learner.actor.parameters(), ref.actor.parameters()):
        torch.testing.assert_close(a, b, atol=atol, rtol=0)
    for mine, theirs in ((learner.critic, ref.critic), (learner.critic_target, ref.critic_target)):
        for a, b in zip(mine.parameters(), theirs.parameters()):
            torch.testing.assert_close(a, b, atol=atol, rtol=0)
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
    learner, ref = learner_pair(algo, hp, n_experts)
    trained = {name: p.detach().clone() for name, p in learner.critic.named_parameters()}
    for i, batch in enumerate(random_batches(6, 64, seed=1)):
        torch.manual_seed(100 + i)  # both consume the same random numbers in the same order
        stats = learner.update(batch)
        torch.manual_seed(100 + i)
        ref_stats = ref.update(batch)
        assert set(ref_stats) == set(stats)
        for key, value in ref_stats.items():
            assert float(stats[key]) == pytest.approx(float(value), rel=1e-9, abs=1e-12), key
    assert_same_networks(learner, ref, atol=1e-10)
    # The comparison is not vacuous: training moved every critic parameter by far more than the tolerance.
    for name, p in learner.critic.named_parameters():
        assert (p - trained[name]).abs().max() > 1e-5, name


@pytest.mark.parametrize("hp", [SACHyperParams(lb_loss="none", lb_weight=0.0),  # what smose finetune trains
                                SACHyperParams(policy_frequency=1)])  # balancing on: the load takes the noisy argmax
def test_tree_routed_update_equals_the_reference_implementation(float64, hp):
    """The controller ``smose finetune`` trains (experts chosen by fixed trees) through the fused update."""
    torch.manual_seed(0)
    base = make_actor("smose", N_OBS, N_ACT, -np.ones(N_ACT), np.full(N_ACT, 2.0), n_experts=4)
    states = np.random.default_rng(0).normal(size=(500, N_OBS)).astype(np.float32)
    labels = (states[:, 0] > 0).astype(np.int64) + 2 * (states[:, 1] > 0)  # not the router's argmax
    trees = fit_multiclass(base, states, labels, depth=2, env_id="Synthetic-v0")
    torch.manual_seed(1)
    learner = make_learner(TreeRoutedActor.from_smose(base, trees), hp, "fused")
    torch.manual_seed(1)
    ref = make_learner(TreeRoutedActor.from_smose(base, trees), hp, "autograd")
    assert type(learner) is SACLearner and type(ref) is SAC
    assert_same_networks(learner, ref, atol=0)
    before = learner.actor.expert_weight.detach().clone()
    for i, batch in enumerate(random_batches(6, 64, seed=1)):
        torch.manual_seed(100 + i)
        stats = learner.update(batch)
        torch.manual_seed(100 + i)
        ref_stats = ref.update(batch)
        for key, value in ref_stats.items():
            assert float(stats[key]) == pytest.approx(float(value), rel=1e-9, abs=1e-12), key
    assert_same_networks(learner, ref, atol=1e-10)
    assert (learner.actor.expert_weight - before).abs().max() > 1e-5  # the experts did learn


def test_float32_update_stays_close_to_the_reference():
    learner, ref = learner_pair("sac-l", SACHyperParams())
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


def test_twin_q_is_two_textbook_q_networks(float64):
    torch.manual_seed(0)
    twin = TwinQ(N_OBS, N_ACT)
    obs, action = torch.randn(16, N_OBS), torch.randn(16, N_ACT)
    q = twin(obs, action)
    for c in range(2):
        torch.testing.assert_close(q[c], linear_stack(twin, c)(torch.cat([obs, action], 1)).view(-1))


@pytest.mark.parametrize("first,then", [("fused", "autograd"), ("autograd", "fused")])
def test_either_path_continues_the_others_state(float64, first, then):
    """A checkpoint's state (networks, Adam moments, α, update count) carries over between the two paths."""
    learners = dict(zip(("fused", "autograd"), learner_pair("smose", SACHyperParams(policy_frequency=1))))
    batches = random_batches(6, 64, seed=5)
    for i, batch in enumerate(batches[:3]):
        torch.manual_seed(i)
        learners[first].update(batch)
    continued = learners[then]
    continued.load_state_dict(copy.deepcopy(learners[first].state_dict()))
    assert continued.n_updates == 3 and continued.actor_opt.state
    for i, batch in enumerate(batches[3:]):
        torch.manual_seed(10 + i)
        learners[first].update(batch)
        torch.manual_seed(10 + i)
        continued.update(batch)
    assert_same_networks(learners[first], continued, atol=1e-10)
    moments = [opt.state[p]["exp_avg_sq"] for opt, p in ((learners[first].actor_opt, learners[first].actor.router.bias),
                                                         (continued.actor_opt, continued.actor.router.bias))]
    torch.testing.assert_close(moments[0], moments[1], atol=1e-12, rtol=0)


class LinearGaussianActor(Actor):
    """An actor of a class the fused update has no passes for: one linear layer to the mean and the log-std."""

    algo = "linear-gaussian"

    def __init__(self, n_obs: int, n_act: int, action_low, action_high):
        super().__init__(n_obs, n_act, action_low, action_high)
        self.head = nn.Linear(n_obs, 2 * n_act)

    def forward(self, obs, router_noise=None) -> ActorOutput:
        mean, raw_log_std = self.head(obs).chunk(2, dim=-1)
        return ActorOutput(mean, squash_log_std(raw_log_std))


def test_an_actor_without_hand_written_passes_trains_with_autograd():
    torch.manual_seed(0)
    actor = LinearGaussianActor(N_OBS, N_ACT, -np.ones(N_ACT), np.ones(N_ACT))
    with pytest.raises(TypeError):
        SACLearner(actor, SACHyperParams())
    learner = make_learner(actor, SACHyperParams(policy_frequency=1), "fused")
    assert type(learner) is SAC
    before = copy.deepcopy(actor.state_dict())
    for batch in random_batches(3, 32, seed=6, dtype=torch.float32):
        stats = learner.update(batch)
    assert set(stats) == {"qf_loss", "qf_values", "actor_loss", "lb_loss", "alpha_loss"}
    assert all(torch.isfinite(v).all() for v in stats.values())
    assert not torch.equal(before["head.weight"], actor.head.weight)
    action, expert = learner.explore(torch.zeros(1, N_OBS))
    assert action.shape == (1, N_ACT) and expert is None


class TopTwoActor(SMOSEActor):
    """A change of the SMOSE actor (two experts mixed per state): the parent's hand-written passes would ignore it."""

    def forward(self, obs, router_noise=None) -> ActorOutput:
        out = super().forward(obs, router_noise)
        second = out.logits.scatter(-1, out.expert.unsqueeze(-1), float("-inf")).argmax(dim=-1)
        other = self.mixture(obs, out.logits, second)
        return ActorOutput((out.mean + other.mean) / 2, out.log_std, out.logits, out.expert, out.gate)


def test_a_subclass_of_an_actor_with_passes_trains_with_autograd():
    torch.manual_seed(0)
    actor = TopTwoActor(N_OBS, N_ACT, -np.ones(N_ACT), np.ones(N_ACT), n_experts=3)
    learner = make_learner(actor, SACHyperParams(policy_frequency=1), "fused")
    assert type(learner) is SAC
    before = actor.expert_weight.detach().clone()
    for batch in random_batches(2, 32, seed=7, dtype=torch.float32):
        learner.update(batch)
    assert not torch.equal(before, actor.expert_weight)


def test_make_learner_refuses_an_unknown_update():
    actor = make_actor("sac-s", N_OBS, N_ACT, -np.ones(N_ACT), np.ones(N_ACT))
    with pytest.raises(ValueError, match="unknown update"):
        make_learner(actor, SACHyperParams(), "numerical")


def test_hyperparams_come_from_the_training_configuration():
    """SACHyperParams has TrainConfig's defaults, and a config's hyperparams carry every shared field by name (λ as
    in effect for the chosen loss)."""
    import dataclasses

    from smose.training.config import TrainConfig

    assert TrainConfig().hyperparams() == SACHyperParams()
    config = TrainConfig(gamma=0.9, tau=0.01, actor_lr=1e-4, policy_frequency=3, autotune=False, alpha=0.5,
                         lb_loss="z-noisy", lb_noise="state")
    hp = config.hyperparams()
    for f in dataclasses.fields(SACHyperParams):
        expected = config.effective_lb_weight if f.name == "lb_weight" else getattr(config, f.name)
        assert getattr(hp, f.name) == expected, f.name
    assert hp.lb_weight == 0.001
