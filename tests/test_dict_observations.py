"""Dict observations: flattened in sorted key order, the order recorded in model.json, features named by the keys."""

import json

import gymnasium as gym
import numpy as np
import pytest
from toy_envs import registered_env

from smose.api import SMOSE
from smose.cli import main
from smose.errors import SmoseError
from smose.serialization import check_env_compatible, load_model
from smose.tasks.envs import flatten_observation, make_env

ENV_ID = "SmoseDictPoint-v0"
# The sorted order of the entries below: "goal" (2), "position.x" (1), "position.y" (1), "velocity" (2).
NAMES = ["goal[0]", "goal[1]", "position.x", "position.y", "velocity[0]", "velocity[1]"]


class DictPoint(gym.Env):
    """A point on a plane pushed towards a goal; the entries are listed out of order on purpose."""

    def __init__(self, max_steps: int = 20):
        self.observation_space = gym.spaces.Dict({
            "velocity": gym.spaces.Box(-10, 10, (2,), np.float64),
            "position": gym.spaces.Dict({"y": gym.spaces.Box(-5, 5, (1,)), "x": gym.spaces.Box(-5, 5, (1,))}),
            "goal": gym.spaces.Box(-1, 1, (2,)),
        })
        self.action_space = gym.spaces.Box(-1, 1, (2,), np.float32)
        self.max_steps = max_steps

    def _obs(self) -> dict:
        pos = self.pos.astype(np.float32)
        return {"velocity": self.vel.copy(), "position": {"y": pos[1:], "x": pos[:1]}, "goal": self.goal.copy()}

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.pos, self.vel = self.np_random.uniform(-1, 1, 2), np.zeros(2)
        self.goal, self.t = self.np_random.uniform(-1, 1, 2).astype(np.float32), 0
        return self._obs(), {}

    def step(self, action):
        self.vel = 0.9 * self.vel + 0.1 * np.asarray(action, dtype=np.float64)
        self.pos = np.clip(self.pos + self.vel, -5, 5)
        self.t += 1
        return self._obs(), -float(np.linalg.norm(self.pos - self.goal)), False, self.t >= self.max_steps, {}


@pytest.fixture(scope="module", autouse=True)
def registered():
    with registered_env(ENV_ID, DictPoint):
        yield


def test_dict_observations_are_flattened_in_sorted_key_order():
    env = make_env(ENV_ID, seed=0)
    assert env.observation_space.shape == (6,)
    assert env.get_wrapper_attr("observation_keys") == [["goal", 2], ["position.x", 1], ["position.y", 1],
                                                        ["velocity", 2]]
    obs, _ = env.reset(seed=1)
    raw = env.unwrapped._obs()
    assert np.allclose(obs, np.concatenate([raw["goal"], raw["position"]["x"], raw["position"]["y"], raw["velocity"]]))
    obs, *_ = env.step(np.ones(2, dtype=np.float32))
    assert np.allclose(obs[4:], env.unwrapped.vel) and obs.dtype == np.float32


def test_a_dict_run_records_its_layout_and_names_its_features(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", "--env", ENV_ID, "--env-kwargs", "max_steps=10", "--steps", "60", "--learning-starts",
                 "40", "--batch-size", "8", "--experts", "2", "--eval-every", "0", "--eval-episodes", "1",
                 "--quiet", "--out", str(run_dir)]) == 0
    _, meta = load_model(run_dir)
    assert meta["observation_keys"] == [["goal", 2], ["position.x", 1], ["position.y", 1], ["velocity", 2]]
    assert main(["eval", str(run_dir), "--episodes", "1"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["mean_length"] == 10  # max_steps=10 kept
    assert main(["export", str(run_dir), "--format", "json", "--out", str(tmp_path / "p.json")]) == 0
    assert json.loads((tmp_path / "p.json").read_text())["observation_names"] == NAMES
    assert main(["distill", str(run_dir), "--depth", "1", "--episodes", "1", "--eval-episodes", "1",
                 "--kind", "multiclass"]) == 0
    assert json.loads((run_dir / "trees" / "multiclass.json").read_text())["feature_names"] == NAMES

    model = SMOSE.load(run_dir)
    env = make_env(ENV_ID, env_kwargs={"max_steps": 10})
    obs, _ = env.reset(seed=0)
    action, _ = model.predict(env.unwrapped._obs())  # the env's own dict, flattened as in training
    assert np.allclose(action, model.predict(obs)[0])


def test_a_model_refuses_an_env_with_another_layout(tmp_path):
    model = SMOSE(ENV_ID, n_experts=2, learning_starts=10, batch_size=4, eval_every=0)
    model.save(tmp_path / "m")
    _, meta = load_model(tmp_path / "m")
    box_env = make_env("Pendulum-v1")  # sizes aside, a Box observation is another layout
    meta_other = dict(meta, observation_keys=[["a", 6]])
    with pytest.raises(SmoseError, match=r"observation layout Dict keys a \(6\)"):
        check_env_compatible(meta_other, make_env(ENV_ID), tmp_path / "m")
    with pytest.raises(SmoseError, match="does not fit"):
        check_env_compatible(meta, box_env, tmp_path / "m")


def test_dict_entries_that_are_not_boxes_are_refused():
    with registered_env("SmoseDictDiscrete-v0", lambda: _with_discrete_entry()), \
            pytest.raises(SmoseError, match="Discrete entry 'mode'"):
        make_env("SmoseDictDiscrete-v0")


def _with_discrete_entry() -> gym.Env:
    env = DictPoint()
    env.observation_space = gym.spaces.Dict({"mode": gym.spaces.Discrete(2), "goal": gym.spaces.Box(-1, 1, (2,))})
    return env


def test_flatten_observation_keeps_a_batch_axis_and_refuses_mismatched_entries():
    keys = [["a", 2], ["b", 1]]
    single = {"a": np.array([1.0, 2.0]), "b": np.float32(3.0)}
    assert flatten_observation(single, keys).tolist() == [1.0, 2.0, 3.0]
    one = {"a": np.array([[1.0, 2.0]]), "b": np.array([3.0])}  # a batch of one: the leading axis stays
    assert flatten_observation(one, keys).tolist() == [[1.0, 2.0, 3.0]]
    two = {"a": np.array([[1.0, 2.0], [4.0, 5.0]]), "b": np.array([3.0, 6.0])}
    assert flatten_observation(two, keys).tolist() == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    with pytest.raises(SmoseError, match="different numbers of observations"):
        flatten_observation({"a": np.zeros(4), "b": np.zeros(1)}, keys)
    with pytest.raises(SmoseError, match="'a' has 3 numbers; the model reads 2"):
        flatten_observation({"a": np.zeros(3), "b": np.zeros(1)}, keys)
