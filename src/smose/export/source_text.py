"""Text shared by the Python module and the C header: safe feature names, the description of the policy in words,
wrapped rows of numbers, and the nested if/else of a distilled tree in either language."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from smose import __version__
from smose.export.exported_policy import ExportedPolicy, oblique_tests
from smose.run import MODEL_WEIGHTS


def clean_name(name: str) -> str:
    """A feature name safe inside Python and C comments and docstrings."""
    text = "".join(ch if ch.isprintable() else " " for ch in name)
    return text.replace("*/", "* /").replace('"""', "'''").replace("\\", "/")


def _splits_and_leaves(trees: dict) -> tuple[int, int]:
    nodes = [node for tree in trees["trees"] for node in tree["nodes"]]
    leaves = sum(1 for node in nodes if node["leaf"])
    return len(nodes) - leaves, leaves


# How an oblique tree picks the expert, in the description's notation.
_OBLIQUE_CHOICE = [
    "    k        = the leaf of one oblique tree; its tests are hyperplanes on the standardised",
    "               observation x_i = (obs[i] - OBLIQUE_MEAN[i]) / OBLIQUE_SCALE[i] (float32): a state goes",
    "               the 'if' way when HYPERPLANE_BIAS[t] + sum_i HYPERPLANE_WEIGHT[t][i] * x_i <= 0 (summed",
    "               in double, in index order)",
]


def description(p: ExportedPolicy, lang: str) -> list[str]:
    """The documentation block shared by the Python docstring and the C header comment (without the title)."""
    command = f"`{p.command}`" if lang == "python" else p.command
    lines = [
        f"Produced by {command}",
        (f"with smose {__version__} from {p.source['run_dir']}/{MODEL_WEIGHTS} "
        f"(sha256 {p.source['model_sha256'][:16]}...), trained for {p.source['trained_steps']} steps."),
        "",
        f"Observation ({p.n_obs} numbers, obs[i]):",
        *[f"    {i:>3}  {clean_name(name)}" for i, name in enumerate(p.obs_names)],
        f"Action ({p.n_act} numbers, in env units):",
        *[f"    {j:>3}  {clean_name(name)}  [{float(lo)!r}, {float(hi)!r}]"
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
        lines += _OBLIQUE_CHOICE
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


def wrap_values(values: list[str], indent: str, width: int = 116) -> list[str]:
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
# Trees as nested if/else


@dataclass(frozen=True)
class TreeSyntax:
    """How one language writes a tree's tests and leaves (Python and C share the walk in ``tree_lines``)."""

    weight: Callable[[float], str]  # router weight Θ[m, f] as written in the per-expert test
    threshold: Callable[[float], str]  # split threshold and leaf probability
    test: str  # format of the test with {weight}, {feature}, {threshold}; {weight} only in per-expert trees
    class_test: str  # the multiclass tree's test
    leaf: str  # format of a leaf with {value} and {note}
    if_open: str  # format of the if line with {test} and {note}
    else_line: str
    close: str | None  # line after the else branch (C's closing brace)
    unused_obs: str | None  # statement for a tree that never reads obs


def tree_lines(p: ExportedPolicy, tree: dict, expert: int | None, syntax: TreeSyntax) -> list[str]:
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
        f, name = node["feature"], clean_name(p.obs_names[node["feature"]])
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


def _oblique_note(p: ExportedPolicy, node: dict) -> str:
    """The test restated on the physical observation (strongest terms), for the comment beside it."""
    from smose.interpret.oblique import describe_hyperplane

    test, _ = describe_hyperplane(np.asarray(node["state_weights"]), node["state_threshold"],
                                  np.asarray(node["weights"]), [clean_name(name) for name in p.obs_names])
    return clean_name(test)


def oblique_tree_lines(p: ExportedPolicy, trees: dict, syntax: TreeSyntax, test: str) -> list[str]:
    """Nested if/else of the oblique tree: ``test`` (with {row}) is the hyperplane test of one row; leaves return the
    expert of the leaf's majority vote (first maximum, as the library's TreeRouter)."""
    nodes = trees["trees"][0]["nodes"]
    _, rows = oblique_tests(trees)
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
