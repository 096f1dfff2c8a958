"""The other suites for real (pip install 'smose[suites]'): DeepMind Control through Shimmy's ids and Meta-World's MT1
train, evaluate, distil, explain, export and resume from the CLI; their features are named right; every command
rebuilds the same env. Skipped where the suites are not installed; `make test` installs them and requires them
(SMOSE_REQUIRE_SUITES=1)."""

import importlib.util
import json
import os

import numpy as np
import pytest

from smose.cli import main
from smose.serialization import load_model
from smose.tasks import suites
from smose.tasks.envs import make_env
from smose.tasks.features import action_names, observation_names

MISSING = [name for name in ("shimmy", "dm_control", "metaworld") if importlib.util.find_spec(name) is None]
if MISSING and os.environ.get("SMOSE_REQUIRE_SUITES"):
    raise RuntimeError(f"SMOSE_REQUIRE_SUITES is set but {', '.join(MISSING)} cannot be imported")
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"needs pip install 'smose[suites]' ({', '.join(MISSING)} "
                                                      "not installed)")

WALKER = "dm_control/walker-walk-v0"
MT1 = "Meta-World/MT1"
SHORT = "max_episode_steps=60"  # gymnasium.make's own argument: short episodes keep the tests quick


def _names(env_id, env):
    n_obs, n_act = env.observation_space.shape[0], env.action_space.shape[0]
    return observation_names(env_id, n_obs, env), action_names(env_id, n_act, env)


def test_deepmind_control_features_are_named_by_key_and_physics():
    env = make_env(WALKER, seed=0)
    obs, _ = env.reset(seed=3)
    obs, *_ = env.step(env.action_space.sample())
    obs_names, act_names = _names(WALKER, env)
    assert len(obs_names) == 24 and act_names == ["right_hip", "right_knee", "right_ankle", "left_hip", "left_knee",
                                                  "left_ankle"]
    physics = env.unwrapped.physics
    value = dict(zip(obs_names, obs))
    assert value["height"] == pytest.approx(physics.named.data.xpos["torso", "z"], abs=1e-6)
    for body in ("torso", "right_leg", "left_foot"):
        for entry in ("xx", "xz"):
            assert value[f"{body} orientation {entry}"] == pytest.approx(physics.named.data.xmat[body, entry], abs=1e-6)
    assert value["left_knee angular velocity"] == pytest.approx(physics.named.data.qvel["left_knee"], abs=1e-5)
    assert value["rootz velocity"] == pytest.approx(physics.named.data.qvel["rootz"], abs=1e-5)
    env.close()

    env = make_env("dm_control/cheetah-run-v0", seed=0)
    obs, _ = env.reset(seed=1)
    obs_names, _ = _names("dm_control/cheetah-run-v0", env)
    qpos = env.unwrapped.physics.named.data.qpos
    for joint in ("rootz", "bthigh", "ffoot"):
        name = next(n for n in obs_names if n.startswith(joint + " ") and "velocity" not in n)
        assert obs[obs_names.index(name)] == pytest.approx(qpos[joint], abs=1e-6)
    assert not any(n.startswith("rootx ") and "velocity" not in n for n in obs_names)  # x is left out
    env.close()

    env = make_env("dm_control/cartpole-swingup-v0", seed=0)
    obs, _ = env.reset(seed=2)
    obs_names, act_names = _names("dm_control/cartpole-swingup-v0", env)
    assert obs_names[:3] == ["cart position", "pole_1 angle cos", "pole_1 angle sin"] and act_names == ["slider"]
    physics = env.unwrapped.physics
    assert obs[0] == pytest.approx(float(physics.named.data.qpos["slider"][0]), abs=1e-6)
    angle = float(physics.named.data.qpos["hinge_1"][0])
    assert obs[1:3] == pytest.approx([np.cos(angle), np.sin(angle)], abs=1e-5)
    env.close()


def test_meta_world_features_follow_its_documented_layout():
    env = make_env(MT1, seed=0, env_kwargs={"env_name": "push-v3"})
    obs, _ = env.reset(seed=0)
    first = obs.copy()
    obs, _, _, _, info = env.step(np.array([0.5, 0.0, 0.0, 0.0], dtype=np.float32))
    assert "success" in info
    obs_names, act_names = _names(MT1, env)
    assert len(obs_names) == 39 and act_names == ["hand dx", "hand dy", "hand dz", "gripper effort"]
    mw = env.unwrapped
    value = dict(zip(obs_names, obs))
    assert [value[f"hand {a}"] for a in "xyz"] == pytest.approx(mw.get_endeff_pos(), abs=1e-5)
    assert [value[f"goal {a}"] for a in "xyz"] == pytest.approx(mw._get_pos_goal(), abs=1e-5)
    assert np.linalg.norm(mw._get_pos_goal()) > 0  # MT1 shows the goal
    assert [value[f"object 1 {a}"] for a in "xyz"] == pytest.approx(mw._get_pos_objects()[:3], abs=1e-5)
    assert [value[f"previous hand {a}"] for a in "xyz"] == pytest.approx(first[:3], abs=1e-6)
    assert [value[f"object 2 {a}"] for a in "xyz"] == [0.0, 0.0, 0.0]  # push has one object
    env.close()



def _goals(env, first_seed, episodes=4):
    """The goal of each of ``episodes`` episodes: the first reset with ``first_seed``, the others continuing."""
    return [env.reset(seed=first_seed if i == 0 else None)[0][-3:].round(4).tolist() for i in range(episodes)]


def test_meta_world_episodes_follow_the_reset_seed():
    # Meta-World ignores reset(seed=...) and MT1 draws each episode's task from the env's own generator: without
    # smose's reseeding every seed (training, evaluation, sweep seeds) would see one goal sequence.
    envs = [make_env(MT1, env_kwargs={"env_name": "reach-v3"}) for _ in range(2)]
    assert _goals(envs[0], 0) == _goals(envs[1], 0)  # the same seed: the same goals
    assert _goals(envs[0], 1) != _goals(envs[1], 0)  # another seed: other goals
    assert _goals(envs[0], 0) == _goals(envs[1], 0)  # reseeding a used env starts the sequence again
    for env in envs:
        env.close()

def test_meta_world_mt1_without_its_task_is_refused_in_one_line(capsys):
    assert main(["train", "--env", MT1, "--steps", "10", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--env-kwargs env_name=reach-v3" in err
    assert main(["train", "--env", MT1, "--env-kwargs", "env_name=reach-v99", "--steps", "10", "--quiet"]) == 2
    assert "reach-v99" in capsys.readouterr().err


def _last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.parametrize("env_id, env_kwargs, success", [
    (WALKER, [SHORT], False),
    (MT1, ["env_name=reach-v3", SHORT], True),
])
def test_a_suite_trains_evaluates_distils_explains_exports_and_resumes(tmp_path, capsys, env_id, env_kwargs, success):
    run_dir = tmp_path / "run"
    assert main(["train", "--env", env_id, "--env-kwargs", *env_kwargs, "--steps", "240", "--learning-starts", "120",
                 "--batch-size", "32", "--experts", "3", "--eval-every", "120", "--eval-episodes", "2",
                 "--checkpoint-every", "120", "--quiet", "--out", str(run_dir)]) == 0
    assert ("final_eval_success_rate" in _last_json(capsys)) == success
    config = json.loads((run_dir / "config.json").read_text())
    assert config["versions"]["mujoco"] and ("metaworld" if success else "dm-control") in config["versions"]
    _, meta = load_model(run_dir)
    assert meta["env_id"] == env_id and meta["env_kwargs"]["max_episode_steps"] == 60

    # Every command rebuilds the same env from the run's record: two evaluations agree to the last digit.
    results = []
    for _ in range(2):
        assert main(["eval", str(run_dir), "--episodes", "2"]) == 0
        results.append(_last_json(capsys))
    assert results[0]["returns"] == results[1]["returns"] and results[0]["mean_length"] == 60
    assert ("success_rate" in results[0]) == success

    assert main(["distill", str(run_dir), "--depth", "2", "--episodes", "2", "--eval-episodes", "2"]) == 0
    out = capsys.readouterr().out
    assert ("success" in out) == success
    trees = json.loads((run_dir / "trees" / "multiclass.json").read_text())
    names, _ = _names(env_id, make_env(env_id, env_kwargs=meta["env_kwargs"]))
    assert trees["feature_names"] == names and not any(n.startswith("obs[") for n in names)

    assert main(["explain", str(run_dir), "--episodes", "1"]) == 0
    report = (run_dir / "report" / "report.md").read_text()
    assert "obs[" not in report and "act[" not in report
    assert ("success rate" in report) == success

    for fmt, name in (("json", "p.json"), ("python", "p.py")):  # each export checks itself against the library
        assert main(["export", str(run_dir), "--format", fmt, "--out", str(tmp_path / name)]) == 0
    exported = json.loads((tmp_path / "p.json").read_text())
    assert exported["observation_names"] == names
    # the export names every argument the env is built with, MT1's fixed goal seed included
    assert exported["env_kwargs"] == suites.construction_kwargs(env_id, meta["env_kwargs"])
    assert ("seed" in exported["env_kwargs"]) == (env_id == MT1)

    # fine-tuning under the trees rebuilds the same env and records its arguments
    tuned = tmp_path / "tuned"
    assert main(["finetune", str(run_dir), "--steps", "30", "--tree-kind", "multiclass", "--quiet",
                 "--out", str(tuned)]) == 0
    assert json.loads((tuned / "config.json").read_text())["env_kwargs"] == meta["env_kwargs"]
    capsys.readouterr()
    assert main(["eval", str(tuned), "--episodes", "1"]) == 0
    assert _last_json(capsys)["mean_length"] == 60

    assert main(["train", "--resume", str(run_dir), "--steps", "300", "--quiet"]) == 0
    _, meta = load_model(run_dir)
    assert meta["trained_steps"] == 300


def test_a_meta_world_sweep_names_its_runs_after_the_task(tmp_path):
    from smose.experiments.sweep import Grid, expand

    grid = Grid(envs=(MT1,), algos=("smose", "sac-l"), seeds=(0,), steps=1000, env_kwargs=(("env_name", "reach-v3"),))
    assert [run.name for run in expand(grid, tmp_path)] == ["Meta-World~MT1-reach-v3__smose__s0",
                                                            "Meta-World~MT1-reach-v3__sac-l__s0"]
    grid = Grid(envs=(WALKER,), algos=("smose",), seeds=(1,), steps=1000)
    assert [run.name for run in expand(grid, tmp_path)] == ["dm_control~walker-walk-v0__smose__s1"]
