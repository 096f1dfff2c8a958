"""The table's sections about the paper's own budget: both evaluation protocols against the poster, the poster's
published rows, aggregates across tasks (rliable), and when each run first reached the poster's SMOSE number.

Pure functions of the table's rows and runs (``Row`` of aggregate.py and ``RunRecord`` of records.py, passed in); no
file I/O here except the figures.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from smose.experiments.markdown import num
from smose.experiments.paper import CLEANRL_SAC, CLEANRL_SOURCE, PAPER_STEPS, POSTER, RANDOM_POLICY, TASKS, task_name

# Re-exported: the training times at the evaluations, which the time to the poster's number is read from.
from smose.experiments.records import read_eval_times  # noqa: F401
from smose.experiments.stats import (
    BOOTSTRAP_RESAMPLES,
    CONFIDENCE,
    aggregate_iqm,
    normalise,
    performance_profiles,
    plot_aggregate,
    plot_profiles,
    probability_of_improvement,
)
from smose.run import EVAL_FILE, LINEAR_EVAL_FILE, METRICS_FILE

if TYPE_CHECKING:
    from smose.experiments.aggregate import Row
    from smose.experiments.records import RunRecord


def protocols_section(rows: Sequence[Row]) -> list[str]:
    """Both evaluation protocols of every SMOSE group with linear evaluations, beside the poster's SMOSE number."""
    shown = [r for r in rows if r.algo == "smose" and r.linear_returns]
    if not shown:
        return []
    lines = ["", "## Both evaluation protocols", "",
             f"*gated*: `{EVAL_FILE}`, tanh of the gated mean (ours; 10 episodes after `smose eval --protocol both`, "
             f"otherwise the training's final evaluation). *linear*: `{LINEAR_EVAL_FILE}`, the chosen expert's raw "
             "output clipped to the action bounds over 100 episodes (the authors' evaluation scripts, "
             "`smose eval --protocol authors`). Mean ± sample std over seeds; IQM with its 95% CI from 3 seeds on "
             f"(rliable, {BOOTSTRAP_RESAMPLES} resamples); ratio = our mean / the poster's SMOSE number (for Reacher, "
             "a negative return, a ratio below 1 is better).", "",
             "| task | M | λ | steps | seeds | gated: mean ± std | gated IQM [CI] | gated / poster "
             "| linear: mean ± std | linear IQM [CI] | linear / poster | poster SMOSE |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in shown:
        poster = POSTER["smose"].get(task_name(row.env)) if row.paper_settings else None
        cells = []
        for values in (row.returns, row.linear_returns):
            ci = row.ci_of(values)
            cells += [f"{num(float(np.mean(values)))} ± {num(row.std_of(values))} ({len(values)})",
                      f"{num(row.iqm_of(values))}" + (f" [{num(ci[0])}, {num(ci[1])}]" if math.isfinite(ci[0])
                                                        else ""),
                      num(float(np.mean(values)) / poster, 3) if poster else "–"]
        lines.append(f"| {row.env} | {row.experts} | {row.lb} | {row.steps:,} | {len(row.seeds)} | "
                     + " | ".join(cells) + f" | {num(poster)} |")
    return lines


def _published(value: float) -> str:
    """A published number as printed there: up to two decimals, no trailing zeros (11809.87, 1090, 6388.5)."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


def poster_section(rows: Sequence[Row]) -> list[str]:
    """The poster's published table, as published (no ± there), when any row is on one of its tasks."""
    if not any(task_name(r.env) in TASKS for r in rows):
        return []
    lines = ["", "## The poster's published numbers", "",
             f"Final returns after {PAPER_STEPS:,} steps on the -v4 tasks as published on the paper's poster (no ± "
             "and no seed count published; SAC-M and SAC-S sized for M = 8). CGP, LGP and Metric-40 are the "
             f"interpretable methods it compares with. CleanRL's SAC ({CLEANRL_SOURCE}) for scale.", "",
             "| method | " + " | ".join(TASKS) + " |", "|---|" + "---|" * len(TASKS)]
    for method, numbers in POSTER.items():
        name = {"smose": "**SMOSE**", "sac-l": "SAC-L", "sac-m": "SAC-M", "sac-s": "SAC-S"}.get(method, method)
        lines.append(f"| {name} | " + " | ".join(_published(numbers[t]) if t in numbers else "n/a" for t in TASKS)
                     + " |")
    lines.append("| CleanRL SAC (-v2, training return) | "
                 + " | ".join(f"{_published(CLEANRL_SAC[t][0])} ± {_published(CLEANRL_SAC[t][1])}"
                              if t in CLEANRL_SAC else "–" for t in TASKS) + " |")
    return lines


def normalised_scores(rows: Sequence[Row]) -> dict[tuple[str, int], np.ndarray]:
    """(algo, steps) -> normalised final returns [seeds × tasks] of the groups with the paper's settings, over the
    paper's tasks every such group of that budget ran, keeping as many seeds as the task with fewest has (the
    lowest seeds): rliable's stratified bootstrap needs a full matrix."""
    by_budget: dict[tuple[str, int], dict[str, Row]] = {}
    for row in rows:
        if row.paper_settings and task_name(row.env) in TASKS and row.env.endswith("-v4"):
            by_budget.setdefault((row.algo, row.steps), {})[task_name(row.env)] = row
    result = {}
    for key, tasks in by_budget.items():
        if len(tasks) < 2:
            continue
        n = min(len(r.returns) for r in tasks.values())
        columns = [normalise(tasks[t].returns[:n], RANDOM_POLICY[t], POSTER["sac-l"][t]) for t in TASKS if t in tasks]
        result[key] = np.stack(columns, axis=1)
    return result


def aggregate_section(rows: Sequence[Row], out: Path) -> tuple[list[str], list[Path]]:
    """IQM of normalised scores across tasks with stratified bootstrap CIs, the probability that SMOSE improves on
    each baseline across tasks, and the figures (aggregate IQM, performance profiles) per budget."""
    scores = normalised_scores(rows)
    if not scores:
        return [], []
    lines = ["", "## Across tasks (rliable)", "",
             "Final returns normalised per task, (return − random policy) / (the poster's SAC-L − random policy): 0 is "
             "the uniform random policy (`benchmarks/results/random_policy.json`), 1 the poster's SAC-L. Groups with "
             f"the paper's settings on the -v4 tasks. IQM over all (seed, task) scores with a {CONFIDENCE:.0%} "
             f"stratified bootstrap CI ({BOOTSTRAP_RESAMPLES} resamples; seeds resampled within each task); "
             "*P(SMOSE > it)*: rliable's probability of improvement averaged over tasks (0.5 = no edge). Where tasks "
             "have different numbers of seeds, each keeps as many as the task with fewest.", "",
             "| algo | steps | tasks | seeds per task | IQM [95% CI] | P(SMOSE > it) |", "|---|---|---|---|---|---|"]
    figures: list[Path] = []
    for steps in sorted({s for _, s in scores}):
        at_budget = {algo: m for (algo, s), m in scores.items() if s == steps}
        aggregates = aggregate_iqm(at_budget)
        smose = at_budget.get("smose")
        for algo, matrix in at_budget.items():
            p = "–"
            if smose is not None and algo != "smose" and smose.shape[1] == matrix.shape[1]:
                p = num(probability_of_improvement(smose, matrix))
            point, low, high = aggregates[algo]
            lines.append(f"| {algo} | {steps:,} | {matrix.shape[1]} | {matrix.shape[0]} | {num(point, 3)} "
                         f"[{num(low, 3)}, {num(high, 3)}] | {p} |")
        label = f"{steps // 1000}k" if steps % 1000 == 0 else str(steps)
        figures.append(plot_aggregate(aggregates, f"IQM of normalised scores, {steps:,} steps",
                                      out / f"aggregate_iqm_{label}.png"))
        profiles, cis = performance_profiles(at_budget)
        figures.append(plot_profiles(profiles, cis, f"Performance profiles, {steps:,} steps",
                                     out / f"performance_profiles_{label}.png"))
    lines += ["", "Figures: " + ", ".join(f"[{p.name}]({p.name})" for p in figures) + "."]
    return lines, figures


def time_to_poster_section(records: Sequence[RunRecord]) -> list[str]:
    """For every run at the paper's budget on one of its tasks: the first evaluation at or above the poster's SMOSE
    number, its step and the training time it took."""
    runs = [r for r in records if r.steps == PAPER_STEPS and task_name(r.config.env) in TASKS]
    if not runs:
        return []
    lines = ["", "## When each run first reached the poster's SMOSE number", "",
             "The first periodic evaluation (deterministic, gated) at or above the poster's SMOSE return for the task. "
             "Time: training wall-clock time at that evaluation (≈: estimated from the logged steps/s, for runs "
             f"logged before {METRICS_FILE} had a time column).", "",
             "| run | algo | poster SMOSE | first reached at step | training time | final |",
             "|---|---|---|---|---|---|"]
    for record in sorted(runs, key=lambda r: (r.config.env, r.config.algo, r.config.seed)):
        target = POSTER["smose"][task_name(record.config.env)]
        reached = next((step for step, value in record.curve.items() if value >= target), None)
        if reached is None:
            where, when = "not reached", "–"
        else:
            seconds = record.eval_times.get(reached)
            where = f"{reached:,}"
            when = "–" if seconds is None else f"{'≈' if record.times_estimated else ''}{seconds / 3600:.2f} h"
        lines.append(f"| {record.path.name} | {record.config.algo} | {target:g} | {where} | {when} | "
                     f"{num(record.final_return)} |")
    return lines
