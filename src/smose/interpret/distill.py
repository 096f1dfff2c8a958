"""Distil a SMOSE router into shallow decision trees, route with them, and measure their fidelity (docs/method.md §5).

States come from deterministic rollouts of the trained policy and are labelled with the clean router's argmax
``k(s)``. Two tree kinds are offered:

- per-expert (the paper's form): for each expert m a binary CART tree on the router-weighted features
  ``u_m(s) = Θ_m ⊙ s`` with target ``1[k(s) = m]``; the routing decision is the expert whose tree gives the highest
  YES probability (ties to the lowest index);
- multiclass: one CART tree on the raw state with target ``k(s)``;
- oblique (the authors' form, spec §8): one multiclass tree of depth ≤ 3 whose nodes test hyperplanes over the
  standardised state, fitted with CMA-ES (smose.interpret.oblique).

Trees are stored as JSON (format in docs/trees.md) and used through :class:`smose.interpret.tree_router.TreeRouter` (numpy only);
scikit-learn is only used to fit them.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from smose.interpret import oblique
from smose.choices import KIND_GROUPS, KINDS
from smose.errors import SmoseError
from smose.evaluate import evaluate
from smose.tasks.features import observation_names
from smose.limits import MAX_CMA_ITERATIONS, MAX_DAGGER_ROUNDS, MAX_EPISODES, MAX_TREE_DEPTH
from smose.algo.policy import DeterministicMode, SMOSEActor
from smose.serialization import read_json, write_json
from smose.interpret.tree_policy import TreeRoutedActor, routing, trees_digest
from smose.interpret.tree_router import TreeRouter, descend, router_features  # noqa: F401 (re-exported)
from smose.run import FIDELITY_FILE, TREES_DIR  # noqa: F401 (re-exported)

TREE_FORMAT = "smose-trees"
TREE_FORMAT_VERSION = 1
FIDELITY_FORMAT = "smose-fidelity"
# Held-out scoring episodes start from reset seeds this far from the fitting episodes' seeds (and from evaluate's).
HOLDOUT_SEED_OFFSET = 5_000
# DAgger round r rolls out the trees from reset seeds seed + DAGGER_SEED_OFFSET + r·episodes + i.
DAGGER_SEED_OFFSET = 20_000


def tree_file(run_dir: Path, kind: str) -> Path:
    return Path(run_dir) / TREES_DIR / f"{kind}.json"


def rules_file(run_dir: Path, kind: str) -> Path:
    return Path(run_dir) / TREES_DIR / f"{kind}.txt"


def tree_eval_file(run_dir: Path, kind: str) -> Path:
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


def distill_settings(fidelity: dict) -> dict[str, Any]:
    """The arguments of :func:`distill` that made the trees a fidelity.json describes (KeyError or TypeError when
    it lacks them): to make them again the same way."""
    kinds = tuple(k for k in KINDS if k in fidelity)
    if not kinds:
        raise KeyError("kind")
    group = [name for name, members in KIND_GROUPS.items() if members == kinds]
    settings = {"depth": fidelity["depth"], "dagger": fidelity.get("dagger_rounds", 0),
                "kind": group[0] if group else kinds[0], "episodes": fidelity["episodes"],
                "eval_episodes": fidelity["eval_episodes"], "seed": fidelity["seed"], "mode": fidelity["mode"]}
    if "oblique" in kinds:
        settings["cma_iterations"] = fidelity["cma_iterations"]
    return settings


# ----------------------------------------------------------------------------------------------------------------------
# Data


@torch.no_grad()
def collect_states(
    actor: SMOSEActor, env, episodes: int, seed: int, mode: DeterministicMode = "gated",
    router: TreeRouter | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """States visited by ``episodes`` deterministic episodes (reset seeds seed+i) and the router's choice in each.

    With ``router`` (trees) it is the trees that pick the expert driving each step, as in a DAgger round: the states
    are those the tree-routed policy reaches, still labelled with the neural router's choice.
    """
    states, labels = [], []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        done = False
        while not done:
            obs_t = torch.as_tensor(obs, dtype=torch.float32).unsqueeze(0)
            if router is None:
                action, expert = actor.act(obs_t, mode)
            else:
                expert = actor.choose(obs_t)
                action = actor.act_with_experts(obs_t, router(obs_t), mode)
            states.append(obs_t[0].numpy())
            labels.append(int(expert[0]))
            obs, _, terminated, truncated, _ = env.step(action[0].numpy())
            done = terminated or truncated
    return np.stack(states).astype(np.float32), np.asarray(labels, dtype=np.int64)


def dagger_fits(
    actor: SMOSEActor, env, kind: str, states: np.ndarray, labels: np.ndarray, depth: int, env_id: str,
    rounds: int, episodes: int, seed: int, mode: DeterministicMode = "gated",
    cma_iterations: int = oblique.DEFAULT_ITERATIONS,
) -> Iterator[tuple[dict, np.ndarray, np.ndarray]]:
    """Trees of ``kind`` fitted on the neural policy's states (round 0), then after each of ``rounds`` DAgger rounds:
    roll out the current trees for ``episodes`` episodes, label the states they reach with the router's choice, add
    them, refit. Yields each round's trees with the data they were fitted on.

    Trees fitted on the neural policy's states alone are right where that policy goes; one mistake that takes the
    system where it never goes can leave them wrong from then on (a high held-out agreement with a poor tree-routed
    return). The rounds teach them the states their own mistakes lead to.
    """
    names = observation_names(env_id, actor.n_obs, env)

    def fit(actor, states, labels, depth, env_id, names):
        if kind == "oblique":
            return fit_oblique(actor, states, labels, depth, env_id, cma_iterations, seed, names)
        return (fit_per_expert if kind == "per-expert" else fit_multiclass)(actor, states, labels, depth, env_id,
                                                                               names)

    trees = fit(actor, states, labels, depth, env_id, names)
    yield trees, states, labels
    for r in range(rounds):
        new_states, new_labels = collect_states(actor, env, episodes, seed + DAGGER_SEED_OFFSET + r * episodes, mode,
                                                router=TreeRouter(trees))
        states, labels = np.concatenate([states, new_states]), np.concatenate([labels, new_labels])
        trees = fit(actor, states, labels, depth, env_id, names)
        yield trees, states, labels


def fit_with_dagger(
    actor: SMOSEActor, env, kind: str, states: np.ndarray, labels: np.ndarray, depth: int, env_id: str,
    rounds: int, episodes: int, seed: int, mode: DeterministicMode = "gated",
    cma_iterations: int = oblique.DEFAULT_ITERATIONS,
) -> tuple[dict, np.ndarray, np.ndarray, list[int]]:
    """The trees after the last of ``rounds`` DAgger rounds (see dagger_fits), the data they were fitted on and the
    number of states each round added."""
    sizes = []
    for trees, states, labels in dagger_fits(actor, env, kind, states, labels, depth, env_id, rounds, episodes, seed,
                                             mode, cma_iterations):
        sizes.append(len(labels))
    return trees, states, labels, [int(b - a) for a, b in zip(sizes, sizes[1:])]


# ----------------------------------------------------------------------------------------------------------------------
# Fitting and export


def _fit_tree(x: np.ndarray, y: np.ndarray, depth: int):
    from sklearn.tree import DecisionTreeClassifier  # only needed to fit, not to use the trees

    return DecisionTreeClassifier(max_depth=depth, random_state=0).fit(x, y)


def _export_nodes(model, x: np.ndarray, y: np.ndarray, n_classes: int, names: list[str],
                  theta_row: np.ndarray | None) -> list[dict]:
    """Nodes of a fitted sklearn tree as JSON dicts, with exact per-class training counts from its decision paths.

    Counts are recomputed rather than read from ``tree_.value`` because that array holds fractions in recent
    scikit-learn releases and only the classes seen in training; here every node lists all ``n_classes`` classes.
    """
    tree = model.tree_
    paths = model.decision_path(x)  # [B, n_nodes] indicator of the nodes each sample passes
    counts = np.zeros((tree.node_count, n_classes), dtype=np.int64)
    for c in range(n_classes):
        mask = y == c
        if mask.any():
            counts[:, c] = np.asarray(paths[mask].sum(axis=0)).ravel()
    nodes = []
    for i in range(tree.node_count):
        samples = int(counts[i].sum())
        node: dict[str, Any] = {"id": i, "leaf": bool(tree.children_left[i] == -1)}
        if not node["leaf"]:
            feature, threshold = int(tree.feature[i]), float(tree.threshold[i])
            op, state_threshold = "<=", threshold
            if theta_row is not None:  # restate Θ_mf·s_f <= t on the raw state variable
                weight = float(theta_row[feature])
                state_threshold = threshold / weight
                op = "<=" if weight > 0 else ">="
            node |= {
                "feature": feature,
                "feature_name": names[feature],
                "threshold": threshold,
                "state_op": op,
                "state_threshold": state_threshold,
                "left": int(tree.children_left[i]),
                "right": int(tree.children_right[i]),
            }
        node |= {
            "samples": samples,
            "counts": counts[i].tolist(),
            "probability": (counts[i] / max(samples, 1)).tolist(),
        }
        nodes.append(node)
    return nodes


def _tree_shape(nodes: list[dict]) -> tuple[int, int]:
    """(depth, number of leaves) of a node list whose children follow their parent."""
    depth = [0] * len(nodes)
    for node in nodes:
        if not node["leaf"]:
            depth[node["left"]] = depth[node["right"]] = depth[node["id"]] + 1
    return max(depth), sum(1 for node in nodes if node["leaf"])


def _tree_entry(nodes: list[dict], expert: int | None) -> dict:
    depth, leaves = _tree_shape(nodes)
    entry: dict[str, Any] = {} if expert is None else {"expert": expert}
    return entry | {"depth": depth, "n_leaves": leaves, "nodes": nodes}


def _header(kind: str, actor: SMOSEActor, env_id: str, depth: int, names: list[str]) -> dict:
    header: dict[str, Any] = {
        "format": TREE_FORMAT,
        "format_version": TREE_FORMAT_VERSION,
        "kind": kind,
        "env_id": env_id,
        "n_obs": actor.n_obs,
        "n_experts": actor.n_experts,
        "max_depth": depth,
        "input": {"per-expert": "router-weighted", "oblique": "standardised-state"}.get(kind, "state"),
        "feature_names": names,
        "router_sha256": router_digest(actor),
    }
    if kind == "per-expert":
        header["router_weight"] = actor.router.weight.detach().to(torch.float32).tolist()
    header["classes"] = [0, 1] if kind == "per-expert" else list(range(actor.n_experts))
    return header


def fit_per_expert(actor: SMOSEActor, states: np.ndarray, labels: np.ndarray, depth: int, env_id: str,
                   names: list[str] | None = None) -> dict:
    """One binary tree per expert on u_m(s) = Θ_m ⊙ s with target 1[k(s) = m]; returns the tree-file dict.
    ``names``: the state variables' names (default: smose.tasks.features' table for ``env_id``)."""
    names = names or observation_names(env_id, actor.n_obs)
    theta = actor.router.weight.detach().to(torch.float32).numpy()
    features = router_features(theta, states)
    trees = []
    for m in range(actor.n_experts):
        target = (labels == m).astype(np.int64)
        model = _fit_tree(features[m], target, depth)
        trees.append(_tree_entry(_export_nodes(model, features[m], target, 2, names, theta[m]), m))
    return _header("per-expert", actor, env_id, depth, names) | {"trees": trees}


def fit_multiclass(actor: SMOSEActor, states: np.ndarray, labels: np.ndarray, depth: int, env_id: str,
                   names: list[str] | None = None) -> dict:
    """One tree on the raw state with target k(s); returns the tree-file dict (``names`` as in fit_per_expert)."""
    names = names or observation_names(env_id, actor.n_obs)
    model = _fit_tree(states, labels, depth)
    nodes = _export_nodes(model, states, labels, actor.n_experts, names, None)
    return _header("multiclass", actor, env_id, depth, names) | {"trees": [_tree_entry(nodes, None)]}


def fit_oblique(actor: SMOSEActor, states: np.ndarray, labels: np.ndarray, depth: int, env_id: str,
                iterations: int = oblique.DEFAULT_ITERATIONS, seed: int = 0, names: list[str] | None = None) -> dict:
    """One oblique tree (hyperplanes over the standardised state, majority-vote leaves) fitted with CMA-ES to
    target k(s); returns the tree-file dict. Leaf counts and votes come from the library's own walk
    (smose.interpret.oblique.node_activations)."""
    names = names or observation_names(env_id, actor.n_obs)
    fitted = oblique.fit(states, labels, actor.n_experts, depth, iterations, seed)
    nodes = oblique_nodes(fitted["left"], fitted["right"], fitted["weight"], fitted["bias"], fitted["mean"],
                          fitted["scale"], states, labels, actor.n_experts)
    header = _header("oblique", actor, env_id, depth, names)
    return header | {"standardisation": {"mean": fitted["mean"].tolist(), "scale": fitted["scale"].tolist()},
                     "cma": {"population": oblique.CMA_POPULATION, "sigma0": oblique.CMA_SIGMA0,
                             "generations": fitted["generations"], "train_misrouted": fitted["train_misrouted"]},
                     "trees": [_tree_entry(nodes, None)]}


def oblique_nodes(left: np.ndarray, right: np.ndarray, weight: np.ndarray, bias: np.ndarray, mean: np.ndarray,
                  scale: np.ndarray, states: np.ndarray, labels: np.ndarray, n_classes: int) -> list[dict]:
    """Nodes of an oblique tree as JSON dicts: each internal node's float32 weights and bias on the standardised
    state and the same hyperplane on the physical state; per-class counts of the states reaching every node.

    A leaf no state reaches takes its parent's class distribution, so it still routes somewhere sensible."""
    go_left = np.zeros((len(states), len(left)), dtype=bool)
    inner = left >= 0
    go_left[:, inner] = oblique.node_activations(states, mean, scale, weight[inner], bias[inner]) <= 0
    paths = descend(go_left, left, right, path=True)
    counts = np.stack([np.bincount(labels[paths[:, i]], minlength=n_classes) for i in range(len(left))])
    probability = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    nodes = []
    for i in range(len(left)):
        node: dict[str, Any] = {"id": i, "leaf": not inner[i]}
        if inner[i]:
            state_weights, state_threshold = oblique.physical_hyperplane(weight[i], float(bias[i]), mean, scale)
            node |= {"weights": [float(w) for w in weight[i]], "bias": float(bias[i]),
                     "state_weights": state_weights.tolist(), "state_threshold": state_threshold,
                     "left": int(left[i]), "right": int(right[i])}
            for child in (left[i], right[i]):
                if counts[child].sum() == 0:
                    probability[child] = probability[i]
        node |= {"samples": int(counts[i].sum()), "counts": counts[i].tolist(), "probability": probability[i].tolist()}
        nodes.append(node)
    return nodes


# ----------------------------------------------------------------------------------------------------------------------
# Loading and validation


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
        depth, _ = _tree_shape(tree["nodes"])
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
# Routing with trees


def require_smose(actor, meta: dict, run_dir: Path) -> SMOSEActor:
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


# ----------------------------------------------------------------------------------------------------------------------
# Text rules


def _rule_lines(tree: dict, kind: str, theta_row: np.ndarray | None, names: list[str] | None = None) -> list[str]:
    nodes = tree["nodes"]
    lines: list[str] = []

    def leaf_text(node: dict) -> str:
        p, n = node["probability"], node["samples"]
        states = f"({n} state{'' if n == 1 else 's'})"
        if kind == "per-expert":
            answer = 1 if p[1] > p[0] else 0  # sklearn's predict: ties go to NO
            return f"{'YES' if answer else 'NO'} {p[answer]:.2f} {states}"
        k = int(np.argmax(p))
        return f"expert {k} {p[k]:.2f} {states}"

    def walk(i: int, indent: str) -> None:
        node = nodes[i]
        if node["leaf"]:
            lines.append(indent + leaf_text(node))
            return
        if kind == "oblique":
            test, comment = oblique.describe_hyperplane(np.asarray(node["state_weights"]), node["state_threshold"],
                                                        np.asarray(node["weights"]), names or [])
            lines.extend([indent + f"if {test}:", indent + f"    # {comment}"])
            walk(node["left"], indent + "    ")
            lines.append(indent + "else:")
            walk(node["right"], indent + "    ")
            return
        name, op = node["feature_name"], node.get("state_op", "<=")
        state_threshold = node.get("state_threshold", node["threshold"])
        test = f"if {name} {op} {state_threshold:.4g}:"
        if theta_row is not None:
            test += f"  # tree tests {float(theta_row[node['feature']]):.3g}·{name} <= {node['threshold']:.4g}"
        lines.append(indent + test)
        walk(node["left"], indent + "    ")
        lines.append(indent + "else:")
        walk(node["right"], indent + "    ")

    walk(0, "")
    return lines


def rules_text(trees: dict, fidelity: dict | None = None) -> str:
    """All trees of a file as nested if/else rules with feature names (the ``.txt`` files next to the JSON)."""
    kind = trees["kind"]
    blocks = []
    if kind == "per-expert":
        theta = np.asarray(trees["router_weight"], dtype=np.float32)
        per_tree = {t["expert"]: t for t in (fidelity or {}).get("trees", [])}
        for tree in trees["trees"]:
            m = tree["expert"]
            title = f"expert {m}  (YES = the router picks expert {m}"
            if m in per_tree:
                f = per_tree[m]
                title += f"; held-out accuracy {_fmt(f['accuracy'])}, precision {_fmt(f['precision'])}, " \
                         f"recall {_fmt(f['recall'])}"
            blocks.append("\n".join([title + ")"] + _rule_lines(tree, kind, theta[m])))
    elif kind == "oblique":
        title = "oblique tree: which expert the router picks"
        if fidelity:
            title += f" (held-out agreement {_fmt(fidelity['agreement'])})"
        explanation = ("Each test is a hyperplane on the state; shown are its strongest terms (by weight per standard "
                       "deviation of the feature)\nin physical units; all weights are in oblique.json (state_weights, "
                       "state_threshold).")
        blocks.append("\n".join([title, explanation]
                                + _rule_lines(trees["trees"][0], kind, None, trees["feature_names"])))
    else:
        title = "multiclass tree: which expert the router picks"
        if fidelity:
            title += f" (held-out agreement {_fmt(fidelity['agreement'])})"
        blocks.append("\n".join([title] + _rule_lines(trees["trees"][0], kind, None)))
    return "\n\n".join(blocks) + "\n"


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


# ----------------------------------------------------------------------------------------------------------------------
# Fidelity and the whole pipeline


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    """Return ratio; only meaningful when the neural return is positive (negative-reward tasks compare means)."""
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def binary_scores(predicted: np.ndarray, actual: np.ndarray) -> dict:
    """Accuracy, precision and recall of boolean predictions; precision/recall are None when undefined."""
    tp = int(np.sum(predicted & actual))
    predicted_yes, positives = int(predicted.sum()), int(actual.sum())
    return {
        "accuracy": float(np.mean(predicted == actual)),
        "precision": tp / predicted_yes if predicted_yes else None,
        "recall": tp / positives if positives else None,
        "positives": positives,
    }


def fidelity_per_expert(router: TreeRouter, trees: dict, states: np.ndarray, labels: np.ndarray) -> dict:
    yes = router.yes_probability(states)
    per_tree = []
    for m, tree in enumerate(trees["trees"]):
        # A single binary tree says YES when its YES probability exceeds 0.5 (sklearn's predict; ties are NO).
        scores = binary_scores(yes[:, m] > 0.5, labels == m)
        per_tree.append({"expert": m, **scores, "depth": tree["depth"], "n_leaves": tree["n_leaves"]})
    return {"agreement": float(np.mean(yes.argmax(axis=1) == labels)), "trees": per_tree}


def fidelity_multiclass(router: TreeRouter, trees: dict, states: np.ndarray, labels: np.ndarray) -> dict:
    predicted = router.predict(states)
    per_class = [{"expert": m, **{k: v for k, v in binary_scores(predicted == m, labels == m).items()
                                  if k != "accuracy"}} for m in range(router.n_experts)]
    tree = trees["trees"][0]
    return {"agreement": float(np.mean(predicted == labels)), "depth": tree["depth"], "n_leaves": tree["n_leaves"],
            "per_class": per_class}


def distill(
    run_dir: Path | str,
    depth: int = 3,
    episodes: int = 20,
    kind: str = "both",
    seed: int = 0,
    eval_episodes: int = 10,
    mode: DeterministicMode = "gated",
    dagger: int = 0,
    cma_iterations: int = oblique.DEFAULT_ITERATIONS,
) -> dict:
    """Fit, save and score trees for the SMOSE run in ``run_dir``; returns (and writes) the fidelity summary.

    ``kind``: one of KINDS, or "both" (the CART kinds) or "all" (see KIND_GROUPS). ``dagger``: rounds of DAgger after
    the first fit (see fit_with_dagger), each rolling out ``episodes`` episodes. ``cma_iterations``: CMA-ES
    generations of each oblique fit.
    """
    from smose.tasks.envs import make_run_env
    from smose.serialization import check_env_compatible, load_model

    for name, value in (("depth", depth), ("episodes", episodes), ("eval_episodes", eval_episodes),
                        ("cma_iterations", cma_iterations)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise SmoseError(f"{name} must be an integer >= 1, got {value!r}")
    if not isinstance(dagger, int) or isinstance(dagger, bool) or dagger < 0:
        raise SmoseError(f"dagger must be an integer >= 0, got {dagger!r}")
    for name, value, limit in (("depth", depth, MAX_TREE_DEPTH), ("episodes", episodes, MAX_EPISODES),
                               ("eval_episodes", eval_episodes, MAX_EPISODES), ("dagger", dagger, MAX_DAGGER_ROUNDS),
                               ("cma_iterations", cma_iterations, MAX_CMA_ITERATIONS)):
        if value > limit:
            raise SmoseError(f"{name} must be at most {limit:,}, got {value}")
    if kind not in (*KINDS, *KIND_GROUPS):
        raise SmoseError(f"unknown tree kind {kind!r}; expected one of {', '.join((*KINDS, *KIND_GROUPS))}")
    kinds = KIND_GROUPS.get(kind, (kind,))
    if "oblique" in kinds and depth > oblique.MAX_DEPTH:
        raise SmoseError(f"oblique trees have depth <= {oblique.MAX_DEPTH} (a complete tree of depth {depth} has "
                         f"{2 ** depth - 1} hyperplanes to search and read); got --depth {depth}")
    run_dir = Path(run_dir)
    actor, meta = load_model(run_dir)
    actor = require_smose(actor, meta, run_dir)
    if isinstance(actor, TreeRoutedActor):
        raise SmoseError(f"{run_dir} was fine-tuned under its fixed {actor.tree_kind} trees: they choose its expert "
                         "and its router only gates the action, so there is no routing left to distil; distil the "
                         "source run instead (config.json's finetune.source_run)")
    env_id = meta["env_id"]
    env = make_run_env(meta)
    check_env_compatible(meta, env, run_dir / "model.json")
    try:
        train_states, train_labels = collect_states(actor, env, episodes, seed, mode)
        test_states, test_labels = collect_states(actor, env, episodes, seed + HOLDOUT_SEED_OFFSET, mode)
        fitted, fit_data, added = {}, {}, {}
        for k in kinds:
            trees, states, labels, added[k] = fit_with_dagger(actor, env, k, train_states, train_labels, depth, env_id,
                                                              dagger, episodes, seed, mode, cma_iterations)
            fitted[k], fit_data[k] = trees, (states, labels)
        summary: dict[str, Any] = {
            "format": FIDELITY_FORMAT,
            "format_version": 1,
            "env_id": env_id,
            "router_sha256": router_digest(actor),  # the model these results are about (see stale_trees)
            "depth": depth,
            "episodes": episodes,
            "seed": seed,
            "holdout_seed": seed + HOLDOUT_SEED_OFFSET,
            "eval_episodes": eval_episodes,
            "mode": mode,
            "dagger_rounds": dagger,
            "train_states": int(len(train_labels)),
            "heldout_states": int(len(test_labels)),
            "router_usage_heldout": (np.bincount(test_labels, minlength=actor.n_experts) / len(test_labels)).tolist(),
        }
        if "oblique" in kinds:
            summary["cma_iterations"] = cma_iterations
        neural = evaluate(actor, env, eval_episodes, seed, mode)
        returns: dict[str, Any] = {"neural": neural, "ratio": {}}
        for k, trees in fitted.items():
            router = TreeRouter(trees)
            score = fidelity_per_expert if k == "per-expert" else fidelity_multiclass
            summary[k] = score(router, trees, test_states, test_labels)
            states, labels = fit_data[k]
            summary[k]["train_agreement"] = float(np.mean(router.predict(states) == labels))
            if dagger:
                summary[k]["dagger_states"] = added[k]
            returns[k] = evaluate(actor, env, eval_episodes, seed, mode, router=router)
            summary[k]["closed_loop_agreement"] = returns[k]["router_agreement"]
            returns["ratio"][k] = _ratio(returns[k]["mean"], neural["mean"])
        summary["returns"] = returns
    finally:
        env.close()
    save_distillation(run_dir, fitted, summary)
    return summary


def save_distillation(run_dir: Path, fitted: dict[str, dict], summary: dict) -> None:
    """Write the tree files, their rules and fidelity.json; drop files of kinds not distilled this time."""
    out = Path(run_dir) / TREES_DIR
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SmoseError(f"{out}: cannot create the trees directory ({exc.strerror})") from None
    for k in KINDS:
        if k in fitted:
            write_json(tree_file(run_dir, k), fitted[k])
            rules_file(run_dir, k).write_text(rules_text(fitted[k], summary.get(k)))
        else:  # stale trees from an earlier distillation would no longer match fidelity.json
            for stale in (tree_file(run_dir, k), rules_file(run_dir, k), tree_eval_file(run_dir, k)):
                stale.unlink(missing_ok=True)
    for k in fitted:
        tree_eval_file(run_dir, k).unlink(missing_ok=True)
    write_json(out / FIDELITY_FILE, summary)


def print_summary(summary: dict, run_dir: Path) -> None:
    """The human-readable report of ``smose distill``."""

    def pct(value: float | None) -> str:
        return "   n/a" if value is None else f"{100 * value:5.1f}%"

    rounds = summary.get("dagger_rounds", 0)
    dagger = f" and {rounds} DAgger round{'s' if rounds != 1 else ''} of as many" if rounds else ""
    print(f"distilled depth-{summary['depth']} trees for {summary['env_id']} from {summary['episodes']} episodes "
          f"({summary['train_states']} states){dagger}; scored on {summary['episodes']} held-out episodes "
          f"({summary['heldout_states']} states)")
    usage = summary["router_usage_heldout"]
    if "per-expert" in summary:
        fid = summary["per-expert"]
        print(f"per-expert trees: routing agreement {pct(fid['agreement'])} (train {pct(fid['train_agreement'])}, "
              f"closed loop {pct(fid.get('closed_loop_agreement'))})")
        print("  expert  share  accuracy  precision  recall  leaves")
        for t in fid["trees"]:
            print(f"  {t['expert']:>6}  {pct(usage[t['expert']])}  {pct(t['accuracy'])}    {pct(t['precision'])}     "
                  f"{pct(t['recall'])}  {t['n_leaves']:>6}")
    for k in ("multiclass", "oblique"):
        if k in summary:
            fid = summary[k]
            print(f"{k + ' tree:':<17} routing agreement {pct(fid['agreement'])} (train {pct(fid['train_agreement'])}"
                  f", closed loop {pct(fid.get('closed_loop_agreement'))}), {fid['n_leaves']} leaves")
    returns = summary["returns"]
    print(f"return over {summary['eval_episodes']} episodes (mode {summary['mode']}, seed {summary['seed']}):")
    neural = returns["neural"]

    def success(result: dict) -> str:
        return f"   success {pct(result['success_rate'])}" if "success_rate" in result else ""

    print(f"  neural router     {neural['mean']:10.2f} ± {neural['std']:.2f}{success(neural)}")
    for k in KINDS:
        if k in returns:
            ratio = returns["ratio"][k]
            ratio_text = "n/a (neural return <= 0)" if ratio is None else f"{ratio:.3f}"
            label = "per-expert trees" if k == "per-expert" else f"{k} tree"
            print(f"  {label:<17} {returns[k]['mean']:10.2f} ± {returns[k]['std']:.2f}   ratio {ratio_text}"
                  f"{success(returns[k])}")
    written = [f"{k}.json, {k}.txt" for k in KINDS if k in summary] + [FIDELITY_FILE]
    print(f"wrote {Path(run_dir) / TREES_DIR}/ ({', '.join(written)})")
