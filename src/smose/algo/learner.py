"""Which implementation of the SAC step trains an actor (``smose train --update``).

``smose.algo.sac.SAC`` is the reference, with autograd; ``smose.algo.fast.fused.SACLearner`` computes the same step
through hand-written passes and a fused Adam step, for the actors that have such passes. Both hold the same state, so
a checkpoint of either resumes with either.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from smose.algo.fast.actor_passes import make_passes
from smose.algo.fast.fused import SACLearner
from smose.algo.policy import Actor
from smose.algo.sac import SAC
from smose.choices import UPDATES

if TYPE_CHECKING:
    from smose.training.config import SACHyperParams


def has_fast_passes(actor: Actor) -> bool:
    """Whether the fused update can train ``actor`` (it needs hand-written passes for the actor's class)."""
    try:
        make_passes(actor)
    except TypeError:
        return False
    return True


def make_learner(actor: Actor, hp: SACHyperParams, update: str = "fused") -> SAC:
    """The learner of ``smose train --update``: fused where the actor has hand-written passes, autograd otherwise."""
    if update not in UPDATES:
        raise ValueError(f"unknown update {update!r}; expected one of {', '.join(UPDATES)}")
    if update == "fused" and has_fast_passes(actor):
        return SACLearner(actor, hp)
    return SAC(actor, hp)
