"""Distilled trees as readable rules: nested if/else on named state variables (the ``trees/<kind>.txt`` files and
the report's rule listings)."""

from __future__ import annotations

import numpy as np

from smose.interpret import oblique


def _rule_lines(tree: dict, kind: str, theta_row: np.ndarray | None, names: list[str] | None = None) -> list[str]:
    nodes = tree["nodes"]
    lines: list[str] = []

    def leaf_text(node: dict) -> str:
        p, n = node["probability"], node["samples"]
        states = f"({n} state{'' if n == 1 else 's'})"
        if kind == "per-expert":
            answer = 1 if p[1] > p[0] else 0  # sklearn's predict: ties go to NO
            return f"{'YES' if answer else 'NO'} {p[answer]:.2f} {states}"
        k = int(np.argmax(p))
        return f"expert {k} {p[k]:.2f} {states}"

    def walk(i: int, indent: str) -> None:
        node = nodes[i]
        if node["leaf"]:
            lines.append(indent + leaf_text(node))
            return
        if kind == "oblique":
            test, comment = oblique.describe_hyperplane(np.asarray(node["state_weights"]), node["state_threshold"],
                                                        np.asarray(node["weights"]), names or [])
            lines.extend([indent + f"if {test}:", indent + f"    # {comment}"])
            walk(node["left"], indent + "    ")
            lines.append(indent + "else:")
            walk(node["right"], indent + "    ")
            return
        name, op = node["feature_name"], node.get("state_op", "<=")
        state_threshold = node.get("state_threshold", node["threshold"])
        test = f"if {name} {op} {state_threshold:.4g}:"
        if theta_row is not None:
            test += f"  # tree tests {float(theta_row[node['feature']]):.3g}·{name} <= {node['threshold']:.4g}"
        lines.append(indent + test)
        walk(node["left"], indent + "    ")
        lines.append(indent + "else:")
        walk(node["right"], indent + "    ")

    walk(0, "")
    return lines


def rules_text(trees: dict, fidelity: dict | None = None) -> str:
    """All trees of a file as nested if/else rules with feature names (the ``.txt`` files next to the JSON)."""
    kind = trees["kind"]
    blocks = []
    if kind == "per-expert":
        theta = np.asarray(trees["router_weight"], dtype=np.float32)
        per_tree = {t["expert"]: t for t in (fidelity or {}).get("trees", [])}
        for tree in trees["trees"]:
            m = tree["expert"]
            title = f"expert {m}  (YES = the router picks expert {m}"
            if m in per_tree:
                f = per_tree[m]
                title += f"; held-out accuracy {_fmt(f['accuracy'])}, precision {_fmt(f['precision'])}, " \
                         f"recall {_fmt(f['recall'])}"
            blocks.append("\n".join([title + ")"] + _rule_lines(tree, kind, theta[m])))
    elif kind == "oblique":
        title = "oblique tree: which expert the router picks"
        if fidelity:
            title += f" (held-out agreement {_fmt(fidelity['agreement'])})"
        explanation = ("Each test is a hyperplane on the state; shown are its strongest terms (by weight per standard "
                       "deviation of the feature)\nin physical units; all weights are in oblique.json (state_weights, "
                       "state_threshold).")
        blocks.append("\n".join([title, explanation]
                                + _rule_lines(trees["trees"][0], kind, None, trees["feature_names"])))
    else:
        title = "multiclass tree: which expert the router picks"
        if fidelity:
            title += f" (held-out agreement {_fmt(fidelity['agreement'])})"
        blocks.append("\n".join([title] + _rule_lines(trees["trees"][0], kind, None)))
    return "\n\n".join(blocks) + "\n"


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
