"""Resumable training checkpoints: the whole training state as one safetensors file plus one JSON file.

Layout inside a run directory::

    checkpoint/checkpoint.json                      the commit point: step and episode counters, RNG states, the
                                                    metrics.csv position, the name and SHA-256 of the tensor file
    checkpoint/step-000050000-1a2b3c4d.safetensors  actor, critics, target critics, Adam moments, log α, the filled
                                                    replay rows, the torch RNG state, the observation and env state

Atomic: the tensor file is written under a temporary name, fsynced and renamed to a fresh unique name; then
checkpoint.json is replaced atomically (the commit), and only then are older tensor files deleted. Whenever the
process dies, checkpoint.json names a complete tensor file. Nothing is pickled: safetensors and JSON only.

Exact continuation: besides networks, optimisers and buffer, a resumed run needs the same random streams (the numpy
Generator of the replay sampling, torch's global generator, the env's ``np_random`` and its action-space sampler)
and the env mid-episode:

- MuJoCo envs: ``mj_getState``/``mj_setState`` with ``mjSTATE_INTEGRATION`` (time, qpos, qvel, actuator
  activations, controls, warm-start accelerations: everything ``mj_step`` reads), plus the body/site/geom
  kinematics of the last forward pass, which some envs read *before* stepping (Ant's torso ``xpos``, Humanoid's
  centre of mass from ``xipos``) and which ``mj_step`` leaves one substep behind the state.
- Gymnasium's classic-control envs keep their whole state in ``env.unwrapped.state``.
- Both: the TimeLimit step counter.
- Any other env (and MuJoCo envs that keep state of their own beyond the physics, like Meta-World's goals and
  previous frame): no env state is recorded and the resumed run starts a new episode (valid, not bit-identical).
"""

from __future__ import annotations

import math
import re
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
import torch

from smose._version import __version__
from smose.errors import SmoseError
from smose.serialization import (WriteError, check_format, check_seal, check_tensor_specs, fsync_dir, json_bytes,
                                 open_safetensors, read_json, replace_file, seal, tensor_spec, write_safetensors)
from smose.run import CHECKPOINT_DIR, CHECKPOINT_JSON  # noqa: F401 (re-exported)

if TYPE_CHECKING:
    from smose.training.trainer import Trainer

CHECKPOINT_FORMAT = "smose-checkpoint"
CHECKPOINT_FORMAT_VERSION = 1
TENSOR_FILE_RE = re.compile(r"step-\d{9,}-[0-9a-f]{8}\.safetensors")
MODULES = ("actor", "critic", "critic_target")
OPTIMIZERS = ("actor_opt", "critic_opt", "alpha_opt")
ADAM_STATE_KEYS = ("exp_avg", "exp_avg_sq", "step")
# Config fields a resumed run may change: they do not enter the maths of the steps already taken.
RESUMABLE_FIELDS = ("steps", "checkpoint_every", "out", "threads")
ENV_KINDS = ("mujoco", "classic-control", "none")
MUJOCO_DERIVED = ("xpos", "xquat", "xmat", "xipos", "ximat", "geom_xpos", "geom_xmat", "site_xpos", "site_xmat",
                  "subtree_com", "cinert", "cvel", "cfrc_ext")
BUFFER_CHUNK_ROWS = 65_536  # rows copied at a time when restoring the buffer (keeps the extra memory small)


# ---- the env -------------------------------------------------------------------------------------------------------
def env_state_kind(env: gym.Env) -> str:
    """How the env's mid-episode state can be saved: "mujoco", "classic-control" or "none"."""
    unwrapped = env.unwrapped
    from gymnasium.envs.mujoco.mujoco_env import MujocoEnv

    from smose.tasks.suites import keeps_state_beyond_physics

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


def env_state_spec(env: gym.Env, kind: str, dtype: str) -> tuple[tuple[int, ...], str] | None:
    """Expected (shape, dtype) of the saved env state for this env."""
    unwrapped = env.unwrapped
    if kind == "mujoco":
        mujoco, spec = _mujoco_spec()
        size = mujoco.mj_stateSize(unwrapped.model, spec)
        size += sum(getattr(unwrapped.data, name).size for name in MUJOCO_DERIVED)
        return (size,), "F64"
    if kind == "classic-control":
        return tuple(unwrapped.state.shape), dtype  # MountainCarContinuous switches float64 -> float32 mid-episode
    return None


def restore_env_state(env: gym.Env, kind: str, state: np.ndarray) -> None:
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


# ---- validation helpers --------------------------------------------------------------------------------------------
_KIND_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true/false", dict: "an object",
               list: "a list"}


def _get(data: Any, dotted: str, kind: type, path: Path, optional: bool = False) -> Any:
    """``data["a"]["b"]`` for ``dotted="a.b"``, which must be of ``kind`` (bools are not numbers here)."""
    value = data
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            raise SmoseError(f"{path}: invalid checkpoint ({dotted} is missing)")
        value = value[key]
    if value is None and optional:
        return None
    accepted = (int, float) if kind is float else kind
    if not isinstance(value, accepted) or (kind is not bool and isinstance(value, bool)) or \
            (kind is float and not math.isfinite(value)):
        raise SmoseError(f"{path}: invalid checkpoint ({dotted} must be {_KIND_NAMES[kind]}, got {str(value)[:60]})")
    return value


def _count(data: Any, dotted: str, path: Path, low: int = 0, high: int | None = None) -> int:
    value = _get(data, dotted, int, path)
    if value < low or (high is not None and value > high):
        bounds = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise SmoseError(f"{path}: invalid checkpoint ({dotted} must be in {bounds}, got {value})")
    return value


# ---- saving --------------------------------------------------------------------------------------------------------
def checkpoint_path(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / CHECKPOINT_JSON


def save_checkpoint(trainer: Trainer, finished: bool = False) -> Path:
    """Write the trainer's complete state atomically into ``run_dir/checkpoint``; returns checkpoint.json's path.

    On failure (full disk, read-only directory) raises WriteError; the previous checkpoint is then left intact and
    the partial files removed.
    """
    assert trainer.run_dir is not None
    directory = trainer.run_dir / CHECKPOINT_DIR
    learner, buffer, env = trainer.learner, trainer.buffer, trainer.env
    metrics_bytes = trainer.metrics_position()  # flushes the logs first: rows up to this step are on disk
    last_return = trainer.last_episode_return
    state = learner.state_dict()
    tensors: dict[str, torch.Tensor | np.ndarray] = {}
    for module in MODULES:
        tensors |= {f"{module}/{k}": v for k, v in state[module].items()}
    tensors["log_alpha"] = state["log_alpha"]
    optimizer_keys: dict[str, dict[str, list[str]]] = {}
    for name in OPTIMIZERS:
        optimizer_keys[name] = {}
        for index, entries in state[name]["state"].items():
            optimizer_keys[name][str(index)] = sorted(entries)
            tensors |= {f"{name}/{index}/{key}": value for key, value in entries.items()}
    tensors["buffer"] = buffer.data[: buffer.size]  # only the filled rows, written without a copy
    tensors["rng/torch"] = torch.get_rng_state()
    tensors["env/obs"] = np.asarray(trainer.obs)
    kind = env_state_kind(env)
    env_state = capture_env_state(env, kind)
    if env_state is not None:
        tensors["env/state"] = env_state
    limits = _time_limits(env)

    name = f"step-{trainer.global_step:09d}-{secrets.token_hex(4)}.safetensors"
    tmp = directory / f".{name}.tmp"
    try:
        directory.mkdir(exist_ok=True)
        sha256 = write_safetensors(tmp, tensors, {"format": CHECKPOINT_FORMAT,
                                                  "format_version": str(CHECKPOINT_FORMAT_VERSION)})
        tmp.rename(directory / name)
        data = {
            "format": CHECKPOINT_FORMAT,
            "format_version": CHECKPOINT_FORMAT_VERSION,
            "smose_version": __version__,
            "step": trainer.global_step,
            "finished": finished,
            "tensor_file": name,
            "tensor_sha256": sha256,
            "config": trainer.config.to_dict(),
            "learner": {"n_updates": state["n_updates"], "optimizer_state": optimizer_keys},
            "buffer": {"pos": buffer.pos, "size": buffer.size},
            "episode": {"return": trainer.episode_return, "length": trainer.episode_length,
                        "usage": trainer.episode_usage.tolist(), "success": trainer.episode_success,
                        "last_return": None if math.isnan(last_return) else last_return},
            "last_eval": trainer.last_eval,
            "last_stats": {k: float(v) for k, v in trainer.stats.items()},
            "rng": {"numpy": trainer.rng.bit_generator.state,
                    "env": rng_state(env.unwrapped.np_random),
                    "action_space": env.action_space.np_random.bit_generator.state},
            "env": {"kind": kind, "state_dtype": None if env_state is None else tensor_spec(env_state)[1],
                    "elapsed_steps": limits[0]._elapsed_steps if limits else None},
            "metrics_bytes": metrics_bytes,
        }
        replace_file(directory / CHECKPOINT_JSON, json_bytes(seal(data)))  # the commit point
        fsync_dir(directory)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if not _committed(directory, name):
            (directory / name).unlink(missing_ok=True)
        raise WriteError(f"{directory}: cannot write the checkpoint at step {trainer.global_step} "
                         f"({exc.strerror or exc})") from None
    for stale in directory.iterdir():  # older tensor files and leftovers of interrupted writes
        if stale.name not in (name, CHECKPOINT_JSON):
            stale.unlink(missing_ok=True)
    return directory / CHECKPOINT_JSON


def _committed(directory: Path, name: str) -> bool:
    try:
        return read_json(directory / CHECKPOINT_JSON, "checkpoint").get("tensor_file") == name
    except (SmoseError, AttributeError):
        return False


# ---- loading -------------------------------------------------------------------------------------------------------
def read_checkpoint_json(run_dir: Path) -> dict:
    """checkpoint.json of a run, with its format checked (the rest is checked by ``load_checkpoint``)."""
    path = checkpoint_path(run_dir)
    if not path.is_file():
        raise SmoseError(f"{run_dir}: no checkpoint to resume from ({path} is missing; checkpoints are written every "
                         f"--checkpoint-every steps, at the end and on Ctrl-C)")
    data = check_format(read_json(path, "checkpoint"), path, CHECKPOINT_FORMAT, CHECKPOINT_FORMAT_VERSION,
                        "smose checkpoint")
    check_seal(data, path, "checkpoint")
    _count(data, "step", path)
    return data


def load_checkpoint(trainer: Trainer, data: dict, source: Path | None = None,
                    may_differ: tuple[str, ...] = ()) -> None:
    """Restore ``trainer`` (freshly built from the run's config.json) to the checkpoint described by ``data``.

    Everything is validated against the live trainer before it is used; any problem is a SmoseError naming the file.
    ``source``: the run directory the checkpoint is in (default: the trainer's own); ``may_differ``: configuration
    fields besides RESUMABLE_FIELDS that may differ from the checkpoint's (a fine-tuning run's, smose.training.finetune).
    """
    assert trainer.run_dir is not None
    directory = Path(source if source is not None else trainer.run_dir) / CHECKPOINT_DIR
    path = directory / CHECKPOINT_JSON
    learner, buffer, env, config = trainer.learner, trainer.buffer, trainer.env, trainer.config

    saved_config = _get(data, "config", dict, path)
    written_before = {"env_kwargs": {}}  # fields newer than some checkpoints: their absence means the default
    for key, value in config.to_dict().items():
        if key not in (*RESUMABLE_FIELDS, *may_differ) and saved_config.get(key, written_before.get(key)) != value:
            raise SmoseError(f"{path}: the checkpoint was written with {key}={saved_config.get(key)!r} but the run's "
                             f"config.json says {value!r}")
    step = _count(data, "step", path)
    _get(data, "finished", bool, path)
    n_updates = _count(data, "learner.n_updates", path, high=step)
    size = _count(data, "buffer.size", path, high=min(step, buffer.capacity))
    pos = _count(data, "buffer.pos", path, high=buffer.capacity - 1)
    if size < buffer.capacity and pos != size:
        raise SmoseError(f"{path}: invalid checkpoint (buffer.pos {pos} does not follow buffer.size {size})")
    episode_return = _get(data, "episode.return", float, path)
    episode_length = _count(data, "episode.length", path, high=step)
    usage = _get(data, "episode.usage", list, path)
    if len(usage) != trainer.n_experts or not all(isinstance(u, int) and not isinstance(u, bool) and 0 <= u <= step
                                                  for u in usage):
        raise SmoseError(f"{path}: invalid checkpoint (episode.usage must be {trainer.n_experts} step counts)")
    last_return = _get(data, "episode.last_return", float, path, optional=True)
    # success: None while the env has reported none this episode (and in checkpoints older than the field)
    success = _get(data, "episode.success", bool, path, optional=True) if "success" in data["episode"] else None
    last_eval = _get(data, "last_eval", dict, path, optional=True)
    if last_eval is not None:
        _count(last_eval, "step", path, high=step)
        _get(last_eval, "mean", float, path)
    stats = _get(data, "last_stats", dict, path)
    for key in stats:
        _get(stats, key, float, path)
    metrics_bytes = _get(data, "metrics_bytes", int, path, optional=True)
    kind = _get(data, "env.kind", str, path)
    if kind != env_state_kind(env):
        raise SmoseError(f"{path}: invalid checkpoint (env.kind {kind!r} does not match {config.env})")
    elapsed = _get(data, "env.elapsed_steps", int, path, optional=True)
    state_dtype = _get(data, "env.state_dtype", str, path, optional=True)
    rng = _get(data, "rng", dict, path)
    name = _get(data, "tensor_file", str, path)
    if not TENSOR_FILE_RE.fullmatch(name):  # a plain file name: never a path out of the checkpoint directory
        raise SmoseError(f"{path}: invalid checkpoint (tensor_file {name[:60]!r} is not a checkpoint file name)")
    sha256 = _get(data, "tensor_sha256", str, path)

    # The tensors every one of these objects must find, with their shapes, from the live trainer.
    state = learner.state_dict()
    expected = {f"{m}/{k}": tensor_spec(v) for m in MODULES for k, v in state[m].items()}
    expected["log_alpha"] = tensor_spec(state["log_alpha"])
    optimizer_keys = _get(data, "learner.optimizer_state", dict, path)
    optimizer_state: dict[str, dict[int, dict[str, str]]] = {}
    for opt_name in OPTIMIZERS:
        params = [p for group in getattr(learner, opt_name).param_groups for p in group["params"]]
        optimizer_state[opt_name] = {}
        for index_text, keys in _get(optimizer_keys, opt_name, dict, path).items():
            if not (index_text.isdigit() and int(index_text) < len(params) and isinstance(keys, list)
                    and all(key in ADAM_STATE_KEYS for key in keys)):
                raise SmoseError(f"{path}: invalid checkpoint (optimizer state {opt_name}/{index_text[:20]})")
            index = int(index_text)
            optimizer_state[opt_name][index] = {}
            for key in keys:
                shape = () if key == "step" else tuple(params[index].shape)
                expected[f"{opt_name}/{index}/{key}"] = (shape, "F32")
                optimizer_state[opt_name][index][key] = f"{opt_name}/{index}/{key}"
    expected["buffer"] = ((size, buffer.width), "F32")
    expected["rng/torch"] = tensor_spec(torch.get_rng_state())
    expected["env/obs"] = tensor_spec(np.asarray(trainer.obs))
    env_spec = env_state_spec(env, kind, state_dtype or "")
    if env_spec is not None:
        expected["env/state"] = env_spec

    tensor_path = directory / name
    with open_safetensors(tensor_path, "checkpoint tensors") as handle:
        if (handle.metadata() or {}).get("data_sha256") != sha256:
            raise SmoseError(f"{tensor_path}: checkpoint tensors do not match the SHA-256 in {path.name}")
        check_tensor_specs(tensor_path, handle, expected, "checkpoint tensors")
        # Cloned: safetensors maps the file, and a view kept alive would pin the file (deleted at the next
        # checkpoint) on disk and in memory.
        tensors = {key: handle.get_tensor(key).clone() for key in expected if key != "buffer"}
        rows = handle.get_slice("buffer")
        for start in range(0, size, BUFFER_CHUNK_ROWS):
            stop = min(start + BUFFER_CHUNK_ROWS, size)
            buffer.data[start:stop] = rows[start:stop].numpy()

    learner_state = {m: {k: tensors[f"{m}/{k}"] for k in state[m]} for m in MODULES}
    for opt_name in OPTIMIZERS:
        entries = optimizer_state[opt_name].items()
        learner_state[opt_name] = {
            "state": {i: {k: tensors[tensor_name] for k, tensor_name in keys.items()} for i, keys in entries},
            "param_groups": state[opt_name]["param_groups"],  # hyper-parameters: from the (checked) config
        }
    learner_state |= {"log_alpha": tensors["log_alpha"], "n_updates": n_updates}
    try:
        learner.load_state_dict(learner_state)
        torch.set_rng_state(tensors["rng/torch"])
        trainer.rng.bit_generator.state = _get(rng, "numpy", dict, path)
        set_rng_state(env.unwrapped.np_random, _get(rng, "env", dict, path))
        env.action_space.np_random.bit_generator.state = _get(rng, "action_space", dict, path)
    except (KeyError, TypeError, ValueError, RuntimeError, OverflowError) as exc:
        raise SmoseError(f"{path}: invalid checkpoint ({str(exc).splitlines()[0][:200]})") from None

    buffer.pos, buffer.size = pos, size
    if kind == "none":  # the env cannot be put back mid-episode: start a new one from the restored RNG
        trainer.obs, _ = env.reset()
        episode_return, episode_length, usage, success = 0.0, 0, [0] * trainer.n_experts, None
    else:
        restore_env_state(env, kind, tensors["env/state"].numpy())
        trainer.obs = tensors["env/obs"].numpy()
        for limit in _time_limits(env):
            limit._elapsed_steps = elapsed if elapsed is not None else episode_length
    trainer.global_step = step
    trainer.episode_return, trainer.episode_length = float(episode_return), episode_length
    trainer.episode_usage[:] = usage
    trainer.episode_success = success
    trainer.last_episode_return = float("nan") if last_return is None else float(last_return)
    trainer.last_eval = last_eval
    trainer.stats = {k: torch.tensor(float(v)) for k, v in stats.items()}
    trainer.checkpoint_step = step
    trainer.resume_metrics_bytes = metrics_bytes
