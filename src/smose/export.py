"""Export a trained controller as one file that runs without the training stack: Python, C, JSON or ONNX.

Every format computes the deterministic action of ``smose eval`` (``actor.act`` in "gated" or "linear" mode), routed
by the neural router or by the trees of ``smose distill`` (``--router tree``):

- ``python``: one module using only the standard library (``math``, ``struct``), computing in float64 with the
  float32 weights written exactly (``repr``); ``act(obs) -> list[float]``.
- ``c``: one header-only C99 file, float32, no allocation, only ``fabsf``/``expf``/``tanhf`` from libm;
  ``smose_act(obs, action)`` and ``smose_route(obs)``.
- ``json``: every tensor (router, the experts' mean and log-std heads, action bounds) and every distilled tree with
  names and shapes (schema in docs/export.md).
- ``onnx``: a graph built by ``torch.onnx`` (trees unrolled into ``where`` ops), checked with ``onnx.checker`` and
  run once with onnxruntime against the library's policy before it is written.

Every format makes exactly the library's routing decision, also where rounding decides it (float64 observations,
states on split thresholds, router-logit ties), and rejects observations that ``smose.algo.policy.check_observations``
rejects (docs/export.md, "Decisions and rounding"). Dense baselines (sac-l/m/s) export to every format (gated mode,
neural "router" only).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shlex
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from smose import __version__
from smose.interpret.boundary import decision_states, invalid_observations, logit_tie_states, to_float32
from smose.errors import SmoseError
from smose.choices import KINDS
from smose.tasks.envs import feature_names
from smose.observations import OBS_LIMIT, OBS_LIMIT_LOG2
from smose.algo.policy import Actor, MLPActor, SMOSEActor
from smose.serialization import MODEL_WEIGHTS, atomic_write_bytes, load_model

EXPORT_FORMAT = "smose-policy"
EXPORT_FORMAT_VERSION = 1
FORMATS = ("python", "c", "json", "onnx")
ROUTERS = ("neural", "tree")
MODES = ("gated", "linear")
DEFAULT_FILE_NAMES = {"python": "policy.py", "c": "smose_policy.h", "json": "policy.json", "onnx": "policy.onnx"}
# The Python file and the ONNX graph are checked against the library's policy before they are written, on this many
# random states and, around the first few of them, states on every split threshold and router-logit tie: the same
# experts, actions within the tolerance.
SELF_CHECK_RANDOM_STATES = 256
SELF_CHECK_BOUNDARY_BASES = 2
SELF_CHECK_TOLERANCE = 1e-5
ONNX_OPSET = 17
FLOAT32_MAX = float(np.finfo(np.float32).max)


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
    routing_trees: dict | None = None  # the tree file used for routing (router == "tree")
    all_trees: dict[str, dict] = field(default_factory=dict)  # every tree kind distilled in the run (JSON)

    @property
    def is_smose(self) -> bool:
        return self.algo == "smose"

    @property
    def needs_router_weights(self) -> bool:
        """The neural router is evaluated when it routes, and in gated mode for the gate g even under tree routing."""
        return self.is_smose and (self.router == "neural" or self.mode == "gated")

    def array(self, name: str) -> np.ndarray:
        return self.tensors[name][0]


# ----------------------------------------------------------------------------------------------------------------------
# Collecting what to export


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float32).cpu().numpy().copy()


def export_command(run_dir: Path | str, fmt: str, out: Path | str, router: str, mode: str, tree_kind: str) -> str:
    """The canonical ``smose export`` command line that reproduces a file (written into the file itself)."""
    parts = ["smose", "export", str(run_dir), "--format", fmt, "--router", router]
    if router == "tree":
        parts += ["--tree-kind", tree_kind]
    parts += ["--mode", mode, "--out", str(out)]
    return shlex.join(parts)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _load_trees(run_dir: Path, actor: SMOSEActor, env_id: str, kinds: tuple[str, ...]) -> dict[str, dict]:
    """The tree files of ``kinds`` that ``smose distill`` left in the run, validated against the model."""
    from smose.interpret.distill import load_trees, tree_file

    return {kind: load_trees(tree_file(run_dir, kind), actor, env_id)
            for kind in kinds if tree_file(run_dir, kind).is_file()}


def collect(run_dir: Path | str, router: str | None = None, mode: str = "gated", tree_kind: str | None = None,
            command: str = "", all_trees: bool = False) -> tuple[Actor, ExportedPolicy]:
    """Load the run's model (and trees), check the export options against it, and gather what exporters write.

    ``router`` and ``tree_kind`` default to the neural router and per-expert trees, and for a controller fine-tuned
    under its trees to those trees (its only router). Only the routing trees are read unless ``all_trees`` (the JSON
    format carries every distilled kind), so a neural-router export never depends on tree files.
    """
    from smose.interpret.tree_policy import TreeRoutedActor, routing

    run_dir = Path(run_dir)
    if router not in (None, *ROUTERS):
        raise SmoseError(f"unknown router {router!r}; expected one of {', '.join(ROUTERS)}")
    if mode not in MODES:
        raise SmoseError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    if tree_kind not in (None, *KINDS):
        raise SmoseError(f"unknown tree kind {tree_kind!r}; expected one of {', '.join(KINDS)}")
    actor, meta = load_model(run_dir)
    router, tree_kind = routing(actor, run_dir, router, tree_kind)
    algo, env_id = meta["architecture"]["algo"], meta["env_id"]
    if not isinstance(actor, SMOSEActor) and mode == "linear":
        raise SmoseError(f"--mode linear exists only for SMOSE models; {run_dir} holds the dense baseline {algo}")
    if not isinstance(actor, SMOSEActor) and router == "tree":
        raise SmoseError(f"--router tree needs a SMOSE model; {run_dir} holds the dense baseline {algo}")
    kinds = KINDS if all_trees else (tree_kind,) if router == "tree" else ()
    if isinstance(actor, TreeRoutedActor):  # its own trees are part of the model; it has no others
        kinds = (tree_kind,)
    if router == "neural" and kinds and isinstance(actor, SMOSEActor):
        from smose.interpret.distill import router_digest, stale_trees

        if stale_trees(run_dir, router_digest(actor)) is not None:
            kinds = ()  # trees of another model describe another policy: the file carries none (it needs none)
    trees = _load_trees(run_dir, actor, env_id, kinds) if isinstance(actor, SMOSEActor) else {}
    if router == "tree" and tree_kind not in trees:
        raise SmoseError(f"{run_dir}: no {tree_kind} trees (trees/{tree_kind}.json); "
                         f"run `smose distill {run_dir} --kind {tree_kind}` first")
    action_axes = ["action"]
    tensors: dict[str, tuple[np.ndarray, list[str]]] = {
        "action_low": (_numpy(actor.action_low), action_axes),
        "action_high": (_numpy(actor.action_high), action_axes),
    }
    hidden: list[int] = []
    if isinstance(actor, SMOSEActor):
        n_act = actor.n_act
        weight, bias = _numpy(actor.expert_weight), _numpy(actor.expert_bias)
        tensors |= {
            "router.weight": (_numpy(actor.router.weight), ["expert", "observation"]),
            "router.bias": (_numpy(actor.router.bias), ["expert"]),
            "experts.mean.weight": (weight[:, :n_act], ["expert", "action", "observation"]),
            "experts.mean.bias": (bias[:, :n_act], ["expert", "action"]),
            "experts.log_std.weight": (weight[:, n_act:], ["expert", "action", "observation"]),
            "experts.log_std.bias": (bias[:, n_act:], ["expert", "action"]),
        }
    elif isinstance(actor, MLPActor):
        previous = "observation"
        linears = [m for m in actor.trunk if isinstance(m, nn.Linear)]
        for i, layer in enumerate(linears):
            tensors[f"hidden.{i}.weight"] = (_numpy(layer.weight), [f"hidden_{i}", previous])
            tensors[f"hidden.{i}.bias"] = (_numpy(layer.bias), [f"hidden_{i}"])
            previous = f"hidden_{i}"
            hidden.append(layer.out_features)
        for head in ("mean", "log_std"):
            module = actor.mean_head if head == "mean" else actor.log_std_head
            tensors[f"{head}_head.weight"] = (_numpy(module.weight), ["action", previous])
            tensors[f"{head}_head.bias"] = (_numpy(module.bias), ["action"])
    else:  # a new actor class must get an exporter before it can be exported
        raise SmoseError(f"{run_dir}: export does not support actors of type {type(actor).__name__}")
    largest = _float32_reach(tensors, hidden)
    if not largest <= FLOAT32_MAX / 2:
        raise SmoseError(f"{run_dir}: weights so large that float32 arithmetic could overflow (to {largest:.3g}) on "
                         f"observations within ±2^{OBS_LIMIT_LOG2}; such a model cannot be exported")
    routing_trees = trees.get(tree_kind) if router == "tree" else None
    if routing_trees is not None and routing_trees["kind"] == "oblique" and \
            not _oblique_reach(routing_trees) <= FLOAT32_MAX / 2:
        raise SmoseError(f"{run_dir}: the oblique tree's standardisation (a scale this small) could overflow float32 "
                         f"on observations within ±2^{OBS_LIMIT_LOG2}; such trees cannot be exported")
    obs_names, act_names = feature_names(meta)
    policy = ExportedPolicy(
        env_id=env_id,
        algo=algo,
        n_obs=actor.n_obs,
        n_act=actor.n_act,
        obs_names=obs_names,
        act_names=act_names,
        mode=mode,
        router=router,
        tree_kind=tree_kind if router == "tree" else None,
        parameter_counts=actor.parameter_counts(),
        command=command,
        source={
            "run_dir": str(run_dir),
            "model_sha256": _file_sha256(run_dir / MODEL_WEIGHTS),
            "trained_steps": meta.get("trained_steps"),
        },
        action_low=_numpy(actor.action_low),
        action_high=_numpy(actor.action_high),
        action_scale=_numpy(actor.action_scale),
        action_center=_numpy(actor.action_bias),
        tensors=tensors,
        n_experts=getattr(actor, "n_experts", 0),
        hidden=hidden,
        routing_trees=routing_trees,
        all_trees=trees if all_trees else {},
    )
    return actor, policy


def _float32_reach(tensors: dict[str, tuple[np.ndarray, list[str]]], hidden: list[int]) -> float:
    """A bound on every number the policy's float32 sums reach for observations within ±OBS_LIMIT.

    A row's sum of |weight| times the inputs' bound, plus |bias|, bounds each partial sum in any order (ReLU does not
    grow it); float32 rounding adds a relative n·6e-8 at most, which the factor 2 left to FLOAT32_MAX covers. Below
    that, the logits, their differences in the softmax, the gated means and the tree inputs are all finite.
    """
    def reach(prefix: str, inputs: float) -> float:
        weight, bias = tensors[f"{prefix}.weight"][0], tensors[f"{prefix}.bias"][0]
        rows = np.abs(weight.astype(np.float64)).reshape(-1, weight.shape[-1]).sum(axis=1)
        return float(np.max(rows * inputs + np.abs(bias.astype(np.float64)).reshape(-1)))

    if "router.weight" in tensors:
        return max(reach("router", OBS_LIMIT), reach("experts.mean", OBS_LIMIT))
    bound = OBS_LIMIT
    for i in range(len(hidden)):
        bound = reach(f"hidden.{i}", bound)
    return reach("mean_head", bound)


# ----------------------------------------------------------------------------------------------------------------------
# Shared text: names, layouts, the maths in words


def _clean(name: str) -> str:
    """A feature name safe inside Python and C comments and docstrings."""
    text = "".join(ch if ch.isprintable() else " " for ch in name)
    return text.replace("*/", "* /").replace('"""', "'''").replace("\\", "/")


def _splits_and_leaves(trees: dict) -> tuple[int, int]:
    nodes = [node for tree in trees["trees"] for node in tree["nodes"]]
    leaves = sum(1 for node in nodes if node["leaf"])
    return len(nodes) - leaves, leaves


def _description(p: ExportedPolicy, lang: str) -> list[str]:
    """The documentation block shared by the Python docstring and the C header comment (without the title)."""
    command = f"`{p.command}`" if lang == "python" else p.command
    lines = [
        f"Produced by {command}",
        (f"with smose {__version__} from {p.source['run_dir']}/{MODEL_WEIGHTS} "
        f"(sha256 {p.source['model_sha256'][:16]}...), trained for {p.source['trained_steps']} steps."),
        "",
        f"Observation ({p.n_obs} numbers, obs[i]):",
        *[f"    {i:>3}  {_clean(name)}" for i, name in enumerate(p.obs_names)],
        f"Action ({p.n_act} numbers, in env units):",
        *[f"    {j:>3}  {_clean(name)}  [{float(lo)!r}, {float(hi)!r}]"
          for j, (name, lo, hi) in enumerate(zip(p.act_names, p.action_low, p.action_high))],
        "",
    ]
    counts = p.parameter_counts
    if not p.is_smose:
        sizes = " -> ".join(str(n) for n in [p.n_obs, *p.hidden, p.n_act])
        lines += [
            f"Policy: the dense SAC baseline {p.algo}, an MLP {sizes} with ReLU hidden layers:",
            "    h        = relu(HIDDEN_WEIGHT[l] h + HIDDEN_BIAS[l])  for each hidden layer, starting from h = obs",
            "    action_j = tanh(MEAN_WEIGHT[j] . h + MEAN_BIAS[j]) * ACTION_SCALE[j] + ACTION_CENTER[j]",
            (f"Parameters: {counts['train']:,} trained, {counts['deploy']:,} in this file "
            "(the log-std head only matters while training)."),
        ]
        return lines
    m, n, a = p.n_experts, p.n_obs, p.n_act
    lines.append(f"Policy: SMOSE, {m} linear experts; one expert k acts at each step (mode \"{p.mode}\").")
    if p.router == "neural":
        lines.append("    k        = argmax_m logit_m, logit_m = ROUTER_WEIGHT[m] . obs + ROUTER_BIAS[m] "
                     "(ties: lowest m)")
    elif p.tree_kind == "per-expert":
        lines += ["    k        = the expert whose distilled tree is most sure that the router picks it",
                  "               (highest YES probability, ties: lowest m); tree m tests router-weighted",
                  "               inputs (the router's weight of expert m for obs[i]) * obs[i] against thresholds"]
    elif p.tree_kind == "oblique":
        lines += _oblique_description()
    else:
        lines.append("    k        = the leaf of one distilled decision tree on the raw observation")
    if p.mode == "gated":
        if p.router == "tree":
            lines.append("    logit_m  = ROUTER_WEIGHT[m] . obs + ROUTER_BIAS[m] (needed for the gate only)")
        lines += [
            "    g        = exp(logit_k) / sum_m exp(logit_m)  (the router's softmax probability of k)",
            "    action_j = tanh(g * (MEAN_WEIGHT[k][j] . obs + MEAN_BIAS[k][j])) * ACTION_SCALE[j] + ACTION_CENTER[j]",
            "This is the deterministic action of the trained SAC policy (smose eval --mode gated).",
        ]
    else:
        lines += [
            "    action_j = clip(MEAN_WEIGHT[k][j] . obs + MEAN_BIAS[k][j], ACTION_LOW[j], ACTION_HIGH[j])",
            "The chosen expert's linear mean, clipped to the action bounds (smose eval --mode linear).",
        ]
    held = [f"experts' mean heads {m * a * (n + 1):,}"]
    if p.needs_router_weights:
        held.insert(0, f"router {m * (n + 1):,}")
    if p.routing_trees is not None:
        splits, leaves = _splits_and_leaves(p.routing_trees)
        held.append(f"{len(p.routing_trees['trees'])} tree(s) with {splits} tests and {leaves} leaves")
    lines += [
        (f"Parameters: {counts['train']:,} trained; this file holds {', '.join(held)}; "
        f"a decision uses {counts['active']:,} with the neural router."),
        "The experts' log-std heads only matter while training and are left out.",
    ]
    return lines


def _wrap_values(values: list[str], indent: str, width: int = 116) -> list[str]:
    """Comma-separated values over as many lines as needed (for the large matrices of dense baselines)."""
    lines, current = [], indent
    for value in values:
        piece = value + ", "
        if len(current) + len(piece) > width and current.strip():
            lines.append(current.rstrip())
            current = indent
        current += piece
    if current.strip():
        lines.append(current.rstrip())
    return lines


# ----------------------------------------------------------------------------------------------------------------------
# Python


def _py(value: float) -> str:
    """Exact float64 text of a float32 (or float64) value."""
    return repr(float(value))


def _py_vector(name: str, values: np.ndarray, labels: list[str], comment: str) -> list[str]:
    lines = [f"{name} = [  # {comment}"]
    lines += [f"    {_py(v)},  # {label}" for v, label in zip(values, labels)]
    return lines + ["]"]


@dataclass(frozen=True)
class _TreeSyntax:
    """How one language writes a tree's tests and leaves (Python and C share the walk in ``_tree_lines``)."""

    weight: Callable[[float], str]  # router weight Θ[m, f] as written in the per-expert test
    threshold: Callable[[float], str]  # split threshold and leaf probability
    test: str  # format of the test with {weight}, {feature}, {threshold}; {weight} only in per-expert trees
    class_test: str  # the multiclass tree's test
    leaf: str  # format of a leaf with {value} and {note}
    if_open: str  # format of the if line with {test} and {note}
    else_line: str
    close: str | None  # line after the else branch (C's closing brace)
    unused_obs: str | None  # statement for a tree that never reads obs


def _tree_lines(p: ExportedPolicy, tree: dict, expert: int | None, syntax: _TreeSyntax) -> list[str]:
    """Nested if/else of one tree; per-expert leaves return the YES probability, multiclass leaves the expert."""
    nodes = tree["nodes"]
    theta = p.array("router.weight")
    out: list[str] = []

    def walk(i: int, depth: int) -> None:
        node, pad = nodes[i], "    " * depth
        if node["leaf"]:
            if expert is not None:
                value, shown = syntax.threshold(node["probability"][1]), f"YES in {node['counts'][1]}"
            else:
                k = int(np.argmax(node["probability"]))  # first maximum, as the library's TreeRouter
                value, shown = str(k), f"expert {k} in {node['counts'][k]}"
            out.append(pad + syntax.leaf.format(value=value, note=f"{shown} of {node['samples']} training states"))
            return
        f, name = node["feature"], _clean(p.obs_names[node["feature"]])
        threshold = syntax.threshold(node["threshold"])
        if expert is not None:
            test = syntax.test.format(weight=syntax.weight(theta[expert][f]), feature=f, threshold=threshold)
            note = f"{name} {node['state_op']} {node['state_threshold']:.6g}"
        else:
            test, note = syntax.class_test.format(feature=f, threshold=threshold), name
        out.append(pad + syntax.if_open.format(test=test, note=note))
        walk(node["left"], depth + 1)
        out.append(pad + syntax.else_line)
        walk(node["right"], depth + 1)
        if syntax.close is not None:
            out.append(pad + syntax.close)

    if nodes[0]["leaf"] and syntax.unused_obs is not None:
        out.append("    " + syntax.unused_obs)
    walk(0, 1)
    return out


_PY_TREE = _TreeSyntax(
    # the library's test: the float32 product of weight and (float32) observation, compared with the threshold
    weight=_py, threshold=_py, test="_f32({weight} * obs[{feature}]) <= {threshold}",
    class_test="obs[{feature}] <= {threshold}", leaf="return {value}  # {note}", if_open="if {test}:  # {note}",
    else_line="else:", close=None, unused_obs=None,
)


def _checked_python(actor: Actor, p: ExportedPolicy) -> str:
    source = python_source(p)
    _check_python_against_actor(source, actor, p)
    return source


def python_source(p: ExportedPolicy) -> str:
    """The stdlib-only Python module of a policy."""
    title = (f"SMOSE controller for {p.env_id}: one of {p.n_experts} linear experts acts at each step."
             if p.is_smose else f"Dense SAC controller ({p.algo}) for {p.env_id}.")
    doc = [title, "", *_description(p, "python"), "",
           "Only the Python standard library is used. act(obs) takes any sequence of the numbers above and returns",
           "a list of floats. The observation is rounded to float32 (as the library does) and must be finite and",
           f"within +-2^{OBS_LIMIT_LOG2}, else ValueError; arithmetic is float64 on the float32 weights written "
           "exactly below."]
    if p.is_smose:
        doc += ["The expert that acts is exactly the library's choice (router logits in float64; tree tests round",
                "their product to float32 as the library does). act_and_route(obs) also returns that expert."]
    # Paths in the command may hold backslashes or quotes: escape them so the docstring reads back verbatim.
    text = "\n".join(doc).rstrip().replace("\\", "\\\\").replace('"""', '\\"""')
    lines = ['"""' + text + '\n"""', "", "import math", "import struct", "",
             f"ENV_ID = {p.env_id!r}", f"MODE = {p.mode!r}", f"N_OBS = {p.n_obs}", f"N_ACT = {p.n_act}"]
    if p.is_smose:
        lines.append(f"N_EXPERTS = {p.n_experts}")
    lines += ["OBSERVATION_NAMES = " + repr(p.obs_names), "ACTION_NAMES = " + repr(p.act_names),
              f"OBS_LIMIT = 2.0 ** {OBS_LIMIT_LOG2}  # observations must be finite and within +-OBS_LIMIT", ""]
    act_labels = [f"{j} {_clean(name)}" for j, name in enumerate(p.act_names)]
    obs_labels = [f"{i} {_clean(name)}" for i, name in enumerate(p.obs_names)]
    if p.mode == "gated":
        lines += _py_vector("ACTION_SCALE", p.action_scale, act_labels, "(high - low) / 2")
        lines += _py_vector("ACTION_CENTER", p.action_center, act_labels, "(high + low) / 2")
    else:
        lines += _py_vector("ACTION_LOW", p.action_low, act_labels, "lower action bounds")
        lines += _py_vector("ACTION_HIGH", p.action_high, act_labels, "upper action bounds")
    lines.append("")
    lines += _PY_OBSERVATION
    if p.is_smose:
        lines += _python_smose(p, obs_labels)
    else:
        lines += _python_dense(p, obs_labels)
    return "\n".join(lines).rstrip() + "\n"


# How the Python file reads an observation: rounded to float32 and checked, exactly as the library does.
_PY_OBSERVATION = [
    "_FLOAT32 = struct.Struct('f')", "", "",
    "def _f32(x):",
    '    """x rounded to the nearest float32 (ties to even), as numpy and torch round float64 to float32."""',
    "    try:",
    "        return _FLOAT32.unpack(_FLOAT32.pack(x))[0]",
    "    except OverflowError:  # beyond the largest float32: rounds to infinity",
    "        return math.copysign(math.inf, x)", "", "",
    "def _check(obs):",
    '    """obs as a list of float32 values; ValueError unless N_OBS finite numbers within +-OBS_LIMIT."""',
    "    obs = [_f32(float(x)) for x in obs]",
    "    if len(obs) != N_OBS:",
    '        raise ValueError(f"expected {N_OBS} observation values, got {len(obs)}")',
    "    for i, x in enumerate(obs):",
    "        if not abs(x) <= OBS_LIMIT:  # also False for NaN",
    '            raise ValueError(f"observation component {i} is {x!r}: observations must be finite numbers within "',
    f'                             "+-2^{OBS_LIMIT_LOG2} (NaN or inf usually means a broken sensor or simulation)")',
    "    return obs", "", "",
]


def _python_smose(p: ExportedPolicy, obs_labels: list[str]) -> list[str]:
    lines: list[str] = []
    if p.needs_router_weights:
        weight, bias = p.array("router.weight"), p.array("router.bias")
        lines.append("# Router: logit of expert m = sum_i ROUTER_WEIGHT[m][i] * obs[i] + ROUTER_BIAS[m]")
        lines.append("ROUTER_WEIGHT = [")
        for m in range(p.n_experts):
            lines.append(f"    [  # expert {m}")
            lines += [f"        {_py(v)},  # {label}" for v, label in zip(weight[m], obs_labels)]
            lines.append("    ],")
        lines += ["]", "ROUTER_BIAS = [" + ", ".join(_py(v) for v in bias) + "]", ""]
    weight, bias = p.array("experts.mean.weight"), p.array("experts.mean.bias")
    lines.append("# Experts: mean of action j under expert k = sum_i MEAN_WEIGHT[k][j][i] * obs[i] + MEAN_BIAS[k][j]")
    lines.append("MEAN_WEIGHT = [")
    for m in range(p.n_experts):
        lines.append(f"    [  # expert {m}")
        for j in range(p.n_act):
            lines.append(f"        [  # action {j}: {_clean(p.act_names[j])}")
            lines += [f"            {_py(v)},  # {label}" for v, label in zip(weight[m, j], obs_labels)]
            lines.append("        ],")
        lines.append("    ],")
    lines += ["]", "MEAN_BIAS = ["]
    lines += [f"    [{', '.join(_py(v) for v in bias[m])}],  # expert {m}" for m in range(p.n_experts)]
    lines += ["]", "", "",
              "def _dot(weights, obs):",
              "    total = 0.0",
              "    for w, x in zip(weights, obs):",
              "        total += w * x",
              "    return total", "", "",
              "def _first_max(values):",
              '    """Index of the largest value; ties go to the lowest index."""',
              "    best = 0",
              "    for i in range(1, len(values)):",
              "        if values[i] > values[best]:",
              "            best = i",
              "    return best", "", ""]
    if p.needs_router_weights:
        lines += ["def router_logits(obs):",
                  '    """Logits in float64, summed in index order: each product of float32 numbers is exact."""',
                  "    return [_dot(ROUTER_WEIGHT[m], obs) + ROUTER_BIAS[m] for m in range(N_EXPERTS)]", "", ""]
    trees = p.routing_trees
    if trees is None:
        lines += ["def route(obs):",
                  '    """The expert that acts on obs: the largest router logit."""',
                  "    return _first_max(router_logits(_check(obs)))", "", ""]
    elif trees["kind"] == "per-expert":
        for tree in trees["trees"]:
            m = tree["expert"]
            lines += [f"def yes_expert_{m}(obs):",
                      (f'    """How sure the distilled tree is that the router picks expert {m} (YES share of the '
                      'training states in the leaf)."""')]
            lines += _tree_lines(p, tree, m, _PY_TREE) + ["", ""]
        calls = ", ".join(f"yes_expert_{m}(obs)" for m in range(p.n_experts))
        lines += ["def route(obs):",
                  '    """The expert that acts on obs: the most confident YES of the per-expert trees."""',
                  "    obs = _check(obs)",
                  f"    return _first_max([{calls}])", "", ""]
    elif trees["kind"] == "oblique":
        lines += _python_oblique(p, obs_labels)
    else:
        lines += ["def route(obs):",
                  '    """The expert that acts on obs, by one distilled decision tree on the raw observation."""',
                  "    obs = _check(obs)"]
        lines += _tree_lines(p, trees["trees"][0], None, _PY_TREE) + ["", ""]
    lines += ["def act_and_route(obs):",
              '    """(action, expert): the deterministic action for one observation and the expert that acted."""',
              "    obs = _check(obs)"]
    if p.router == "neural":
        lines += ["    logits = router_logits(obs)", "    k = _first_max(logits)"]
    else:
        lines.append("    k = route(obs)")
        if p.mode == "gated":
            lines.append("    logits = router_logits(obs)")
    if p.mode == "gated":
        lines += ["    top = max(logits)",
                  "    gate = math.exp(logits[k] - top) / sum(math.exp(z - top) for z in logits)",
                  "    action = []",
                  "    for j in range(N_ACT):",
                  "        mean = gate * (_dot(MEAN_WEIGHT[k][j], obs) + MEAN_BIAS[k][j])",
                  "        action.append(math.tanh(mean) * ACTION_SCALE[j] + ACTION_CENTER[j])"]
    else:
        lines += ["    action = []",
                  "    for j in range(N_ACT):",
                  "        value = _dot(MEAN_WEIGHT[k][j], obs) + MEAN_BIAS[k][j]",
                  "        action.append(max(min(value, ACTION_HIGH[j]), ACTION_LOW[j]))"]
    lines += ["    return action, k", "", "",
              "def act(obs):",
              '    """The deterministic action for one observation, a list of N_ACT floats."""',
              "    return act_and_route(obs)[0]"]
    return lines


def _python_dense(p: ExportedPolicy, obs_labels: list[str]) -> list[str]:
    lines = [("# Hidden layer l: h_new[u] = relu(sum_i HIDDEN_WEIGHT[l][u][i] * h[i] + HIDDEN_BIAS[l][u]); "
             "layer 0 reads obs:"),
             *[f"#   column {label}" for label in obs_labels],
             "HIDDEN_WEIGHT = ["]
    for i in range(len(p.hidden)):
        weight = p.array(f"hidden.{i}.weight")
        lines.append(f"    [  # layer {i}: {weight.shape[0]} units x {weight.shape[1]} inputs")
        for u, row in enumerate(weight):
            lines.append(f"        [  # unit {u}")
            lines += _wrap_values([_py(v) for v in row], "            ")
            lines.append("        ],")
        lines.append("    ],")
    lines += ["]", "HIDDEN_BIAS = ["]
    for i in range(len(p.hidden)):
        lines.append(f"    [  # layer {i}")
        lines += _wrap_values([_py(v) for v in p.array(f"hidden.{i}.bias")], "        ")
        lines.append("    ],")
    lines += ["]", "# Mean head: action j before tanh = sum_u MEAN_WEIGHT[j][u] * h[u] + MEAN_BIAS[j]",
              "MEAN_WEIGHT = ["]
    for j, row in enumerate(p.array("mean_head.weight")):
        lines.append(f"    [  # action {j}: {_clean(p.act_names[j])}")
        lines += _wrap_values([_py(v) for v in row], "        ")
        lines.append("    ],")
    lines += ["]", "MEAN_BIAS = [" + ", ".join(_py(v) for v in p.array("mean_head.bias")) + "]", "", "",
              "def _dot(weights, values):",
              "    total = 0.0",
              "    for w, x in zip(weights, values):",
              "        total += w * x",
              "    return total", "", "",
              "def act(obs):",
              '    """The deterministic action for one observation, a list of N_ACT floats."""',
              "    h = _check(obs)",
              "    for weight, bias in zip(HIDDEN_WEIGHT, HIDDEN_BIAS):",
              "        h = [max(_dot(row, h) + b, 0.0) for row, b in zip(weight, bias)]",
              "    return [math.tanh(_dot(MEAN_WEIGHT[j], h) + MEAN_BIAS[j]) * ACTION_SCALE[j] + ACTION_CENTER[j]",
              "            for j in range(N_ACT)]"]
    return lines


# ----------------------------------------------------------------------------------------------------------------------
# C


def _c(value: float) -> str:
    """Shortest text that reads back as the same float32, with the f suffix."""
    text = str(np.float32(value))
    if not any(ch in text for ch in ".en"):
        text += ".0"
    return text + "f"


def _c_double(value: float) -> str:
    text = repr(float(value))
    return text if any(ch in text for ch in ".en") else text + ".0"


_C_TREE = _TreeSyntax(
    # the library's test: the float32 input (times the float32 weight) compared in double with the threshold; the
    # (float) cast rounds the product to float even where a compiler keeps extra precision (FLT_EVAL_METHOD != 0)
    weight=_c, threshold=_c_double,
    test="(double)(float)({weight} * obs[{feature}]) <= {threshold}",
    class_test="(double)obs[{feature}] <= {threshold}",
    leaf="return {value}; /* {note} */", if_open="if ({test}) {{ /* {note} */", else_line="} else {", close="}",
    unused_obs="(void)obs;",  # a tree without a test (one class only in training) does not read obs
)


def _c_array(name: str, dims: list[str], values: np.ndarray, labels: list[list[str]], comment: str) -> list[str]:
    """A static const float array, one value per line with its label, nested braces per leading dimension."""
    lines = [f"/* {comment} */", f"static const float {name}{''.join(f'[{d}]' for d in dims)} = {{"]

    def emit(array: np.ndarray, depth: int) -> None:
        pad = "    " * (depth + 1)
        if array.ndim == 1:
            lines.extend(f"{pad}{_c(v)}, /* {label} */" for v, label in zip(array, labels[depth]))
            return
        for idx, sub in enumerate(array):
            lines.append(f"{pad}{{ /* {labels[depth][idx]} */")
            emit(sub, depth + 1)
            lines.append(f"{pad}}},")

    emit(values, 0)
    return lines + ["};"]


def c_source(p: ExportedPolicy) -> str:
    """The header-only C99 file of a policy."""
    title = (f"smose_policy.h: SMOSE controller for {p.env_id}, {p.n_experts} linear experts, one acts per step."
             if p.is_smose else f"smose_policy.h: dense SAC controller ({p.algo}) for {p.env_id}.")
    usage = ["Usage: #include \"smose_policy.h\" in one or more C99 files and link with -lm.",
             "    float action[SMOSE_N_ACT];",
             "    int status = smose_act(obs, action);         obs: SMOSE_N_OBS floats in the order below"]
    if p.is_smose:
        usage.append("    int expert = smose_route(obs);               the expert that acts on obs")
        usage.append("    int expert = smose_act_route(obs, action);   both at once")
    usage += ["Each returns SMOSE_INVALID_OBSERVATION (-1), and writes NaN actions, unless every obs[i] is finite and",
              f"within +-SMOSE_OBS_LIMIT (2^{OBS_LIMIT_LOG2}); smose_act returns 0 otherwise. A double observation "
              "converted to",
              "float by C rounds as the library does.",
              "No allocation, no globals that change, only expf/tanhf/fabsf from libm; arithmetic is float32"]
    usage.append("(the router's logits are summed in double so the expert is exactly the library's choice); do not"
                 if p.is_smose else "(do not")
    usage.append("compile with -ffast-math, which drops the NaN checks.")
    doc = [title, "", *usage, "", *_description(p, "c")]
    lines = ["/*"] + [(" * " + line.replace("*/", "* /")).rstrip() for line in doc] + [" */",
             "#ifndef SMOSE_POLICY_H", "#define SMOSE_POLICY_H", "", "#include <math.h>", "",
             f"#define SMOSE_N_OBS {p.n_obs}", f"#define SMOSE_N_ACT {p.n_act}"]
    if p.is_smose:
        lines.append(f"#define SMOSE_N_EXPERTS {p.n_experts}")
    lines.append("")
    obs_labels = [f"{i} {_clean(name)}" for i, name in enumerate(p.obs_names)]
    act_labels = [f"{j} {_clean(name)}" for j, name in enumerate(p.act_names)]
    if p.mode == "gated":
        lines += _c_array("SMOSE_ACTION_SCALE", ["SMOSE_N_ACT"], p.action_scale, [act_labels], "(high - low) / 2")
        lines += _c_array("SMOSE_ACTION_CENTER", ["SMOSE_N_ACT"], p.action_center, [act_labels], "(high + low) / 2")
    else:
        lines += _c_array("SMOSE_ACTION_LOW", ["SMOSE_N_ACT"], p.action_low, [act_labels], "lower action bounds")
        lines += _c_array("SMOSE_ACTION_HIGH", ["SMOSE_N_ACT"], p.action_high, [act_labels], "upper action bounds")
    lines.append("")
    lines += _C_OBSERVATION
    lines += _c_smose(p, obs_labels, act_labels) if p.is_smose else _c_dense(p, obs_labels)
    lines += ["", "#endif /* SMOSE_POLICY_H */"]
    return "\n".join(lines) + "\n"


# The library's rule for observations (smose.algo.policy.check_observations), shared by SMOSE and dense headers.
_C_OBSERVATION = [
    f"#define SMOSE_OBS_LIMIT 0x1p{OBS_LIMIT_LOG2}f /* 2^{OBS_LIMIT_LOG2}: observations must be finite and within "
    "+-SMOSE_OBS_LIMIT */",
    "#define SMOSE_INVALID_OBSERVATION (-1)", "",
    "/* 1 if every obs[i] is finite and within +-SMOSE_OBS_LIMIT, else 0 (NaN fails the comparison). */",
    "static inline int smose_valid_observation(const float obs[SMOSE_N_OBS])",
    "{",
    "    for (int i = 0; i < SMOSE_N_OBS; ++i)",
    "        if (!(fabsf(obs[i]) <= SMOSE_OBS_LIMIT))",
    "            return 0;",
    "    return 1;",
    "}", "",
    "static inline int smose_reject_(float action[SMOSE_N_ACT])",
    "{",
    "    for (int j = 0; j < SMOSE_N_ACT; ++j)",
    "        action[j] = NAN;",
    "    return SMOSE_INVALID_OBSERVATION;",
    "}", "",
]


def _c_smose(p: ExportedPolicy, obs_labels: list[str], act_labels: list[str]) -> list[str]:
    experts = [f"expert {m}" for m in range(p.n_experts)]
    lines: list[str] = []
    if p.needs_router_weights:
        lines += _c_array("SMOSE_ROUTER_WEIGHT", ["SMOSE_N_EXPERTS", "SMOSE_N_OBS"], p.array("router.weight"),
                          [experts, obs_labels],
                          "router: logit[m] = sum_i ROUTER_WEIGHT[m][i] * obs[i] + ROUTER_BIAS[m]")
        lines += _c_array("SMOSE_ROUTER_BIAS", ["SMOSE_N_EXPERTS"], p.array("router.bias"), [experts], "router bias")
    lines += _c_array("SMOSE_MEAN_WEIGHT", ["SMOSE_N_EXPERTS", "SMOSE_N_ACT", "SMOSE_N_OBS"],
                      p.array("experts.mean.weight"), [experts, [f"action {a}" for a in act_labels], obs_labels],
                      "experts: mean[k][j] = sum_i MEAN_WEIGHT[k][j][i] * obs[i] + MEAN_BIAS[k][j]")
    lines += _c_array("SMOSE_MEAN_BIAS", ["SMOSE_N_EXPERTS", "SMOSE_N_ACT"], p.array("experts.mean.bias"),
                      [experts, act_labels], "expert mean biases")
    lines.append("")
    if p.needs_router_weights:
        lines += ["/* Router logits in double, summed in index order: every product of two floats is exact in double,",
                  " * so the choice does not depend on rounding (or on contraction into fused multiply-adds). */",
                  ("static inline void smose_router_logits(const float obs[SMOSE_N_OBS], "
                   "double logits[SMOSE_N_EXPERTS])"),
                  "{",
                  "    for (int m = 0; m < SMOSE_N_EXPERTS; ++m) {",
                  "        double z = 0.0;",
                  "        for (int i = 0; i < SMOSE_N_OBS; ++i)",
                  "            z += (double)SMOSE_ROUTER_WEIGHT[m][i] * (double)obs[i];",
                  "        logits[m] = z + (double)SMOSE_ROUTER_BIAS[m];",
                  "    }",
                  "}", "",
                  "/* Index of the largest logit; ties go to the lowest index. */",
                  "static inline int smose_argmax_(const double logits[SMOSE_N_EXPERTS])",
                  "{",
                  "    int best = 0;",
                  "    for (int m = 1; m < SMOSE_N_EXPERTS; ++m)",
                  "        if (logits[m] > logits[best])",
                  "            best = m;",
                  "    return best;",
                  "}", ""]
    trees = p.routing_trees
    if trees is None:
        lines += ["/* The expert that acts on a valid obs: the largest router logit, ties to the lowest index. */",
                  "static inline int smose_choose_(const float obs[SMOSE_N_OBS])",
                  "{",
                  "    double logits[SMOSE_N_EXPERTS];",
                  "    smose_router_logits(obs, logits);",
                  "    return smose_argmax_(logits);",
                  "}"]
    elif trees["kind"] == "per-expert":
        for tree in trees["trees"]:
            m = tree["expert"]
            lines += [f"/* How sure the distilled tree is that the router picks expert {m}. */",
                      f"static inline double smose_yes_expert_{m}(const float obs[SMOSE_N_OBS])", "{"]
            lines += _tree_lines(p, tree, m, _C_TREE) + ["}", ""]
        lines += [("/* The expert that acts on a valid obs: the most confident YES of the per-expert trees, ties to the"
                  " lowest index. */"),
                  "static inline int smose_choose_(const float obs[SMOSE_N_OBS])",
                  "{",
                  "    double yes[SMOSE_N_EXPERTS];"]
        lines += [f"    yes[{m}] = smose_yes_expert_{m}(obs);" for m in range(p.n_experts)]
        lines += ["    int best = 0;",
                  "    for (int m = 1; m < SMOSE_N_EXPERTS; ++m)",
                  "        if (yes[m] > yes[best])",
                  "            best = m;",
                  "    return best;",
                  "}"]
    elif trees["kind"] == "oblique":
        lines += _c_oblique(p, obs_labels)
    else:
        lines += ["/* The expert that acts on a valid obs, by one distilled decision tree on the raw observation. */",
                  "static inline int smose_choose_(const float obs[SMOSE_N_OBS])", "{"]
        lines += _tree_lines(p, trees["trees"][0], None, _C_TREE) + ["}"]
    lines += ["",
              "/* The expert that acts on obs, or SMOSE_INVALID_OBSERVATION. */",
              "static inline int smose_route(const float obs[SMOSE_N_OBS])",
              "{",
              "    return smose_valid_observation(obs) ? smose_choose_(obs) : SMOSE_INVALID_OBSERVATION;",
              "}", "",
              ("/* Writes the deterministic action for obs and returns the expert that acted (or writes NaN and returns"
               " SMOSE_INVALID_OBSERVATION). */"),
              "static inline int smose_act_route(const float obs[SMOSE_N_OBS], float action[SMOSE_N_ACT])",
              "{",
              "    if (!smose_valid_observation(obs))",
              "        return smose_reject_(action);"]
    if p.mode == "gated":
        choice = "smose_choose_(obs)" if trees is not None else "smose_argmax_(logits)"
        lines += ["    double logits[SMOSE_N_EXPERTS];",
                  "    smose_router_logits(obs, logits);",
                  f"    const int k = {choice};"]
        lines += ["    double top = logits[0];",
                  "    for (int m = 1; m < SMOSE_N_EXPERTS; ++m)",
                  "        if (logits[m] > top)",
                  "            top = logits[m];",
                  "    float total = 0.0f;",
                  "    for (int m = 0; m < SMOSE_N_EXPERTS; ++m)",
                  "        total += expf((float)(logits[m] - top));",
                  "    const float gate = expf((float)(logits[k] - top)) / total;",
                  "    for (int j = 0; j < SMOSE_N_ACT; ++j) {",
                  "        float mean = 0.0f;",
                  "        for (int i = 0; i < SMOSE_N_OBS; ++i)",
                  "            mean += SMOSE_MEAN_WEIGHT[k][j][i] * obs[i];",
                  "        mean = gate * (mean + SMOSE_MEAN_BIAS[k][j]);",
                  "        action[j] = tanhf(mean) * SMOSE_ACTION_SCALE[j] + SMOSE_ACTION_CENTER[j];",
                  "    }"]
    else:
        lines += ["    const int k = smose_choose_(obs);",
                  "    for (int j = 0; j < SMOSE_N_ACT; ++j) {",
                  "        float value = 0.0f;",
                  "        for (int i = 0; i < SMOSE_N_OBS; ++i)",
                  "            value += SMOSE_MEAN_WEIGHT[k][j][i] * obs[i];",
                  "        value += SMOSE_MEAN_BIAS[k][j];",
                  "        if (value > SMOSE_ACTION_HIGH[j])",
                  "            value = SMOSE_ACTION_HIGH[j];",
                  "        if (value < SMOSE_ACTION_LOW[j])",
                  "            value = SMOSE_ACTION_LOW[j];",
                  "        action[j] = value;",
                  "    }"]
    lines += ["    return k;",
              "}", "",
              "/* Writes the deterministic action for obs and returns 0 (or writes NaN and returns",
              " * SMOSE_INVALID_OBSERVATION). */",
              "static inline int smose_act(const float obs[SMOSE_N_OBS], float action[SMOSE_N_ACT])",
              "{",
              "    return smose_act_route(obs, action) < 0 ? SMOSE_INVALID_OBSERVATION : 0;",
              "}"]
    return lines


def _c_dense(p: ExportedPolicy, obs_labels: list[str]) -> list[str]:
    lines: list[str] = []
    sizes = [p.n_obs, *p.hidden]
    for i, width in enumerate(p.hidden):
        lines.append(f"#define SMOSE_HIDDEN_{i} {width}")
    lines.append("")
    for i in range(len(p.hidden)):
        fan_in = "SMOSE_N_OBS" if i == 0 else f"SMOSE_HIDDEN_{i - 1}"
        lines.append(f"/* hidden layer {i}: h{i}[u] = relu(sum_i HIDDEN_{i}_WEIGHT[u][i] * "
                     f"{'obs' if i == 0 else f'h{i - 1}'}[i] + HIDDEN_{i}_BIAS[u]), {sizes[i + 1]} x {sizes[i]}")
        if i == 0:
            lines += [f" * column {label}" for label in obs_labels]
        lines += [" */", f"static const float SMOSE_HIDDEN_{i}_WEIGHT[SMOSE_HIDDEN_{i}][{fan_in}] = {{"]
        for u, row in enumerate(p.array(f"hidden.{i}.weight")):
            lines.append(f"    {{ /* unit {u} */")
            lines += _wrap_values([_c(v) for v in row], "        ")
            lines.append("    },")
        lines += ["};", f"static const float SMOSE_HIDDEN_{i}_BIAS[SMOSE_HIDDEN_{i}] = {{"]
        lines += _wrap_values([_c(v) for v in p.array(f"hidden.{i}.bias")], "    ")
        lines.append("};")
    last = f"SMOSE_HIDDEN_{len(p.hidden) - 1}"
    lines += ["/* mean head: action j = tanh(sum_u MEAN_WEIGHT[j][u] * h[u] + MEAN_BIAS[j]) * scale + center */",
              f"static const float SMOSE_MEAN_WEIGHT[SMOSE_N_ACT][{last}] = {{"]
    for j, row in enumerate(p.array("mean_head.weight")):
        lines.append(f"    {{ /* action {j}: {_clean(p.act_names[j])} */")
        lines += _wrap_values([_c(v) for v in row], "        ")
        lines.append("    },")
    lines += ["};", "static const float SMOSE_MEAN_BIAS[SMOSE_N_ACT] = {"]
    lines += _wrap_values([_c(v) for v in p.array("mean_head.bias")], "    ")
    lines += ["};", "",
              "/* Writes the deterministic action for obs and returns 0 (or writes NaN and returns",
              " * SMOSE_INVALID_OBSERVATION). */",
              "static inline int smose_act(const float obs[SMOSE_N_OBS], float action[SMOSE_N_ACT])",
              "{",
              "    if (!smose_valid_observation(obs))",
              "        return smose_reject_(action);"]
    previous, fan_in = "obs", "SMOSE_N_OBS"
    for i in range(len(p.hidden)):
        lines += [f"    float h{i}[SMOSE_HIDDEN_{i}];",
                  f"    for (int u = 0; u < SMOSE_HIDDEN_{i}; ++u) {{",
                  "        float z = 0.0f;",
                  f"        for (int i = 0; i < {fan_in}; ++i)",
                  f"            z += SMOSE_HIDDEN_{i}_WEIGHT[u][i] * {previous}[i];",
                  f"        z += SMOSE_HIDDEN_{i}_BIAS[u];",
                  f"        h{i}[u] = z > 0.0f ? z : 0.0f;",
                  "    }"]
        previous, fan_in = f"h{i}", f"SMOSE_HIDDEN_{i}"
    lines += ["    for (int j = 0; j < SMOSE_N_ACT; ++j) {",
              "        float z = 0.0f;",
              f"        for (int i = 0; i < {fan_in}; ++i)",
              f"            z += SMOSE_MEAN_WEIGHT[j][i] * {previous}[i];",
              "        z += SMOSE_MEAN_BIAS[j];",
              "        action[j] = tanhf(z) * SMOSE_ACTION_SCALE[j] + SMOSE_ACTION_CENTER[j];",
              "    }",
              "    return 0;",
              "}"]
    return lines


# ----------------------------------------------------------------------------------------------------------------------
# Oblique trees in Python and C: hyperplanes on the standardised observation (smose.interpret.oblique.node_activations)


def _oblique_description() -> list[str]:
    return ["    k        = the leaf of one oblique tree; its tests are hyperplanes on the standardised",
            "               observation x_i = (obs[i] - OBLIQUE_MEAN[i]) / OBLIQUE_SCALE[i] (float32): a state goes",
            "               the 'if' way when HYPERPLANE_BIAS[t] + sum_i HYPERPLANE_WEIGHT[t][i] * x_i <= 0 (summed",
            "               in double, in index order)"]


def _oblique_tests(trees: dict) -> tuple[list[dict], dict[int, int]]:
    """The internal nodes of the oblique tree and each one's row in the hyperplane arrays (node id order)."""
    tests = [node for node in trees["trees"][0]["nodes"] if not node["leaf"]]
    return tests, {node["id"]: t for t, node in enumerate(tests)}


def _oblique_note(p: ExportedPolicy, node: dict) -> str:
    """The test restated on the physical observation (strongest terms), for the comment beside it."""
    from smose.interpret.oblique import describe_hyperplane

    test, _ = describe_hyperplane(np.asarray(node["state_weights"]), node["state_threshold"],
                                  np.asarray(node["weights"]), [_clean(name) for name in p.obs_names])
    return _clean(test)


def _oblique_tree_lines(p: ExportedPolicy, trees: dict, syntax: _TreeSyntax, test: str) -> list[str]:
    """Nested if/else of the oblique tree: ``test`` (with {row}) is the hyperplane test of one row; leaves return the
    expert of the leaf's majority vote (first maximum, as the library's TreeRouter)."""
    nodes = trees["trees"][0]["nodes"]
    _, rows = _oblique_tests(trees)
    out: list[str] = []

    def walk(i: int, depth: int) -> None:
        node, pad = nodes[i], "    " * depth
        if node["leaf"]:
            k = int(np.argmax(node["probability"]))
            note = f"expert {k} in {node['counts'][k]} of {node['samples']} training states"
            out.append(pad + syntax.leaf.format(value=str(k), note=note))
            return
        out.append(pad + syntax.if_open.format(test=test.format(row=rows[i]), note=_oblique_note(p, node)))
        walk(node["left"], depth + 1)
        out.append(pad + syntax.else_line)
        walk(node["right"], depth + 1)
        if syntax.close is not None:
            out.append(pad + syntax.close)

    walk(0, 1)
    return out


def _oblique_arrays(trees: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(mean, scale, weight [tests, n_obs], bias [tests]) in float32, as the library's TreeRouter reads them."""
    tests, _ = _oblique_tests(trees)
    n_obs = trees["n_obs"]
    weight = np.asarray([node["weights"] for node in tests], dtype=np.float32).reshape(len(tests), n_obs)
    bias = np.asarray([node["bias"] for node in tests], dtype=np.float32).reshape(len(tests))
    standardisation = trees["standardisation"]
    mean = np.asarray(standardisation["mean"], dtype=np.float32)
    return mean, np.asarray(standardisation["scale"], dtype=np.float32), weight, bias


# How the Python file standardises component i, as the library does (smose.interpret.oblique.standardised).
_PY_STANDARDISED = "_f32(_f32(obs[i] - OBLIQUE_MEAN[i]) / OBLIQUE_SCALE[i])"


def _python_oblique(p: ExportedPolicy, obs_labels: list[str]) -> list[str]:
    trees = p.routing_trees
    assert trees is not None
    mean, scale, weight, bias = _oblique_arrays(trees)
    tests, _ = _oblique_tests(trees)
    lines = _py_vector("OBLIQUE_MEAN", mean, obs_labels, "the tree's tests read x[i] = (obs[i] - OBLIQUE_MEAN[i]) / "
                       "OBLIQUE_SCALE[i]")
    lines += _py_vector("OBLIQUE_SCALE", scale, obs_labels, "standard deviations of the states the tree was fitted on")
    lines.append("# Test t goes the 'if' way when HYPERPLANE_BIAS[t] + sum_i HYPERPLANE_WEIGHT[t][i] * x[i] <= 0")
    lines.append("HYPERPLANE_WEIGHT = [")
    for t, node in enumerate(tests):
        lines.append(f"    [  # test {t} (node {node['id']})")
        lines += [f"        {_py(v)},  # {label}" for v, label in zip(weight[t], obs_labels)]
        lines.append("    ],")
    lines += ["]", "HYPERPLANE_BIAS = [" + ", ".join(_py(v) for v in bias) + "]", "", "",
              "def _standardised(obs):",
              '    """x[i] = (obs[i] - OBLIQUE_MEAN[i]) / OBLIQUE_SCALE[i], the subtraction and the division each',
              '    rounded to float32, as the library computes them."""',
              f"    return [{_PY_STANDARDISED} for i in range(N_OBS)]", "", "",
              "def _hyperplane(t, x):",
              '    """HYPERPLANE_BIAS[t] + sum_i HYPERPLANE_WEIGHT[t][i] * x[i] in float64, summed in index order as',
              '    the library does (each product of two float32 numbers is exact)."""',
              "    total = HYPERPLANE_BIAS[t]",
              "    for w, xi in zip(HYPERPLANE_WEIGHT[t], x):",
              "        total += w * xi",
              "    return total", "", "",
              "def route(obs):",
              '    """The expert that acts on obs, by one oblique tree (hyperplanes on the standardised',
              '    observation)."""',
              "    obs = _check(obs)"]
    if tests:
        lines.append("    x = _standardised(obs)")
    lines += _oblique_tree_lines(p, trees, _PY_TREE, "_hyperplane({row}, x) <= 0.0") + ["", ""]
    return lines


def _c_oblique(p: ExportedPolicy, obs_labels: list[str]) -> list[str]:
    trees = p.routing_trees
    assert trees is not None
    mean, scale, weight, bias = _oblique_arrays(trees)
    tests, _ = _oblique_tests(trees)
    if not tests:  # one leaf: every state goes to its expert
        return (["/* The expert that acts on a valid obs: the oblique tree is a single leaf. */",
                 "static inline int smose_choose_(const float obs[SMOSE_N_OBS])", "{", "    (void)obs;"]
                + _oblique_tree_lines(p, trees, _C_TREE, "") + ["}"])
    names = [f"test {t} (node {node['id']})" for t, node in enumerate(tests)]
    lines = _c_array("SMOSE_OBLIQUE_MEAN", ["SMOSE_N_OBS"], mean, [obs_labels],
                     "the oblique tree's tests read x[i] = (obs[i] - OBLIQUE_MEAN[i]) / OBLIQUE_SCALE[i]")
    lines += _c_array("SMOSE_OBLIQUE_SCALE", ["SMOSE_N_OBS"], scale, [obs_labels],
                      "standard deviations of the states the tree was fitted on")
    lines += [f"#define SMOSE_N_TESTS {len(tests)}"]
    lines += _c_array("SMOSE_HYPERPLANE_WEIGHT", ["SMOSE_N_TESTS", "SMOSE_N_OBS"], weight, [names, obs_labels],
                      "test t goes the 'if' way when HYPERPLANE_BIAS[t] + sum_i HYPERPLANE_WEIGHT[t][i] * x[i] <= 0")
    lines += _c_array("SMOSE_HYPERPLANE_BIAS", ["SMOSE_N_TESTS"], bias, [names], "hyperplane biases")
    lines += ["",
              "/* Test t of the oblique tree in double, summed in index order as the library does: each product of two",
              " * floats is exact in double, so contraction into fused multiply-adds cannot change the result. */",
              "static inline double smose_hyperplane_(int t, const float x[SMOSE_N_OBS])",
              "{",
              "    double total = (double)SMOSE_HYPERPLANE_BIAS[t];",
              "    for (int i = 0; i < SMOSE_N_OBS; ++i)",
              "        total += (double)SMOSE_HYPERPLANE_WEIGHT[t][i] * (double)x[i];",
              "    return total;",
              "}", "",
              "/* The expert that acts on a valid obs, by one oblique tree (hyperplanes on the standardised",
              " * observation). */",
              "static inline int smose_choose_(const float obs[SMOSE_N_OBS])",
              "{",
              "    float x[SMOSE_N_OBS];",
              "    for (int i = 0; i < SMOSE_N_OBS; ++i) /* each operation rounded to float, as the library does */",
              "        x[i] = (float)((float)(obs[i] - SMOSE_OBLIQUE_MEAN[i]) / SMOSE_OBLIQUE_SCALE[i]);"]
    return lines + _oblique_tree_lines(p, trees, _C_TREE, "smose_hyperplane_({row}, x) <= 0.0") + ["}"]


def _oblique_reach(trees: dict) -> float:
    """A bound on the standardised inputs x (float32) for observations within ±OBS_LIMIT."""
    mean, scale, _, _ = _oblique_arrays(trees)
    return float(np.max((OBS_LIMIT + np.abs(mean.astype(np.float64))) / scale.astype(np.float64)))


# ----------------------------------------------------------------------------------------------------------------------
# JSON


def json_document(p: ExportedPolicy) -> dict:
    """Every tensor and tree of the policy (schema: docs/export.md)."""
    doc: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_FORMAT_VERSION,
        "smose_version": __version__,
        "command": p.command,
        "source": p.source,
        "env_id": p.env_id,
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
        "log_std_range": [-5.0, 2.0],
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


# ----------------------------------------------------------------------------------------------------------------------
# ONNX


def _yes_leaf(node: dict) -> torch.Tensor:
    return torch.tensor(node["probability"][1], dtype=torch.float64)


def _class_leaf(node: dict) -> torch.Tensor:
    """The leaf's most frequent expert, ties to the lowest index (as np.argmax in TreeRouter)."""
    return torch.tensor(int(np.argmax(node["probability"])), dtype=torch.int64)


def _valid_rows(obs: torch.Tensor) -> torch.Tensor:
    """[B] bool: every component finite and within ±OBS_LIMIT (the library's check_observations)."""
    return (obs.abs() <= OBS_LIMIT).all(dim=1)


def _reject_invalid(valid: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """NaN actions for invalid observations: a graph cannot raise, and NaN cannot pass unnoticed downstream."""
    return torch.where(valid.unsqueeze(1), action, torch.full_like(action, float("nan")))


class _OnnxSMOSE(nn.Module):
    """The deterministic SMOSE policy written with ops the ONNX exporter maps one to one (batch axis dynamic).

    The neural choice is the argmax of float64 logits, as in the library (``SMOSEActor.decision_logits``); the gate
    uses float32 logits, as the library's action does. With ``trees`` the expert comes from the distilled trees,
    unrolled into nested ``where`` ops; as in the library's TreeRouter, each test compares a float32 input in float64
    with the threshold. Invalid observations give NaN actions and expert -1.
    """

    def __init__(self, actor: SMOSEActor, mode: str, trees: dict | None = None):
        super().__init__()
        n_act, n_obs = actor.n_act, actor.n_obs
        self.mode, self.n_experts, self.n_act, self.trees = mode, actor.n_experts, n_act, trees
        self.register_buffer("router_weight", actor.router.weight.detach().clone())
        self.register_buffer("router_bias", actor.router.bias.detach().clone())
        self.register_buffer("router_weight64", actor.router.weight.detach().to(torch.float64).clone())
        self.register_buffer("router_bias64", actor.router.bias.detach().to(torch.float64).clone())
        self.register_buffer("mean_weight", actor.expert_weight.detach()[:, :n_act].reshape(-1, n_obs).clone())
        self.register_buffer("mean_bias", actor.expert_bias.detach()[:, :n_act].reshape(-1).clone())
        for name in ("action_scale", "action_bias", "action_low", "action_high"):
            self.register_buffer(name, getattr(actor, name).detach().clone())
        if trees is not None and trees["kind"] == "oblique":
            mean, scale, weight, bias = (torch.from_numpy(a) for a in _oblique_arrays(trees))
            self.register_buffer("oblique_mean", mean)
            self.register_buffer("oblique_scale", scale)
            self.register_buffer("hyperplane_weight64", weight.to(torch.float64))
            self.register_buffer("hyperplane_bias64", bias.to(torch.float64))

    def _tree(self, nodes: list[dict], i: int, inputs: torch.Tensor, leaf: Callable[[dict], torch.Tensor]):
        node = nodes[i]
        if node["leaf"]:
            return leaf(node)
        go_left = inputs[:, node["feature"]].to(torch.float64) <= node["threshold"]
        return torch.where(go_left, self._tree(nodes, node["left"], inputs, leaf),
                           self._tree(nodes, node["right"], inputs, leaf))

    def _oblique_route(self, obs: torch.Tensor) -> torch.Tensor:
        """The oblique tree as the library computes it (smose.interpret.oblique.node_activations): the standardisation in
        float32, each hyperplane in float64 summed feature by feature (exact products, index order)."""
        assert self.trees is not None
        nodes = self.trees["trees"][0]["nodes"]
        _, rows = _oblique_tests(self.trees)
        if not rows:  # a single leaf
            return _class_leaf(nodes[0]).expand(obs.shape[0])
        x = ((obs - self.oblique_mean) / self.oblique_scale).to(torch.float64)
        weight = self.hyperplane_weight64
        activation = self.hyperplane_bias64 + x[:, 0:1] * weight[:, 0]
        for f in range(1, weight.shape[1]):
            activation = activation + x[:, f:f + 1] * weight[:, f]
        go_left = activation <= 0

        def walk(i: int) -> torch.Tensor:
            node = nodes[i]
            if node["leaf"]:
                return _class_leaf(node)
            return torch.where(go_left[:, rows[i]], walk(node["left"]), walk(node["right"]))

        return walk(0).expand(obs.shape[0])

    def _tree_route(self, obs: torch.Tensor) -> torch.Tensor:
        assert self.trees is not None
        if self.trees["kind"] == "oblique":
            return self._oblique_route(obs)
        if self.trees["kind"] == "per-expert":
            yes = []
            for m, tree in enumerate(self.trees["trees"]):
                inputs = obs * self.router_weight[m]  # u_m = Θ_m ⊙ s in float32
                yes.append(self._tree(tree["nodes"], 0, inputs, _yes_leaf).expand(obs.shape[0]))
            return torch.argmax(torch.stack(yes, dim=1), dim=1)  # first maximum: ties to the lowest index
        return self._tree(self.trees["trees"][0]["nodes"], 0, obs, _class_leaf).expand(obs.shape[0])

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = F.linear(obs, self.router_weight, self.router_bias)
        if self.trees is None:
            expert = torch.argmax(F.linear(obs.to(torch.float64), self.router_weight64, self.router_bias64), dim=-1)
        else:
            expert = self._tree_route(obs)
        means = F.linear(obs, self.mean_weight, self.mean_bias).reshape(-1, self.n_experts, self.n_act)
        index = expert.reshape(-1, 1, 1).expand(-1, 1, self.n_act)
        chosen = torch.gather(means, 1, index).squeeze(1)
        if self.mode == "gated":
            gate = torch.gather(torch.softmax(logits, dim=-1), 1, expert.reshape(-1, 1))
            action = torch.tanh(gate * chosen) * self.action_scale + self.action_bias
        else:
            action = torch.maximum(torch.minimum(chosen, self.action_high), self.action_low)
        valid = _valid_rows(obs)
        return _reject_invalid(valid, action), torch.where(valid, expert, torch.full_like(expert, -1))


class _OnnxDense(nn.Module):
    def __init__(self, actor: MLPActor):
        super().__init__()
        self.trunk, self.mean_head = actor.trunk, actor.mean_head
        self.register_buffer("action_scale", actor.action_scale.detach().clone())
        self.register_buffer("action_bias", actor.action_bias.detach().clone())

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        action = torch.tanh(self.mean_head(self.trunk(obs))) * self.action_scale + self.action_bias
        return _reject_invalid(_valid_rows(obs), action)


def onnx_bytes(actor: Actor, p: ExportedPolicy) -> bytes:
    """The ONNX model, checked with onnx.checker and compared with the library's policy under onnxruntime."""
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        raise SmoseError(f"ONNX export needs the 'export' extra (pip install 'smose[export]'): {exc}") from None
    module: nn.Module = (_OnnxSMOSE(actor, p.mode, p.routing_trees) if isinstance(actor, SMOSEActor)
                         else _OnnxDense(actor))
    module.eval()
    outputs = ["action", "expert"] if p.is_smose else ["action"]
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript-based exporter (dynamo=False) needs no extra packages and handles these small graphs; its
        # deprecation notice is not actionable for users of the exported file.
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(1, p.n_obs),), buffer, dynamo=False, input_names=["obs"],
                          output_names=outputs, opset_version=ONNX_OPSET,
                          dynamic_axes={name: {0: "batch"} for name in ["obs", *outputs]})
    model = onnx.load_from_string(buffer.getvalue())
    model.doc_string = "\n".join([f"SMOSE policy for {p.env_id} ({p.algo}, mode {p.mode}); produced by {p.command}",
                                  "input obs [batch, n_obs] float32; output action [batch, n_act] float32"
                                  + ("; expert [batch] int64" if p.is_smose else "")])
    meta = {"format": EXPORT_FORMAT, "format_version": str(EXPORT_FORMAT_VERSION), "smose_version": __version__,
            "env_id": p.env_id, "algo": p.algo, "mode": p.mode, "command": p.command,
            "observation_names": "\n".join(p.obs_names), "action_names": "\n".join(p.act_names)}
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model, full_check=True)
    data = model.SerializeToString()
    _check_onnx_against_actor(onnxruntime, data, actor, p)
    return data


def _check_onnx_against_actor(onnxruntime: Any, data: bytes, actor: Actor, p: ExportedPolicy) -> None:
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    states = np.concatenate(self_check_states(actor, p))
    outputs = session.run(None, {"obs": to_float32(states)})
    _compare_with_library(actor, p, states, outputs[0], outputs[1] if p.is_smose else None, "ONNX graph")
    outputs = session.run(None, {"obs": to_float32(invalid_observations(p.n_obs))})
    if not (np.isnan(outputs[0]).all() and (not p.is_smose or (outputs[1] == -1).all())):
        raise SmoseError("the ONNX graph does not mark invalid observations (NaN actions, expert -1); not written")


# ----------------------------------------------------------------------------------------------------------------------
# Self-checks: each generated Python file and ONNX graph is run against the library's policy before it is written


def self_check_states(actor: Actor, p: ExportedPolicy) -> tuple[np.ndarray, np.ndarray]:
    """(random, boundary), float64 [N, n_obs] each: random N(0, 1) states, and around a few of them states on every
    split threshold or hyperplane of the routing trees and on every tie between two router logits (smose.interpret.boundary),
    where rounding decides the expert (none for dense baselines)."""
    random = np.random.default_rng(0).standard_normal((SELF_CHECK_RANDOM_STATES, p.n_obs))
    base = random[:SELF_CHECK_BOUNDARY_BASES]
    boundary = [np.empty((0, p.n_obs))]
    if p.routing_trees is not None:
        boundary.append(decision_states(p.routing_trees, base))
    if isinstance(actor, SMOSEActor):
        boundary.append(logit_tie_states(p.array("router.weight"), p.array("router.bias"), base))
    return random, np.concatenate(boundary)


def _compare_with_library(actor: Actor, p: ExportedPolicy, states: np.ndarray, action: Any, expert: Any,
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


def _check_python_against_actor(source: str, actor: Actor, p: ExportedPolicy) -> None:
    """Runs the generated module (our own text) on the check states and on invalid observations. On the boundary
    states only ``route`` runs: they test decisions, and the action given the expert is checked on random states."""
    module: dict[str, Any] = {"__name__": "smose_exported_policy"}
    exec(compile(source, "<exported policy>", "exec"), module)  # noqa: S102 - the text was generated just above
    random, boundary = self_check_states(actor, p)
    if p.is_smose:
        pairs = [module["act_and_route"](list(s)) for s in random]
        _compare_with_library(actor, p, random, [a for a, _ in pairs], [k for _, k in pairs], "Python file")
        _compare_with_library(actor, p, boundary, None, [module["route"](list(s)) for s in boundary], "Python file")
    else:
        _compare_with_library(actor, p, random, [module["act"](list(s)) for s in random], None, "Python file")
    for row in invalid_observations(p.n_obs):
        try:
            module["act"](list(row))
        except ValueError:
            continue
        raise SmoseError(f"the Python file accepts the invalid observation {row.tolist()}; not written")


# ----------------------------------------------------------------------------------------------------------------------
# Entry point


def _resolve_out(out: Path | str, fmt: str) -> Path:
    """An existing directory, or a path ending in a separator, gets the format's default file name."""
    text = str(out)
    path = Path(out)
    is_dir = path.is_dir() or text.endswith(("/", os.sep))
    return path / DEFAULT_FILE_NAMES[fmt] if is_dir else path


def export_policy(run_dir: Path | str, fmt: str, out: Path | str, router: str | None = None, mode: str = "gated",
                  tree_kind: str | None = None) -> Path:
    """Write the run's deterministic policy as ``fmt`` to ``out`` (a file, or a directory for the default name);
    ``router`` and ``tree_kind`` as in :func:`collect`."""
    if fmt not in FORMATS:
        raise SmoseError(f"unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}")
    target = _resolve_out(out, fmt)
    actor, policy = collect(run_dir, router, mode, tree_kind, all_trees=fmt == "json")
    policy.command = export_command(run_dir, fmt, out, policy.router, mode, policy.tree_kind or "")
    writers: dict[str, Callable[[], bytes]] = {
        "python": lambda: _checked_python(actor, policy).encode(),
        "c": lambda: c_source(policy).encode(),
        "json": lambda: (json_dumps(json_document(policy)) + "\n").encode(),
        "onnx": lambda: onnx_bytes(actor, policy),
    }
    data = writers[fmt]()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, data)
    except OSError as exc:
        raise SmoseError(f"{target}: cannot write the exported policy ({exc.strerror or exc})") from None
    return target
