"""Readable names of observation and action components, so rules and plots speak of "torso angle", not obs[1].

The hand-written tables follow the observation and action tables of Gymnasium's MuJoCo documentation (v4 and v5) for
the paper's tasks; a name list is only used when its length matches the model's size. Any other Gymnasium MuJoCo env
(or one built with other options) is named from its physics model and observation layout: joint names for the
position and velocity coordinates, body names for the per-body blocks (``cinert``, ``cvel``, ``cfrc_ext``), actuator
names for the actions. The suites of smose.tasks.suites (DeepMind Control, Meta-World) are named by their documented
layouts and physics; other Dict observations by their keys. Everything else falls back to ``obs[i]`` / ``act[i]``.
This module needs numpy only: callers pass an env they already made.
"""

from __future__ import annotations

from typing import Any

_HOPPER_OBS = [
    "torso z", "torso angle", "thigh joint angle", "leg joint angle", "foot joint angle",
    "torso x velocity", "torso z velocity", "torso angular velocity",
    "thigh joint velocity", "leg joint velocity", "foot joint velocity",
]
_HOPPER_ACT = ["thigh torque", "leg torque", "foot torque"]

_WALKER_OBS = [
    "torso z", "torso angle",
    "thigh joint angle", "leg joint angle", "foot joint angle",
    "left thigh joint angle", "left leg joint angle", "left foot joint angle",
    "torso x velocity", "torso z velocity", "torso angular velocity",
    "thigh joint velocity", "leg joint velocity", "foot joint velocity",
    "left thigh joint velocity", "left leg joint velocity", "left foot joint velocity",
]
_WALKER_ACT = ["thigh torque", "leg torque", "foot torque", "left thigh torque", "left leg torque", "left foot torque"]

_CHEETAH_OBS = [
    "tip z", "tip angle",
    "back thigh angle", "back shin angle", "back foot angle",
    "front thigh angle", "front shin angle", "front foot angle",
    "tip x velocity", "tip z velocity", "tip angular velocity",
    "back thigh velocity", "back shin velocity", "back foot velocity",
    "front thigh velocity", "front shin velocity", "front foot velocity",
]
_CHEETAH_ACT = [
    "back thigh torque", "back shin torque", "back foot torque",
    "front thigh torque", "front shin torque", "front foot torque",
]

_ANT_LEGS = ["front left", "front right", "back left", "back right"]
_ANT_OBS = (
    ["torso z", "torso quat w", "torso quat x", "torso quat y", "torso quat z"]
    + [f"{leg} {joint} angle" for leg in _ANT_LEGS for joint in ("hip", "ankle")]
    + ["torso x velocity", "torso y velocity", "torso z velocity",
       "torso x angular velocity", "torso y angular velocity", "torso z angular velocity"]
    + [f"{leg} {joint} velocity" for leg in _ANT_LEGS for joint in ("hip", "ankle")]
)
# Actuator order in ant.xml: the back right leg comes first.
_ANT_ACT = [f"{leg} {joint} torque" for leg in ["back right", "front left", "front right", "back left"]
            for joint in ("hip", "ankle")]
# Bodies whose external contact forces (cfrc_ext, 6 numbers each) follow the 27 state values; v4 includes the world
# body (always zero), v5 drops it.
_ANT_BODIES = [
    "torso", "front_left_leg", "aux_1", "ankle_1", "front_right_leg", "aux_2", "ankle_2",
    "back_leg", "aux_3", "ankle_3", "right_back_leg", "aux_4", "ankle_4",
]


def _contact_names(bodies: list[str]) -> list[str]:
    return [f"cfrc_ext[{body}][{i}]" for body in bodies for i in range(6)]


_REACHER_OBS = [
    "cos arm 1 angle", "cos arm 2 angle", "sin arm 1 angle", "sin arm 2 angle",
    "target x", "target y", "arm 1 angular velocity", "arm 2 angular velocity",
    "fingertip-target x", "fingertip-target y",
]
_REACHER_ACT = ["arm 1 torque", "arm 2 torque"]

_SWIMMER_OBS = [
    "tip angle", "rotor 1 angle", "rotor 2 angle",
    "tip x velocity", "tip y velocity", "tip angular velocity",
    "rotor 1 angular velocity", "rotor 2 angular velocity",
]
_SWIMMER_ACT = ["rotor 1 torque", "rotor 2 torque"]

# Pusher: the arm's 7 joints (qpos, qvel), then the centres of the fingertip, the object and the goal.
_PUSHER_JOINTS = ["shoulder pan", "shoulder lift", "upper arm roll", "elbow flex", "forearm roll", "wrist flex",
                  "wrist roll"]
_PUSHER_OBS = ([f"{joint} angle" for joint in _PUSHER_JOINTS]
               + [f"{joint} angular velocity" for joint in _PUSHER_JOINTS]
               + [f"{body} {axis}" for body in ("fingertip", "object", "goal") for axis in ("x", "y", "z")])
_PUSHER_ACT = [f"{joint} torque" for joint in _PUSHER_JOINTS]

# InvertedDoublePendulum: the cart's position, sin and cos of the two hinge angles, the three velocities (clipped to
# ±10), then constraint forces (clipped): v5 keeps the cart's only, v4 all three.
_DOUBLE_PENDULUM_OBS = [
    "cart position", "sin pole 1 angle", "sin pole 2 angle", "cos pole 1 angle", "cos pole 2 angle",
    "cart velocity", "pole 1 angular velocity", "pole 2 angular velocity", "cart constraint force",
]

# Every documented observation layout per task; the one whose length matches is used. Layouts with the excluded
# x(/y) positions first are what ``exclude_current_positions_from_observation=False`` produces.
_OBSERVATIONS: dict[str, list[list[str]]] = {
    "Hopper": [_HOPPER_OBS, ["torso x"] + _HOPPER_OBS],
    "Walker2d": [_WALKER_OBS, ["torso x"] + _WALKER_OBS],
    "HalfCheetah": [_CHEETAH_OBS, ["tip x"] + _CHEETAH_OBS],
    "Ant": [
        _ANT_OBS,  # Ant-v4 default; Ant-v5 with include_cfrc_ext_in_observation=False
        _ANT_OBS + _contact_names(_ANT_BODIES),  # Ant-v5 default (105)
        _ANT_OBS + _contact_names(["world"] + _ANT_BODIES),  # Ant-v4 with use_contact_forces=True (111)
        ["torso x", "torso y"] + _ANT_OBS,
        ["torso x", "torso y"] + _ANT_OBS + _contact_names(_ANT_BODIES),
    ],
    "Reacher": [_REACHER_OBS, _REACHER_OBS + ["fingertip-target z"]],  # v5 (10), v4 (11)
    "Swimmer": [_SWIMMER_OBS, ["tip x", "tip y"] + _SWIMMER_OBS],
    "Pendulum": [["cos θ", "sin θ", "θ velocity"]],
    "Pusher": [_PUSHER_OBS],
    "InvertedDoublePendulum": [_DOUBLE_PENDULUM_OBS,  # v5 (9), v4 (11)
                               _DOUBLE_PENDULUM_OBS + ["pole 1 constraint force", "pole 2 constraint force"]],
}
_ACTIONS: dict[str, list[str]] = {
    "Hopper": _HOPPER_ACT,
    "Walker2d": _WALKER_ACT,
    "HalfCheetah": _CHEETAH_ACT,
    "Ant": _ANT_ACT,
    "Reacher": _REACHER_ACT,
    "Swimmer": _SWIMMER_ACT,
    "Pendulum": ["torque"],
    "Pusher": _PUSHER_ACT,
    "InvertedDoublePendulum": ["cart force"],
}


# A constructor argument that replaces the env's physics model: the documented layouts no longer describe it.
MODEL_ARGUMENT = "xml_file"


def table_names(env_id: str, n_obs: int, n_act: int, env_kwargs: dict | None = None
                ) -> tuple[list[str] | None, list[str] | None]:
    """The hand-written (observation, action) names of ``env_id`` where a documented layout of that size exists and
    the env is built on its own model (not a user's ``xml_file``, whose joints the table would misname)."""
    from smose.tasks.env_id import task_name  # here: this module imports nothing of the package when it loads

    if MODEL_ARGUMENT in (env_kwargs or {}):
        return None, None
    task = task_name(env_id)
    observations = next((list(layout) for layout in _OBSERVATIONS.get(task, []) if len(layout) == n_obs), None)
    actions = _ACTIONS.get(task)
    return observations, (list(actions) if actions is not None and len(actions) == n_act else None)


def observation_names(env_id: str, n_obs: int, env: Any = None, env_kwargs: dict | None = None) -> list[str]:
    """Names of the ``n_obs`` observation components of ``env_id``: the hand-written table where it fits, else
    derived from ``env`` (a MuJoCo model, Dict keys), else ``obs[i]``. ``env_kwargs``: the constructor arguments
    (default: those ``env`` was made with)."""
    names = table_names(env_id, n_obs, 0, _constructor_kwargs(env, env_kwargs))[0]
    if names is None and env is not None:
        from smose.tasks import suites  # here: smose.tasks.suites builds on this module's names

        keys = flattened_keys(env)
        names = suites.observation_names(env_id, n_obs, env, keys) or dict_observation_names(keys, n_obs)
        if names is None:
            names = mujoco_observation_names(env.unwrapped, n_obs)
    return names if names is not None else [f"obs[{i}]" for i in range(n_obs)]


def _constructor_kwargs(env: Any, given: dict | None) -> dict:
    """``given``, else the constructor arguments ``env`` was made with (``gymnasium.make`` records them in its
    spec)."""
    if given is not None:
        return given
    spec = getattr(env, "spec", None)
    return dict(getattr(spec, "kwargs", None) or {})


def flattened_keys(env: Any) -> list[list] | None:
    """``[[key, size], ...]`` of an env whose Dict observation smose.tasks.envs.make_env flattened; None otherwise."""
    try:
        return env.get_wrapper_attr("observation_keys")
    except AttributeError:
        return None


def action_names(env_id: str, n_act: int, env: Any = None, env_kwargs: dict | None = None) -> list[str]:
    """Names of the ``n_act`` action components of ``env_id``: the table, else ``env``'s actuators, else ``act[i]``
    (``env_kwargs`` as in observation_names)."""
    names = table_names(env_id, 0, n_act, _constructor_kwargs(env, env_kwargs))[1]
    if names is None and env is not None:
        from smose.tasks import suites

        names = suites.action_names(env_id, n_act, env) or mujoco_action_names(env.unwrapped, n_act)
    return names if names is not None else [f"act[{i}]" for i in range(n_act)]


# ---- names from a MuJoCo model ---------------------------------------------------------------------------------------
# MuJoCo's joint types (mjtJoint) and the coordinates each has in qpos and in qvel.
_FREE, _BALL, _SLIDE, _HINGE = 0, 1, 2, 3
_TRANSMISSION_JOINT = 0  # mjtTrn: the actuator drives a joint
_AXES = ("x", "y", "z")
_QUAT = ("quat w", "quat x", "quat y", "quat z")
# Per-body blocks of Gymnasium's observations and the numbers each body contributes (MuJoCo's mjData arrays).
_BODY_BLOCK_WIDTH = {"cinert": 10, "cvel": 6, "cfrc_ext": 6}


def _name(model: Any, kind: str, index: int) -> str:
    return getattr(model, kind)(index).name or f"{kind}{index}"


def body_name(model: Any, b: int) -> str:
    """A body's name; an unnamed body (Ant's lower legs) is called after its first joint (ankle_1, ...)."""
    name = model.body(b).name
    if not name and int(model.body_jntnum[b]) > 0:
        name = _name(model, "joint", int(model.body_jntadr[b]))
    return name or f"body{b}"


def actuator_name(model: Any, a: int) -> str:
    """The name of the joint an actuator drives (as Gymnasium's action tables name them), else the actuator's."""
    if int(model.actuator_trntype[a]) == _TRANSMISSION_JOINT:
        return _name(model, "joint", int(model.actuator_trnid[a][0]))
    return _name(model, "actuator", a)


def joint_coordinate_names(model: Any) -> tuple[list[str], list[str]]:
    """Names of the ``nq`` position coordinates (qpos) and the ``nv`` velocity coordinates (qvel), joint by joint: a
    free joint has x, y, z and a quaternion (7) and linear and angular velocities (6); a ball joint a quaternion (4)
    and angular velocities (3); a hinge an angle, a slide a position, each with its velocity."""
    qpos: list[str] = []
    qvel: list[str] = []
    for j in sorted(range(model.njnt), key=lambda j: int(model.jnt_qposadr[j])):
        name, kind = _name(model, "joint", j), int(model.jnt_type[j])
        if kind == _FREE:
            qpos += [f"{name} {axis}" for axis in _AXES] + [f"{name} {q}" for q in _QUAT]
            qvel += ([f"{name} {axis} velocity" for axis in _AXES]
                     + [f"{name} {axis} angular velocity" for axis in _AXES])
        elif kind == _BALL:
            qpos += [f"{name} {q}" for q in _QUAT]
            qvel += [f"{name} {axis} angular velocity" for axis in _AXES]
        elif kind == _SLIDE:
            qpos.append(f"{name} position")
            qvel.append(f"{name} velocity")
        else:
            qpos.append(f"{name} angle")
            qvel.append(f"{name} angular velocity")
    return qpos, qvel


def _dof_names(model: Any) -> list[str]:
    """One name per degree of freedom (qvel coordinate), for forces acting on it."""
    names = []
    for d in range(model.nv):
        j = int(model.dof_jntid[d])
        names.append(_name(model, "joint", j) + ("" if int(model.jnt_type[j]) in (_SLIDE, _HINGE)
                                                 else f" dof {d - int(model.jnt_dofadr[j])}"))
    return names


def _block_names(model: Any, block: str, size: int, qpos: list[str], qvel: list[str]) -> list[str] | None:
    """Names of a ``size``-long block of Gymnasium's observation layout; the last entries of an array when it is
    cut (Gymnasium drops the world body and the free joint's forces, which are always zero)."""
    if block == "qpos":
        return qpos[len(qpos) - size:] if size <= len(qpos) else None
    if block == "qvel":
        return qvel[len(qvel) - size:] if size <= len(qvel) else None
    if block == "qfrc_actuator":
        dofs = _dof_names(model)
        return [f"{dof} actuator force" for dof in dofs[len(dofs) - size:]] if size <= len(dofs) else None
    if block in _BODY_BLOCK_WIDTH:
        width = _BODY_BLOCK_WIDTH[block]
        bodies = [body_name(model, b) for b in range(model.nbody)]
        if size % width or size // width > len(bodies):
            return None
        return [f"{block}[{body}][{i}]" for body in bodies[len(bodies) - size // width:] for i in range(width)]
    if block in ("ten_length", "ten_velocity"):
        tendons = [_name(model, "tendon", t) for t in range(model.ntendon)]
        what = "length" if block == "ten_length" else "velocity"
        return [f"{tendon} {what}" for tendon in tendons] if size == len(tendons) else None
    return None


def _gymnasium_v4_layouts(model: Any, n_obs: int) -> list[dict[str, int]]:
    """Observation layouts of Gymnasium's MuJoCo envs that predate ``observation_structure`` (the -v4 ones):
    positions with the first 0 to 2 coordinates excluded and velocities, then (Ant, Humanoid) per-body blocks
    including the world body."""
    nq, nv, nb = model.nq, model.nv, model.nbody
    layouts = [{"qpos": nq - skip, "qvel": nv} for skip in (0, 1, 2)]
    layouts.append({"qpos": nq - 2, "qvel": nv, "cfrc_ext": 6 * nb})  # Ant-v4 with use_contact_forces
    layouts.append({"qpos": nq - 2, "qvel": nv, "cinert": 10 * nb, "cvel": 6 * nb, "qfrc_actuator": nv,
                    "cfrc_ext": 6 * nb})  # Humanoid-v4, HumanoidStandup-v4
    return [layout for layout in layouts if sum(layout.values()) == n_obs]


def mujoco_observation_names(env: Any, n_obs: int) -> list[str] | None:
    """Names of a Gymnasium MuJoCo env's observation from its model and layout; None when the layout is unknown.

    The layout is the env's ``observation_structure`` (Gymnasium's -v5 envs: block sizes in observation order, the
    excluded positions under ``skipped_qpos``); Gymnasium's -v4 envs are matched by size against their documented
    layouts. Envs whose observation is computed otherwise (Reacher, Pusher, InvertedDoublePendulum) are not named
    here.
    """
    model = getattr(env, "model", None)
    if model is None or not hasattr(model, "jnt_qposadr"):
        return None
    structure = getattr(env, "observation_structure", None)
    if isinstance(structure, dict):
        layouts = [{k: int(v) for k, v in structure.items() if k != "skipped_qpos" and v}]
    elif type(env).__module__.startswith("gymnasium.envs.mujoco."):
        layouts = _gymnasium_v4_layouts(model, n_obs)[:1]
    else:
        return None
    if not layouts or sum(layouts[0].values()) != n_obs:
        return None
    qpos, qvel = joint_coordinate_names(model)
    names: list[str] = []
    for block, size in layouts[0].items():
        block_names = _block_names(model, block, size, qpos, qvel)
        if block_names is None or len(block_names) != size:
            return None
        names += block_names
    return names


def mujoco_action_names(env: Any, n_act: int) -> list[str] | None:
    """Names of a MuJoCo env's actions from its actuators; None when it has no model or another number of them."""
    model = getattr(env, "model", None)
    if model is None or not hasattr(model, "nu") or model.nu != n_act:
        return None
    return [actuator_name(model, a) for a in range(n_act)]


def dict_observation_names(keys: Any, n_obs: int) -> list[str] | None:
    """Names of a flattened Dict observation from its recorded ``[[key, size], ...]``: ``key`` for a scalar entry,
    ``key[i]`` otherwise; None when there are no keys or they do not add up to ``n_obs``."""
    if not keys or sum(size for _, size in keys) != n_obs:
        return None
    return [key if size == 1 else f"{key}[{i}]" for key, size in keys for i in range(size)]
