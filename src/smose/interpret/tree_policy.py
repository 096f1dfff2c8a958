"""The deployable controller: the SMOSE experts with their expert chosen by fixed distilled trees.

``smose eval --router tree`` acts with ``actor.act_with_experts(obs, trees(obs), mode)``: the trees choose the
expert k; in gated mode the router's softmax probability of k (the gate) still scales that expert's output. A
:class:`TreeRoutedActor` is that controller as an actor: its ``select`` takes the choice from the trees instead of
the router's argmax, so SAC trains exactly what is deployed (``smose finetune``, docs/finetune.md), and ``act`` is the
tree-routed action. Its trees are part of the model: saved as ``trees/<kind>.json`` beside ``model.json``, which
records their SHA-256 (:func:`trees_digest`) and is refused when the file no longer matches.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from smose.algo.policy import SMOSEActor
from smose.errors import SmoseError
from smose.interpret.rules import rules_text
from smose.interpret.tree_router import TreeRouter
from smose.observations import check_observations
from smose.run import TREES_DIR

# architecture["router"] of a tree-routed model (model.json); plain SMOSE models have no such key.
TREE_ROUTER = "trees"
# model.json of a tree-routed model is written as this format version: a smose that reads only version 1 would
# otherwise route it with the router's argmax, a different controller, without a word.
TREE_ROUTED_MODEL_VERSION = 2


def trees_digest(trees: dict) -> str:
    """SHA-256 of a tree file's canonical JSON (sorted keys, no spaces): what binds fixed trees to a model."""
    return hashlib.sha256(json.dumps(trees, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class TreeRoutedActor(SMOSEActor):
    """A SMOSE actor whose expert is chosen by fixed distilled trees (a tree-file dict, docs/trees.md).

    The parameters are SMOSEActor's: the experts' mean and log-std heads, and the router, whose logits no longer
    choose but still give the gate g = softmax(logits)_k of the chosen expert k (docs/method.md §1). The trees are
    not parameters: nothing changes them.
    """

    def __init__(self, n_obs: int, n_act: int, action_low, action_high, n_experts: int, trees: dict):
        super().__init__(n_obs, n_act, action_low, action_high, n_experts)
        if (trees["n_obs"], trees["n_experts"]) != (n_obs, n_experts):
            raise SmoseError(f"{trees['kind']} trees are for {trees['n_obs']} observations and {trees['n_experts']} "
                             f"experts, the model has {n_obs} and {n_experts}")
        self.trees = trees
        self.tree_kind: str = trees["kind"]
        self.trees_sha256 = trees_digest(trees)
        self.tree_router = TreeRouter(trees)

    @classmethod
    def from_smose(cls, actor: SMOSEActor, trees: dict) -> TreeRoutedActor:
        """The controller that routes ``actor``'s experts with ``trees`` (a copy of its parameters)."""
        routed = cls(actor.n_obs, actor.n_act, actor.action_low, actor.action_high, actor.n_experts, trees)
        routed.load_state_dict(actor.state_dict())
        routed.train(actor.training)
        return routed

    def select(self, obs: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """The trees' choice, whatever the logits: ``forward`` (SMOSEActor's) then gates it with its softmax
        probability, so both SAC updates (the fused one's passes call this too) train the deployed controller."""
        return self.tree_router(obs).to(obs.device)

    @torch.no_grad()
    def choose(self, obs: torch.Tensor) -> torch.Tensor:
        """The trees' choice for each state (what acts, in training and deployment): LongTensor [B]."""
        check_observations(obs)
        return self.tree_router(obs)

    def architecture(self) -> dict:
        return super().architecture() | {"router": TREE_ROUTER, "tree_kind": self.tree_kind,
                                         "trees_sha256": self.trees_sha256}


def save_routing_trees(actor: TreeRoutedActor, directory: Path) -> None:
    """Write the controller's trees (``trees/<kind>.json`` and the readable ``<kind>.txt``) into a model directory."""
    from smose.interpret.trees import rules_file, tree_file
    from smose.serialization import atomic_write_bytes, write_error, write_json

    try:
        (Path(directory) / TREES_DIR).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(Path(directory) / TREES_DIR, exc) from None
    write_json(tree_file(directory, actor.tree_kind), actor.trees)
    atomic_write_bytes(rules_file(directory, actor.tree_kind), rules_text(actor.trees).encode())


def load_routing_trees(directory: Path, meta: dict) -> dict:
    """The trees a tree-routed model.json names, checked: valid, of its kind and env, the very file it records."""
    from smose.interpret.trees import tree_file, validate_trees
    from smose.serialization import read_json

    arch = meta["architecture"]
    path = tree_file(directory, arch["tree_kind"])
    if not path.is_file():
        raise SmoseError(f"{path}: missing: the model routes with these {arch['tree_kind']} trees (they are part of "
                         f"it, as model.json says)")
    trees = validate_trees(read_json(path, "tree file"), path)
    if trees["kind"] != arch["tree_kind"] or trees_digest(trees) != arch["trees_sha256"]:
        raise SmoseError(f"{path}: not the trees this controller routes with (their SHA-256 differs from the one in "
                         f"model.json): the file was changed or replaced")
    if trees["env_id"] != meta["env_id"]:
        raise SmoseError(f"{path}: trees were distilled on {trees['env_id']}, the model was trained on "
                         f"{meta['env_id']}")
    return trees


def routing(actor, run_dir: Path, router: str | None, tree_kind: str | None) -> tuple[str, str]:
    """The (router, tree kind) a command uses on ``actor``: what was asked (neural and per-expert when nothing was),
    and for a tree-routed controller its own trees, the only router it has (anything else is refused)."""
    if not isinstance(actor, TreeRoutedActor):
        return router or "neural", tree_kind or "per-expert"
    if router == "neural":
        raise SmoseError(f"{run_dir} routes with its fixed {actor.tree_kind} trees (it was fine-tuned under them); its "
                         "router only gates the action, so there is no neural routing to use: leave out --router")
    if tree_kind not in (None, actor.tree_kind):
        raise SmoseError(f"{run_dir} routes with its fixed {actor.tree_kind} trees (it was fine-tuned under them) and "
                         f"has no {tree_kind} trees: leave out --tree-kind")
    return "tree", actor.tree_kind
