"""Model files: ``model.safetensors`` (the actor's tensors) and ``model.json`` (what is needed to rebuild it).

Only safetensors and JSON are ever read, so opening a model someone sent cannot run code. Every load checks the
format name and version, the architecture and each tensor's shape, and turns any problem into a one-line SmoseError.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from smose import __version__
from smose.errors import SmoseError
from smose.policy import Actor, actor_from_architecture

MODEL_FORMAT = "smose-model"
MODEL_FORMAT_VERSION = 1
MODEL_WEIGHTS = "model.safetensors"
MODEL_META = "model.json"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary sibling, fsync, then rename: readers see the old file or the whole new one."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(Path(path), (json.dumps(data, indent=2, sort_keys=False) + "\n").encode())


def read_json(path: Path, what: str) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise SmoseError(f"{path}: missing {what}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SmoseError(f"{path}: {what} is not valid JSON ({exc})") from None
    except OSError as exc:
        raise SmoseError(f"{path}: cannot read {what} ({exc.strerror})") from None


def save_model(actor: Actor, directory: Path, env_id: str, extra: dict | None = None) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous() for k, v in actor.state_dict().items()}
    weights_tmp = directory / f".{MODEL_WEIGHTS}.tmp"
    save_file(tensors, str(weights_tmp), metadata={"format": MODEL_FORMAT, "format_version": str(MODEL_FORMAT_VERSION)})
    with open(weights_tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(weights_tmp, directory / MODEL_WEIGHTS)
    meta = {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "smose_version": __version__,
        "env_id": env_id,
        "architecture": actor.architecture(),
        "action_low": actor.action_low.tolist(),
        "action_high": actor.action_high.tolist(),
        "parameter_counts": actor.parameter_counts(),
        "tensors": {k: list(v.shape) for k, v in tensors.items()},
        **(extra or {}),
    }
    write_json(directory / MODEL_META, meta)


def load_model(directory: Path) -> tuple[Actor, dict]:
    """Rebuild the actor saved in ``directory``; returns (actor in eval mode, model.json contents)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise SmoseError(f"{directory}: no such run directory")
    meta_path, weights_path = directory / MODEL_META, directory / MODEL_WEIGHTS
    meta = read_json(meta_path, "model description")
    if not isinstance(meta, dict) or meta.get("format") != MODEL_FORMAT:
        raise SmoseError(f"{meta_path}: not a smose model description (format field missing or wrong)")
    if meta.get("format_version") != MODEL_FORMAT_VERSION:
        raise SmoseError(
            f"{meta_path}: model format version {meta.get('format_version')!r} is not supported "
            f"(this smose reads version {MODEL_FORMAT_VERSION})"
        )
    try:
        arch = meta["architecture"]
        actor = actor_from_architecture(arch, meta["action_low"], meta["action_high"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise SmoseError(f"{meta_path}: invalid architecture description ({exc})") from None
    if not weights_path.is_file():
        raise SmoseError(f"{weights_path}: missing model weights")
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise SmoseError(f"{weights_path}: unreadable model weights ({str(exc).splitlines()[0]})") from None
    expected = actor.state_dict()
    if set(tensors) != set(expected):
        missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
        raise SmoseError(f"{weights_path}: tensors do not match the architecture (missing {missing}, unexpected {extra})")
    for name, value in tensors.items():
        if value.shape != expected[name].shape or value.dtype != expected[name].dtype:
            raise SmoseError(
                f"{weights_path}: tensor {name!r} has shape {tuple(value.shape)} {value.dtype}, "
                f"expected {tuple(expected[name].shape)} {expected[name].dtype}"
            )
        if not torch.isfinite(value).all():
            raise SmoseError(f"{weights_path}: tensor {name!r} contains NaN or infinite values")
    actor.load_state_dict(tensors)
    actor.eval()
    return actor, meta


def check_env_compatible(meta: dict, env, source: Path) -> None:
    """Refuse to run a model on an env whose observation/action sizes or bounds differ from the ones it was trained on."""
    arch = meta["architecture"]
    n_obs, n_act = env.observation_space.shape[0], env.action_space.shape[0]
    if (n_obs, n_act) != (arch["n_obs"], arch["n_act"]):
        raise SmoseError(
            f"{source}: model trained on {meta.get('env_id')} ({arch['n_obs']} observations, {arch['n_act']} actions) "
            f"does not fit {env.spec.id if env.spec else 'this env'} ({n_obs} observations, {n_act} actions)"
        )
