"""Routing with distilled trees: the tree walk over a tree file's nodes, in numpy alone.

Deployment and reading of the trees need nothing else; fitting them (scikit-learn), checking them against a model
and scoring them live in :mod:`smose.distill`. The file format is in docs/trees.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

import numpy as np

from smose.observations import check_observations

if TYPE_CHECKING:
    import torch


def router_features(theta: np.ndarray, obs: np.ndarray) -> np.ndarray:
    """u_m(s) = Θ_m ⊙ s for every expert: [M, B, n_obs], in float32 as scikit-learn fits on float32."""
    return theta.astype(np.float32)[:, None, :] * obs.astype(np.float32)[None, :, :]


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
        self._trees = []
        for tree in trees["trees"]:
            nodes = tree["nodes"]
            feature = np.array([-1 if n["leaf"] else n["feature"] for n in nodes], dtype=np.int64)
            threshold = np.array([0.0 if n["leaf"] else n["threshold"] for n in nodes], dtype=np.float64)
            left = np.array([-1 if n["leaf"] else n["left"] for n in nodes], dtype=np.int64)
            right = np.array([-1 if n["leaf"] else n["right"] for n in nodes], dtype=np.int64)
            probability = np.array([n["probability"] for n in nodes], dtype=np.float64)
            self._trees.append((feature, threshold, left, right, probability))

    def _inputs(self, obs: np.ndarray) -> Iterable[np.ndarray]:
        """The feature matrix each tree reads: u_m = Θ_m ⊙ s for per-expert trees, the raw state otherwise; the
        observations are rounded to float32 first and must pass ``check_observations``."""
        obs = np.asarray(obs, dtype=np.float32).reshape(-1, self.n_obs)
        check_observations(obs)
        if self.theta is None:
            return [obs]
        return router_features(self.theta, obs)

    def leaf_ids(self, obs: np.ndarray) -> np.ndarray:
        """[B, n_trees] id of the leaf each state reaches in each tree (go left iff x[f] <= threshold)."""
        columns = []
        for x, (feature, threshold, left, right, _) in zip(self._inputs(obs), self._trees):
            rows = np.arange(x.shape[0])
            node = np.zeros(x.shape[0], dtype=np.int64)
            active = feature[node] >= 0
            while active.any():
                current = node[active]
                value = x[rows[active], feature[current]].astype(np.float64)
                node[active] = np.where(value <= threshold[current], left[current], right[current])
                active = feature[node] >= 0
            columns.append(node)
        return np.stack(columns, axis=1)

    def yes_probability(self, obs: np.ndarray) -> np.ndarray:
        """[B, M]: per-expert trees' YES probabilities, or the multiclass tree's leaf class probabilities."""
        leaves = self.leaf_ids(obs)
        if self.kind == "per-expert":
            return np.stack([tree[4][leaves[:, m], 1] for m, tree in enumerate(self._trees)], axis=1)
        return self._trees[0][4][leaves[:, 0]]

    def predict(self, obs: np.ndarray) -> np.ndarray:
        """Chosen expert per state; np.argmax takes the first maximum, i.e. ties go to the lowest index."""
        return self.yes_probability(obs).argmax(axis=1).astype(np.int64)

    def __call__(self, obs: torch.Tensor) -> torch.Tensor:
        import torch  # only torch callers get here, and they have imported it already

        return torch.as_tensor(self.predict(obs.detach().cpu().numpy()), dtype=torch.long)
