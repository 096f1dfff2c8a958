import warnings
from pathlib import Path

import gymnasium as gym
import pytest

from smose.tasks.features import action_names, observation_names

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


# ---- names derived from the MuJoCo model --------------------------------------------------------------------------
# The expected lists below are Gymnasium's documented observation and action tables (the "Name (in corresponding XML
# file)" and "Type (Unit)" columns of each env's docs), written out by hand: slide joints give "position"/"velocity",
# hinge joints "angle"/"angular velocity", the free joint x, y, z, a quaternion, and linear and angular velocities.
def _joints(names: str, kind: str) -> list[str]:
    return [f"{name} {kind}" for name in names.split()]


HOPPER_DOC = (["rootz position", "rooty angle"] + _joints("thigh_joint leg_joint foot_joint", "angle")
              + ["rootx velocity", "rootz velocity", "rooty angular velocity"]
              + _joints("thigh_joint leg_joint foot_joint", "angular velocity"))
WALKER_JOINTS = "thigh_joint leg_joint foot_joint thigh_left_joint leg_left_joint foot_left_joint"
WALKER_DOC = (["rootz position", "rooty angle"] + _joints(WALKER_JOINTS, "angle")
              + ["rootx velocity", "rootz velocity", "rooty angular velocity"]
              + _joints(WALKER_JOINTS, "angular velocity"))
CHEETAH_JOINTS = "bthigh bshin bfoot fthigh fshin ffoot"
CHEETAH_DOC = (["rootz position", "rooty angle"] + _joints(CHEETAH_JOINTS, "angle")
               + ["rootx velocity", "rootz velocity", "rooty angular velocity"]
               + _joints(CHEETAH_JOINTS, "angular velocity"))
ANT_JOINTS = "hip_1 ankle_1 hip_2 ankle_2 hip_3 ankle_3 hip_4 ankle_4"
ANT_DOC = (["root z", "root quat w", "root quat x", "root quat y", "root quat z"] + _joints(ANT_JOINTS, "angle")
           + ["root x velocity", "root y velocity", "root z velocity",
              "root x angular velocity", "root y angular velocity", "root z angular velocity"]
           + _joints(ANT_JOINTS, "angular velocity"))
# Ant's cfrc_ext: the 13 bodies of ant.xml after the world body, in tree order (the lower legs are unnamed in the XML
# and called after their ankle joints, as the hand-written table does).
ANT_BODIES = ("torso front_left_leg aux_1 ankle_1 front_right_leg aux_2 ankle_2 back_leg aux_3 ankle_3 "
              "right_back_leg aux_4 ankle_4").split()
SWIMMER_DOC = (_joints("free_body_rot motor1_rot motor2_rot", "angle") + ["slider1 velocity", "slider2 velocity"]
               + _joints("free_body_rot motor1_rot motor2_rot", "angular velocity"))
PENDULUM_DOC = ["slider position", "hinge angle", "slider velocity", "hinge angular velocity"]
HUMANOID_JOINTS = ("abdomen_z abdomen_y abdomen_x right_hip_x right_hip_z right_hip_y right_knee left_hip_x "
                   "left_hip_z left_hip_y left_knee right_shoulder1 right_shoulder2 right_elbow left_shoulder1 "
                   "left_shoulder2 left_elbow")
HUMANOID_BODIES = ("torso lwaist pelvis right_thigh right_shin right_foot left_thigh left_shin left_foot "
                   "right_upper_arm right_lower_arm left_upper_arm left_lower_arm").split()


def _derived(env_id: str, **kwargs) -> tuple[list[str] | None, list[str] | None]:
    from smose.tasks.features import mujoco_action_names, mujoco_observation_names

    env = _make(env_id, **kwargs)
    try:
        return (mujoco_observation_names(env.unwrapped, env.observation_space.shape[0]),
                mujoco_action_names(env.unwrapped, env.action_space.shape[0]))
    finally:
        env.close()


@pytest.mark.parametrize("env_id, kwargs, expected_obs, expected_act", [
    ("Hopper-v5", {}, HOPPER_DOC, "thigh_joint leg_joint foot_joint".split()),
    ("Hopper-v5", {"exclude_current_positions_from_observation": False}, ["rootx position"] + HOPPER_DOC, None),
    ("Hopper-v4", {}, HOPPER_DOC, None),
    ("Walker2d-v5", {}, WALKER_DOC, WALKER_JOINTS.split()),
    ("HalfCheetah-v5", {}, CHEETAH_DOC, CHEETAH_JOINTS.split()),
    ("Ant-v5", {"include_cfrc_ext_in_observation": False}, ANT_DOC,
     "hip_4 ankle_4 hip_1 ankle_1 hip_2 ankle_2 hip_3 ankle_3".split()),
    ("Ant-v5", {}, ANT_DOC + [f"cfrc_ext[{b}][{i}]" for b in ANT_BODIES for i in range(6)], None),
    ("Ant-v5", {"exclude_current_positions_from_observation": False},
     ["root x", "root y"] + ANT_DOC + [f"cfrc_ext[{b}][{i}]" for b in ANT_BODIES for i in range(6)], None),
    ("Ant-v4", {"use_contact_forces": True},
     ANT_DOC + [f"cfrc_ext[{b}][{i}]" for b in ["world"] + ANT_BODIES for i in range(6)], None),
    ("Swimmer-v5", {}, SWIMMER_DOC, "motor1_rot motor2_rot".split()),
    ("InvertedPendulum-v5", {}, PENDULUM_DOC, ["slider"]),
])
def test_names_derived_from_the_model_follow_the_documented_layouts(env_id, kwargs, expected_obs, expected_act):
    obs, act = _derived(env_id, **kwargs)
    assert obs == expected_obs
    if expected_act is not None:
        assert act == expected_act


def test_humanoid_v5_names_follow_its_348_documented_observations():
    obs, act = _derived("Humanoid-v5")
    assert len(obs) == 348 and len(set(obs)) == 348
    assert obs[:5] == ["root z", "root quat w", "root quat x", "root quat y", "root quat z"]
    assert obs[5:22] == _joints(HUMANOID_JOINTS, "angle")  # documented indices 5-21
    assert obs[22:28] == ["root x velocity", "root y velocity", "root z velocity",
                          "root x angular velocity", "root y angular velocity", "root z angular velocity"]
    assert obs[28:45] == _joints(HUMANOID_JOINTS, "angular velocity")  # documented indices 28-44
    # then cinert (13 bodies x 10), cvel (13 x 6), qfrc_actuator (17 joints), cfrc_ext (13 x 6), world body excluded
    assert obs[45:175] == [f"cinert[{b}][{i}]" for b in HUMANOID_BODIES for i in range(10)]
    assert obs[175:253] == [f"cvel[{b}][{i}]" for b in HUMANOID_BODIES for i in range(6)]
    assert obs[253:270] == _joints(HUMANOID_JOINTS, "actuator force")
    assert obs[270:] == [f"cfrc_ext[{b}][{i}]" for b in HUMANOID_BODIES for i in range(6)]
    assert act == ("abdomen_y abdomen_z abdomen_x right_hip_x right_hip_z right_hip_y right_knee left_hip_x "
                   "left_hip_z left_hip_y left_knee right_shoulder1 right_shoulder2 right_elbow left_shoulder1 "
                   "left_shoulder2 left_elbow").split()
    smaller, _ = _derived("Humanoid-v5", include_cinert_in_observation=False, include_cvel_in_observation=False)
    assert smaller == obs[:45] + obs[253:]


def test_derived_names_point_at_the_values_they_name():
    """The named qpos/qvel entries of a real observation hold those coordinates of the simulator state."""
    env = _make("Ant-v5")
    obs, _ = env.reset(seed=0)
    names, _ = _derived("Ant-v5")
    data = env.unwrapped.data
    assert obs[names.index("hip_3 angle")] == pytest.approx(data.qpos[11])
    assert obs[names.index("root z velocity")] == pytest.approx(data.qvel[2])
    env.close()


def test_other_envs_keep_the_table_or_the_generic_names():
    from smose.tasks.features import mujoco_observation_names

    reacher = _make("Reacher-v5")  # its observation is computed (cos, sin, distances), not a qpos/qvel layout
    assert mujoco_observation_names(reacher.unwrapped, 10) is None
    assert observation_names("Reacher-v5", 10, reacher)[0] == "cos arm 1 angle"  # the hand-written table
    reacher.close()
    car = _make("MountainCarContinuous-v0")  # no MuJoCo model
    assert observation_names("MountainCarContinuous-v0", 2, car) == ["obs[0]", "obs[1]"]
    assert action_names("MountainCarContinuous-v0", 1, car) == ["act[0]"]
    car.close()
    # the table still wins where it exists; an env it does not cover gets the derived names
    hopper = _make("Hopper-v5")
    assert observation_names("Hopper-v5", 11, hopper)[0] == "torso z"
    hopper.close()
    pendulum = _make("InvertedPendulum-v5")
    assert observation_names("InvertedPendulum-v5", 4, pendulum) == PENDULUM_DOC
    assert action_names("InvertedPendulum-v5", 1, pendulum) == ["slider"]
    pendulum.close()


def test_the_feature_names_module_needs_numpy_only():
    import subprocess
    import sys

    import smose.tasks.features

    code = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('features', sys.argv[1]); "
            "spec.loader.exec_module(importlib.util.module_from_spec(spec)); "
            "heavy = {'gymnasium', 'mujoco', 'torch', 'smose'} & set(sys.modules); assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code, smose.tasks.features.__file__], check=True)


def test_distill_and_export_name_the_features_of_an_env_without_a_table(tmp_path):
    from smose.tasks.envs import feature_names
    from smose.training.config import TrainConfig
    from smose.training.trainer import train

    run_dir = train(TrainConfig(env="InvertedPendulum-v5", steps=60, learning_starts=50, batch_size=8, experts=2,
                                eval_every=0, eval_episodes=1), tmp_path / "run", progress=False)
    import json

    meta = json.loads((run_dir / "model.json").read_text())
    assert feature_names(meta) == (PENDULUM_DOC, ["slider"])
    from smose.export import export_policy

    exported = json.loads(export_policy(run_dir, "json", tmp_path / "p.json").read_text())
    assert exported["observation_names"] == PENDULUM_DOC and exported["action_names"] == ["slider"]
    from smose.interpret.distill import distill

    distill(run_dir, depth=1, episodes=1, eval_episodes=1, kind="multiclass")
    assert json.loads((run_dir / "trees" / "multiclass.json").read_text())["feature_names"] == PENDULUM_DOC


def test_an_env_built_on_a_users_model_is_named_from_that_model(tmp_path):
    """A custom xml_file may have other joints than the documented layout: the hand-written table would misname
    them, so the names come from the model (here Hopper with its thigh joint renamed hip)."""
    from gymnasium.envs import mujoco as gym_mujoco

    from smose.tasks.envs import feature_names

    xml = (Path(gym_mujoco.__file__).parent / "assets" / "hopper.xml").read_text()
    assert xml.count('"thigh_joint"') == 2  # the joint and its actuator
    custom = tmp_path / "hopper.xml"
    custom.write_text(xml.replace('"thigh_joint"', '"hip"'))
    env = _make("Hopper-v5", xml_file=str(custom))
    obs, act = observation_names("Hopper-v5", 11, env), action_names("Hopper-v5", 3, env)
    env.close()
    assert obs[2] == "hip angle" and obs[8] == "hip angular velocity" and act[0] == "hip"
    meta = {"env_id": "Hopper-v5", "env_kwargs": {"xml_file": str(custom)}, "architecture": {"n_obs": 11, "n_act": 3}}
    assert feature_names(meta) == (obs, act)
    custom.unlink()  # the model cannot be rebuilt here: generic names, never the table's for another model
    assert feature_names(meta) == ([f"obs[{i}]" for i in range(11)], [f"act[{j}]" for j in range(3)])
    # the env's own model keeps the documented names
    assert observation_names("Hopper-v5", 11)[2] == "thigh joint angle"


def test_pusher_and_double_pendulum_names_point_at_the_values_they_name():
    """Envs whose observation is computed (sines, body centres, constraint forces), not a qpos/qvel layout: the
    hand-written tables, checked against the simulator state."""
    import numpy as np

    pusher = _make("Pusher-v5")
    obs, _ = pusher.reset(seed=0)
    names = observation_names("Pusher-v5", 23, pusher)
    data = pusher.unwrapped
    assert obs[names.index("elbow flex angle")] == pytest.approx(data.data.qpos[3])
    assert obs[names.index("wrist roll angular velocity")] == pytest.approx(data.data.qvel[6])
    assert obs[names.index("object y")] == pytest.approx(data.get_body_com("object")[1])
    assert obs[names.index("fingertip z")] == pytest.approx(data.get_body_com("tips_arm")[2])
    assert action_names("Pusher-v5", 7, pusher)[3] == "elbow flex torque"
    pusher.close()
    for version, n_obs in (("v5", 9), ("v4", 11)):
        pendulum = _make(f"InvertedDoublePendulum-{version}")
        obs, _ = pendulum.reset(seed=0)
        names = observation_names(f"InvertedDoublePendulum-{version}", n_obs, pendulum)
        qpos = pendulum.unwrapped.data.qpos
        assert obs[names.index("cart position")] == pytest.approx(qpos[0])
        assert obs[names.index("sin pole 2 angle")] == pytest.approx(np.sin(qpos[2]))
        assert obs[names.index("cos pole 1 angle")] == pytest.approx(np.cos(qpos[1]))
        assert len(set(names)) == n_obs
        pendulum.close()


def test_every_gymnasium_mujoco_v5_env_is_named():
    ids = sorted(env_id for env_id, spec in gym.registry.items()
                 if env_id.endswith("-v5") and "mujoco" in str(spec.entry_point))
    assert len(ids) >= 11, ids
    for env_id in ids:
        env = _make(env_id)
        obs_names = observation_names(env_id, env.observation_space.shape[0], env)
        act_names = action_names(env_id, env.action_space.shape[0], env)
        env.close()
        generic = [name for name in obs_names + act_names if name.startswith(("obs[", "act["))]
        assert not generic, (env_id, generic[:3])
        assert len(set(obs_names)) == len(obs_names), env_id
