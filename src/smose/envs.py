"""Environment factory and the checks that keep unsupported spaces out with a clear message."""

from __future__ import annotations

import difflib
import json
import warnings
from typing import Any

import gymnasium as gym
import numpy as np

from smose.errors import SmoseError
from smose.features import action_names, observation_names, table_names

# model.json keys that say how the env was built (see env_record).
ENV_RECORD_KEYS = ("env_kwargs",)


def _suggest(env_id: str) -> str:
    close = difflib.get_close_matches(env_id, list(gym.registry.keys()), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def parse_env_kwargs(pairs: list[str]) -> dict[str, Any]:
    """``["g=9.81", "xml_file=my.xml"]`` -> ``{"g": 9.81, "xml_file": "my.xml"}``: each value is read as JSON where
    it parses (numbers, true/false, null, lists, objects) and kept as the string otherwise."""
    kwargs: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.isidentifier():
            raise SmoseError(f"--env-kwargs: expected KEY=VALUE with KEY a Python identifier, got {pair!r}")
        if key in kwargs:
            raise SmoseError(f"--env-kwargs: {key} is given twice")
        try:
            kwargs[key] = json.loads(text)
        except ValueError:
            kwargs[key] = text
    return kwargs


def format_env_kwargs(kwargs: dict[str, Any]) -> list[str]:
    """The KEY=VALUE words that parse_env_kwargs reads back as ``kwargs``."""
    return [f"{key}={json.dumps(value)}" for key, value in kwargs.items()]


def make_env(env_id: str, seed: int | None = None, render_mode: str | None = None,
             env_kwargs: dict[str, Any] | None = None) -> gym.Env:
    """Create a Gymnasium env with flat Box observations and actions, or raise SmoseError saying why not.

    ``env_kwargs`` go to the env's constructor (``gymnasium.make(env_id, **env_kwargs)``); an argument the env
    refuses is reported with the env's own message.
    """
    if env_id not in gym.registry:
        raise SmoseError(f"unknown environment {env_id!r}{_suggest(env_id)}")
    env_kwargs = env_kwargs or {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the paper's -v4 tasks are deprecated but supported
        try:
            env = gym.make(env_id, render_mode=render_mode, **env_kwargs)
        except gym.error.DependencyNotInstalled as exc:
            raise SmoseError(f"environment {env_id!r} needs a missing dependency: {exc}") from None
        except (TypeError, ValueError, AssertionError, gym.error.Error) as exc:
            if not env_kwargs:
                raise
            detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise SmoseError(f"environment {env_id!r} refused --env-kwargs "
                             f"{' '.join(format_env_kwargs(env_kwargs))}: {detail}") from None
    check_spaces(env_id, env.observation_space, env.action_space)
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


def make_run_env(meta: dict, env_id: str | None = None, render_mode: str | None = None) -> gym.Env:
    """The env a saved model was trained on (model.json's env id and constructor arguments); ``env_id`` picks
    another version of the task, built with the same arguments."""
    return make_env(env_id or meta["env_id"], render_mode=render_mode, env_kwargs=meta.get("env_kwargs"))


def feature_names(meta: dict, env: gym.Env | None = None) -> tuple[list[str], list[str]]:
    """Names of the observation and action components of a saved model's env (see smose.features). The env (``env``
    or, when the hand-written table does not name everything, one built here) supplies the names of other tasks."""
    arch, env_id = meta["architecture"], meta["env_id"]
    obs, act = table_names(env_id, arch["n_obs"], arch["n_act"])
    if obs is not None and act is not None:
        return obs, act
    built = None
    if env is None:
        try:
            env = built = make_run_env(meta)
        except SmoseError:  # names are a courtesy: a model whose env is not installed here still exports
            env = None
    try:
        return observation_names(env_id, arch["n_obs"], env), action_names(env_id, arch["n_act"], env)
    finally:
        if built is not None:
            built.close()


def env_record(env_kwargs: dict[str, Any]) -> dict[str, Any]:
    """What model.json records about the env besides its id, so that every command rebuilds it as trained."""
    return {"env_kwargs": dict(env_kwargs)} if env_kwargs else {}


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
