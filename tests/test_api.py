import numpy as np
import pytest
import torch
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor

from smose import SMOSE, SmoseError
from smose.tasks.envs import make_env


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A SMOSE agent after a few hundred real updates on Pendulum, saved to disk."""
    model = SMOSE("Pendulum-v1", n_experts=4, seed=3, learning_starts=200, batch_size=64, eval_every=0)
    model.learn(600)
    path = tmp_path_factory.mktemp("model")
    model.save(path)
    return model, path


def test_learn_counts_steps_and_changes_weights():
    model = SMOSE("Pendulum-v1", n_experts=3, seed=0, learning_starts=50, batch_size=32, eval_every=0)
    before = model.router_weights["weight"].copy()
    model.learn(120)
    assert model.num_timesteps == 120
    assert not np.allclose(before, model.router_weights["weight"])
    model.learn(30)
    assert model.num_timesteps == 150


def test_predict_single_and_batched(trained):
    model, _ = trained
    obs = np.random.default_rng(0).normal(size=(7, 3)).astype(np.float32)
    batch_action, state = model.predict(obs, deterministic=True)
    assert state is None and batch_action.shape == (7, 1)
    for i in range(7):
        single, _ = model.predict(obs[i])
        assert single.shape == (1,)
        np.testing.assert_allclose(single, batch_action[i], rtol=0, atol=1e-6)
    assert np.all(np.abs(batch_action) <= 2.0)  # Pendulum torque bounds
    stochastic, _ = model.predict(np.repeat(obs[:1], 200, 0), deterministic=False)
    assert stochastic.std() > 0
    with pytest.raises(SmoseError):
        model.predict(np.zeros(5))


def test_save_load_gives_identical_actions(trained):
    model, path = trained
    loaded = SMOSE.load(path)
    obs = np.random.default_rng(1).normal(size=(500, 3)).astype(np.float32) * 3
    for mode in ("gated", "linear"):
        model.mode = loaded.mode = mode
        a, _ = model.predict(obs)
        b, _ = loaded.predict(obs)
        np.testing.assert_array_equal(a, b)
    model.mode = loaded.mode = "gated"
    for key, value in model.router_weights.items():
        np.testing.assert_array_equal(value, loaded.router_weights[key])
    for key, value in model.expert_weights.items():
        np.testing.assert_array_equal(value, loaded.expert_weights[key])
    assert loaded.config.experts == 4 and loaded.env_id == "Pendulum-v1"
    with pytest.raises(SmoseError, match="loaded model"):
        loaded.learn(10)


def test_sb3_evaluate_policy_runs_on_a_loaded_model(trained):
    _, path = trained
    loaded = SMOSE.load(path)
    env = Monitor(make_env("Pendulum-v1", seed=0))
    mean, std = evaluate_policy(loaded, env, n_eval_episodes=2, deterministic=True)
    assert np.isfinite(mean) and mean < 0  # Pendulum returns are negative costs
    ours = loaded.evaluate(episodes=2, seed=0)
    assert set(ours) >= {"mean", "std", "expert_usage"} and abs(sum(ours["expert_usage"]) - 1) < 1e-6


def test_inspection_shapes(trained):
    model, _ = trained
    router, experts = model.router_weights, model.expert_weights
    assert router["weight"].shape == (4, 3) and router["bias"].shape == (4,)
    assert experts["mean_weight"].shape == (4, 1, 3) and experts["log_std_bias"].shape == (4, 1)
    np.testing.assert_array_equal(
        torch.as_tensor(experts["mean_weight"]), model.actor.expert_weight.detach()[:, :1]
    )


@pytest.mark.parametrize("algo", ["sac-l", "sac-m", "sac-s"])
def test_dense_baselines_share_the_api(algo, tmp_path):
    model = SMOSE("Pendulum-v1", algo=algo, seed=0, learning_starts=20, batch_size=16, eval_every=0)
    model.learn(40)
    model.save(tmp_path)
    loaded = SMOSE.load(tmp_path)
    obs = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    np.testing.assert_array_equal(model.predict(obs)[0], loaded.predict(obs)[0])
    with pytest.raises(SmoseError, match="dense"):
        _ = loaded.router_weights


def test_unsupported_envs_are_refused_clearly():
    with pytest.raises(SmoseError, match="Discrete action space"):
        SMOSE("CartPole-v1")
    with pytest.raises(SmoseError, match="did you mean 'Hopper-v5'"):
        SMOSE("Hoper-v5")
    with pytest.raises(SmoseError, match="--experts must be positive"):
        SMOSE("Pendulum-v1", n_experts=0)


def test_an_env_passed_in_trains_with_its_own_constructor_arguments():
    import gymnasium as gym

    env = gym.make("Pendulum-v1", g=2.0, max_episode_steps=50, render_mode="rgb_array")
    model = SMOSE(env, n_experts=2, learning_starts=100, batch_size=32, eval_every=0)
    assert model.config.env_kwargs == {"g": 2.0, "max_episode_steps": 50}  # not render_mode: rendering is per use
    trainer_env = model._trainer.env.unwrapped
    assert trainer_env.g == 2.0 and model._trainer.env.spec.max_episode_steps == 50
    assert SMOSE(gym.make("Pendulum-v1"), n_experts=2).config.env_kwargs == {}  # the registration's defaults
    given = SMOSE(env, n_experts=2, env_kwargs={"g": 3.0}).config.env_kwargs  # an explicit argument wins
    assert given == {"g": 3.0, "max_episode_steps": 50}
