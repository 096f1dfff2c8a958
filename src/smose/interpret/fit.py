"""Fitting distilled trees to the router's choices: CART trees (per-expert and multiclass, with scikit-learn) and
oblique trees (CMA-ES, smose.interpret.oblique), each returned as a tree-file dict (docs/trees.md).

- per-expert (the paper's form): for each expert m a binary CART tree on the router-weighted features
  ``u_m(s) = Θ_m ⊙ s`` with target ``1[k(s) = m]``;
- multiclass: one CART tree on the raw state with target ``k(s)``;
- oblique (the authors' form): one multiclass tree of depth ≤ 3 whose nodes test hyperplanes over the standardised
  state.

scikit-learn is only needed here, to fit; the trees are used through smose.interpret.tree_router (numpy only).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from smose.algo.policy import SMOSEActor
from smose.errors import SmoseError
from smose.interpret import oblique
from smose.interpret.tree_router import descend, router_features
from smose.interpret.trees import TREE_FORMAT, TREE_FORMAT_VERSION, router_digest, tree_shape
from smose.tasks.features import observation_names


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


def _tree_entry(nodes: list[dict], expert: int | None) -> dict:
    depth, leaves = tree_shape(nodes)
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


def check_cma_start(start: str) -> None:
    """Refuse a CMA-ES start the oblique fit does not know (one line)."""
    if start not in oblique.CMA_STARTS:
        raise SmoseError(f"unknown CMA-ES start {start!r}; expected one of {', '.join(oblique.CMA_STARTS)}")


def fit_oblique(actor: SMOSEActor, states: np.ndarray, labels: np.ndarray, depth: int, env_id: str,
                iterations: int = oblique.DEFAULT_ITERATIONS, seed: int = 0, names: list[str] | None = None,
                start: str = oblique.CMA_DEFAULT_START, progress: bool = True) -> dict:
    """One oblique tree (hyperplanes over the standardised state, majority-vote leaves) fitted with CMA-ES to
    target k(s), from ``start`` ("router": the best tree of the actor's router boundaries; "groups": the better of
    that and the best tree of expert groups; "zeros": the authors');
    returns the tree-file dict. Leaf counts and votes come from the library's own walk
    (smose.interpret.oblique.node_activations)."""
    names = names or observation_names(env_id, actor.n_obs)
    check_cma_start(start)
    router = (actor.router.weight.detach().double().numpy(), actor.router.bias.detach().double().numpy())
    fitted = oblique.fit(states, labels, actor.n_experts, depth, iterations, seed, router, progress, start)
    nodes = oblique_nodes(fitted["left"], fitted["right"], fitted["weight"], fitted["bias"], fitted["mean"],
                          fitted["scale"], states, labels, actor.n_experts)
    header = _header("oblique", actor, env_id, depth, names)
    return header | {"standardisation": {"mean": fitted["mean"].tolist(), "scale": fitted["scale"].tolist()},
                     "cma": {"start": fitted["start"], "population": oblique.CMA_POPULATION,
                             "sigma0": fitted["sigma0"], "generations": fitted["generations"],
                             "start_misrouted": fitted["start_misrouted"],
                             "train_misrouted": fitted["train_misrouted"]},
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
