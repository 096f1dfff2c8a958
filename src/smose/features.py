"""Readable names of observation and action components, so rules and plots speak of "torso angle", not obs[1].

The tables follow the observation and action tables of Gymnasium's MuJoCo documentation (v4 and v5). A name list is
only used when its length matches the model's size, so an env built with other options (e.g. positions included in
the observation) or an unknown env falls back to generic ``obs[i]`` / ``act[i]``.
"""

from __future__ import annotations

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
}
_ACTIONS: dict[str, list[str]] = {
    "Hopper": _HOPPER_ACT,
    "Walker2d": _WALKER_ACT,
    "HalfCheetah": _CHEETAH_ACT,
    "Ant": _ANT_ACT,
    "Reacher": _REACHER_ACT,
    "Swimmer": _SWIMMER_ACT,
    "Pendulum": ["torque"],
}


def _task(env_id: str) -> str:
    """'Hopper-v5' -> 'Hopper'; namespaced ids ('ns/Hopper-v5') keep only the task name."""
    return env_id.rsplit("/", 1)[-1].split("-v", 1)[0]


def observation_names(env_id: str, n_obs: int) -> list[str]:
    """Names of the ``n_obs`` observation components of ``env_id``; ``obs[i]`` when no documented layout fits."""
    for layout in _OBSERVATIONS.get(_task(env_id), []):
        if len(layout) == n_obs:
            return list(layout)
    return [f"obs[{i}]" for i in range(n_obs)]


def action_names(env_id: str, n_act: int) -> list[str]:
    """Names of the ``n_act`` action components of ``env_id``; ``act[i]`` when the table does not fit."""
    names = _ACTIONS.get(_task(env_id))
    if names is not None and len(names) == n_act:
        return list(names)
    return [f"act[{i}]" for i in range(n_act)]
