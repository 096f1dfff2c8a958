import warnings

import gymnasium as gym
import pytest

from smose.features import action_names, observation_names

TASKS = ["Hopper", "Walker2d", "Ant", "HalfCheetah", "Reacher", "Swimmer"]


@pytest.fixture(autouse=True)
def _mujoco_log_in_tmp(tmp_path, monkeypatch):
    """MuJoCo appends model-compiler warnings to MUJOCO_LOG.TXT in the working directory; keep it out of the repo."""
    monkeypatch.chdir(tmp_path)


def _make(env_id: str, **kwargs) -> gym.Env:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return gym.make(env_id, **kwargs)


@pytest.mark.parametrize("version", ["v4", "v5"])
@pytest.mark.parametrize("task", TASKS)
def test_names_match_the_real_env_sizes(task, version):
    env_id = f"{task}-{version}"
    env = _make(env_id)
    n_obs, n_act = env.observation_space.shape[0], env.action_space.shape[0]
    env.close()
    obs = observation_names(env_id, n_obs)
    act = action_names(env_id, n_act)
    assert len(obs) == n_obs and len(act) == n_act
    # Documented names, not the generic fallback, and no two components share a name.
    assert not any(name.startswith("obs[") for name in obs), obs
    assert not any(name.startswith("act[") for name in act), act
    assert len(set(obs)) == n_obs and len(set(act)) == n_act


def test_documented_names_sit_at_the_documented_positions():
    hopper = observation_names("Hopper-v5", 11)
    assert hopper[:3] == ["torso z", "torso angle", "thigh joint angle"]
    assert hopper[5] == "torso x velocity" and hopper[10] == "foot joint velocity"
    assert observation_names("Walker2d-v4", 17)[5] == "left thigh joint angle"
    ant = observation_names("Ant-v5", 105)
    assert ant[27] == "cfrc_ext[torso][0]" and ant[-1] == "cfrc_ext[ankle_4][5]"
    assert observation_names("Reacher-v4", 11)[-1] == "fingertip-target z"
    assert action_names("Ant-v4", 8)[0] == "back right hip torque"
    assert observation_names("Pendulum-v1", 3) == ["cos θ", "sin θ", "θ velocity"]
    assert action_names("Pendulum-v1", 1) == ["torque"]


def test_optional_layouts_of_real_envs_are_named():
    for env_id, kwargs, first in [
        ("Ant-v4", {"use_contact_forces": True}, None),
        ("Hopper-v5", {"exclude_current_positions_from_observation": False}, "torso x"),
        ("Swimmer-v5", {"exclude_current_positions_from_observation": False}, "tip x"),
    ]:
        env = _make(env_id, **kwargs)
        n_obs = env.observation_space.shape[0]
        env.close()
        names = observation_names(env_id, n_obs)
        assert len(names) == n_obs and not any(n.startswith("obs[") for n in names)
        if first:
            assert names[0] == first


def test_unknown_env_or_size_falls_back_to_generic_names():
    assert observation_names("MountainCarContinuous-v0", 2) == ["obs[0]", "obs[1]"]
    assert action_names("MountainCarContinuous-v0", 1) == ["act[0]"]
    assert observation_names("Hopper-v5", 4) == [f"obs[{i}]" for i in range(4)]
    assert action_names("Hopper-v5", 2) == ["act[0]", "act[1]"]
