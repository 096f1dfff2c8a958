"""The report's matplotlib drawing: expert colours (shared with `smose video`), heat maps, grouped bars, the
success curve and tree diagrams, each figure turned into PNG bytes."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # headless: the report is written to files, never shown

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

if TYPE_CHECKING:
    from smose.interpret.report.view import Metrics

DPI = 100
# Matplotlib's tab10 then the light half of tab20: one fixed colour per expert in every figure and in `smose video`.
EXPERT_COLORS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
)
HEATMAP_CMAP = "RdBu_r"  # diverging: red = positive weight, blue = negative, white = 0
ANNOTATE_MAX_CELLS = 260  # write the value in each heat-map cell only while it stays legible
# Heat maps of larger observations (Humanoid: 348) show this many rows: the features that matter most, by |w|·σ.
HEATMAP_MAX_FEATURES = 40


def expert_color(m: int) -> str:
    return EXPERT_COLORS[m % len(EXPERT_COLORS)]


def figure_png(fig: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def heatmap_height(n_rows: int) -> float:
    """Figure height in inches: roomy rows for a few features, compact ones for Ant's 105 observations."""
    return max(3.5, (0.32 if n_rows <= 40 else 0.2) * n_rows + 1.2)


def heatmap(ax, matrix: np.ndarray, row_labels: list[str], col_labels: list[str], vmax: float,
            col_colors: list[str] | None = None):
    """Signed heat map centred at 0 (white), values written in the cells when there is room."""
    vmax = vmax if vmax > 0 else 1.0
    image = ax.imshow(matrix, cmap=HEATMAP_CMAP, vmin=-vmax, vmax=vmax, aspect="auto")
    ax.set_yticks(range(len(row_labels)), row_labels, fontsize=9)
    ax.set_xticks(range(len(col_labels)), col_labels, fontsize=9, rotation=30 if len(col_labels) > 4 else 0,
                  ha="right" if len(col_labels) > 4 else "center")
    if col_colors:
        for tick, color in zip(ax.get_xticklabels(), col_colors):
            tick.set_color(color)
            tick.set_fontweight("bold")
    if matrix.size <= ANNOTATE_MAX_CELLS:
        for (i, j), value in np.ndenumerate(matrix):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7.5,
                    color="white" if abs(value) > 0.6 * vmax else "#222")
    ax.set_xticks(np.arange(-0.5, len(col_labels)), minor=True)
    ax.set_yticks(np.arange(-0.5, len(row_labels)), minor=True)
    ax.grid(which="minor", color="white", linewidth=0.6)
    ax.tick_params(which="minor", length=0)
    return image


def shown_features(scores: np.ndarray, limit: int = HEATMAP_MAX_FEATURES) -> np.ndarray:
    """The features a heat map shows, in observation order: all of them, or the ``limit`` with the largest scores."""
    if len(scores) <= limit:
        return np.arange(len(scores))
    return np.sort(np.argsort(-scores, kind="stable")[:limit])


def shown_note(shown: np.ndarray, n_obs: int, which: str) -> str:
    """The caption's word on a heat map that shows only some features."""
    if len(shown) == n_obs:
        return ""
    return (f" Shown: the {len(shown)} of {n_obs} features {which}; `smose export --format json` has every "
            "weight.")


def success_curve(ax, metrics: Metrics) -> None:
    """Success rate vs steps: a moving mean over training episodes and each evaluation's rate."""
    if metrics.episode_success:
        steps, flags = np.array(metrics.episode_success).T
        window = max(1, min(len(flags), max(10, len(flags) // 25)))
        ax.plot(steps[window - 1:], 100 * np.convolve(flags, np.ones(window) / window, mode="valid"),
                color="#1f5c99", lw=1.6, label=f"training episodes (moving mean of {window})")
    if metrics.eval_success:
        steps, rates = np.array(metrics.eval_success).T
        ax.plot(steps, 100 * rates, "o-", color="#d62728", lw=2, ms=4, label="evaluation (deterministic)")
    ax.set_ylabel("success rate (%)")
    ax.set_ylim(-5, 105)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=9)


def grouped_bars(ax, values: np.ndarray, labels: list[str], experts: list[int]) -> None:
    """Horizontal grouped bars: one group per label (rows of ``values``), one bar per expert (columns)."""
    n_rows, n_experts = values.shape
    height = 0.8 / n_experts
    for j, m in enumerate(experts):
        ax.barh(np.arange(n_rows) - 0.4 + (j + 0.5) * height, values[:, j], height=height, color=expert_color(m),
                label=f"expert {m}")
    ax.set_yticks(range(n_rows), labels, fontsize=9)
    ax.invert_yaxis()
    ax.axvline(0, color="#444", lw=0.8)
    ax.grid(axis="x", alpha=0.3)


def _tree_layout(nodes: list[dict]) -> tuple[dict[int, float], dict[int, int]]:
    """x position (leaves 0, 1, 2, ... left to right; parents centred over children) and depth of every node."""
    x: dict[int, float] = {}
    depth: dict[int, int] = {0: 0}
    next_leaf = [0.0]

    def place(i: int) -> float:
        node = nodes[i]
        if node["leaf"]:
            x[i] = next_leaf[0]
            next_leaf[0] += 1
        else:
            depth[node["left"]] = depth[node["right"]] = depth[i] + 1
            x[i] = (place(node["left"]) + place(node["right"])) / 2
        return x[i]

    place(0)
    return x, depth


def draw_tree(tree: dict, kind: str, title: str) -> bytes:
    """A tree diagram drawn from its JSON: splits on the raw state variable, leaves coloured by their decision."""
    nodes = tree["nodes"]
    x, depth = _tree_layout(nodes)
    n_leaves, max_depth = sum(n["leaf"] for n in nodes), max(depth.values())
    fig, ax = plt.subplots(figsize=(min(30.0, max(5.0, 1.9 * n_leaves)), 1.35 * (max_depth + 1) + 0.6))
    for node in nodes:
        i = node["id"]
        if node["leaf"]:
            continue
        for child, label in ((node["left"], "true"), (node["right"], "false")):
            ax.plot([x[i], x[child]], [-depth[i], -depth[child]], color="#8a96a3", lw=1.2, zorder=1)
            ax.text((x[i] + x[child]) / 2, -(depth[i] + depth[child]) / 2, label, fontsize=8, style="italic",
                    color="#55616d", ha="center", va="center", backgroundcolor="white", zorder=2)
    for node in nodes:
        i = node["id"]
        p = node["probability"]
        if not node["leaf"]:
            op, threshold = node.get("state_op", "<="), node.get("state_threshold", node["threshold"])
            text = f"{node['feature_name']}\n{op} {threshold:.3g}"
            face, edge, color = "#eef2f6", "#8a96a3", "#1d2733"
        elif kind == "per-expert":
            yes = p[1] > p[0]
            m = tree["expert"]
            text = f"{'YES' if yes else 'NO'} {max(p):.2f}\n{node['samples']} states"
            face, edge = (expert_color(m), expert_color(m)) if yes else ("#f2f2f2", "#bbbbbb")
            color = "white" if yes else "#444"
        else:
            k = int(np.argmax(p))
            text = f"expert {k} {p[k]:.2f}\n{node['samples']} states"
            face, edge, color = expert_color(k), expert_color(k), "white"
        ax.text(x[i], -depth[i], text, ha="center", va="center", fontsize=9, color=color, zorder=3,
                fontweight="bold" if node["leaf"] else "normal",
                bbox={"boxstyle": "round,pad=0.4", "facecolor": face, "edgecolor": edge})
    ax.set_xlim(-0.7, n_leaves - 0.3)
    ax.set_ylim(-max_depth - 0.5, 0.5)
    ax.axis("off")
    ax.set_title(title, fontsize=11)
    return figure_png(fig)
