"""File formats: safetensors for tensors, JSON for everything else, and the checks every loader applies.

Model files are ``model.safetensors`` (the actor's tensors) and ``model.json`` (what is needed to rebuild it).
Only safetensors and JSON are ever read, so opening a file someone sent cannot run code. Every load checks the
format name and version, the architecture and each tensor's shape, and turns any problem into a one-line SmoseError
naming the file.

Our safetensors files carry the SHA-256 of their data section in the header metadata (``data_sha256``): bit flips
in the weights are otherwise invisible, since any float pattern is a valid tensor.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from safetensors import SafetensorError, safe_open

from smose._version import __version__
from smose.algo.policy import ALGOS, Actor, actor_from_architecture
from smose.errors import SmoseError
from smose.run import EVAL_FILE, LINEAR_EVAL_FILE, MODEL_META, MODEL_WEIGHTS, SUCCESS_COLUMN, TIME_COLUMN  # noqa: F401
from smose.tasks.env_id import parse_env_id, task_name
from smose.tasks.features import flattened_keys

MODEL_FORMAT = "smose-model"
MODEL_FORMAT_VERSION = 1
MODEL_FORMAT_VERSIONS = (1, 2)  # 2: a SMOSE model routed by fixed trees (smose.interpret.tree_policy)
EVAL_FORMAT = "smose-eval"
EVAL_FORMAT_VERSION = 1
# Loaders refuse architecture numbers beyond these before allocating anything: a tampered model.json must not be
# able to request terabytes.
MAX_DIM = 100_000
MAX_HIDDEN_LAYERS = 16

_ST_DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.float64): "F64", np.dtype(np.uint8): "U8",
              np.dtype(np.int64): "I64"}
_TORCH_ST_DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.uint8: "U8", torch.int64: "I64"}
_HASH_CHUNK = 1 << 20


# ---- writing ---------------------------------------------------------------------------------------------------------
class WriteError(SmoseError):
    """A file could not be written (full disk, read-only or vanished directory); the message names the file."""


def write_error(path: Path, exc: OSError) -> WriteError:
    return WriteError(f"{path}: cannot write ({exc.strerror or exc})")


def _write_all(fh, data) -> None:
    """Every byte the package writes goes through here (one place to simulate a full disk in tests)."""
    fh.write(data)


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (POSIX: the directory entry must be synced, not just the file)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the rename itself is still atomic
    finally:
        os.close(fd)


def replace_file(path: Path, data: bytes) -> None:
    """Write to a temporary sibling, fsync, then rename: readers see the old file or the whole new one.

    On failure (e.g. a full disk) the temporary file is removed, the old file is untouched and the OSError raised.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as fh:
            _write_all(fh, data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """``replace_file`` that reports failures as a WriteError naming ``path``."""
    try:
        replace_file(path, data)
    except OSError as exc:
        raise write_error(path, exc) from None


def json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=False) + "\n").encode()


def write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(Path(path), json_bytes(data))


def _as_contiguous_numpy(value: torch.Tensor | np.ndarray) -> np.ndarray:
    array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
    return array if array.flags.c_contiguous else array.copy()  # the arrays we save are contiguous: no copy


def _data_chunks(arrays: dict[str, np.ndarray]) -> Iterator[memoryview]:
    for array in arrays.values():
        yield memoryview(array.reshape(-1)).cast("B")


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor | np.ndarray], metadata: dict[str, str]) -> str:
    """Write a safetensors file straight from the arrays' memory and return the SHA-256 of its data section.

    The library's ``save_file`` first serialises everything into one bytes object, which would double the memory
    of a million-row replay buffer; writing the (simple) format ourselves streams each array as it lies in memory.
    The data hash is computed in a first pass so it can go into the header. Not atomic by itself: callers write to
    a temporary name and rename.
    """
    arrays = {name: _as_contiguous_numpy(tensors[name]) for name in sorted(tensors)}  # same state, same bytes
    digest = hashlib.sha256()
    for chunk in _data_chunks(arrays):
        digest.update(chunk)
    header: dict[str, Any] = {}
    offset = 0
    for name, array in arrays.items():
        header[name] = {"dtype": _ST_DTYPES[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    header["__metadata__"] = {**metadata, "data_sha256": digest.hexdigest()}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the format pads the header to 8 bytes
    with open(path, "wb") as fh:
        _write_all(fh, struct.pack("<Q", len(raw)))
        _write_all(fh, raw)
        for chunk in _data_chunks(arrays):
            _write_all(fh, chunk)
        fh.flush()
        os.fsync(fh.fileno())
    return digest.hexdigest()


# ---- reading ---------------------------------------------------------------------------------------------------------
def read_json(path: Path, what: str) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise SmoseError(f"{path}: missing {what}") from None
    except IsADirectoryError:
        raise SmoseError(f"{path}: expected a {what} file, found a directory") from None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise SmoseError(f"{path}: {what} is not valid JSON ({str(exc).splitlines()[0][:200]})") from None
    except OSError as exc:
        raise SmoseError(f"{path}: cannot read {what} ({exc.strerror})") from None


def _content_sha256(data: dict) -> str:
    body = {k: v for k, v in data.items() if k != "content_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def seal(data: dict) -> dict:
    """``data`` plus the SHA-256 of its canonical JSON: a flipped digit would otherwise still be valid JSON."""
    return {**data, "content_sha256": _content_sha256(data)}


def check_seal(data: dict, path: Path, what: str) -> None:
    """Refuse a sealed JSON file whose contents changed since it was written (files without a seal pass)."""
    if "content_sha256" in data and data["content_sha256"] != _content_sha256(data):
        raise SmoseError(f"{path}: {what} is corrupted or was edited (SHA-256 of its contents does not match)")


def check_format(data: Any, path: Path, fmt: str, version: int | tuple[int, ...], what: str,
                 required: bool = True) -> dict:
    """The JSON object ``data`` must be a dict of format ``fmt`` and version ``version`` (or one of them).

    ``required=False`` accepts files without a format field (written before the field existed) as version 1.
    """
    if not isinstance(data, dict):
        raise SmoseError(f"{path}: not a {what} (expected a JSON object, found {type(data).__name__})")
    if "format" not in data and not required:
        return data
    if data.get("format") != fmt:
        raise SmoseError(f"{path}: not a {what} (format field missing or not {fmt!r})")
    versions = version if isinstance(version, tuple) else (version,)
    found = data.get("format_version")
    if not (isinstance(found, int) and not isinstance(found, bool) and found in versions):
        readable = f"version {versions[0]}" if len(versions) == 1 else \
            f"versions {', '.join(map(str, versions[:-1]))} and {versions[-1]}"
        raise SmoseError(f"{path}: {what} format version {found!r} is not supported (this smose reads {readable})")
    return data


def open_safetensors(path: Path, what: str):
    """Open a safetensors file after checking its structure and, when recorded, the SHA-256 of its data section.

    Returns a ``safe_open`` handle (use it as a context manager); tensors are read lazily from it.
    """
    path = Path(path)
    if not path.is_file():
        raise SmoseError(f"{path}: missing {what}")
    try:
        handle = safe_open(str(path), framework="pt")
        metadata = handle.metadata() or {}
        with open(path, "rb") as fh:
            (header_len,) = struct.unpack("<Q", fh.read(8))
            fh.seek(8 + header_len)
            digest = hashlib.sha256()
            while chunk := fh.read(_HASH_CHUNK):
                digest.update(chunk)
    except (SafetensorError, OSError, ValueError, RuntimeError, struct.error) as exc:
        raise SmoseError(f"{path}: unreadable {what} ({str(exc).splitlines()[0][:200]})") from None
    recorded = metadata.get("data_sha256")
    if recorded is not None and recorded != digest.hexdigest():
        raise SmoseError(f"{path}: {what} are corrupted (SHA-256 of the data does not match the one recorded)")
    return handle


def check_tensor_specs(path: Path, handle, expected: dict[str, tuple[tuple[int, ...] | None, str]], what: str) -> None:
    """The file must hold exactly the ``expected`` tensor names, each with the given shape and dtype name (F32...); a
    shape of None is not checked here (the tensor's loader checks it)."""
    names = set(handle.keys())
    if names != set(expected):
        missing, extra = sorted(set(expected) - names), sorted(names - set(expected))
        raise SmoseError(f"{path}: {what} do not match (missing {missing[:5]}, unexpected {extra[:5]})")
    for name, (shape, dtype) in expected.items():
        found = handle.get_slice(name)
        if (shape is not None and tuple(found.get_shape()) != tuple(shape)) or found.get_dtype() != dtype:
            wanted = "any shape" if shape is None else tuple(shape)
            raise SmoseError(f"{path}: tensor {name!r} has shape {tuple(found.get_shape())} {found.get_dtype()}, "
                             f"expected {wanted} {dtype}")


def tensor_spec(value: torch.Tensor | np.ndarray) -> tuple[tuple[int, ...], str]:
    """(shape, safetensors dtype name) of a tensor (also a shape-only "meta" tensor) or array."""
    if isinstance(value, torch.Tensor):
        return tuple(value.shape), _TORCH_ST_DTYPES[value.dtype]
    return tuple(value.shape), _ST_DTYPES[np.dtype(value.dtype)]


# ---- models ----------------------------------------------------------------------------------------------------------
def save_model(actor: Actor, directory: Path, env_id: str, extra: dict | None = None) -> None:
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(directory, exc) from None
    tensors = {k: v.detach().contiguous() for k, v in sorted(actor.state_dict().items())}
    weights_tmp = directory / f".{MODEL_WEIGHTS}.tmp"
    try:
        write_safetensors(weights_tmp, tensors, {"format": MODEL_FORMAT, "format_version": str(MODEL_FORMAT_VERSION)})
        os.replace(weights_tmp, directory / MODEL_WEIGHTS)
    except OSError as exc:
        weights_tmp.unlink(missing_ok=True)
        raise write_error(directory / MODEL_WEIGHTS, exc) from None
    architecture = actor.architecture()
    version = MODEL_FORMAT_VERSION
    if "router" in architecture:  # a tree-routed controller: its trees go first, model.json names them
        from smose.interpret.tree_policy import TREE_ROUTED_MODEL_VERSION, save_routing_trees

        save_routing_trees(actor, directory)  # type: ignore[arg-type]
        version = TREE_ROUTED_MODEL_VERSION
    meta = {
        "format": MODEL_FORMAT,
        "format_version": version,
        "smose_version": __version__,
        "env_id": env_id,
        "architecture": architecture,
        "action_low": actor.action_low.tolist(),
        "action_high": actor.action_high.tolist(),
        "parameter_counts": actor.parameter_counts(),
        "tensors": {k: list(v.shape) for k, v in tensors.items()},
        **(extra or {}),
    }
    write_json(directory / MODEL_META, seal(meta))


def _is_int(value: Any, low: int = 1, high: int = MAX_DIM) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _check_model_meta(meta: dict, path: Path) -> None:
    """Types and ranges of everything load_model uses, checked before anything is allocated."""
    def fail(problem: str) -> SmoseError:
        return SmoseError(f"{path}: invalid model description ({problem})")

    if not isinstance(meta.get("env_id"), str):
        raise fail("env_id must be a string")
    arch = meta.get("architecture")
    if not isinstance(arch, dict) or arch.get("algo") not in ALGOS:
        raise fail(f"architecture.algo must be one of {', '.join(ALGOS)}")
    for key in ("n_obs", "n_act") + (("n_experts",) if arch["algo"] == "smose" else ()):
        if not _is_int(arch.get(key)):
            raise fail(f"architecture.{key} must be an integer in [1, {MAX_DIM}], got {arch.get(key)!r}")
    _check_tree_router(meta, fail)
    if arch["algo"] != "smose":
        hidden = arch.get("hidden")
        if not (isinstance(hidden, list) and 1 <= len(hidden) <= MAX_HIDDEN_LAYERS and all(map(_is_int, hidden))):
            raise fail(f"architecture.hidden must be a list of 1 to {MAX_HIDDEN_LAYERS} layer sizes")
    if not isinstance(meta.get("env_kwargs", {}), dict):
        raise fail("env_kwargs must be an object")
    keys = meta.get("observation_keys")
    if keys is not None and not (
            isinstance(keys, list) and all(isinstance(k, list) and len(k) == 2 and isinstance(k[0], str)
                                           and _is_int(k[1]) for k in keys)
            and sum(k[1] for k in keys) == arch["n_obs"]):
        raise fail(f"observation_keys must be a list of [key, size] pairs whose sizes add up to {arch['n_obs']}")
    bounds = []
    for key in ("action_low", "action_high"):
        value = meta.get(key)
        if not (isinstance(value, list) and len(value) == arch["n_act"]
                and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in value)):
            raise fail(f"{key} must be a list of {arch['n_act']} finite numbers")
        bounds.append(value)
    if not all(lo < hi for lo, hi in zip(*bounds, strict=True)):
        raise fail("action_low must be below action_high")


def _check_tree_router(meta: dict, fail) -> None:
    """Format version 2 is a SMOSE model routed by fixed trees (smose.interpret.tree_policy), and only that."""
    from smose.choices import KINDS
    from smose.interpret.tree_policy import TREE_ROUTED_MODEL_VERSION, TREE_ROUTER

    arch = meta["architecture"]
    if meta["format_version"] != TREE_ROUTED_MODEL_VERSION:
        if "router" in arch:
            raise fail(f"architecture.router needs format_version {TREE_ROUTED_MODEL_VERSION}")
        return
    digest = arch.get("trees_sha256")
    if (arch["algo"] != "smose" or arch.get("router") != TREE_ROUTER or arch.get("tree_kind") not in KINDS
            or not (isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest))):
        raise fail(f"format_version {TREE_ROUTED_MODEL_VERSION} is a SMOSE model routed by trees: architecture.router "
                   f"must be {TREE_ROUTER!r}, tree_kind one of {', '.join(KINDS)} and trees_sha256 a SHA-256")


def load_model(directory: Path) -> tuple[Actor, dict]:
    """Rebuild the actor saved in ``directory``; returns (actor in eval mode, model.json contents)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise SmoseError(f"{directory}: no such run directory")
    meta_path, weights_path = directory / MODEL_META, directory / MODEL_WEIGHTS
    meta = check_format(read_json(meta_path, "model description"), meta_path, MODEL_FORMAT, MODEL_FORMAT_VERSIONS,
                        "smose model description")
    check_seal(meta, meta_path, "model description")
    _check_model_meta(meta, meta_path)
    arch, low, high = meta["architecture"], meta["action_low"], meta["action_high"]
    with torch.device("meta"):  # shapes only: nothing is allocated until the file is known to match
        template = actor_from_architecture(arch, low, high)
    expected = {k: tensor_spec(v) for k, v in template.state_dict().items()}
    with open_safetensors(weights_path, "model weights") as handle:
        check_tensor_specs(weights_path, handle, expected, "model weights")
        tensors = {name: handle.get_tensor(name).clone() for name in expected}  # not views of the mapped file
    for name, value in tensors.items():
        if not torch.isfinite(value).all():
            raise SmoseError(f"{weights_path}: tensor {name!r} contains NaN or infinite values")
    actor = actor_from_architecture(arch, low, high)
    if "router" in arch:  # checked by _check_tree_router: fixed trees choose the expert
        from smose.interpret.tree_policy import TreeRoutedActor, load_routing_trees

        actor = TreeRoutedActor.from_smose(actor, load_routing_trees(directory, meta))  # type: ignore[arg-type]
    actor.load_state_dict(tensors)
    actor.eval()
    return actor, meta


def _keys_text(keys: list | None) -> str:
    return "a Box" if not keys else "Dict keys " + ", ".join(f"{key} ({size})" for key, size in keys)


def check_env_compatible(meta: dict, env, source: Path) -> None:
    """Refuse to run a model on another task, or on an env whose observation/action sizes or bounds differ."""
    arch = meta["architecture"]
    env_id = env.spec.id if env.spec else "this env"
    n_obs, n_act = env.observation_space.shape[0], env.action_space.shape[0]
    if (n_obs, n_act) != (arch["n_obs"], arch["n_act"]):
        raise SmoseError(
            f"{source}: model trained on {meta.get('env_id')} ({arch['n_obs']} observations, {arch['n_act']} actions) "
            f"does not fit {env_id} ({n_obs} observations, {n_act} actions)"
        )
    trained_on = meta.get("env_id")
    keys = flattened_keys(env)
    if meta.get("observation_keys") != keys:
        raise SmoseError(f"{source}: model trained on {trained_on} with the observation layout "
                         f"{_keys_text(meta.get('observation_keys'))} does not fit {env_id} ({_keys_text(keys)})")
    # "Hopper-v4" and "Hopper-v5" are versions of the same task: the namespace and name must agree
    if isinstance(trained_on, str) and env.spec is not None and \
            parse_env_id(trained_on)[:2] != parse_env_id(env.spec.id)[:2]:
        raise SmoseError(f"{source}: model trained on {trained_on} does not fit {env_id}, a different task "
                         f"(only other versions of {task_name(trained_on)} are accepted)")
    for key, bound in (("action_low", env.action_space.low), ("action_high", env.action_space.high)):
        if key in meta and not np.array_equal(np.asarray(meta[key], dtype=np.float32), bound.astype(np.float32)):
            raise SmoseError(f"{source}: model trained on {trained_on} with {key} {meta[key]} does not fit {env_id} "
                             f"({key} {bound.tolist()})")


# ---- evaluations -----------------------------------------------------------------------------------------------------


def eval_file(mode: str, other_env: str | None = None) -> str:
    """The run-directory file of a neural-router evaluation in ``mode``; on ``other_env`` than the training env's, a
    file of its own (eval-Hopper-v5.json, eval-linear-Hopper-v5.json), so the run's reference stays its own task's."""
    name = LINEAR_EVAL_FILE if mode == "linear" else EVAL_FILE
    if other_env is None:
        return name
    return name.removesuffix(".json") + "-" + other_env.replace("/", "_") + ".json"


def write_eval(path: Path, result: dict) -> None:
    write_json(path, {"format": EVAL_FORMAT, "format_version": EVAL_FORMAT_VERSION, **result})


def read_eval(path: Path) -> dict:
    """eval.json, checked: a dict with finite-or-NaN numbers ``mean`` and ``std`` (older files lack the format), and
    where present a list of numbers ``expert_usage``, a ``success_rate`` in [0, 1] and a list of booleans
    ``successes``."""
    path = Path(path)
    data = check_format(read_json(path, "evaluation"), path, EVAL_FORMAT, EVAL_FORMAT_VERSION, "smose evaluation",
                        required=False)
    for key in ("mean", "std"):
        if not isinstance(data.get(key), (int, float)) or isinstance(data.get(key), bool):
            raise SmoseError(f"{path}: invalid evaluation ({key} must be a number, got {data.get(key)!r})")
    usage = data.get("expert_usage")
    if usage is not None and not (isinstance(usage, list) and all(isinstance(u, (int, float)) for u in usage)):
        raise SmoseError(f"{path}: invalid evaluation (expert_usage must be a list of numbers)")
    rate = data.get("success_rate")  # absent for envs that report no success
    if rate is not None and (not isinstance(rate, (int, float)) or isinstance(rate, bool) or not 0 <= rate <= 1):
        raise SmoseError(f"{path}: invalid evaluation (success_rate must be a number in [0, 1], got {rate!r})")
    successes = data.get("successes")
    if successes is not None and not (isinstance(successes, list) and all(isinstance(s, bool) for s in successes)):
        raise SmoseError(f"{path}: invalid evaluation (successes must be a list of true/false)")
    return data
