"""An env's mid-episode state and random streams, captured and put back, so that a resumed run continues exactly.

Besides the env's random generators (its ``np_random`` and its action-space sampler's), an exact continuation needs
the episode where it stands:

- MuJoCo envs: ``mj_getState``/``mj_setState`` with ``mjSTATE_INTEGRATION`` (time, qpos, qvel, actuator
  activations, controls, warm-start accelerations: everything ``mj_step`` reads), plus the body/site/geom
  kinematics of the last forward pass, which some envs read *before* stepping (Ant's torso ``xpos``, Humanoid's
  centre of mass from ``xipos``) and which ``mj_step`` leaves one substep behind the state.
- Gymnasium's classic-control envs keep their whole state in ``env.unwrapped.state``.
- Both: the TimeLimit step counter.
- Any other env (and MuJoCo envs that keep state of their own beyond the physics, like Meta-World's goals and
  previous frame): no state is captured (kind "none"), and a resumed run starts a new episode (valid, not
  bit-identical).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from smose.tasks.suites import keeps_state_beyond_physics

ENV_KINDS = ("mujoco", "classic-control", "none")
MUJOCO_DERIVED = ("xpos", "xquat", "xmat", "xipos", "ximat", "geom_xpos", "geom_xmat", "site_xpos", "site_xmat",
                  "subtree_com", "cinert", "cvel", "cfrc_ext")


def env_state_kind(env: gym.Env) -> str:
    """How the env's mid-episode state can be saved: one of ENV_KINDS."""
    unwrapped = env.unwrapped
    from gymnasium.envs.mujoco.mujoco_env import MujocoEnv

    if isinstance(unwrapped, MujocoEnv) and not keeps_state_beyond_physics(unwrapped):
        return "mujoco"
    if type(unwrapped).__module__.startswith("gymnasium.envs.classic_control") and \
            isinstance(getattr(unwrapped, "state", None), np.ndarray):
        return "classic-control"
    return "none"


def rng_state(rng: np.random.Generator | np.random.RandomState) -> dict:
    """The state of an env's generator as JSON: a Generator's bit generator, or a legacy RandomState's (the
    DeepMind Control Suite's envs use one)."""
    if isinstance(rng, np.random.RandomState):
        state = rng.get_state(legacy=False)  # MT19937's key is an array: JSON takes it as a list
        return state | {"state": {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in state["state"].items()}}
    return rng.bit_generator.state


def set_rng_state(rng: np.random.Generator | np.random.RandomState, state: dict) -> None:
    if isinstance(rng, np.random.RandomState):
        rng.set_state(state)
    else:
        rng.bit_generator.state = state


def _mujoco_spec():
    import mujoco

    return mujoco, mujoco.mjtState.mjSTATE_INTEGRATION


def capture_env_state(env: gym.Env, kind: str) -> np.ndarray | None:
    """The env's mid-episode state as one array (None for kind "none")."""
    unwrapped = env.unwrapped
    if kind == "mujoco":
        mujoco, spec = _mujoco_spec()
        state = np.empty(mujoco.mj_stateSize(unwrapped.model, spec), dtype=np.float64)
        mujoco.mj_getState(unwrapped.model, unwrapped.data, state, spec)
        derived = [getattr(unwrapped.data, name).reshape(-1) for name in MUJOCO_DERIVED]
        return np.concatenate([state, *derived])
    if kind == "classic-control":
        return np.array(unwrapped.state)  # a copy, in the env's own dtype
    return None


def restore_env_state(env: gym.Env, kind: str, state: np.ndarray) -> None:
    """Put back a state of ``capture_env_state`` (of the same shape: the caller checks it)."""
    unwrapped = env.unwrapped
    if kind == "mujoco":
        mujoco, spec = _mujoco_spec()
        size = mujoco.mj_stateSize(unwrapped.model, spec)
        mujoco.mj_setState(unwrapped.model, unwrapped.data, state[:size], spec)
        offset = size
        for name in MUJOCO_DERIVED:
            target = getattr(unwrapped.data, name)
            target[...] = state[offset: offset + target.size].reshape(target.shape)
            offset += target.size
    elif kind == "classic-control":
        unwrapped.state = state.copy()


def _time_limits(env: gym.Env) -> list[gym.wrappers.TimeLimit]:
    found, layer = [], env
    while isinstance(layer, gym.Wrapper):
        if isinstance(layer, gym.wrappers.TimeLimit):
            found.append(layer)
        layer = layer.env
    return found


def elapsed_steps(env: gym.Env) -> int | None:
    """The steps the env's (outermost) TimeLimit has counted this episode; None for an env without one."""
    limits = _time_limits(env)
    return limits[0]._elapsed_steps if limits else None


def set_elapsed_steps(env: gym.Env, steps: int) -> None:
    for limit in _time_limits(env):
        limit._elapsed_steps = steps
