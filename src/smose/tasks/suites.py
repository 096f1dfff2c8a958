"""Task suites beyond Gymnasium's own envs, through their Gymnasium registrations: the DeepMind Control Suite (Shimmy's
``dm_control/<domain>-<task>-v0`` ids) and Meta-World (``Meta-World/MT1`` with ``env_name=reach-v3`` and the like).

Their packages come with ``pip install 'smose[suites]'`` and register their ids when imported; :func:`register` imports
the package an id's namespace needs, so every command that rebuilds an env from a run's config.json finds it.
:data:`DEFAULT_ENV_KWARGS` holds the constructor arguments an env is built with unless ``--env-kwargs`` gives them:
those that make each rebuild the same env. The names of the observation and action components come from the suites'
documented layouts and from the physics model (joint, body and actuator names). This module needs numpy only (and
imports a suite's package when asked to register it).
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any, Callable

from smose.errors import SmoseError
from smose.tasks.features import actuator_name, body_name, joint_coordinate_names

SUITES_EXTRA = "pip install 'smose[suites]'"
# Namespace of a Gymnasium id -> the package whose import registers the suite's ids.
SUITE_PACKAGES = {"dm_control": "shimmy", "Meta-World": "metaworld"}
DM_CONTROL, META_WORLD = "dm_control", "Meta-World"

# Meta-World/MT1 draws its 50 goal positions from ``seed`` (numpy's global generator when it is None, so a rebuilt
# env would have other goals): a fixed seed unless --env-kwargs gives one.
DEFAULT_ENV_KWARGS: dict[str, dict[str, Any]] = {f"{META_WORLD}/MT1": {"seed": 0}}
# Suites whose envs ignore reset(seed=...) (Meta-World's say "use seed() instead"): smose.tasks.envs.make_env reseeds
# them through env.unwrapped.seed, so that seeds give different episodes and the same seed the same ones.
RESET_SEED_IGNORED = {META_WORLD}
# Ids that take their task as a constructor argument: (argument, an example value). The value names the run too.
TASK_ARGUMENTS = {f"{META_WORLD}/MT1": ("env_name", "reach-v3")}


def namespace(env_id: str) -> str | None:
    """'dm_control/walker-walk-v0' -> 'dm_control'; None for an id without a namespace."""
    return env_id.split("/", 1)[0] if "/" in env_id else None


def register(env_id: str) -> None:
    """Import the package that registers ``env_id``'s suite (a no-op for other ids); SmoseError when it is missing."""
    package = SUITE_PACKAGES.get(namespace(env_id) or "")
    if package is None:
        return
    try:
        with warnings.catch_warnings():  # dm_control tries GLFW first, which warns on a machine without a display
            warnings.filterwarnings("ignore", module="glfw")
            importlib.import_module(package)
            if package == "shimmy":  # Shimmy registers the dm_control ids only when dm_control imports
                importlib.import_module("dm_control.suite")
    except ImportError as exc:
        raise SmoseError(f"environment {env_id!r} needs the {namespace(env_id)} suite, which is not installed "
                         f"({exc}); install it with {SUITES_EXTRA}") from None


def construction_kwargs(env_id: str, env_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The constructor arguments ``env_id`` is built with: DEFAULT_ENV_KWARGS, overridden by ``env_kwargs``."""
    return DEFAULT_ENV_KWARGS.get(env_id, {}) | env_kwargs


def task_argument_hint(env_id: str) -> str | None:
    """What to give an id that cannot be built without its task argument; None for other ids."""
    if env_id not in TASK_ARGUMENTS:
        return None
    argument, example = TASK_ARGUMENTS[env_id]
    return f"give the task, e.g. --env-kwargs {argument}={example}"


def env_label(env_id: str, env_kwargs: dict[str, Any]) -> str:
    """The env of a run as a file name (run directories, sweep run names): the id with '/' as '~', followed by the
    task of an id that takes one as an argument ('Meta-World~MT1-reach-v3')."""
    argument = TASK_ARGUMENTS.get(env_id, ("",))[0]
    task = env_kwargs.get(argument)
    label = f"{env_id}-{task}" if isinstance(task, str) and task else env_id
    return label.replace("/", "~")


def suite_versions() -> dict[str, str]:
    """Versions of the suites' packages that are installed (for config.json), without importing them."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("shimmy", "dm-control", "metaworld"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


def keeps_state_beyond_physics(env: Any) -> bool:
    """Whether a MuJoCo env holds state its physics does not (Meta-World: the task's goal, the previous frame, the
    path length), so that a checkpoint cannot put it back mid-episode."""
    return type(env).__module__.startswith("metaworld.")


# ---- DeepMind Control Suite ----------------------------------------------------------------------------------------
# An observation entry's names from the physics model: (model, size) -> names, or None when the size does not fit.
Namer = Callable[[Any, int], "list[str] | None"]


def _qpos(skip: int) -> Namer:
    """The position coordinates without the first ``skip`` (cheetah and hopper leave out their x position)."""
    def names(model: Any, size: int) -> list[str] | None:
        qpos = joint_coordinate_names(model)[0][skip:]
        return qpos if len(qpos) == size else None
    return names


def _qvel(model: Any, size: int) -> list[str] | None:
    qvel = joint_coordinate_names(model)[1]
    return qvel if len(qvel) == size else None


def _planar_orientations(model: Any, size: int) -> list[str] | None:
    """walker: the xx and xz entries of every body's rotation matrix but the world's (cos and sin of its angle)."""
    bodies = [body_name(model, b) for b in range(1, model.nbody)]
    return [f"{body} orientation {entry}" for body in bodies for entry in ("xx", "xz")] \
        if 2 * len(bodies) == size else None


def _cart_and_poles(model: Any, size: int) -> list[str] | None:
    """cartpole: the cart's position, then cos and sin of each pole's angle (rotation-matrix entries zz and xz)."""
    poles = [body_name(model, b) for b in range(2, model.nbody)]
    names = ["cart position"] + [f"{pole} angle {f}" for pole in poles for f in ("cos", "sin")]
    return names if len(names) == size else None


def _fixed(*names: str) -> Namer:
    return lambda model, size: list(names) if len(names) == size else None


# Per domain, the observation entries whose components have physics names (dm_control.suite's get_observation of
# each domain); other entries are named by their key. ``position`` and ``velocity`` are the Physics' qpos and qvel
# except where a domain computes them otherwise.
_DM_CONTROL_ENTRIES: dict[str, dict[str, Namer]] = {
    "acrobot": {"velocity": _qvel},
    "ball_in_cup": {"position": _qpos(0), "velocity": _qvel},
    "cartpole": {"position": _cart_and_poles, "velocity": _qvel},
    "cheetah": {"position": _qpos(1), "velocity": _qvel},
    "hopper": {"position": _qpos(1), "velocity": _qvel, "touch": _fixed("toe touch (log1p)", "heel touch (log1p)")},
    "humanoid": {"velocity": _qvel},
    "pendulum": {"velocity": _qvel},
    "point_mass": {"position": _qpos(0), "velocity": _qvel},
    "reacher": {"position": _qpos(0), "velocity": _qvel},
    "walker": {"orientations": _planar_orientations, "velocity": _qvel},
}


def _dm_control_domain(env_id: str) -> str:
    """'dm_control/ball_in_cup-catch-v0' -> 'ball_in_cup'."""
    return env_id.split("/", 1)[1].split("-", 1)[0]


def _dm_control_model(env: Any) -> Any:
    """The MuJoCo model of a Shimmy dm_control env (None when there is none)."""
    physics = getattr(env.unwrapped, "physics", None)
    return getattr(getattr(physics, "model", None), "ptr", None)


def _dm_control_observation_names(env_id: str, keys: list[list] | None, n_obs: int, env: Any) -> list[str] | None:
    model = _dm_control_model(env)
    if not keys or sum(size for _, size in keys) != n_obs:
        return None
    entries = _DM_CONTROL_ENTRIES.get(_dm_control_domain(env_id), {})
    names: list[str] = []
    for key, size in keys:
        namer = entries.get(key)
        named = namer(model, size) if namer is not None and model is not None else None
        names += named or [key if size == 1 else f"{key}[{i}]" for i in range(size)]
    return names


# ---- Meta-World ----------------------------------------------------------------------------------------------------
# Meta-World's 39 observations (SawyerXYZEnv._get_obs): the current frame (hand position, gripper opening, then
# position and quaternion of up to two objects, zero where a task has one), the same 18 numbers one step earlier, and
# the goal position (zero when the goal is hidden). The quaternion's component order differs between tasks.
_META_WORLD_FRAME = (["hand x", "hand y", "hand z", "gripper opening"]
                     + [f"object {o} {part}" for o in (1, 2)
                        for part in ("x", "y", "z", "quat[0]", "quat[1]", "quat[2]", "quat[3]")])
META_WORLD_OBSERVATIONS = _META_WORLD_FRAME + [f"previous {name}" for name in _META_WORLD_FRAME] + \
    ["goal x", "goal y", "goal z"]
# The action: the hand's displacement (the mocap target moves by action/100 per step) and the gripper's effort.
META_WORLD_ACTIONS = ["hand dx", "hand dy", "hand dz", "gripper effort"]


# ---- names -----------------------------------------------------------------------------------------------------------
def observation_names(env_id: str, n_obs: int, env: Any, keys: list[list] | None) -> list[str] | None:
    """Names of a suite env's ``n_obs`` observation components (``keys``: its flattened Dict layout, if any); None
    for other envs or layouts of another size."""
    suite = namespace(env_id)
    if suite == DM_CONTROL:
        return _dm_control_observation_names(env_id, keys, n_obs, env)
    if suite == META_WORLD and n_obs == len(META_WORLD_OBSERVATIONS):
        return list(META_WORLD_OBSERVATIONS)
    return None


def action_names(env_id: str, n_act: int, env: Any) -> list[str] | None:
    """Names of a suite env's ``n_act`` action components; None for other envs."""
    suite = namespace(env_id)
    if suite == DM_CONTROL:
        model = _dm_control_model(env)
        if model is not None and model.nu == n_act:
            return [actuator_name(model, a) for a in range(n_act)]
    if suite == META_WORLD and n_act == len(META_WORLD_ACTIONS):
        return list(META_WORLD_ACTIONS)
    return None
