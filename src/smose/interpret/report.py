"""The per-run report of ``smose explain``: what the controller is, how it was trained and what it does.

``explain(run_dir)`` writes ``RUN_DIR/report/index.html`` (one self-contained file: the figures are inlined as base64
PNG, the style sheet is inline, nothing is fetched, so it opens offline and can be mailed) and ``report.md`` with the
same text and the PNG files beside it. Every section is an HTML ``<section id=...>``:

- ``summary``: env, algorithm, parameter counts, training curve, final evaluation;
- ``router``: router weights Θ (features × experts) and the features that favour each expert;
- ``experts``: the mean-head weights W_k (features × actions) of every used expert, strongest gains in words;
- ``usage``: share of steps per expert and a timeline of one deterministic episode with the key state variables;
- ``means``: mean state and mean action while each expert is active;
- ``trees``: the distilled trees as diagrams and rules, with their fidelity;
- ``returns``: return of the tree-routed policy next to the neural router's.

Weights are ranked by |w|·σ (σ: standard deviation of the feature over the visited states), i.e. by how much a
typical variation of the feature moves the score or action, so that features with large ranges (velocities) and small
ones (heights, angles) are compared fairly; the raw weights are what the heat maps show.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")  # headless: the report is written to files, never shown

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from smose.tasks.envs import format_env_kwargs  # noqa: E402
from smose.errors import SmoseError  # noqa: E402
from smose.evaluate import EVAL_SEED_OFFSET, episode_success, success_fields  # noqa: E402
from smose.limits import MAX_EPISODES  # noqa: E402
from smose.algo.policy import Actor, SMOSEActor  # noqa: E402
from smose.serialization import SUCCESS_COLUMN, atomic_write_bytes, read_json  # noqa: E402
from smose.interpret.tree_policy import TreeRoutedActor  # noqa: E402
from smose.run import REPORT_DIR, REPORT_HTML as HTML_FILE, REPORT_MARKDOWN as MARKDOWN_FILE  # noqa: F401

DPI = 100
# Matplotlib's tab10 then the light half of tab20: one fixed colour per expert in every figure and in `smose video`.
EXPERT_COLORS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
)
HEATMAP_CMAP = "RdBu_r"  # diverging: red = positive weight, blue = negative, white = 0
ANNOTATE_MAX_CELLS = 260  # write the value in each heat-map cell only while it stays legible
TIMELINE_VARIABLES = 3
CALLOUTS_PER_EXPERT = 3
MEAN_STATE_MAX_FEATURES = 24
# Heat maps of larger observations (Humanoid: 348) show this many rows: the features that matter most, by |w|·σ.
HEATMAP_MAX_FEATURES = 40


def expert_color(m: int) -> str:
    return EXPERT_COLORS[m % len(EXPERT_COLORS)]


# ----------------------------------------------------------------------------------------------------------------------
# Document model: sections of blocks, rendered once as HTML and once as Markdown


@dataclass
class Text:
    text: str


@dataclass
class Note:
    """Something the reader should know is missing or limited, and how to get it."""

    text: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Figure:
    name: str  # file name of the PNG beside report.md
    png: bytes
    caption: str


@dataclass
class Code:
    text: str


@dataclass
class Card:
    """Blocks shown together as one tile; tiles sit side by side in the HTML page (e.g. one per expert)."""

    blocks: list


Block = Text | Note | Bullets | Table | Figure | Code | Card


@dataclass
class Section:
    id: str
    title: str
    blocks: list[Block] = field(default_factory=list)


def figures(blocks: list[Block]) -> list[Figure]:
    """The figures among ``blocks``, including those inside cards, in page order."""
    found: list[Figure] = []
    for block in blocks:
        if isinstance(block, Figure):
            found.append(block)
        elif isinstance(block, Card):
            found += figures(block.blocks)
    return found


def figure_png(fig: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0;color:#1d2733;
background:#f4f6f8;line-height:1.45}
header{background:#1d2733;color:#fff;padding:18px 32px}header h1{margin:0 0 6px;font-size:24px}
nav a{color:#b8d4f0;margin-right:16px;text-decoration:none;font-size:14px}
main{max-width:1180px;margin:0 auto;padding:8px 24px 40px}
section{background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.12);margin:20px 0;padding:8px 24px 18px}
h2{border-bottom:2px solid #e3e8ee;padding-bottom:6px}
table{border-collapse:collapse;margin:10px 0;font-size:14px}
th,td{border:1px solid #d5dce3;padding:4px 10px;text-align:left}th{background:#eef2f6}
td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:14px 0}figure img{max-width:100%;height:auto;border:1px solid #e3e8ee}
figcaption{font-size:13px;color:#55616d;margin-top:4px}
pre{background:#f6f8fa;border:1px solid #e3e8ee;padding:10px;overflow-x:auto;font-size:13px}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:8px 12px;margin:10px 0}
li{margin:3px 0}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(460px,1fr));gap:12px;margin:12px 0}
.card{border:1px solid #e3e8ee;border-radius:6px;padding:0 10px}
.card figure{margin:8px 0}.card ul{padding-left:18px;font-size:14px}
"""


def _is_number(text: str) -> bool:
    """Whole-cell numbers (1,234 / 71.6% / -0.2) are right-aligned in tables; mixed text is not."""
    try:
        float(text.replace(",", "").rstrip("%"))
        return True
    except ValueError:
        return False


def _html_block(block: Block) -> str:
    esc = html.escape
    if isinstance(block, Text):
        return f"<p>{esc(block.text)}</p>"
    if isinstance(block, Note):
        return f'<p class="note">{esc(block.text)}</p>'
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{esc(item)}</li>" for item in block.items) + "</ul>"
    if isinstance(block, Table):
        head = "".join(f"<th>{esc(h)}</th>" for h in block.header)
        body = "".join(
            "<tr>" + "".join(f'<td class="num">{esc(c)}</td>' if _is_number(c) else f"<td>{esc(c)}</td>" for c in row)
            + "</tr>"
            for row in block.rows
        )
        thead = f"<thead><tr>{head}</tr></thead>" if any(block.header) else ""
        return f"<table>{thead}<tbody>{body}</tbody></table>"
    if isinstance(block, Figure):
        data = base64.b64encode(block.png).decode("ascii")
        return (f'<figure><img alt="{esc(block.caption)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{esc(block.caption)}</figcaption></figure>")
    if isinstance(block, Code):
        return f"<pre>{esc(block.text)}</pre>"
    return '<div class="card">' + "".join(_html_block(b) for b in block.blocks) + "</div>"


def render_html(title: str, subtitle: str, sections: list[Section]) -> str:
    esc = html.escape
    nav = " ".join(f'<a href="#{s.id}">{esc(s.title)}</a>' for s in sections)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<header><h1>{esc(title)}</h1><div>{esc(subtitle)}</div><nav>{nav}</nav></header><main>",
    ]
    for section in sections:
        parts.append(f'<section id="{section.id}"><h2>{esc(section.title)}</h2>')
        in_cards = False
        for block in section.blocks:  # consecutive cards share one grid
            if isinstance(block, Card) != in_cards:
                parts.append('<div class="cards">' if not in_cards else "</div>")
                in_cards = not in_cards
            parts.append(_html_block(block))
        if in_cards:
            parts.append("</div>")
        parts.append("</section>")
    parts.append("</main></body></html>\n")
    return "\n".join(parts)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _markdown_block(block: Block) -> list[str]:
    if isinstance(block, Text):
        return [block.text, ""]
    if isinstance(block, Note):
        return [f"> **Note.** {block.text}", ""]
    if isinstance(block, Bullets):
        return [f"- {item}" for item in block.items] + [""]
    if isinstance(block, Table):
        return (["| " + " | ".join(_md_cell(h) for h in block.header) + " |", "|" + "---|" * len(block.header)]
                + ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows] + [""])
    if isinstance(block, Figure):
        return [f"![{_md_cell(block.caption)}]({block.name})", "", f"*{block.caption}*", ""]
    if isinstance(block, Code):
        return ["```", block.text.rstrip("\n"), "```", ""]
    return [line for b in block.blocks for line in _markdown_block(b)]


def render_markdown(title: str, subtitle: str, sections: list[Section]) -> str:
    lines = [f"# {title}", "", subtitle, ""]
    lines += [f"- [{s.title}](#{s.id})" for s in sections] + [""]
    for section in sections:
        lines += [f'<a id="{section.id}"></a>', "", f"## {section.title}", ""]
        for block in section.blocks:
            lines += _markdown_block(block)
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------------
# Data: deterministic rollouts of the policy


@dataclass
class Rollouts:
    states: np.ndarray  # [N, n_obs]
    actions: np.ndarray  # [N, n_act], env units
    experts: np.ndarray | None  # [N] chosen expert; None for dense actors
    gates: np.ndarray | None  # [N] softmax probability of the chosen expert
    episode: np.ndarray  # [N] episode index of each step
    returns: list[float]
    successes: list[bool | None]  # per episode; None where the env reports no success

    def first_episode(self) -> np.ndarray:
        return np.flatnonzero(self.episode == 0)


def collect_rollouts(actor: Actor, env, episodes: int, seed: int) -> Rollouts:
    """States, actions and expert choices of ``episodes`` deterministic episodes with evaluate's reset seeds."""
    states, actions, experts, gates, episode_ids, returns, successes = [], [], [], [], [], [], []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + EVAL_SEED_OFFSET + episode)
        done, total, success = False, 0.0, None
        while not done:
            obs_t = torch.as_tensor(obs, dtype=torch.float32).unsqueeze(0)
            action, expert = actor.act(obs_t)
            if expert is not None:
                with torch.no_grad():
                    gates.append(float(torch.softmax(actor.route(obs_t), dim=-1)[0, expert[0]]))
                experts.append(int(expert[0]))
            states.append(obs_t[0].numpy())
            actions.append(action[0].numpy())
            episode_ids.append(episode)
            obs, reward, terminated, truncated, info = env.step(action[0].numpy())
            total += float(reward)
            success = episode_success(success, info)
            done = terminated or truncated
        returns.append(total)
        successes.append(success)
    return Rollouts(
        states=np.stack(states).astype(np.float64),
        actions=np.stack(actions).astype(np.float64),
        experts=np.asarray(experts, dtype=np.int64) if experts else None,
        gates=np.asarray(gates) if gates else None,
        episode=np.asarray(episode_ids, dtype=np.int64),
        returns=returns,
        successes=successes,
    )


@dataclass
class Metrics:
    """metrics.csv: (step, episodic return) of training episodes, (step, mean, std) of evaluations, and (step,
    success rate) of both where the env reports success."""

    episodes: list[tuple[int, float]] = field(default_factory=list)
    evals: list[tuple[int, float, float]] = field(default_factory=list)
    episode_success: list[tuple[int, float]] = field(default_factory=list)
    eval_success: list[tuple[int, float]] = field(default_factory=list)


def read_metrics(path: Path) -> Metrics:
    """The training curve in metrics.csv (files from before the success column read as without success)."""
    metrics = Metrics()
    if not path.is_file():
        return metrics
    try:
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh):
                try:
                    success = row.get(SUCCESS_COLUMN)
                    if row.get("event") == "episode" and row.get("episodic_return"):
                        metrics.episodes.append((int(row["step"]), float(row["episodic_return"])))
                        if success:
                            metrics.episode_success.append((int(row["step"]), float(success)))
                    elif row.get("event") == "eval" and row.get("eval_return_mean"):
                        metrics.evals.append((int(row["step"]), float(row["eval_return_mean"]),
                                              float(row.get("eval_return_std") or 0.0)))
                        if success:
                            metrics.eval_success.append((int(row["step"]), float(success)))
                except (TypeError, ValueError):
                    continue  # a truncated last line of a run that is still writing
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise SmoseError(f"{path}: cannot read the training metrics ({exc})") from None
    return metrics


# ----------------------------------------------------------------------------------------------------------------------
# Helpers for numbers and figures


def fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}g}" if abs(value) < 10 ** digits else f"{value:,.0f}"


def fmt_score(value: float | None) -> str:
    """Accuracy, precision, recall: always three decimals so a column reads at a glance; n/a when undefined."""
    return "n/a" if value is None else f"{value:.3f}"


def fmt_pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


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


def segments(labels: np.ndarray) -> list[tuple[int, int, int]]:
    """Runs of a constant label: (start, end exclusive, label)."""
    if labels.size == 0:
        return []
    cuts = np.flatnonzero(np.diff(labels)) + 1
    starts = np.concatenate([[0], cuts])
    ends = np.concatenate([cuts, [labels.size]])
    return [(int(s), int(e), int(labels[s])) for s, e in zip(starts, ends)]


def grows(weight: float) -> str:
    return "grows" if weight > 0 else "falls"


# ----------------------------------------------------------------------------------------------------------------------
# The report


@dataclass
class RunView:
    """Everything the sections read about one run."""

    run_dir: Path
    actor: Actor
    meta: dict
    config: dict | None
    evaluation: dict | None
    obs_names: list[str]
    act_names: list[str]
    rollouts: Rollouts
    sigma: np.ndarray  # [n_obs] standard deviation of each state variable over the rollouts
    seed: int  # rollouts reset with seed + EVAL_SEED_OFFSET + episode, like smose.evaluate

    @property
    def algo(self) -> str:
        return self.meta["architecture"]["algo"]

    @property
    def smose(self) -> SMOSEActor | None:
        return self.actor if isinstance(self.actor, SMOSEActor) else None

    @property
    def fixed_trees(self) -> TreeRoutedActor | None:
        """The controller when it was fine-tuned under fixed trees (they choose its expert), else None."""
        return self.actor if isinstance(self.actor, TreeRoutedActor) else None

    @property
    def finetune(self) -> dict:
        """config.json's record of the fine-tuning (source run, tree kind, returns before); {} for other runs."""
        record = (self.config or {}).get("finetune")
        return record if isinstance(record, dict) else {}

    def used_experts(self) -> list[int]:
        if self.rollouts.experts is None:
            return []
        return sorted(int(m) for m in np.unique(self.rollouts.experts))

    def usage(self) -> np.ndarray:
        assert self.smose is not None and self.rollouts.experts is not None
        counts = np.bincount(self.rollouts.experts, minlength=self.smose.n_experts)
        return counts / max(1, counts.sum())


def _dense_note(view: RunView, what: str) -> Note:
    return Note(f"This run is a dense {view.algo} baseline (an MLP actor): it has no router and no experts, so there "
                f"is no {what}. Train with --algo smose to get one.")


def at_a_glance(view: RunView, fidelity: dict | None) -> list[str]:
    """The numbers a reader wants first: how many experts act, how often control switches, how good the trees are."""
    roll = view.rollouts
    success = success_fields(roll.successes)
    solved = (f", success rate {fmt_pct(success['success_rate'])} (episodes in which the env reports the task "
              "solved)") if success else ""
    items = [(f"Deterministic policy: mean return {fmt(float(np.mean(roll.returns)))}{solved} over "
              f"{len(roll.returns)} episode(s) of {fmt(len(roll.episode) / len(roll.returns))} steps on average.")]
    actor = view.smose
    if actor is None:
        return items
    usage, used = view.usage(), view.used_experts()
    top = int(np.argmax(usage))
    runs = sum(len(segments(roll.experts[roll.episode == e])) for e in range(len(roll.returns)))
    chooser = "router"
    if view.fixed_trees is not None:
        chooser = "trees"
        record = view.finetune
        items.append(f"Fixed {view.fixed_trees.tree_kind} trees choose the expert at every step: the controller was "
                     f"fine-tuned under them (from {record.get('source_run', 'its source run')} at step "
                     f"{record.get('source_step', '?')}); the router's scores only give the gate that scales the "
                     "chosen expert's output.")
    items.append(f"{len(used)} of {actor.n_experts} experts act; expert {top} takes the most steps "
                 f"({fmt_pct(usage[top])}). An expert keeps control for {fmt(len(roll.experts) / runs)} steps on "
                 f"average before the {chooser} switch.")
    width = actor.n_obs + 1  # weights and bias per row
    items.append(f"Each decision reads {actor.parameter_counts()['active']:,} numbers: the router's "
                 f"{actor.n_experts}×{width} score weights and one expert's {actor.n_act}×{width} gains.")
    for kind in ("per-expert", "multiclass", "oblique"):
        if fidelity and kind in fidelity:
            returns = fidelity.get("returns", {})
            line = (f"Depth-{fidelity.get('depth')} {kind} trees pick the router's expert on "
                    f"{fmt_pct(fidelity[kind].get('agreement'))} of held-out states")
            if fidelity[kind].get("closed_loop_agreement") is not None:
                line += (f" and on {fmt_pct(fidelity[kind]['closed_loop_agreement'])} of the steps they route "
                         "themselves")
            if kind in returns and "neural" in returns:
                line += (f"; routing with them returns {fmt(returns[kind]['mean'])} vs "
                         f"{fmt(returns['neural']['mean'])} for the neural router")
                if returns.get("ratio", {}).get(kind) is not None:
                    line += f" (ratio {returns['ratio'][kind]:.3f})"
            items.append(line + ".")
    return items


def section_summary(view: RunView, fidelity: dict | None, warning: Note | None = None) -> Section:
    """The report's first section; ``warning`` (e.g. stale trees left out) goes first of all."""
    arch, counts, steps = view.meta["architecture"], view.actor.parameter_counts(), view.meta.get("trained_steps")
    if view.fixed_trees is not None:
        shape = (f"SMOSE fine-tuned under fixed {view.fixed_trees.tree_kind} trees: the trees choose 1 of "
                 f"{arch['n_experts']} linear experts per step, the linear router's softmax gates it")
    elif view.smose is not None:
        shape = f"SMOSE: linear router choosing 1 of {arch['n_experts']} linear experts per step"
    else:
        shape = f"dense SAC baseline {view.algo}: MLP with hidden layers {arch['hidden']}"
    rows = [
        ["environment", f"{view.meta['env_id']} ({arch['n_obs']} observations, {arch['n_act']} actions)"
                        + "".join(f", {word}" for word in format_env_kwargs(view.meta.get("env_kwargs", {})))],
        ["algorithm", shape],
        ["trained steps", f"{steps:,}" if isinstance(steps, int) else "unknown"],
        ["parameters: train", f"{counts['train']:,} (everything the optimiser updates)"],
        ["parameters: deploy", f"{counts['deploy']:,} (what the deterministic controller needs)"],
        ["parameters: active", f"{counts['active']:,} (used for one decision)"],
    ]
    cfg = view.config
    if cfg:
        settings = f"seed {cfg.get('seed')}, batch {cfg.get('batch_size')}, γ={cfg.get('gamma')}"
        if view.smose is not None:
            settings += f", load balancing {cfg.get('lb_loss')} λ={cfg.get('lb_weight_effective')}"
        rows.append(["training settings", settings])
    blocks: list[Block] = [*([warning] if warning else []), Bullets(at_a_glance(view, fidelity)),
                           Table(["", ""], rows)]

    metrics = read_metrics(view.run_dir / "metrics.csv")
    episodes, evals = metrics.episodes, metrics.evals
    if episodes or evals:
        success = bool(metrics.episode_success or metrics.eval_success)
        fig, axes = plt.subplots(2 if success else 1, 1, figsize=(10, 6.2 if success else 3.8), sharex=True,
                                 squeeze=False, gridspec_kw={"height_ratios": [1.6, 1] if success else [1]})
        ax = axes[0, 0]
        if episodes:
            steps, returns = np.array(episodes).T
            ax.scatter(steps, returns, s=6, color="#9bb7d4", alpha=0.6, label="training episode (stochastic policy)")
            window = max(1, len(returns) // 25)
            if window > 1:
                smooth = np.convolve(returns, np.ones(window) / window, mode="valid")
                ax.plot(steps[window - 1:], smooth, color="#1f5c99", lw=1.6, label=f"moving mean of {window} episodes")
        if evals:
            steps, means, stds = np.array(evals).T
            ax.plot(steps, means, "o-", color="#d62728", lw=2, ms=4, label="evaluation (deterministic), mean ± std")
            ax.fill_between(steps, means - stds, means + stds, color="#d62728", alpha=0.15)
        axes[-1, 0].set_xlabel("environment steps")
        ax.set_ylabel("episode return")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=9)
        ax.set_title("Training curve")
        if success:
            success_curve(axes[1, 0], metrics)
        blocks.append(Figure("training-curve.png", figure_png(fig),
                             f"Return vs environment steps from metrics.csv ({len(episodes)} training episodes, "
                             f"{len(evals)} evaluations)" + ("; below, the success rate." if success else ".")))
    else:
        blocks.append(Note("metrics.csv has no finished episodes or evaluations yet, so there is no training curve."))

    ev = view.evaluation
    if ev:
        eval_rows = [["mean return ± std", f"{fmt(ev.get('mean'))} ± {fmt(ev.get('std'))}"],
                     ["min / max", f"{fmt(ev.get('min'))} / {fmt(ev.get('max'))}"],
                     *([["success rate", fmt_pct(ev["success_rate"])]] if "success_rate" in ev else []),
                     ["episodes", str(ev.get("episodes"))],
                     ["mean episode length", fmt(ev.get("mean_length"))],
                     ["action mode", str(ev.get("mode", "gated"))],
                     ["written by", f"smose {ev.get('source', 'eval')}"
                      + (f" at step {ev['step']:,}" if isinstance(ev.get("step"), int) else "")]]
        if ev.get("expert_usage"):
            usage = ", ".join(f"{m}: {fmt_pct(u)}" for m, u in enumerate(ev["expert_usage"]))
            eval_rows.append(["expert usage", usage])
        blocks += [Text("Final deterministic evaluation (eval.json):"), Table(["", ""], eval_rows)]
    else:
        blocks.append(Note(f"No eval.json yet; run `smose eval {view.run_dir}` to evaluate the policy."))
    return Section("summary", "Summary", blocks)


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


def section_router(view: RunView) -> Section:
    section = Section("router", "Router weights")
    actor = view.smose
    if actor is None:
        section.blocks.append(_dense_note(view, "router to show"))
        return section
    theta = actor.router.weight.detach().numpy().astype(np.float64)  # [M, n_obs]
    bias = actor.router.bias.detach().numpy().astype(np.float64)
    shown = shown_features(router_influence(view))
    matrix = np.vstack([theta.T[shown], bias[None, :]])  # features (+ bias) x experts
    labels = [f"expert {m}" for m in range(actor.n_experts)]
    fig, ax = plt.subplots(figsize=(max(5.5, 0.75 * actor.n_experts + 3.5), heatmap_height(len(matrix))))
    image = heatmap(ax, matrix, [view.obs_names[f] for f in shown] + ["bias c"], labels, float(np.abs(matrix).max()),
                    [expert_color(m) for m in range(actor.n_experts)])
    fig.colorbar(image, ax=ax, label="router weight Θ (score change per unit of the feature)")
    ax.set_title("Router: score_k = Θ_k · s + c_k, the highest score picks expert k")
    if view.fixed_trees is not None:
        ax.set_title("Router: score_k = Θ_k · s + c_k, whose softmax gates the expert the trees pick")
        section.blocks += [
            Note("This controller's expert is chosen by its fixed trees (section 'Distilled decision trees'), not by "
                 "the highest score: the scores only give the gate g = softmax(score)_k, the factor that scales the "
                 "chosen expert k's output (its tanh input) in gated mode."),
            Figure("router-weights.png", figure_png(fig), "Router weights Θ (features × experts) and biases, "
                   "diverging colours centred at 0."),
        ]
        return section
    section.blocks += [
        Text("Every step the router scores each expert with a linear function of the state and hands control to the "
             "expert with the highest score. Red cells raise an expert's score as the feature grows, blue cells "
             "lower it. Only differences between experts matter: a weight all experts share shifts every score "
             "equally."),
        Figure("router-weights.png", figure_png(fig), "Router weights Θ (features × experts) and biases, diverging "
               "colours centred at 0." + shown_note(shown, actor.n_obs, "that sway the router most (spread of Θ "
                                                    "across experts times the feature's σ)")),
    ]
    # What makes expert k win: its weight above the experts' mean weight on the same feature, times the feature's σ.
    relative = (theta - theta.mean(axis=0, keepdims=True)) * view.sigma[None, :]
    items = []
    for m in view.used_experts():
        order = np.argsort(-np.abs(relative[m]))[:2]
        reasons = [f"{view.obs_names[f]} {grows(relative[m, f])} (Θ={theta[m, f]:+.2f}, experts' mean "
                   f"{theta[:, f].mean():+.2f}: a rise of one σ moves its score by {relative[m, f]:+.2f} against the "
                   "average expert)" for f in order]
        items.append(f"Expert {m} is favoured when " + " and when ".join(reasons) + ".")
    if items:
        section.blocks += [Text("What favours each used expert most (ranked by |Θ_kf − mean_j Θ_jf| · σ_f):"),
                           Bullets(items)]
    return section


def section_experts(view: RunView) -> Section:
    section = Section("experts", "Expert weights")
    actor = view.smose
    if actor is None:
        section.blocks.append(_dense_note(view, "expert to show"))
        return section
    used = view.used_experts()
    n_act = actor.n_act
    weight = actor.expert_weight.detach().numpy()[:, :n_act, :].astype(np.float64)  # mean heads [M, n_act, n_obs]
    bias = actor.expert_bias.detach().numpy()[:, :n_act].astype(np.float64)
    vmax = float(max(np.abs(weight[used]).max(), np.abs(bias[used]).max()))
    section.blocks.append(Text(
        "Each expert is a linear controller: the action is tanh(g · (W_k s + b_k)) scaled to the action bounds, where "
        "g is the router's softmax probability of the chosen expert. The heat maps show W_k (rows: state features, "
        "columns: actions) on one shared colour scale, so experts can be compared cell by cell."))
    unused = sorted(set(range(actor.n_experts)) - set(used))
    if unused:
        section.blocks.append(Note(f"Expert(s) {', '.join(map(str, unused))} were never chosen in the "
                                   f"{len(view.rollouts.returns)} deterministic episodes, so they are not shown."))
    usage = view.usage()
    for m in used:
        shown = shown_features((np.abs(weight[m]) * view.sigma[None, :]).max(axis=0))
        matrix = np.vstack([weight[m].T[shown], bias[m][None, :]])
        fig, ax = plt.subplots(figsize=(max(4.5, 0.9 * n_act + 3.5), heatmap_height(len(matrix))))
        image = heatmap(ax, matrix, [view.obs_names[f] for f in shown] + ["bias b"], view.act_names, vmax)
        fig.colorbar(image, ax=ax, label="gain w (pre-tanh action per unit of the feature)")
        ax.set_title(f"Expert {m}  (active {fmt_pct(usage[m])} of steps)", color=expert_color(m), fontweight="bold")
        effect = weight[m] * view.sigma[None, :]  # [n_act, n_obs]
        top = np.argsort(-np.abs(effect), axis=None)[:CALLOUTS_PER_EXPERT]
        sentences = []
        for flat in top:
            a, f = np.unravel_index(flat, effect.shape)
            w = weight[m, a, f]
            direction = "up" if w > 0 else "down"
            sentences.append(f"Expert {m} pushes {view.act_names[a]} {direction} when {view.obs_names[f]} grows "
                             f"(w={w:+.2f}; a rise of one σ moves it by {effect[a, f]:+.2f} before tanh).")
        caption = f"Expert {m}: mean-head weights W_{m} (features × actions) and bias." + shown_note(
            shown, actor.n_obs, "with the strongest gains (largest |w|·σ over the actions)")
        section.blocks.append(Card([Figure(f"expert-{m}.png", figure_png(fig), caption),
                                    Bullets(sentences)]))
    return section


def router_influence(view: RunView) -> np.ndarray:
    """How much each state variable moves the router's choice: spread of Θ across experts times its σ."""
    theta = view.smose.router.weight.detach().numpy().astype(np.float64)
    return (theta.max(axis=0) - theta.min(axis=0)) * view.sigma


def key_variables(view: RunView, count: int) -> list[int]:
    """The ``count`` state variables that move the router's choice most (router_influence)."""
    return [int(f) for f in np.argsort(-router_influence(view))[:count]]


def section_usage(view: RunView) -> Section:
    section = Section("usage", "Expert usage")
    actor = view.smose
    if actor is None:
        section.blocks.append(_dense_note(view, "expert usage to show"))
        return section
    usage = view.usage()
    roll = view.rollouts
    fig, ax = plt.subplots(figsize=(max(5, 0.7 * actor.n_experts + 2), 3.2))
    bars = ax.bar(range(actor.n_experts), 100 * usage, color=[expert_color(m) for m in range(actor.n_experts)])
    ax.bar_label(bars, labels=[f"{100 * u:.1f}%" for u in usage], fontsize=8)
    ax.set_xticks(range(actor.n_experts), [str(m) for m in range(actor.n_experts)])
    ax.set_xlabel("expert")
    ax.set_ylabel("share of steps (%)")
    ax.set_ylim(0, max(5.0, 115 * usage.max()))
    ax.set_title(f"Share of steps ({len(roll.returns)} episodes, {len(roll.experts)} steps)")
    ax.grid(axis="y", alpha=0.3)
    section.blocks.append(Figure("expert-usage.png", figure_png(fig), "Share of steps on which each expert acts."))

    steps = roll.first_episode()
    experts = roll.experts[steps]
    runs = segments(experts)
    variables = key_variables(view, min(TIMELINE_VARIABLES, actor.n_obs))
    t = np.arange(len(steps))
    rows = 2 + len(variables)
    fig, axes = plt.subplots(rows, 1, figsize=(11, 1.1 + 1.45 * rows), sharex=True,
                             gridspec_kw={"height_ratios": [1.2] + [1.0] * (rows - 1)})
    band, lanes = axes[0], view.used_experts()  # one lane per expert that acts at all
    for start, end, m in runs:
        band.barh(lanes.index(m), end - start, left=start - 0.5, height=0.8, color=expert_color(m))
    band.set_yticks(range(len(lanes)), [f"expert {m}" for m in lanes], fontsize=8)
    band.set_ylim(len(lanes) - 0.4, -0.6)
    band.set_title(f"One deterministic episode (reset seed {view.seed + EVAL_SEED_OFFSET}): active expert, key state "
                   "variables and actions", fontsize=11)
    for ax, f in zip(axes[1:], variables):
        ax.plot(t, roll.states[steps, f], color="#222", lw=1.2)
        ax.set_ylabel(view.obs_names[f], fontsize=9, rotation=0, ha="right", va="center")
    act_ax = axes[-1]
    for a in range(actor.n_act):
        act_ax.plot(t, roll.actions[steps, a], lw=1.0, label=view.act_names[a])
    act_ax.set_ylabel("actions", fontsize=9, rotation=0, ha="right", va="center")
    act_ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.005, 1.0), frameon=False)
    act_ax.set_xlabel("step")
    for ax in axes[1:]:
        ax.grid(alpha=0.25)
        for start, end, m in runs:  # shade each variable's panel with the active expert's colour
            ax.axvspan(start - 0.5, end - 0.5, color=expert_color(m), alpha=0.18, lw=0)
    fig.align_ylabels(axes)
    switches = len(runs) - 1
    section.blocks += [
        Figure("expert-timeline.png", figure_png(fig),
               "Top: which expert acts at each step. Below: the state variables that sway the router most (largest "
               "spread of router weights across experts times the variable's σ) and the actions, shaded by the "
               "active expert."),
        Text(f"This episode lasts {len(steps)} steps with return {fmt(roll.returns[0])}; control changes hands "
             f"{switches} time(s), an expert keeps control for {fmt(len(steps) / max(1, len(runs)))} steps on "
             f"average. Over all {len(roll.returns)} episodes the mean return is {fmt(float(np.mean(roll.returns)))}."),
    ]
    return section


def _grouped_bars(ax, values: np.ndarray, labels: list[str], experts: list[int]) -> None:
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


def section_means(view: RunView) -> Section:
    section = Section("means", "Per-expert mean state and action")
    actor = view.smose
    if actor is None:
        section.blocks.append(_dense_note(view, "per-expert statistic"))
        return section
    roll, used = view.rollouts, view.used_experts()
    mean, sigma = roll.states.mean(axis=0), np.where(view.sigma > 0, view.sigma, 1.0)
    state_z = np.stack([(roll.states[roll.experts == m].mean(axis=0) - mean) / sigma for m in used], axis=1)
    actions = np.stack([roll.actions[roll.experts == m].mean(axis=0) for m in used], axis=1)
    # Large observation vectors (Ant: 105) keep the variables on which the experts' regions differ most.
    shown = np.sort(np.argsort(-(state_z.max(axis=1) - state_z.min(axis=1)))[:MEAN_STATE_MAX_FEATURES])

    fig, ax = plt.subplots(figsize=(9, max(3.5, 0.38 * len(shown) * max(1, len(used)) ** 0.5 + 1.2)))
    _grouped_bars(ax, state_z[shown], [view.obs_names[f] for f in shown], used)
    ax.set_xlabel("mean of the state variable while the expert acts, in σ from the overall mean")
    ax.legend(fontsize=8, loc="best")
    ax.set_title("Where each expert acts: standardised mean state")
    section.blocks.append(Figure("mean-state.png", figure_png(fig),
                                 "Mean state while each expert is active, as (mean − overall mean) / σ, so that "
                                 "variables with different units share one axis."
                                 + (f" The {len(shown)} of {actor.n_obs} variables whose means differ most between "
                                    "experts are shown." if len(shown) < actor.n_obs else "")))

    fig, ax = plt.subplots(figsize=(9, max(2.8, 0.5 * actor.n_act * max(1, len(used)) ** 0.5 + 1.2)))
    _grouped_bars(ax, actions, view.act_names, used)
    low, high = actor.action_low.numpy(), actor.action_high.numpy()
    if np.allclose(low, low[0]) and np.allclose(high, high[0]):
        for bound in (low[0], high[0]):
            ax.axvline(bound, color="#999", lw=0.8, ls="--")
    ax.set_xlabel("mean action (env units; dashed: action bounds)")
    ax.legend(fontsize=8, loc="best")
    ax.set_title("What each expert does: mean action")
    section.blocks.append(Figure("mean-action.png", figure_png(fig), "Mean action while each expert is active."))
    rows = [[f"expert {m}", str(int(np.sum(roll.experts == m))),
             ", ".join(f"{view.act_names[a]} {actions[a, j]:+.2f}" for a in range(actor.n_act))]
            for j, m in enumerate(used)]
    section.blocks.append(Table(["expert", "steps", "mean action"], rows))
    return section


# ---- trees -------------------------------------------------------------------------------------------------------


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


def _load_tree_files(
    view: RunView, progress: Callable[[str], None], distill_missing: bool
) -> tuple[dict, dict | None, list[Note], Note | None]:
    """The run's tree files (per kind), fidelity.json, notes for the trees section and, for stale trees, the note
    that heads the report. Distils first when there are no trees, or stale ones (again with their settings), and
    that is allowed; stale trees that are not distilled again are not shown at all."""
    from smose.interpret.distill import (FIDELITY_FILE, KINDS, TREES_DIR, distill, distill_settings, load_trees, router_digest,
                               stale_trees, tree_file)

    if view.fixed_trees is not None:  # the controller's own trees: part of the model, never distilled again
        return {view.fixed_trees.tree_kind: view.fixed_trees.trees}, None, [], None
    notes: list[Note] = []
    fidelity_path = view.run_dir / TREES_DIR / FIDELITY_FILE
    stale = stale_trees(view.run_dir, router_digest(view.smose)) if fidelity_path.is_file() else None
    if stale is not None and distill_missing:
        try:
            settings = distill_settings(read_json(fidelity_path, "tree fidelity summary"))
        except (SmoseError, KeyError, TypeError, AttributeError):
            settings = {}
        progress(f"stale trees in {view.run_dir / TREES_DIR} (not distilled from the run's model); running "
                 f"`smose distill` again with {'their settings' if settings else 'its defaults'} first")
        distill(view.run_dir, **settings)
        stale = None
    elif not fidelity_path.is_file() and distill_missing:
        progress(f"no distilled trees in {view.run_dir}; running `smose distill` with its defaults first")
        distill(view.run_dir)
    if stale is not None:
        warning = Note(f"The distilled trees are stale and not shown: {stale} (or `smose explain` without "
                       "--no-distill).")
        return {}, None, [warning], warning
    if not fidelity_path.is_file():
        notes.append(Note(f"No distilled trees yet. Run `smose distill {view.run_dir}` (then `smose explain` again) "
                          "to fit them; they replace the router's argmax with shallow decision trees."))
        return {}, None, notes, None
    fidelity = read_json(fidelity_path, "tree fidelity summary")
    trees = {}
    for kind in KINDS:
        path = tree_file(view.run_dir, kind)
        if path.is_file():
            try:
                trees[kind] = load_trees(path, view.smose, view.meta["env_id"])
            except SmoseError as exc:  # stale or damaged trees: say so in the report instead of failing
                notes.append(Note(f"{exc}"))
    return trees, fidelity, notes, None


def section_trees(view: RunView, trees: dict, fidelity: dict | None, notes: list[Note]) -> Section:
    from smose.interpret.distill import rules_text

    section = Section("trees", "Distilled decision trees")
    if view.smose is None:
        section.blocks.append(_dense_note(view, "router to distil into trees"))
        return section
    section.blocks += notes
    if not trees:
        return section
    if view.fixed_trees is not None:
        record = view.finetune
        section.blocks.append(Text(
            f"These trees choose the expert at every step: the controller was fine-tuned under them for "
            f"{(view.meta.get('trained_steps') or 0) - record.get('source_step', 0):,} steps and they did not "
            f"change. They were distilled from the neural router of {record.get('source_run', 'the source run')} "
            "(its trees/fidelity.json holds their agreement with it). Splits are shown on the raw state variable; "
            "'true' branches go left."))
        fidelity = {}
    else:
        assert fidelity is not None
        rounds = fidelity.get("dagger_rounds") or 0
        dagger = (f", then {rounds} DAgger round{'s' if rounds != 1 else ''} that each added the states of "
                  f"{fidelity.get('episodes')} episodes routed by the trees themselves" if rounds else "")
        section.blocks.append(Text(
            f"Trees of depth ≤ {fidelity.get('depth')} fitted on {fidelity.get('train_states')} states from "
            f"{fidelity.get('episodes')} deterministic episodes{dagger}, and scored on "
            f"{fidelity.get('heldout_states')} states of held-out episodes; the label is the neural router's choice. "
            "Splits are shown on the raw state variable; 'true' branches go left."))
    if "per-expert" in trees:
        data, fid = trees["per-expert"], fidelity.get("per-expert", {})
        section.blocks.append(Text(
            "Per-expert trees (one YES/NO tree per expert on the router-weighted features Θ_k ⊙ s; the tree-routed "
            "policy follows the most confident YES)" + _agreement_text(fid)))
        if fid:
            rows = [[f"expert {t['expert']}", fmt_score(t.get("accuracy")), fmt_score(t.get("precision")),
                     fmt_score(t.get("recall")), str(t.get("positives")), str(t.get("n_leaves"))]
                    for t in fid.get("trees", [])]
            section.blocks.append(Table(["tree", "accuracy", "precision", "recall", "held-out positives", "leaves"],
                                        rows))
        trivial = []
        for tree in data["trees"]:
            m = tree["expert"]
            if tree["n_leaves"] == 1:
                trivial.append(m)
                continue
            single = dict(data, trees=[tree])
            section.blocks += [
                Figure(f"tree-per-expert-{m}.png", draw_tree(tree, "per-expert", f"Does the router pick expert {m}?"),
                       f"Per-expert tree for expert {m}: leaves say YES (expert {m} acts) or NO, with the share of "
                       f"training states that agree."),
                Code(rules_text(single, fid)),
            ]
        if trivial:
            section.blocks.append(Text(f"The trees of expert(s) {', '.join(map(str, trivial))} are a single leaf "
                                       "(the expert is never or always chosen)."))
    if "multiclass" in trees:
        data, fid = trees["multiclass"], fidelity.get("multiclass", {})
        section.blocks += [
            Text("Multiclass tree (one tree on the raw state, leaves name the expert)" + _agreement_text(fid)),
            Figure("tree-multiclass.png",
                   draw_tree(data["trees"][0], "multiclass", "Which expert does the router pick?"),
                   "Multiclass tree: each leaf names the expert it routes to and the share of training states "
                   "routed there by the neural router."),
            Code(rules_text(data, fid)),
        ]
    if "oblique" in trees:
        fid = fidelity.get("oblique", {})
        section.blocks += [
            Text("Oblique tree (the authors' form: one tree whose tests are hyperplanes on the standardised state, "
                 "fitted with CMA-ES; leaves name the expert most of their states were routed to)"
                 + _agreement_text(fid) + " Each test is restated on the raw state; its strongest terms are shown, "
                 f"and up to {OBLIQUE_TABLE_TERMS} terms of each in the table below it."),
            Code(rules_text(trees["oblique"], fid)),
            _hyperplane_table(trees["oblique"]),
        ]
    return section


OBLIQUE_TABLE_TERMS = 20  # terms of each oblique test listed in the report's table (all of them in oblique.json)


def _hyperplane_table(trees: dict) -> Table:
    """Each oblique test as a weighted sum of named state variables <= threshold: its strongest terms (by weight per
    standard deviation, which makes the terms comparable) with their weight in physical units and share."""
    names = trees["feature_names"]
    rows = []
    tests = [node for node in trees["trees"][0]["nodes"] if not node["leaf"]]
    for t, node in enumerate(tests):
        strength = np.abs(np.asarray(node["weights"], dtype=np.float64))
        order = [int(f) for f in np.argsort(-strength, kind="stable") if strength[f] > 0]
        total = strength.sum()
        for f in order[:OBLIQUE_TABLE_TERMS]:
            rows.append([f"test {t} (node {node['id']})", names[f], f"{node['state_weights'][f]:+.4g}",
                         fmt_pct(strength[f] / total)])
        if len(order) > OBLIQUE_TABLE_TERMS:
            rest = strength[order[OBLIQUE_TABLE_TERMS:]].sum() / total
            rows.append([f"test {t} (node {node['id']})", f"{len(order) - OBLIQUE_TABLE_TERMS} weaker terms", "",
                         fmt_pct(rest)])
        rows.append([f"test {t} (node {node['id']})", "<= threshold", f"{node['state_threshold']:.4g}", ""])
    return Table(["test", "state variable", "weight (per unit of the variable)", "share of the test's weight"], rows)


def _agreement_text(fid: dict) -> str:
    """': held-out routing agreement ... (training states ...).' from a kind's fidelity entry, '.' without one."""
    if not fid:
        return "."
    return (f": held-out routing agreement {fmt_pct(fid.get('agreement'))} (training states "
            f"{fmt_pct(fid.get('train_agreement'))}).")


def section_returns(view: RunView, fidelity: dict | None, warning: Note | None = None) -> Section:
    section = Section("returns", "Tree-routed vs neural router")
    if view.smose is None:
        section.blocks.append(_dense_note(view, "router to compare trees with"))
        return section
    if view.fixed_trees is not None:
        section.blocks += _finetune_returns(view)
        return section
    returns = (fidelity or {}).get("returns")
    if not returns:
        section.blocks.append(warning or Note(f"No tree-routed returns yet; run `smose distill {view.run_dir}`."))
        return section
    ratio = returns.get("ratio", {})
    names = [k for k in ("neural", "per-expert", "multiclass", "oblique") if k in returns]
    rows = []
    for name in names:
        r = returns[name]
        rows.append([name if name == "neural" else f"{name} trees", fmt(r.get("mean")), fmt(r.get("std")),
                     fmt(r.get("min")), fmt(r.get("max")), str(r.get("episodes")),
                     "1.000" if name == "neural" else
                     ("n/a" if ratio.get(name) is None else f"{ratio[name]:.3f}")])
    section.blocks += [
        Text("Deterministic returns on the same evaluation episodes (same reset seeds), so the difference comes from "
             "the routing alone; the experts are the same linear controllers. The ratio is tree return / neural "
             "return (defined for positive neural returns)."),
        Table(["router", "mean return", "std", "min", "max", "episodes", "ratio"], rows),
    ]
    fig, ax = plt.subplots(figsize=(6, 3))
    means = [returns[n]["mean"] for n in names]
    stds = [returns[n].get("std", 0.0) for n in names]
    ax.barh(names, means, xerr=stds, color=["#1d2733", "#5b8db8", "#9fb8cf", "#c9d6e3"][: len(names)], capsize=4)
    ax.invert_yaxis()
    ax.axvline(0, color="#444", lw=0.8)
    ax.set_xlabel("mean episode return ± std")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title("Return by router")
    section.blocks.append(Figure("returns.png", figure_png(fig), "Mean return of the neural and tree-routed policies."))
    return section


def _finetune_returns(view: RunView) -> list[Block]:
    """A fine-tuned controller against the source run's neural router and its trees before fine-tuning (the returns
    `smose finetune` recorded in config.json) on the same evaluation episodes."""
    before, after = view.finetune.get("before"), view.evaluation
    if not isinstance(before, dict):
        return [Note("config.json records no returns before fine-tuning to compare with.")]
    neural = before.get("neural_return")
    returns = [("source run, neural router", neural), ("source run, its trees (before fine-tuning)",
                                                       before.get("tree_return"))]
    same = bool(after) and (after.get("episodes"), after.get("seed"), after.get("mode", "gated")) == \
        (before.get("episodes"), before.get("seed"), before.get("mode"))
    if same:
        returns.append(("fine-tuned controller (eval.json)", after.get("mean")))
    positive = isinstance(neural, (int, float)) and neural > 0
    rows = [[name, fmt(value), f"{value / neural:.3f}" if positive and isinstance(value, (int, float)) else "n/a"]
            for name, value in returns]
    blocks: list[Block] = [
        Text(f"Deterministic returns ({before.get('mode')} mode) on the same {before.get('episodes')} evaluation "
             f"episodes (seed {before.get('seed')}): the ratio is the return over the source run's neural router's "
             "(defined for positive returns)."),
        Table(["controller", "mean return", "ratio"], rows)]
    if not same:
        blocks.append(Note(f"eval.json holds another evaluation than these episodes; `smose eval {view.run_dir} "
                           f"--episodes {before.get('episodes')} --seed {before.get('seed')}` gives the comparable "
                           "one."))
    return blocks


def explain(
    run_dir: Path | str,
    episodes: int = 5,
    seed: int = 0,
    distill_missing: bool = True,
    progress: Callable[[str], None] = lambda message: None,
) -> Path:
    """Write ``RUN_DIR/report/index.html`` and ``report.md`` (+ PNGs); returns the path of index.html.

    ``episodes`` deterministic episodes (the reset seeds ``smose eval --seed`` uses) give the usage, timeline and
    per-expert means. Without distilled trees, ``distill_missing`` runs ``smose distill`` with its defaults first;
    with stale trees (distilled from another model than the run's), with the settings they were made with;
    otherwise the tree sections say how to get them, and stale trees are named at the top and not shown.
    """
    from smose.tasks.envs import feature_names, make_run_env
    from smose.serialization import check_env_compatible, load_model

    if not isinstance(episodes, int) or episodes < 1:
        raise SmoseError(f"episodes must be an integer >= 1, got {episodes!r}")
    if episodes > MAX_EPISODES:
        raise SmoseError(f"episodes must be at most {MAX_EPISODES:,}, got {episodes}")
    run_dir = Path(run_dir)
    actor, meta = load_model(run_dir)
    config_path, eval_path = run_dir / "config.json", run_dir / "eval.json"
    config = read_json(config_path, "training configuration") if config_path.is_file() else None
    evaluation = read_json(eval_path, "evaluation") if eval_path.is_file() else None
    arch = meta["architecture"]
    env = make_run_env(meta)
    check_env_compatible(meta, env, run_dir / "model.json")
    try:
        rollouts = collect_rollouts(actor, env, episodes, seed)
        obs_names, act_names = feature_names(meta, env)
    finally:
        env.close()
    view = RunView(run_dir, actor, meta, config, evaluation, obs_names, act_names, rollouts,
                   rollouts.states.std(axis=0), seed)
    if view.smose is not None:
        trees, fidelity, notes, warning = _load_tree_files(view, progress, distill_missing)
    else:
        trees, fidelity, notes, warning = {}, None, [], None
    sections = [section_summary(view, fidelity, warning), section_router(view), section_experts(view),
                section_usage(view), section_means(view), section_trees(view, trees, fidelity, notes),
                section_returns(view, fidelity, warning)]

    title = f"SMOSE report: {meta['env_id']}, {arch['algo']}"
    subtitle = f"run {run_dir.resolve()}"
    out = run_dir / REPORT_DIR
    try:
        out.mkdir(parents=True, exist_ok=True)
        for old in out.glob("*.png"):  # figures of an earlier report that this one may not redraw
            old.unlink()
        for section in sections:
            for figure in figures(section.blocks):
                atomic_write_bytes(out / figure.name, figure.png)
        atomic_write_bytes(out / MARKDOWN_FILE, render_markdown(title, subtitle, sections).encode())
        atomic_write_bytes(out / HTML_FILE, render_html(title, subtitle, sections).encode())
    except OSError as exc:
        raise SmoseError(f"{out}: cannot write the report ({exc.strerror or exc})") from None
    return out / HTML_FILE
