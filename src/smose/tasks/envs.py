"""Environment factory and the checks that keep unsupported spaces out with a clear message."""

from __future__ import annotations

import difflib
import json
import warnings
from typing import Any

import gymnasium as gym
import numpy as np

from smose.errors import SmoseError
from smose.tasks import suites
from smose.tasks.features import action_names, dict_observation_names, flattened_keys, observation_names, table_names

# model.json keys that say how the env was built (see env_record).
ENV_RECORD_KEYS = ("env_kwargs", "observation_keys")


def _suggest(env_id: str) -> str:
    close = difflib.get_close_matches(env_id, list(gym.registry.keys()), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def parse_env_kwargs(pairs: list[str]) -> dict[str, Any]:
    """``["g=9.81", "xml_file=my.xml"]`` -> ``{"g": 9.81, "xml_file": "my.xml"}``: each value is read as JSON where
    it parses (numbers, true/false, null, lists, objects; not NaN or Infinity) and kept as the string otherwise."""
    kwargs: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.isidentifier():
            raise SmoseError(f"--env-kwargs: expected KEY=VALUE with KEY a Python identifier, got {pair!r}")
        if key in kwargs:
            raise SmoseError(f"--env-kwargs: {key} is given twice")
        try:
            kwargs[key] = json.loads(text, parse_constant=_not_json)
        except ValueError:
            kwargs[key] = text
    return kwargs


def _not_json(word: str) -> None:
    """NaN and Infinity are not JSON (config.json and the exported files could not hold them): such a value stays a
    string."""
    raise ValueError(word)


def format_env_kwargs(kwargs: dict[str, Any]) -> list[str]:
    """The KEY=VALUE words that parse_env_kwargs reads back as ``kwargs``: a string bare where it reads back as itself
    (env_name=reach-v3), JSON otherwise (x=\"3\" for the string "3", x=3 for the number)."""
    return [f"{key}={value if isinstance(value, str) and _reads_as_string(value) else json.dumps(value)}"
            for key, value in kwargs.items()]


def _reads_as_string(word: str) -> bool:
    try:
        json.loads(word, parse_constant=_not_json)
    except ValueError:
        return True
    return False


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _refused(env_id: str, env_kwargs: dict[str, Any], exc: BaseException) -> SmoseError:
    words = " ".join(format_env_kwargs(env_kwargs))
    return SmoseError(f"environment {env_id!r} refused --env-kwargs {words}: {_first_line(exc)}")


def check_env(env_id: str, env_kwargs: dict[str, Any] | None = None) -> None:
    """Build the env, reset it and take one random step, so that an unusable env id, or an argument the env accepts
    but cannot run with (``g=abc``), is refused before a run directory is created."""
    env = make_env(env_id, env_kwargs=env_kwargs)
    try:
        env.reset(seed=0)
        env.action_space.seed(0)
        env.step(env.action_space.sample())
    except Exception as exc:  # noqa: BLE001 - with arguments given, they are what made the env fail
        if not env_kwargs:
            raise SmoseError(f"environment {env_id!r} cannot run: {_first_line(exc)}") from None
        raise _refused(env_id, env_kwargs, exc) from None
    finally:
        env.close()


def make_env(env_id: str, seed: int | None = None, render_mode: str | None = None,
             env_kwargs: dict[str, Any] | None = None) -> gym.Env:
    """Create a Gymnasium env with flat Box observations (a Dict observation is flattened, see
    FlattenDictObservation) and Box actions, or raise SmoseError saying why not.

    ``env_kwargs`` go to the env's constructor (``gymnasium.make(env_id, **env_kwargs)``, over the defaults that make
    a suite's env the same at every rebuild, see smose.tasks.suites); an argument the env refuses is reported with the
    env's own message. A suite's id imports the package that registers it.
    """
    suites.register(env_id)
    if env_id not in gym.registry:
        raise SmoseError(f"unknown environment {env_id!r}{_suggest(env_id)}")
    env_kwargs = env_kwargs or {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the paper's -v4 tasks are deprecated but supported
        try:
            # render_mode only when asked for: an env whose constructor lacks it is still usable without rendering
            rendering = {"render_mode": render_mode} if render_mode is not None else {}
            env = gym.make(env_id, **rendering, **suites.construction_kwargs(env_id, env_kwargs))
        except gym.error.DependencyNotInstalled as exc:
            raise SmoseError(f"environment {env_id!r} needs a missing dependency: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - any failure to build the env is the user's to read in one line
            argument_error = isinstance(exc, (TypeError, ValueError, AssertionError, gym.error.Error))
            if render_mode is not None and not argument_error:
                raise  # MuJoCo's GL set-up (MUJOCO_GL, libraries): the caller that asked for rendering reports it
            if env_kwargs:  # with arguments given, they are what made the env fail (a missing xml_file, frame_skip=0)
                raise _refused(env_id, env_kwargs, exc) from None
            hint = suites.task_argument_hint(env_id)  # e.g. Meta-World/MT1 without its task
            if hint is not None:
                raise SmoseError(f"environment {env_id!r} cannot be built ({_first_line(exc)}): {hint}") from None
            # e.g. Hopper-v3 (needs mujoco-py), an id registered without an entry point
            raise SmoseError(f"environment {env_id!r} cannot be built: {_first_line(exc)}") from None
    if suites.namespace(env_id) in suites.RESET_SEED_IGNORED:
        env = ReseedOnReset(env)
    if isinstance(env.observation_space, gym.spaces.Dict):
        env = FlattenDictObservation(env, env_id)
    check_spaces(env_id, env.observation_space, env.action_space)
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


class ReseedOnReset(gym.Wrapper):
    """Gives ``reset(seed=s)`` its Gymnasium meaning for an env that ignores the seed (Meta-World's, whose MT1 picks
    each episode's task from the env's own generator before resetting): the env's generator is reseeded with ``s``
    first (``env.unwrapped.seed``), so that runs and evaluations with other seeds see other goal sequences and the
    same seed the same ones. Resets without a seed continue the sequence."""

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self.env.unwrapped.seed(seed)
        return self.env.reset(seed=seed, options=options)


def make_run_env(meta: dict, env_id: str | None = None, render_mode: str | None = None) -> gym.Env:
    """The env a saved model was trained on (model.json's env id and constructor arguments); ``env_id`` picks
    another version of the task, built with the same arguments."""
    return make_env(env_id or meta["env_id"], render_mode=render_mode, env_kwargs=meta.get("env_kwargs"))


def feature_names(meta: dict, env: gym.Env | None = None) -> tuple[list[str], list[str]]:
    """Names of the observation and action components of a saved model's env (see smose.tasks.features). The env
    (``env`` or, when the hand-written table does not name everything, one built here) supplies the names of other
    tasks; without it, a Dict observation is named by its recorded keys."""
    arch, env_id = meta["architecture"], meta["env_id"]
    obs, act = table_names(env_id, arch["n_obs"], arch["n_act"], meta.get("env_kwargs"))
    if obs is not None and act is not None:
        return obs, act
    built = None
    if env is None:
        try:
            env = built = make_run_env(meta)
        except SmoseError:  # names are a courtesy: a model whose env is not installed here still exports
            env = None
    if env is None:
        obs = obs or dict_observation_names(meta.get("observation_keys"), arch["n_obs"])
    kwargs = meta.get("env_kwargs")  # a user's xml_file: not the table's names even when the env is not built here
    try:
        return (obs or observation_names(env_id, arch["n_obs"], env, kwargs),
                action_names(env_id, arch["n_act"], env, kwargs))
    finally:
        if built is not None:
            built.close()


def env_record(env_kwargs: dict[str, Any], env: gym.Env) -> dict[str, Any]:
    """What model.json records about the env besides its id, so that every command rebuilds it as trained: the
    constructor arguments, and the order in which a Dict observation was flattened."""
    record: dict[str, Any] = {"env_kwargs": dict(env_kwargs)} if env_kwargs else {}
    keys = flattened_keys(env)
    return record | ({"observation_keys": keys} if keys else {})


class FlattenDictObservation(gym.ObservationWrapper):
    """A Dict observation as one flat Box: the entries in sorted key order (nested Dicts as ``outer.inner``), each
    flattened row-major. The order is fixed by the keys alone, whatever order the env lists them in, and is recorded
    in model.json (``observation_keys``) so that every command and every exported policy reads the same layout."""

    def __init__(self, env: gym.Env, env_id: str):
        super().__init__(env)
        leaves = _dict_leaves(env.observation_space, "", env_id)
        self.observation_keys = [[key, int(np.prod(box.shape, dtype=np.int64))] for key, box in leaves]
        low = np.concatenate([box.low.ravel() for _, box in leaves]).astype(np.float32)
        high = np.concatenate([box.high.ravel() for _, box in leaves]).astype(np.float32)
        self.observation_space = gym.spaces.Box(low, high, dtype=np.float32)

    def observation(self, observation: dict) -> np.ndarray:
        return flatten_observation(observation, self.observation_keys)


def flatten_observation(observation: dict, keys: list[list] | None) -> np.ndarray:
    """A Dict observation (or a batch of them: arrays with a leading batch axis) as the flat vector(s) a model
    trained on it reads, its entries in the recorded ``[[key, size], ...]`` order."""
    if not keys:
        raise SmoseError("this model was trained on Box observations; pass an array, not a dict")
    values = []
    for key, size in keys:
        value = observation
        try:
            for part in key.split("."):
                value = value[part]
        except (KeyError, TypeError):
            raise SmoseError(f"the observation has no entry {key!r}") from None
        value = np.asarray(value, dtype=np.float32)
        if value.size == 0 or value.size % size:
            raise SmoseError(f"observation entry {key!r} has {value.size} numbers; the model reads {size}")
        values.append(value)
    counts = {value.size // size for value, (_, size) in zip(values, keys)}
    if len(counts) > 1:
        raise SmoseError(f"the observation's entries hold different numbers of observations ({sorted(counts)}); "
                         "a batch has the same leading axis on every entry")
    # A batch when the entries hold several observations, or one behind a leading axis of length 1 (a batch of one).
    batched = counts != {1} or any(value.ndim >= 2 and value.shape[0] == 1 for value in values)
    shape = (lambda size: (-1, size)) if batched else (lambda size: (size,))
    return np.concatenate([value.reshape(shape(size)) for value, (_, size) in zip(values, keys)], axis=-1)


def _dict_leaves(space: gym.spaces.Dict, prefix: str, env_id: str) -> list[tuple[str, gym.spaces.Box]]:
    leaves = []
    for key in sorted(space.spaces):
        sub, name = space.spaces[key], f"{prefix}{key}"
        if not isinstance(key, str) or "." in key:
            raise SmoseError(f"environment {env_id!r} has a Dict observation key {key!r}; keys must be strings "
                             "without '.'")
        if isinstance(sub, gym.spaces.Dict):
            leaves += _dict_leaves(sub, name + ".", env_id)
        elif isinstance(sub, gym.spaces.Box):
            leaves.append((name, sub))
        else:
            raise SmoseError(f"environment {env_id!r} has a {type(sub).__name__} entry {name!r} in its Dict "
                             "observation; SMOSE needs Box entries")
    if not leaves:
        raise SmoseError(f"environment {env_id!r} has an empty Dict observation")
    return leaves


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
    return versions | suites.suite_versions()
