"""Environment factory and the checks that keep unsupported spaces out with a clear message."""

from __future__ import annotations

import difflib
import warnings

import gymnasium as gym
import numpy as np

from smose.errors import SmoseError


def _suggest(env_id: str) -> str:
    close = difflib.get_close_matches(env_id, list(gym.registry.keys()), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def make_env(env_id: str, seed: int | None = None, render_mode: str | None = None) -> gym.Env:
    """Create a Gymnasium env with flat Box observations and actions, or raise SmoseError saying why not."""
    if env_id not in gym.registry:
        raise SmoseError(f"unknown environment {env_id!r}{_suggest(env_id)}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the paper's -v4 tasks are deprecated but supported
        try:
            env = gym.make(env_id, render_mode=render_mode)
        except gym.error.DependencyNotInstalled as exc:
            raise SmoseError(f"environment {env_id!r} needs a missing dependency: {exc}") from None
    check_spaces(env_id, env.observation_space, env.action_space)
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


def check_spaces(env_id: str, obs_space: gym.Space, act_space: gym.Space) -> None:
    if not isinstance(act_space, gym.spaces.Box):
        raise SmoseError(
            f"environment {env_id!r} has a {type(act_space).__name__} action space; "
            "SMOSE needs a continuous Box action space"
        )
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
        is_box = isinstance(obs_space, gym.spaces.Box)
        kind = f"Box of shape {obs_space.shape}" if is_box else type(obs_space).__name__
        raise SmoseError(f"environment {env_id!r} has a {kind} observation space; SMOSE needs a flat (1-D) Box")
    if len(act_space.shape) != 1:
        raise SmoseError(f"environment {env_id!r} has actions of shape {act_space.shape}; SMOSE needs a flat (1-D) Box")
    if not (np.all(np.isfinite(act_space.low)) and np.all(np.isfinite(act_space.high))):
        raise SmoseError(f"environment {env_id!r} has unbounded actions; SMOSE needs finite action bounds")


def env_versions() -> dict[str, str]:
    versions = {"gymnasium": gym.__version__}
    try:
        import mujoco

        versions["mujoco"] = mujoco.__version__
    except ImportError:
        versions["mujoco"] = "not installed"
    return versions
