"""The ``json`` format: every tensor (router, the experts' mean and log-std heads, action bounds) and every distilled
tree, with names and shapes (schema in docs/export.md)."""

from __future__ import annotations

import json
from typing import Any

from smose import __version__
from smose.algo.policy import LOG_STD_MAX, LOG_STD_MIN, Actor
from smose.export.exported_policy import ExportedPolicy
from smose.export.formats import EXPORT_FORMAT, EXPORT_FORMAT_VERSION


def json_bytes(actor: Actor, p: ExportedPolicy) -> bytes:
    """The document's text; the actor is not used (the document holds the collected numbers only)."""
    return (json_dumps(json_document(p)) + "\n").encode()


def json_document(p: ExportedPolicy) -> dict:
    """Every tensor and tree of the policy (schema: docs/export.md)."""
    doc: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_FORMAT_VERSION,
        "smose_version": __version__,
        "command": p.command,
        "source": p.source,
        "env_id": p.env_id,
        "env_kwargs": p.env_kwargs,
        "algo": p.algo,
        "n_obs": p.n_obs,
        "n_act": p.n_act,
    }
    doc |= {"n_experts": p.n_experts} if p.is_smose else {"hidden": p.hidden}
    doc |= {
        "observation_names": p.obs_names,
        "action_names": p.act_names,
        "mode": p.mode,
        "router": p.router,
        "tree_kind": p.tree_kind,
        "parameter_counts": p.parameter_counts,
        "log_std_range": [LOG_STD_MIN, LOG_STD_MAX],  # where the actor squashes the log-std heads' output
        "tensors": {name: {"shape": list(array.shape), "axes": axes, "data": array.tolist()}
                    for name, (array, axes) in p.tensors.items()},
        "trees": p.all_trees,
    }
    return doc


def json_dumps(value: Any, level: int = 0) -> str:
    """JSON with one line per row of numbers (innermost lists) and indented structure around them.

    Floats are written by ``json`` with ``repr``, so every float32 weight reads back exactly.
    """
    pad = "  " * level
    if isinstance(value, dict) and value:
        items = [f"{pad}  {json.dumps(key)}: {json_dumps(item, level + 1)}" for key, item in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(value, list) and any(isinstance(item, (list, dict)) for item in value):
        items = [f"{pad}  {json_dumps(item, level + 1)}" for item in value]
        return "[\n" + ",\n".join(items) + f"\n{pad}]"
    return json.dumps(value, allow_nan=False)
