"""Resumable training checkpoints: a trainer's state dict (``Trainer.state_dict``) as one safetensors file plus one
JSON file, and back.

Layout inside a run directory::

    checkpoint/checkpoint.json                      the commit point: step and episode counters, RNG states, the
                                                    metrics.csv position, the name and SHA-256 of the tensor file
    checkpoint/step-000050000-1a2b3c4d.safetensors  actor, critics, target critics, Adam moments, log α, the filled
                                                    replay rows, the torch RNG state, the observation and env state

Atomic: the tensor file is written under a temporary name, fsynced and renamed to a fresh unique name; then
checkpoint.json is replaced atomically (the commit), and only then are older tensor files deleted. Whenever the
process dies, checkpoint.json names a complete tensor file. Nothing is pickled: safetensors and JSON only.

What the state holds, and why a resumed run continues exactly, is said where it is gathered (``Trainer.state_dict``,
``smose.tasks.env_state``). This module maps the state dict to the two files and back, and checks everything it
reads against a template: the state dict of a trainer freshly built from the run's config.json.
"""

from __future__ import annotations

import contextlib
import math
import re
import secrets
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from smose._version import __version__
from smose.algo.sac import MODULES, OPTIMIZERS
from smose.errors import SmoseError
from smose.run import CHECKPOINT_DIR, CHECKPOINT_JSON
from smose.serialization import (
    WriteError,
    check_format,
    check_seal,
    check_tensor_specs,
    fsync_dir,
    json_bytes,
    open_safetensors,
    read_json,
    replace_file,
    seal,
    tensor_spec,
    write_safetensors,
)

CHECKPOINT_FORMAT = "smose-checkpoint"
CHECKPOINT_FORMAT_VERSION = 1
TENSOR_FILE_RE = re.compile(r"step-\d{9,}-[0-9a-f]{8}\.safetensors")
ADAM_STATE_KEYS = ("exp_avg", "exp_avg_sq", "step")  # what torch's Adam keeps per parameter
# Config fields a resumed run may change: they do not enter the maths of the steps already taken.
RESUMABLE_FIELDS = ("steps", "checkpoint_every", "out", "threads")


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


def _tensor_entries(state: dict) -> dict[str, torch.Tensor | np.ndarray]:
    """The state's tensors and arrays under their names in the tensor file."""
    learner, env = state["learner"], state["env"]
    tensors: dict[str, torch.Tensor | np.ndarray] = {}
    for module in MODULES:
        tensors |= {f"{module}/{k}": v for k, v in learner[module].items()}
    tensors["log_alpha"] = learner["log_alpha"]
    for name in OPTIMIZERS:
        for index, entries in learner[name]["state"].items():
            tensors |= {f"{name}/{index}/{key}": value for key, value in entries.items()}
    tensors["buffer"] = state["buffer"]["data"]  # only the filled rows, written without a copy
    tensors["rng/torch"] = state["rng"]["torch"]
    tensors["env/obs"] = env["obs"]
    if env["state"] is not None:
        tensors["env/state"] = env["state"]
    return tensors


def _json_entries(state: dict) -> dict:
    """Everything else in the state, as checkpoint.json holds it."""
    learner, env = state["learner"], state["env"]
    optimizer_keys = {name: {str(index): sorted(entries) for index, entries in learner[name]["state"].items()}
                      for name in OPTIMIZERS}
    return {
        "config": state["config"],
        "learner": {"n_updates": learner["n_updates"], "optimizer_state": optimizer_keys},
        "buffer": {"pos": state["buffer"]["pos"], "size": state["buffer"]["size"]},
        "episode": state["episode"],
        "last_eval": state["last_eval"],
        "last_stats": state["last_stats"],
        "rng": {key: value for key, value in state["rng"].items() if key != "torch"},
        "env": {"kind": env["kind"], "state_dtype": None if env["state"] is None else tensor_spec(env["state"])[1],
                "elapsed_steps": env["elapsed_steps"]},
        "metrics_bytes": state["metrics_bytes"],
    }


def save_checkpoint(run_dir: Path, state: dict, finished: bool = False) -> Path:
    """Write the training state ``state`` (``Trainer.state_dict``) atomically into ``run_dir/checkpoint``; returns
    checkpoint.json's path. ``finished``: the run has reached its last step.

    On failure (full disk, read-only directory) raises WriteError; the previous checkpoint is then left intact and
    the partial files removed.
    """
    directory = Path(run_dir) / CHECKPOINT_DIR
    step = state["step"]
    tensors, entries = _tensor_entries(state), _json_entries(state)
    name = f"step-{step:09d}-{secrets.token_hex(4)}.safetensors"
    tmp = directory / f".{name}.tmp"
    try:
        directory.mkdir(exist_ok=True)
        sha256 = write_safetensors(tmp, tensors, {"format": CHECKPOINT_FORMAT,
                                                  "format_version": str(CHECKPOINT_FORMAT_VERSION)})
        tmp.rename(directory / name)
        data = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_FORMAT_VERSION,
                "smose_version": __version__, "step": step, "finished": finished, "tensor_file": name,
                "tensor_sha256": sha256, **entries}
        replace_file(directory / CHECKPOINT_JSON, json_bytes(seal(data)))  # the commit point
        fsync_dir(directory)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if not _committed(directory, name):
            (directory / name).unlink(missing_ok=True)
        raise WriteError(f"{directory}: cannot write the checkpoint at step {step} ({exc.strerror or exc})") from None
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


class FileRows:
    """The replay buffer's rows in the tensor file, read a slice at a time: ``ReplayBuffer.load_state_dict`` copies
    them in chunks, so a million-row buffer is never held in memory twice."""

    def __init__(self, rows: Any, shape: tuple[int, int]):
        self._rows, self.shape = rows, shape

    def __getitem__(self, rows: slice) -> np.ndarray:
        return self._rows[rows].numpy()


@contextlib.contextmanager
def load_checkpoint(run_dir: Path, data: dict, template: dict, may_differ: tuple[str, ...] = ()) -> Iterator[dict]:
    """The training state of the checkpoint in ``run_dir`` that ``data`` (its checkpoint.json, read_checkpoint_json)
    describes, for ``Trainer.load_state_dict``::

        with load_checkpoint(run_dir, data, trainer.state_dict()) as state:
            trainer.load_state_dict(state)

    Every field and tensor is checked against ``template``, the state dict of the trainer that is to load it (built
    from the run's config.json), before it is used; any problem is a SmoseError naming the file, and so is a value
    refused while the state is loaded inside the with-block (the replay rows are read from the file there).
    ``may_differ``: configuration fields besides RESUMABLE_FIELDS that may differ from the checkpoint's (a
    fine-tuning run's, smose.training.finetune).
    """
    directory = Path(run_dir) / CHECKPOINT_DIR
    path = directory / CHECKPOINT_JSON
    config, learner_template = template["config"], template["learner"]
    capacity, width = config["buffer_size"], template["buffer"]["data"].shape[1]  # the replay buffer's
    n_experts = len(template["episode"]["usage"])

    saved_config = _get(data, "config", dict, path)
    written_before = {"env_kwargs": {}}  # fields newer than some checkpoints: their absence means the default
    for key, value in config.items():
        if key not in (*RESUMABLE_FIELDS, *may_differ) and saved_config.get(key, written_before.get(key)) != value:
            raise SmoseError(f"{path}: the checkpoint was written with {key}={saved_config.get(key)!r} but the run's "
                             f"config.json says {value!r}")
    step = _count(data, "step", path)
    _get(data, "finished", bool, path)
    n_updates = _count(data, "learner.n_updates", path, high=step)
    size = _count(data, "buffer.size", path, high=min(step, capacity))
    pos = _count(data, "buffer.pos", path, high=capacity - 1)
    if size < capacity and pos != size:
        raise SmoseError(f"{path}: invalid checkpoint (buffer.pos {pos} does not follow buffer.size {size})")
    episode_return = _get(data, "episode.return", float, path)
    episode_length = _count(data, "episode.length", path, high=step)
    usage = _get(data, "episode.usage", list, path)
    if len(usage) != n_experts or not all(isinstance(u, int) and not isinstance(u, bool) and 0 <= u <= step
                                          for u in usage):
        raise SmoseError(f"{path}: invalid checkpoint (episode.usage must be {n_experts} step counts)")
    last_return = _get(data, "episode.last_return", float, path, optional=True)
    # success: None while the env has reported none this episode (and in checkpoints older than the field)
    success = _get(data, "episode.success", bool, path, optional=True) if "success" in data["episode"] else None
    # the progress bar's success of the last episodes (absent from checkpoints older than the field)
    recent = (_get(data, "episode.recent_successes", list, path, optional=True) or []
              if "recent_successes" in data["episode"] else [])
    if not all(isinstance(flag, bool) for flag in recent):
        raise SmoseError(f"{path}: invalid checkpoint (episode.recent_successes must be a list of true/false)")
    last_eval = _get(data, "last_eval", dict, path, optional=True)
    if last_eval is not None:
        _count(last_eval, "step", path, high=step)
        _get(last_eval, "mean", float, path)
    stats = _get(data, "last_stats", dict, path)
    for key in stats:
        _get(stats, key, float, path)
    metrics_bytes = _get(data, "metrics_bytes", int, path, optional=True)
    kind = _get(data, "env.kind", str, path)
    if kind != template["env"]["kind"]:
        raise SmoseError(f"{path}: invalid checkpoint (env.kind {kind!r} does not match {config['env']})")
    elapsed = _get(data, "env.elapsed_steps", int, path, optional=True)
    state_dtype = _get(data, "env.state_dtype", str, path, optional=True)
    rng = {key: _get(data, f"rng.{key}", dict, path) for key in ("numpy", "env", "action_space")}
    name = _get(data, "tensor_file", str, path)
    if not TENSOR_FILE_RE.fullmatch(name):  # a plain file name: never a path out of the checkpoint directory
        raise SmoseError(f"{path}: invalid checkpoint (tensor_file {name[:60]!r} is not a checkpoint file name)")
    sha256 = _get(data, "tensor_sha256", str, path)

    # The tensors the file must hold, with their shapes, from the template.
    expected: dict[str, tuple[tuple[int, ...] | None, str]] = {
        f"{m}/{k}": tensor_spec(v) for m in MODULES for k, v in learner_template[m].items()}
    expected["log_alpha"] = tensor_spec(learner_template["log_alpha"])
    optimizer_keys = _get(data, "learner.optimizer_state", dict, path)
    optimizer_state: dict[str, dict[int, list[str]]] = {}
    for opt_name in OPTIMIZERS:
        n_params = sum(len(group["params"]) for group in learner_template[opt_name]["param_groups"])
        optimizer_state[opt_name] = {}
        for index_text, keys in _get(optimizer_keys, opt_name, dict, path).items():
            if not (index_text.isdigit() and int(index_text) < n_params and isinstance(keys, list)
                    and all(key in ADAM_STATE_KEYS for key in keys)):
                raise SmoseError(f"{path}: invalid checkpoint (optimizer state {opt_name}/{index_text[:20]})")
            index = int(index_text)
            optimizer_state[opt_name][index] = keys
            for key in keys:  # a moment's shape is its parameter's: the learner checks it when loading
                expected[f"{opt_name}/{index}/{key}"] = (() if key == "step" else None, "F32")
    expected["buffer"] = ((size, width), "F32")
    expected["rng/torch"] = tensor_spec(template["rng"]["torch"])
    expected["env/obs"] = tensor_spec(template["env"]["obs"])
    if template["env"]["state"] is not None:
        # The file's dtype: MountainCarContinuous's state switches from float64 to float32 mid-episode.
        shape, dtype = tensor_spec(template["env"]["state"])
        expected["env/state"] = (shape, state_dtype or dtype)

    tensor_path = directory / name
    with open_safetensors(tensor_path, "checkpoint tensors") as handle:
        if (handle.metadata() or {}).get("data_sha256") != sha256:
            raise SmoseError(f"{tensor_path}: checkpoint tensors do not match the SHA-256 in {path.name}")
        check_tensor_specs(tensor_path, handle, expected, "checkpoint tensors")
        # Cloned: safetensors maps the file, and a view kept alive would pin the file (deleted at the next
        # checkpoint) on disk and in memory.
        tensors = {key: handle.get_tensor(key).clone() for key in expected if key != "buffer"}
        learner = {m: {k: tensors[f"{m}/{k}"] for k in learner_template[m]} for m in MODULES}
        for opt_name, entries in optimizer_state.items():
            learner[opt_name] = {"state": {index: {key: tensors[f"{opt_name}/{index}/{key}"] for key in keys}
                                           for index, keys in entries.items()},
                                 "param_groups": learner_template[opt_name]["param_groups"]}
        learner |= {"log_alpha": tensors["log_alpha"], "n_updates": n_updates}
        state = {
            "step": step,
            "config": saved_config,
            "learner": learner,
            "buffer": {"data": FileRows(handle.get_slice("buffer"), (size, width)), "pos": pos, "size": size},
            "episode": {"return": episode_return, "length": episode_length, "usage": usage, "success": success,
                        "last_return": last_return, "recent_successes": recent},
            "last_eval": last_eval,
            "last_stats": stats,
            "rng": {"numpy": rng["numpy"], "torch": tensors["rng/torch"], "env": rng["env"],
                    "action_space": rng["action_space"]},
            "env": {"kind": kind, "obs": tensors["env/obs"].numpy(),
                    "state": tensors["env/state"].numpy() if "env/state" in tensors else None,
                    "elapsed_steps": elapsed},
            "metrics_bytes": metrics_bytes,
        }
        try:
            yield state
        except (KeyError, TypeError, ValueError, RuntimeError, OverflowError) as exc:  # e.g. an RNG state refused
            message = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise SmoseError(f"{path}: invalid checkpoint ({message[:200]})") from None
