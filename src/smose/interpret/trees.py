"""The tree files of a run (``trees/<kind>.json``, format in docs/trees.md): where they are, which model they were
distilled from, whether they still describe the run's model, and reading them back validated.

Writing them is :mod:`smose.interpret.distill`'s (fitted by :mod:`smose.interpret.fit`); routing with them is
:class:`smose.interpret.tree_router.TreeRouter`'s.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from smose.algo.policy import SMOSEActor
from smose.choices import KINDS
from smose.errors import SmoseError
from smose.interpret.tree_policy import TreeRoutedActor, routing, trees_digest
from smose.interpret.tree_router import TreeRouter
from smose.run import FIDELITY_FILE, TREES_DIR
from smose.serialization import read_json

TREE_FORMAT = "smose-trees"
TREE_FORMAT_VERSION = 1


def tree_file(run_dir: Path, kind: str) -> Path:
    """The tree file of ``kind`` (JSON)."""
    return Path(run_dir) / TREES_DIR / f"{kind}.json"


def rules_file(run_dir: Path, kind: str) -> Path:
    """The readable rules of ``kind``'s trees (smose.interpret.rules)."""
    return Path(run_dir) / TREES_DIR / f"{kind}.txt"


def tree_eval_file(run_dir: Path, kind: str) -> Path:
    """Where `smose eval --router tree` writes its evaluation with ``kind``'s trees."""
    return Path(run_dir) / TREES_DIR / f"eval-{kind}.json"


def router_digest(actor: SMOSEActor) -> str:
    """SHA-256 of the router's float32 weight and bias: ties a tree file to the model it was distilled from."""
    digest = hashlib.sha256()
    for tensor in (actor.router.weight, actor.router.bias):
        digest.update(tensor.detach().to(torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def model_digest(run_dir: Path | str) -> str:
    """router_digest of the SMOSE model saved in ``run_dir`` (a SmoseError for an unreadable or dense model)."""
    from smose.serialization import load_model

    actor, meta = load_model(Path(run_dir))
    return router_digest(require_smose(actor, meta, Path(run_dir)))


def recorded_digest(run_dir: Path | str) -> str | None:
    """The router digest of the model the run's ``trees/`` were distilled from: fidelity.json's ``router_sha256``,
    or, in distillations older than that field, the one its tree files agree on (save_distillation writes them all
    at once). None when nothing readable records one."""
    fidelity = Path(run_dir) / TREES_DIR / FIDELITY_FILE
    try:
        recorded = read_json(fidelity, "tree fidelity summary").get("router_sha256") if fidelity.is_file() else None
        if recorded is None:
            found = {read_json(tree_file(run_dir, k), "tree file").get("router_sha256")
                     for k in KINDS if tree_file(run_dir, k).is_file()}
            recorded = found.pop() if len(found) == 1 else None
    except (SmoseError, AttributeError):  # AttributeError: a JSON file that is not an object
        return None
    return recorded if isinstance(recorded, str) else None


def stale_trees(run_dir: Path | str, digest: str | None = None) -> str | None:
    """Why the trees and fidelity.json in ``run_dir`` do not describe the model they are judged against, or None
    when they do (or when there are none). The model is ``run_dir``'s own unless ``digest`` (its router_digest) is
    given: one already loaded, or another run's that the trees would be copied to. Every reader of trees/ asks this
    first, so the results of an earlier model (before `smose train --resume`, say) are never shown as this one's."""
    run_dir = Path(run_dir)
    files = [run_dir / TREES_DIR / FIDELITY_FILE, *(tree_file(run_dir, k) for k in KINDS)]
    if not any(path.is_file() for path in files):
        return None
    recorded = recorded_digest(run_dir)
    if recorded is None:
        return (f"{run_dir / TREES_DIR}: stale trees: nothing readable records which model they were distilled "
                f"from; run `smose distill {run_dir}` again")
    if digest is None:
        from smose.serialization import load_model

        actor, meta = load_model(run_dir)
        if isinstance(actor, TreeRoutedActor):
            return None  # its trees are part of the model: load_model checked them against model.json
        digest = router_digest(require_smose(actor, meta, run_dir))
    if recorded != digest:
        return (f"{run_dir / TREES_DIR}: stale trees: distilled from another model than this one (the router "
                f"weights differ, e.g. after more training); run `smose distill {run_dir}` again")
    return None


# ----------------------------------------------------------------------------------------------------------------------
# Validation and loading


def tree_shape(nodes: list[dict]) -> tuple[int, int]:
    """(depth, number of leaves) of a node list whose children follow their parent."""
    depth = [0] * len(nodes)
    for node in nodes:
        if not node["leaf"]:
            depth[node["left"]] = depth[node["right"]] = depth[node["id"]] + 1
    return max(depth), sum(1 for node in nodes if node["leaf"])


def validate_trees(data: Any, source: Path | str) -> dict:
    """Check a tree-file dict thoroughly; any problem is a SmoseError naming ``source``."""

    def fail(message: str) -> SmoseError:
        return SmoseError(f"{source}: {message}")

    if not isinstance(data, dict) or data.get("format") != TREE_FORMAT:
        raise fail(f"not a smose tree file (format field missing or not {TREE_FORMAT!r})")
    if data.get("format_version") != TREE_FORMAT_VERSION:
        raise fail(f"tree format version {data.get('format_version')!r} is not supported "
                   f"(this smose reads version {TREE_FORMAT_VERSION})")
    kind = data.get("kind")
    if kind not in KINDS:
        raise fail(f"unknown tree kind {kind!r}; expected one of {', '.join(KINDS)}")
    n_obs, n_experts, max_depth = data.get("n_obs"), data.get("n_experts"), data.get("max_depth")
    for key, value in (("n_obs", n_obs), ("n_experts", n_experts), ("max_depth", max_depth)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise fail(f"{key} must be a positive integer, got {value!r}")
    names = data.get("feature_names")
    if not isinstance(names, list) or len(names) != n_obs or not all(isinstance(n, str) for n in names):
        raise fail(f"feature_names must be a list of {n_obs} strings")
    if not isinstance(data.get("env_id"), str) or not isinstance(data.get("router_sha256"), str):
        raise fail("env_id and router_sha256 must be strings")
    n_classes = 2 if kind == "per-expert" else n_experts
    if data.get("classes") != list(range(n_classes)):
        raise fail(f"classes must be {list(range(n_classes))} for {kind} trees")
    if kind == "per-expert":
        weight = data.get("router_weight")
        try:
            theta = np.asarray(weight, dtype=np.float64)
        except (TypeError, ValueError):
            raise fail("router_weight is not a numeric matrix") from None
        if theta.shape != (n_experts, n_obs) or not np.isfinite(theta).all():
            raise fail(f"router_weight must be a finite {n_experts}x{n_obs} matrix")
    if kind == "oblique":
        _validate_standardisation(data.get("standardisation"), n_obs, fail)
    trees = data.get("trees")
    expected_trees = n_experts if kind == "per-expert" else 1
    if not isinstance(trees, list) or len(trees) != expected_trees:
        raise fail(f"{kind} files hold {expected_trees} tree(s), found "
                   f"{len(trees) if isinstance(trees, list) else type(trees).__name__}")
    for t, tree in enumerate(trees):
        where = f"tree {t}"
        if not isinstance(tree, dict) or not isinstance(tree.get("nodes"), list) or not tree["nodes"]:
            raise fail(f"{where} has no node list")
        if kind == "per-expert" and tree.get("expert") != t:
            raise fail(f"{where} is labelled expert {tree.get('expert')!r}; per-expert trees must be in expert order")
        _validate_nodes(tree["nodes"], n_obs, n_classes, lambda msg, w=where: fail(f"{w}: {msg}"),
                        oblique=kind == "oblique")
        depth, _ = tree_shape(tree["nodes"])
        if depth > max_depth:
            raise fail(f"{where} has depth {depth}, more than max_depth {max_depth}")
    return data


def _validate_standardisation(standardisation: Any, n_obs: int, fail: Callable[[str], SmoseError]) -> None:
    try:
        mean = np.asarray(standardisation["mean"], dtype=np.float64)
        scale = np.asarray(standardisation["scale"], dtype=np.float64)
    except (TypeError, ValueError, KeyError, IndexError):
        raise fail("standardisation must hold numeric 'mean' and 'scale' lists") from None
    if (mean.shape != (n_obs,) or scale.shape != (n_obs,) or not np.isfinite(mean).all()
            or not np.isfinite(scale).all() or (scale <= 0).any()):
        raise fail(f"standardisation needs {n_obs} finite means and {n_obs} finite positive scales")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _validate_nodes(nodes: list, n_obs: int, n_classes: int, fail: Callable[[str], SmoseError],
                    oblique: bool = False) -> None:
    reached = [False] * len(nodes)
    reached[0] = True
    for i, node in enumerate(nodes):
        if not isinstance(node, dict) or node.get("id") != i:
            raise fail(f"node {i} is missing or has the wrong id")
        if not reached[i]:
            raise fail(f"node {i} is not reachable from the root")
        if not isinstance(node.get("leaf"), bool):
            raise fail(f"node {i} has no boolean 'leaf' field")
        if not node["leaf"] and oblique:
            for weights, offset in (("weights", "bias"), ("state_weights", "state_threshold")):
                values = node.get(weights)
                if (not isinstance(values, list) or len(values) != n_obs or not all(map(_is_number, values))
                        or not _is_number(node.get(offset))):
                    raise fail(f"node {i} needs {n_obs} finite {weights} and a finite {offset}")
        elif not node["leaf"]:
            feature, threshold = node.get("feature"), node.get("threshold")
            if not isinstance(feature, int) or isinstance(feature, bool) or not 0 <= feature < n_obs:
                raise fail(f"node {i} uses feature {feature!r}, outside 0..{n_obs - 1}")
            if not _is_number(threshold):
                raise fail(f"node {i} has a non-finite or non-numeric threshold {threshold!r}")
        if not node["leaf"]:
            for side in ("left", "right"):
                child = node.get(side)
                # Children after their parent make every path finite and the node list a tree.
                if not isinstance(child, int) or isinstance(child, bool) or not i < child < len(nodes):
                    raise fail(f"node {i} has an invalid {side} child {child!r}")
                if reached[child]:
                    raise fail(f"node {child} has two parents")
                reached[child] = True
        probability = node.get("probability")
        try:
            p = np.asarray(probability, dtype=np.float64)
        except (TypeError, ValueError):
            raise fail(f"node {i} has a non-numeric probability") from None
        if p.shape != (n_classes,) or not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
            raise fail(f"node {i}: probability must be {n_classes} finite numbers in [0, 1]")
        counts, samples = node.get("counts"), node.get("samples")
        if (not isinstance(counts, list) or len(counts) != n_classes
                or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts)
                or samples != sum(counts)):
            raise fail(f"node {i}: counts must be {n_classes} non-negative integers summing to samples")


def load_trees(path: Path | str, actor: SMOSEActor | None = None, env_id: str | None = None) -> dict:
    """Read and validate a tree file; with ``actor`` (and ``env_id``) also check it was distilled from that model."""
    path = Path(path)
    data = validate_trees(read_json(path, "tree file"), path)
    if env_id is not None and data["env_id"] != env_id:
        raise SmoseError(f"{path}: trees were distilled on {data['env_id']}, the model was trained on {env_id}")
    if actor is not None:
        if (data["n_obs"], data["n_experts"]) != (actor.n_obs, actor.n_experts):
            raise SmoseError(
                f"{path}: trees are for {data['n_obs']} observations and {data['n_experts']} experts, the model has "
                f"{actor.n_obs} and {actor.n_experts}"
            )
        fixed = getattr(actor, "trees_sha256", None)  # a tree-routed controller (smose.interpret.tree_policy)
        if fixed is not None:
            if trees_digest(data) != fixed:
                raise SmoseError(f"{path}: not the trees this controller routes with (it was fine-tuned under "
                                 f"its own {actor.tree_kind} trees)")
            return data
        if data["router_sha256"] != router_digest(actor):
            raise SmoseError(f"{path}: trees were distilled from a different model (router weights differ); "
                             "run `smose distill` again")
        if data["kind"] == "per-expert":
            theta = actor.router.weight.detach().to(torch.float32).numpy()
            if not np.array_equal(np.asarray(data["router_weight"], dtype=np.float32), theta):
                raise SmoseError(f"{path}: router_weight differs from the model's router; run `smose distill` again")
    return data


# ----------------------------------------------------------------------------------------------------------------------
# Routing with the run's trees


def require_smose(actor, meta: dict, run_dir: Path) -> SMOSEActor:
    """``actor`` when it is a SMOSE actor (trees need a router); a SmoseError naming the dense baseline otherwise."""
    if not isinstance(actor, SMOSEActor):
        raise SmoseError(f"{run_dir} holds a dense {meta['architecture']['algo']} baseline; "
                         "trees can only be distilled from (and route) a SMOSE router")
    return actor


def load_tree_router(run_dir: Path | str, kind: str, actor: SMOSEActor, env_id: str | None = None) -> TreeRouter:
    """The TreeRouter saved by ``smose distill`` in ``run_dir``, validated against the run's model."""
    if kind not in KINDS:
        raise SmoseError(f"unknown tree kind {kind!r}; expected one of {', '.join(KINDS)}")
    routing(actor, Path(run_dir), "tree", kind)  # a tree-routed controller has its own kind only
    path = tree_file(run_dir, kind)
    if not path.is_file():
        raise SmoseError(f"{path}: no {kind} trees distilled yet; run `smose distill {run_dir} --kind {kind}` first")
    return TreeRouter(load_trees(path, actor, env_id))
