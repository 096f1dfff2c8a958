"""Collecting what to export: load a run's model (and trees), check the export options and the weights against it,
and gather its numbers, names and provenance into an :class:`~smose.export.exported_policy.ExportedPolicy`."""

from __future__ import annotations

import hashlib
import shlex
from pathlib import Path
from typing import get_args

import numpy as np
import torch
from torch import nn

from smose.algo.policy import Actor, DeterministicMode, MLPActor, SMOSEActor
from smose.choices import KINDS
from smose.errors import SmoseError
from smose.export.exported_policy import ExportedPolicy, oblique_arrays
from smose.observations import OBS_LIMIT, OBS_LIMIT_LOG2
from smose.run import MODEL_WEIGHTS
from smose.serialization import load_model
from smose.tasks.envs import feature_names
from smose.tasks.suites import construction_kwargs

ROUTERS = ("neural", "tree")
MODES: tuple[str, ...] = get_args(DeterministicMode)
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float32).cpu().numpy().copy()


def export_command(run_dir: Path | str, fmt: str, out: Path | str, router: str, mode: str, tree_kind: str) -> str:
    """The canonical ``smose export`` command line that reproduces a file (written into the file itself)."""
    parts = ["smose", "export", str(run_dir), "--format", fmt, "--router", router]
    if router == "tree":
        parts += ["--tree-kind", tree_kind]
    parts += ["--mode", mode, "--out", str(out)]
    return shlex.join(parts)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _load_trees(run_dir: Path, actor: SMOSEActor, env_id: str, kinds: tuple[str, ...]) -> dict[str, dict]:
    """The tree files of ``kinds`` that ``smose distill`` left in the run, validated against the model."""
    from smose.interpret.distill import load_trees, tree_file

    return {kind: load_trees(tree_file(run_dir, kind), actor, env_id)
            for kind in kinds if tree_file(run_dir, kind).is_file()}


def collect(run_dir: Path | str, router: str | None = None, mode: str = "gated", tree_kind: str | None = None,
            command: str = "", all_trees: bool = False) -> tuple[Actor, ExportedPolicy]:
    """Load the run's model (and trees), check the export options against it, and gather what exporters write.

    ``router`` and ``tree_kind`` default to the neural router and per-expert trees, and for a controller fine-tuned
    under its trees to those trees (its only router). Only the routing trees are read unless ``all_trees`` (the JSON
    format carries every distilled kind), so a neural-router export never depends on tree files.
    """
    from smose.interpret.tree_policy import TreeRoutedActor, routing

    run_dir = Path(run_dir)
    if router not in (None, *ROUTERS):
        raise SmoseError(f"unknown router {router!r}; expected one of {', '.join(ROUTERS)}")
    if mode not in MODES:
        raise SmoseError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    if tree_kind not in (None, *KINDS):
        raise SmoseError(f"unknown tree kind {tree_kind!r}; expected one of {', '.join(KINDS)}")
    actor, meta = load_model(run_dir)
    router, tree_kind = routing(actor, run_dir, router, tree_kind)
    algo, env_id = meta["architecture"]["algo"], meta["env_id"]
    if not isinstance(actor, SMOSEActor) and mode == "linear":
        raise SmoseError(f"--mode linear exists only for SMOSE models; {run_dir} holds the dense baseline {algo}")
    if not isinstance(actor, SMOSEActor) and router == "tree":
        raise SmoseError(f"--router tree needs a SMOSE model; {run_dir} holds the dense baseline {algo}")
    kinds = KINDS if all_trees else (tree_kind,) if router == "tree" else ()
    if isinstance(actor, TreeRoutedActor):  # its own trees are part of the model; it has no others
        kinds = (tree_kind,)
    if router == "neural" and kinds and isinstance(actor, SMOSEActor):
        from smose.interpret.distill import router_digest, stale_trees

        if stale_trees(run_dir, router_digest(actor)) is not None:
            kinds = ()  # trees of another model describe another policy: the file carries none (it needs none)
    trees = _load_trees(run_dir, actor, env_id, kinds) if isinstance(actor, SMOSEActor) else {}
    if router == "tree" and tree_kind not in trees:
        raise SmoseError(f"{run_dir}: no {tree_kind} trees (trees/{tree_kind}.json); "
                         f"run `smose distill {run_dir} --kind {tree_kind}` first")
    tensors, hidden = _tensors(actor, run_dir)
    largest = _float32_reach(tensors, hidden)
    if not largest <= FLOAT32_MAX / 2:
        raise SmoseError(f"{run_dir}: weights so large that float32 arithmetic could overflow (to {largest:.3g}) on "
                         f"observations within ±2^{OBS_LIMIT_LOG2}; such a model cannot be exported")
    routing_trees = trees.get(tree_kind) if router == "tree" else None
    if routing_trees is not None and routing_trees["kind"] == "oblique" and \
            not _oblique_reach(routing_trees) <= FLOAT32_MAX / 2:
        raise SmoseError(f"{run_dir}: the oblique tree's standardisation (a scale this small) could overflow float32 "
                         f"on observations within ±2^{OBS_LIMIT_LOG2}; such trees cannot be exported")
    obs_names, act_names = feature_names(meta)
    policy = ExportedPolicy(
        env_id=env_id,
        # every argument the env is built with, a suite's fixed defaults included (Meta-World/MT1's goal seed), so
        # that gymnasium.make(env_id, **env_kwargs) alone builds the same env
        env_kwargs=construction_kwargs(env_id, dict(meta.get("env_kwargs", {}))),
        algo=algo,
        n_obs=actor.n_obs,
        n_act=actor.n_act,
        obs_names=obs_names,
        act_names=act_names,
        mode=mode,
        router=router,
        tree_kind=tree_kind if router == "tree" else None,
        parameter_counts=actor.parameter_counts(),
        command=command,
        source={
            "run_dir": str(run_dir),
            "model_sha256": _file_sha256(run_dir / MODEL_WEIGHTS),
            "trained_steps": meta.get("trained_steps"),
        },
        action_low=_numpy(actor.action_low),
        action_high=_numpy(actor.action_high),
        action_scale=_numpy(actor.action_scale),
        action_center=_numpy(actor.action_bias),
        tensors=tensors,
        n_experts=getattr(actor, "n_experts", 0),
        hidden=hidden,
        routing_trees=routing_trees,
        all_trees=trees if all_trees else {},
    )
    return actor, policy


def _tensors(actor: Actor, run_dir: Path) -> tuple[dict[str, tuple[np.ndarray, list[str]]], list[int]]:
    """Every tensor the exported policy uses, in the JSON's naming with axis names, and the dense MLP's hidden
    widths (none for SMOSE)."""
    action_axes = ["action"]
    tensors: dict[str, tuple[np.ndarray, list[str]]] = {
        "action_low": (_numpy(actor.action_low), action_axes),
        "action_high": (_numpy(actor.action_high), action_axes),
    }
    hidden: list[int] = []
    if isinstance(actor, SMOSEActor):
        n_act = actor.n_act
        weight, bias = _numpy(actor.expert_weight), _numpy(actor.expert_bias)
        tensors |= {
            "router.weight": (_numpy(actor.router.weight), ["expert", "observation"]),
            "router.bias": (_numpy(actor.router.bias), ["expert"]),
            "experts.mean.weight": (weight[:, :n_act], ["expert", "action", "observation"]),
            "experts.mean.bias": (bias[:, :n_act], ["expert", "action"]),
            "experts.log_std.weight": (weight[:, n_act:], ["expert", "action", "observation"]),
            "experts.log_std.bias": (bias[:, n_act:], ["expert", "action"]),
        }
    elif isinstance(actor, MLPActor):
        previous = "observation"
        linears = [m for m in actor.trunk if isinstance(m, nn.Linear)]
        for i, layer in enumerate(linears):
            tensors[f"hidden.{i}.weight"] = (_numpy(layer.weight), [f"hidden_{i}", previous])
            tensors[f"hidden.{i}.bias"] = (_numpy(layer.bias), [f"hidden_{i}"])
            previous = f"hidden_{i}"
            hidden.append(layer.out_features)
        for head in ("mean", "log_std"):
            module = actor.mean_head if head == "mean" else actor.log_std_head
            tensors[f"{head}_head.weight"] = (_numpy(module.weight), ["action", previous])
            tensors[f"{head}_head.bias"] = (_numpy(module.bias), ["action"])
    else:  # a new actor class must get an exporter before it can be exported
        raise SmoseError(f"{run_dir}: export does not support actors of type {type(actor).__name__}")
    return tensors, hidden


def _float32_reach(tensors: dict[str, tuple[np.ndarray, list[str]]], hidden: list[int]) -> float:
    """A bound on every number the policy's float32 sums reach for observations within ±OBS_LIMIT.

    A row's sum of |weight| times the inputs' bound, plus |bias|, bounds each partial sum in any order (ReLU does not
    grow it); float32 rounding adds a relative n·6e-8 at most, which the factor 2 left to FLOAT32_MAX covers. Below
    that, the logits, their differences in the softmax, the gated means and the tree inputs are all finite.
    """
    def reach(prefix: str, inputs: float) -> float:
        weight, bias = tensors[f"{prefix}.weight"][0], tensors[f"{prefix}.bias"][0]
        rows = np.abs(weight.astype(np.float64)).reshape(-1, weight.shape[-1]).sum(axis=1)
        return float(np.max(rows * inputs + np.abs(bias.astype(np.float64)).reshape(-1)))

    if "router.weight" in tensors:
        return max(reach("router", OBS_LIMIT), reach("experts.mean", OBS_LIMIT))
    bound = OBS_LIMIT
    for i in range(len(hidden)):
        bound = reach(f"hidden.{i}", bound)
    return reach("mean_head", bound)


def _oblique_reach(trees: dict) -> float:
    """A bound on the standardised inputs x (float32) for observations within ±OBS_LIMIT."""
    mean, scale, _, _ = oblique_arrays(trees)
    return float(np.max((OBS_LIMIT + np.abs(mean.astype(np.float64))) / scale.astype(np.float64)))
