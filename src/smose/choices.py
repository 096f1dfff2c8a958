"""The named options of the package and their defaults: of a training run (actor kinds, load-balancing losses, router
noise, update path) and of using a trained policy (action modes, routers, tree kinds).

Kept free of torch so that the configuration, and with it the command line, can list them without importing it.
"""

from __future__ import annotations

from typing import Literal, get_args

ALGOS = ("smose", "sac-l", "sac-m", "sac-s")
# "cv2", "z" and "none" are ours (z-loss on the clean logits; "none" also turns the router noise off). The authors'
# pre-release code computes the z-loss on the noisy logits ("z-noisy") and has no switch for "no balancing": its
# nearest analogue keeps the noise in the actor update with no loss ("none-noisy"). See docs/method.md §8.
LBLoss = Literal["cv2", "z", "none", "z-noisy", "none-noisy"]
LB_LOSSES: tuple[str, ...] = get_args(LBLoss)
DEFAULT_LB_WEIGHT = {"cv2": 0.1, "z": 0.001, "none": 0.0, "z-noisy": 0.001, "none-noisy": 0.0}
NoiseKind = Literal["batch", "state"]  # one router-noise vector per batch or one per state
NOISE_KINDS: tuple[str, ...] = get_args(NoiseKind)
# How a SAC step is computed (`smose train --update`): hand-written passes with a fused Adam step (fast), or autograd
# (the reference implementation; also the path of actors without hand-written passes). Same maths, same state.
UPDATES = ("fused", "autograd")

# The deterministic action of a trained policy: "gated" (tanh of the gated mean, as trained) or "linear" (the chosen
# expert's raw linear output clipped to the action bounds, the authors' deployment).
DeterministicMode = Literal["gated", "linear"]
ACTION_MODES: tuple[str, ...] = get_args(DeterministicMode)
# What chooses the expert when a policy is used: the trained (neural) router or the distilled trees.
ROUTERS = ("neural", "tree")

# Distilled trees: per-expert and multiclass CART trees, and the oblique CMA-ES tree (docs/trees.md).
KINDS = ("per-expert", "multiclass", "oblique")
# What `smose distill --kind` accepts beyond one kind: "both" the two CART kinds (the default), "all" every kind.
KIND_GROUPS = {"both": ("per-expert", "multiclass"), "all": KINDS}


def kinds_of(kind: str) -> tuple[str, ...]:
    """The tree kinds a `--kind` value stands for: a group's members, or the one kind."""
    return KIND_GROUPS.get(kind, (kind,))


DEFAULT_TREE_KIND = "per-expert"  # the trees that route (eval, video, export, finetune) unless told otherwise
# The oblique tree's CMA-ES: the authors' population (cma_tree.py) and the generations per fit unless told otherwise
# (`smose distill --cma-iterations`): from the router start, 1000 rather than 200 generations take Hopper's and Ant's
# held-out agreement past 95% (benchmarks/results/oblique-start/generations-1000).
CMA_POPULATION = 64
CMA_DEFAULT_ITERATIONS = 1000
# Where the oblique tree's CMA-ES starts (`smose distill --cma-start`): "router", from the best tree whose nodes are the
# router's own boundaries between two experts (smose.interpret.oblique.boundary_tree); "groups", the better of that tree
# and the best tree of expert groups (smose.interpret.oblique.groups_start); "zeros", the authors' start.
CMA_STARTS = ("router", "groups", "zeros")
CMA_DEFAULT_START = "router"
# `smose finetune --select-episodes`: at the end, the controller as fine-tuned and as distilled are compared on this
# many episodes of their own and the better is kept (0: the fine-tuned one whatever). More than evaluation's 5, as
# Reacher's return moves by several per cent between sets of 5 episodes (docs/results.md); two evaluations of 30
# episodes take under a minute on a 1,000-step task.
DEFAULT_SELECT_EPISODES = 30
