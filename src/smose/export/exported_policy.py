"""What every exporter writes: the policy's numbers, names and provenance as plain arrays, without torch modules.

``smose.export.from_run.collect`` fills an :class:`ExportedPolicy` from a run; the format modules only read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class ExportedPolicy:
    """What an exporter writes: float32 arrays, names and provenance, independent of torch modules."""

    env_id: str
    algo: str
    n_obs: int
    n_act: int
    obs_names: list[str]
    act_names: list[str]
    mode: str
    router: str
    tree_kind: str | None
    parameter_counts: dict[str, int]
    command: str
    source: dict[str, Any]
    # [n_act] each; scale = (high - low) / 2 and center = (high + low) / 2 exactly as the actor stores them
    action_low: np.ndarray
    action_high: np.ndarray
    action_scale: np.ndarray
    action_center: np.ndarray
    # name -> (array, axis names): every tensor of the policy, in the JSON's naming
    tensors: dict[str, tuple[np.ndarray, list[str]]]
    n_experts: int = 0
    hidden: list[int] = field(default_factory=list)
    env_kwargs: dict[str, Any] = field(default_factory=dict)  # the env's constructor arguments in training
    routing_trees: dict | None = None  # the tree file used for routing (router == "tree")
    all_trees: dict[str, dict] = field(default_factory=dict)  # every tree kind distilled in the run (JSON)

    @property
    def env(self) -> str:
        """The env as the command line names it: 'Hopper-v5', 'Meta-World/MT1 with env_name=push-v3'."""
        from smose.tasks.envs import format_env_kwargs

        return " ".join([self.env_id, "with", *format_env_kwargs(self.env_kwargs)]) if self.env_kwargs else self.env_id

    @property
    def is_smose(self) -> bool:
        return self.algo == "smose"

    @property
    def needs_router_weights(self) -> bool:
        """The neural router is evaluated when it routes, and in gated mode for the gate g even under tree routing."""
        return self.is_smose and (self.router == "neural" or self.mode == "gated")

    def array(self, name: str) -> np.ndarray:
        return self.tensors[name][0]


# An oblique tree (smose.interpret.oblique) as arrays: its tests are hyperplanes on the standardised observation.


def oblique_tests(trees: dict) -> tuple[list[dict], dict[int, int]]:
    """The internal nodes of the oblique tree and each one's row in the hyperplane arrays (node id order)."""
    tests = [node for node in trees["trees"][0]["nodes"] if not node["leaf"]]
    return tests, {node["id"]: t for t, node in enumerate(tests)}


def oblique_arrays(trees: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(mean, scale, weight [tests, n_obs], bias [tests]) in float32, as the library's TreeRouter reads them."""
    tests, _ = oblique_tests(trees)
    n_obs = trees["n_obs"]
    weight = np.asarray([node["weights"] for node in tests], dtype=np.float32).reshape(len(tests), n_obs)
    bias = np.asarray([node["bias"] for node in tests], dtype=np.float32).reshape(len(tests))
    standardisation = trees["standardisation"]
    mean = np.asarray(standardisation["mean"], dtype=np.float32)
    return mean, np.asarray(standardisation["scale"], dtype=np.float32), weight, bias
