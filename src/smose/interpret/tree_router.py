"""Routing with distilled trees: the tree walk over a tree file's nodes, in numpy alone.

Deployment and reading of the trees need nothing else; fitting them (scikit-learn, CMA-ES), checking them against a
model and scoring them live in :mod:`smose.interpret.distill`. The file format is in docs/trees.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

import numpy as np

from smose.interpret import oblique
from smose.observations import check_observations

if TYPE_CHECKING:
    import torch


def router_features(theta: np.ndarray, obs: np.ndarray) -> np.ndarray:
    """u_m(s) = Θ_m ⊙ s for every expert: [M, B, n_obs], in float32 as scikit-learn fits on float32."""
    return theta.astype(np.float32)[:, None, :] * obs.astype(np.float32)[None, :, :]


def descend(go_left: np.ndarray, left: np.ndarray, right: np.ndarray, path: bool = False) -> np.ndarray:
    """The walk of every kind of tree: from the root, each state goes to the left child where ``go_left[b, node]``
    and to the right one otherwise, until a leaf (left == -1). Returns the [B] leaf ids; with ``path``, the
    [B, n_nodes] indicator of the nodes each state passes."""
    rows = np.arange(go_left.shape[0])
    node = np.zeros(go_left.shape[0], dtype=np.int64)
    passed = np.zeros(go_left.shape if path else (0, 0), dtype=bool)
    while True:
        if path:
            passed[rows, node] = True
        inner = left[node] >= 0
        if not inner.any():
            return passed if path else node
        node = np.where(inner, np.where(go_left[rows, node], left[node], right[node]), node)


class TreeRouter:
    """Routes states to experts with distilled trees; needs only numpy (no scikit-learn objects).

    Usable as the ``router`` argument of :func:`smose.evaluate.evaluate`: ``router(obs[B, n_obs]) -> LongTensor[B]``.
    """

    def __init__(self, trees: dict):
        self.kind: str = trees["kind"]
        self.n_obs: int = trees["n_obs"]
        self.n_experts: int = trees["n_experts"]
        self.feature_names: list[str] = list(trees["feature_names"])
        self.theta = (np.asarray(trees["router_weight"], dtype=np.float32) if self.kind == "per-expert" else None)
        if self.kind == "oblique":  # float32, as the decision reads them (smose.interpret.oblique.node_activations)
            self.mean = np.asarray(trees["standardisation"]["mean"], dtype=np.float32)
            self.scale = np.asarray(trees["standardisation"]["scale"], dtype=np.float32)
        self._trees = []
        for tree in trees["trees"]:
            nodes = tree["nodes"]
            left = np.array([-1 if n["leaf"] else n["left"] for n in nodes], dtype=np.int64)
            right = np.array([-1 if n["leaf"] else n["right"] for n in nodes], dtype=np.int64)
            probability = np.array([n["probability"] for n in nodes], dtype=np.float64)
            if self.kind == "oblique":
                # (weight [n_nodes, n_obs], bias [n_nodes]) of the hyperplanes; zero rows for leaves
                test = (np.array([np.zeros(self.n_obs) if n["leaf"] else n["weights"] for n in nodes],
                                 dtype=np.float32).reshape(len(nodes), self.n_obs),
                        np.array([0.0 if n["leaf"] else n["bias"] for n in nodes], dtype=np.float32))
            else:
                # (feature, threshold) of the axis-aligned splits; feature -1 for leaves
                test = (np.array([-1 if n["leaf"] else n["feature"] for n in nodes], dtype=np.int64),
                        np.array([0.0 if n["leaf"] else n["threshold"] for n in nodes], dtype=np.float64))
            self._trees.append((test, left, right, probability))

    def _inputs(self, obs: np.ndarray) -> Iterable[np.ndarray]:
        """The feature matrix each tree reads: u_m = Θ_m ⊙ s for per-expert trees, the raw state otherwise; the
        observations are rounded to float32 first and must pass ``check_observations``."""
        obs = np.asarray(obs, dtype=np.float32).reshape(-1, self.n_obs)
        check_observations(obs)
        if self.theta is None:
            return [obs]
        return router_features(self.theta, obs)

    def go_left(self, obs: np.ndarray) -> list[np.ndarray]:
        """Per tree, [B, n_nodes] whether each state would go left at each internal node: x[f] <= threshold (the
        float32 feature compared in float64) for axis-aligned splits; for oblique ones the activation
        (smose.interpret.oblique.node_activations: float32 standardisation, float64 sum in index order) <= 0."""
        tests = []
        for x, ((a, b), left, _, _) in zip(self._inputs(obs), self._trees):
            inner = left >= 0
            test = np.zeros((x.shape[0], len(left)), dtype=bool)
            if self.kind == "oblique":
                test[:, inner] = oblique.node_activations(x, self.mean, self.scale, a[inner], b[inner]) <= 0
            else:
                test[:, inner] = x[:, a[inner]].astype(np.float64) <= b[inner]
            tests.append(test)
        return tests

    def leaf_ids(self, obs: np.ndarray) -> np.ndarray:
        """[B, n_trees] id of the leaf each state reaches in each tree."""
        return np.stack([descend(test, left, right) for test, (_, left, right, _) in
                         zip(self.go_left(obs), self._trees)], axis=1)

    def yes_probability(self, obs: np.ndarray) -> np.ndarray:
        """[B, M]: per-expert trees' YES probabilities, or the multiclass tree's leaf class probabilities."""
        leaves = self.leaf_ids(obs)
        if self.kind == "per-expert":
            return np.stack([tree[3][leaves[:, m], 1] for m, tree in enumerate(self._trees)], axis=1)
        return self._trees[0][3][leaves[:, 0]]

    def predict(self, obs: np.ndarray) -> np.ndarray:
        """Chosen expert per state; np.argmax takes the first maximum, i.e. ties go to the lowest index."""
        return self.yes_probability(obs).argmax(axis=1).astype(np.int64)

    def __call__(self, obs: torch.Tensor) -> torch.Tensor:
        import torch  # only torch callers get here, and they have imported it already

        return torch.as_tensor(self.predict(obs.detach().cpu().numpy()), dtype=torch.long)
