"""The self-check: each generated Python file and ONNX graph is run against the library's policy before it is written.

Both run on SELF_CHECK_RANDOM_STATES random states and, around the first SELF_CHECK_BOUNDARY_BASES of them, on states
exactly on every split threshold or hyperplane of the routing trees and on every tie between two router logits, where
rounding decides the expert: the same experts, actions within SELF_CHECK_TOLERANCE. Both must also reject the
observations the library rejects. A file that fails is not written (SmoseError).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from smose.algo.policy import Actor, SMOSEActor
from smose.errors import SmoseError
from smose.export.exported_policy import ExportedPolicy
from smose.interpret.boundary import decision_states, invalid_observations, logit_tie_states, to_float32

SELF_CHECK_RANDOM_STATES = 256
SELF_CHECK_BOUNDARY_BASES = 2
SELF_CHECK_TOLERANCE = 1e-5


def self_check_states(actor: Actor, p: ExportedPolicy) -> tuple[np.ndarray, np.ndarray]:
    """(random, boundary), float64 [N, n_obs] each: random N(0, 1) states, and around a few of them states on every
    split threshold or hyperplane of the routing trees and on every tie between two router logits
    (smose.interpret.boundary), where rounding decides the expert (none for dense baselines)."""
    random = np.random.default_rng(0).standard_normal((SELF_CHECK_RANDOM_STATES, p.n_obs))
    base = random[:SELF_CHECK_BOUNDARY_BASES]
    boundary = [np.empty((0, p.n_obs))]
    if p.routing_trees is not None:
        boundary.append(decision_states(p.routing_trees, base))
    if isinstance(actor, SMOSEActor):
        boundary.append(logit_tie_states(p.array("router.weight"), p.array("router.bias"), base))
    return random, np.concatenate(boundary)


def compare_with_library(actor: Actor, p: ExportedPolicy, states: np.ndarray, action: Any, expert: Any,
                         what: str) -> None:
    """SmoseError unless ``action`` and ``expert`` (each skipped when None) on ``states`` are the library's, which
    rounds the states to float32."""
    obs = torch.from_numpy(to_float32(states))
    if p.routing_trees is None:
        want_action, want_expert = actor.act(obs, p.mode)  # type: ignore[arg-type]
    else:
        from smose.interpret.distill import TreeRouter

        want_expert = TreeRouter(p.routing_trees)(obs)
        want_action = actor.act_with_experts(obs, want_expert, p.mode)  # type: ignore[attr-defined]
    if expert is not None:
        differ = int(np.sum(np.asarray(expert) != want_expert.numpy()))
        if differ:
            raise SmoseError(f"the {what} chooses another expert than the library on {differ} of {len(obs)} check "
                             "states; not written")
    if action is not None:
        diff = float(np.max(np.abs(np.asarray(action, dtype=np.float64) - want_action.numpy())))
        if not diff <= SELF_CHECK_TOLERANCE:
            raise SmoseError(f"the {what} differs from the policy by {diff:.3g} on the check states; not written")


def check_python_source(source: str, actor: Actor, p: ExportedPolicy) -> None:
    """Runs the generated module (our own text) on the check states and on invalid observations. On the boundary
    states only ``route`` runs: they test decisions, and the action given the expert is checked on random states."""
    module: dict[str, Any] = {"__name__": "smose_exported_policy"}
    exec(compile(source, "<exported policy>", "exec"), module)  # noqa: S102 - the text was generated just above
    random, boundary = self_check_states(actor, p)
    if p.is_smose:
        pairs = [module["act_and_route"](list(s)) for s in random]
        compare_with_library(actor, p, random, [a for a, _ in pairs], [k for _, k in pairs], "Python file")
        compare_with_library(actor, p, boundary, None, [module["route"](list(s)) for s in boundary], "Python file")
    else:
        compare_with_library(actor, p, random, [module["act"](list(s)) for s in random], None, "Python file")
    for row in invalid_observations(p.n_obs):
        try:
            module["act"](list(row))
        except ValueError:
            continue
        raise SmoseError(f"the Python file accepts the invalid observation {row.tolist()}; not written")


def check_onnx_model(onnxruntime: Any, data: bytes, actor: Actor, p: ExportedPolicy) -> None:
    """Runs the serialised graph under ``onnxruntime`` on the check states, and on invalid observations, which must
    give NaN actions and expert -1."""
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    states = np.concatenate(self_check_states(actor, p))
    outputs = session.run(None, {"obs": to_float32(states)})
    compare_with_library(actor, p, states, outputs[0], outputs[1] if p.is_smose else None, "ONNX graph")
    outputs = session.run(None, {"obs": to_float32(invalid_observations(p.n_obs))})
    if not (np.isnan(outputs[0]).all() and (not p.is_smose or (outputs[1] == -1).all())):
        raise SmoseError("the ONNX graph does not mark invalid observations (NaN actions, expert -1); not written")
